"""Last-layer objectives, Hessians, HVPs and the softmax-regression solvers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from lastlayer.engine.solvers.exact.curvature import hessian, hvp, logit_hessians, objective
from lastlayer.engine.gradcheck import numerical_gradient, relative_error
from lastlayer.engine.solvers.exact.softmax_regression import fit_softmax_regression


def problem(loss, seed=0, n=30, d=4, c=3):
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n, d))
    t = rng.integers(0, c, n) if loss == "ce" else rng.standard_normal((n, c))
    return phi, t, rng.standard_normal((c, d)), rng.standard_normal(c)


@pytest.mark.parametrize("loss", ["ce", "squared"])
@pytest.mark.parametrize("bias", [True, False])
def test_gradient_hessian_and_hvp_against_finite_differences(loss, bias):
    phi, t, W, b = problem(loss)
    b = b if bias else None
    lam = 0.07
    obj = objective(W, b, phi, t, lam, loss)
    assert relative_error(obj.grad_W, numerical_gradient(
        lambda: objective(W, b, phi, t, lam, loss).value, W)) < 1e-8
    if bias:
        assert relative_error(obj.grad_b, numerical_gradient(
            lambda: objective(W, b, phi, t, lam, loss).value, b)) < 1e-8

    H = hessian(W, b, phi, t, lam, loss)
    assert np.abs(H - H.T).max() == 0.0  # symmetric by construction
    rng = np.random.default_rng(1)
    V, vb = rng.standard_normal(W.shape), rng.standard_normal(W.shape[0]) if bias else None
    hv_w, hv_b = hvp(W, b, phi, t, lam, V, vb, loss)
    flat = np.concatenate([hv_w.ravel()] + ([hv_b] if bias else []))
    v = np.concatenate([V.ravel()] + ([vb] if bias else []))
    assert relative_error(flat, H @ v) < 1e-13
    # directional derivative of the gradient along v
    h = 1e-6
    gp = objective(W + h * V, None if b is None else b + h * vb, phi, t, lam, loss)
    gm = objective(W - h * V, None if b is None else b - h * vb, phi, t, lam, loss)
    fd = np.concatenate([((gp.grad_W - gm.grad_W) / (2 * h)).ravel()]
                        + ([(gp.grad_b - gm.grad_b) / (2 * h)] if bias else []))
    assert relative_error(flat, fd) < 1e-7


def test_squared_loss_hessian_is_the_ridge_matrix():
    """H_WW = (2/N) I_C (x) Phi^T Phi + 2 lam I, whatever W."""
    phi, t, W, _ = problem("squared")
    H = hessian(W, None, phi, t, 0.2, "squared")
    expected = np.kron(np.eye(3), 2 * phi.T @ phi / 30) + 0.4 * np.eye(12)
    np.testing.assert_allclose(H, expected, rtol=1e-13, atol=1e-14)


def test_ce_hessian_is_p_kron_xxT_summed():
    """Their Appendix A: per sample, the Hessian in W is P (x) x x^T."""
    phi, t, W, _ = problem("ce", n=5)
    a = logit_hessians(W, None, phi, t, "ce")
    expected = sum(np.kron(a[i], np.outer(phi[i], phi[i])) for i in range(5)) / 5
    np.testing.assert_allclose(hessian(W, None, phi, t, 0.0, "ce"), expected, rtol=1e-13,
                               atol=1e-15)


def test_bias_direction_is_flat_for_ce():
    phi, t, W, b = problem("ce")
    H = hessian(W, b, phi, t, 0.1, "ce")
    e = np.zeros(H.shape[0])
    e[-3:] = 1.0
    assert np.abs(H @ e).max() < 1e-15  # adding a constant to every logit changes nothing
    assert scipy.linalg.eigvalsh(H[:-3, :-3])[0] >= 0.2 * (1 - 1e-12)  # >= 2 lam on W


@pytest.mark.parametrize("method", ["newton", "newton-cg", "lbfgs"])
def test_solvers_reach_the_kkt_point(method):
    phi, y, _, _ = problem("ce", n=80, d=6, c=4, seed=3)
    sol = fit_softmax_regression(phi, y, 0.02, method=method)
    tol = 1e-8 if method == "lbfgs" else 1e-11
    assert sol.kkt_residual < tol and sol.method == method
    assert abs(sol.b.sum()) < 1e-12  # the gauge sum_c b_c = 0
    ref = fit_softmax_regression(phi, y, 0.02, method="newton")
    assert np.abs(sol.W - ref.W).max() / np.abs(ref.W).max() < (1e-6 if method == "lbfgs" else 1e-10)


def test_solver_without_bias_and_auto_choice():
    phi, y, _, _ = problem("ce", n=60, d=5, c=3, seed=4)
    sol = fit_softmax_regression(phi, y, 0.05, fit_bias=False)
    assert sol.b is None and sol.method == "newton" and sol.kkt_residual < 1e-12
    big = np.random.default_rng(0).standard_normal((50, 600))
    assert fit_softmax_regression(big, np.arange(50) % 3, 0.1).method == "newton-cg"


def test_solver_bad_input():
    phi, y, _, _ = problem("ce")
    with pytest.raises(ValueError, match="lam: expected a finite number > 0, got 0.0"):
        fit_softmax_regression(phi, y, 0.0)
    with pytest.raises(ValueError, match=r"labels: expected integer labels of shape \(30,\)"):
        fit_softmax_regression(phi, y.astype(float), 0.1)
    with pytest.raises(ValueError, match="method: expected"):
        fit_softmax_regression(phi, y, 0.1, method="sgd")
