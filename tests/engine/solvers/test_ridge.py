"""Closed-form ridge solvers: primal == dual == SVD, optimality, path, streaming, kernel view,
and bad input."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from lastlayer.engine.solvers.exact.ridge import (
    GramAccumulator, RankDeficientWarning, kernel_ridge, ridge, ridge_gradient, ridge_objective,
    ridge_path, rkhs_norm,
)


def rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def problem(n, d, c=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((n, c)).astype(dtype)


@pytest.mark.parametrize("n, d", [(200, 30), (30, 200), (50, 50)])
def test_primal_dual_and_svd_agree_and_are_optimal(n, d):
    phi, y = problem(n, d)
    lam = 1e-2
    sols = {m: ridge(phi, y, lam, m) for m in ("primal", "dual", "svd")}
    for m in ("primal", "dual"):
        assert rel(sols[m].W, sols["svd"].W) < 1e-10
        assert sols[m].method == m
    W = ridge(phi, y, lam).W
    assert ridge(phi, y, lam).method == ("primal" if d <= n else "dual")
    # the gradient of J vanishes, relative to the data term's scale
    assert np.abs(ridge_gradient(W, phi, y, lam)).max() / np.abs(phi.T @ y / n).max() < 1e-10
    # and J is larger at any perturbation (a minimum, not just a stationary point)
    rng = np.random.default_rng(1)
    assert all(ridge_objective(W + 1e-3 * rng.standard_normal(W.shape), phi, y, lam)
               > ridge_objective(W, phi, y, lam) for _ in range(5))


def test_ridge_gradient_matches_finite_differences():
    from lastlayer.engine.gradcheck import numerical_gradient, relative_error

    phi, y = problem(20, 4)
    W = np.random.default_rng(2).standard_normal((3, 4))
    num = numerical_gradient(lambda: ridge_objective(W, phi, y, 0.3), W)
    assert relative_error(ridge_gradient(W, phi, y, 0.3), num) < 1e-8


def test_closed_form_matches_the_normal_equations_written_out():
    """W^T = (Phi^T Phi + N lam I)^-1 Phi^T Y (solve, not inv, as the test's own reference)."""
    phi, y = problem(40, 6)
    lam = 0.1
    expected = np.linalg.solve(phi.T @ phi + 40 * lam * np.eye(6), phi.T @ y).T
    assert rel(ridge(phi, y, lam).W, expected) < 1e-12


def test_fit_bias_leaves_the_bias_unpenalised():
    phi, y = problem(100, 5)
    phi += 3.0
    y += np.array([1.0, -2.0, 5.0])
    sol = ridge(phi, y, 0.5, fit_bias=True)
    residual = phi @ sol.W.T + sol.b - y
    np.testing.assert_allclose(residual.mean(axis=0), 0, atol=1e-12)  # d J / d b = 0
    grad_W = (2 / 100) * residual.T @ phi + 2 * 0.5 * sol.W
    assert np.abs(grad_W).max() < 1e-12


def test_one_dimensional_targets_give_one_output_row():
    phi, y = problem(30, 4, c=1)
    assert ridge(phi, y[:, 0], 0.1).W.shape == (1, 4)
    np.testing.assert_array_equal(ridge(phi, y[:, 0], 0.1).W, ridge(phi, y, 0.1).W)


def test_rank_deficient_without_regularisation_gives_the_minimum_norm_solution():
    rng = np.random.default_rng(3)
    phi = rng.standard_normal((30, 4)) @ rng.standard_normal((4, 10))  # rank 4, d = 10
    y = rng.standard_normal((30, 2))
    with pytest.warns(RankDeficientWarning, match="not positive definite"):
        sol = ridge(phi, y, 0.0, "primal")
    assert sol.method == "svd"
    np.testing.assert_allclose(sol.W, np.linalg.pinv(phi).dot(y).T, rtol=0, atol=1e-12)


def test_lambda_path_equals_separate_solves():
    for n, d in ((100, 10), (10, 100)):
        phi, y = problem(n, d)
        lams = [0.0, 1e-3, 0.1, 10.0] if d <= n else [1e-3, 0.1, 10.0]
        path = ridge_path(phi, y, lams)
        assert path.shape == (len(lams), 3, d)
        for W, lam in zip(path, lams):
            assert rel(W, ridge(phi, y, lam, "svd").W) < 1e-10


@pytest.mark.parametrize("fit_bias", [False, True])
def test_streaming_gram_from_h5_equals_the_in_memory_solve(tmp_path, fit_bias):
    phi, y = problem(1003, 12, c=2, seed=4)
    phi += 0.5
    with h5py.File(tmp_path / "features.h5", "w") as f:
        f["phi"], f["y"] = phi, y
    acc = GramAccumulator(12, 2)
    with h5py.File(tmp_path / "features.h5", "r") as f:
        acc.add_h5(f["phi"], f["y"], chunk_rows=97)  # 97 does not divide 1003
    assert acc.n == 1003
    streamed = acc.solve(0.01, fit_bias=fit_bias)
    direct = ridge(phi, y, 0.01, fit_bias=fit_bias)
    assert rel(streamed.W, direct.W) < 1e-12
    if fit_bias:
        assert rel(streamed.b, direct.b) < 1e-12


def test_kernel_ridge_is_the_dual_of_eq_8():
    phi, y = problem(25, 40)
    alpha = kernel_ridge(phi, y, 0.05)
    assert alpha.shape == (25, 3)
    assert rel((phi.T @ alpha).T, ridge(phi, y, 0.05, "svd").W) < 1e-10
    # predictions from the kernel alone: g(x) = sum_i alpha_i <Phi_i, Phi(x)>
    x_new = np.random.default_rng(9).standard_normal((4, 40))
    np.testing.assert_allclose((x_new @ phi.T) @ alpha, x_new @ (phi.T @ alpha), rtol=1e-12)


def test_rkhs_norm_full_rank_and_rank_deficient():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((1, 6))
    assert abs(rkhs_norm(W, rng.standard_normal((40, 6))) - np.linalg.norm(W)) < 1e-12
    phi = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 6))
    assert rkhs_norm(W, phi) < np.linalg.norm(W)
    v = np.linalg.lstsq(phi, phi @ W.ravel(), rcond=None)[0]  # minimum-norm interpolant
    assert abs(rkhs_norm(W, phi) - np.linalg.norm(v)) < 1e-12


def test_float32_is_solved_in_float32():
    phi, y = problem(100, 10, dtype=np.float32)
    sol = ridge(phi, y, 0.1)
    assert sol.W.dtype == np.float32
    assert rel(sol.W, ridge(phi.astype(np.float64), y.astype(np.float64), 0.1).W) < 1e-5


def test_bad_input_names_the_argument():
    phi, y = problem(10, 3)
    with pytest.raises(ValueError, match=r"Y: expected shape \(10, C\) or \(10,\) to match Phi's 10 rows, got \(9, 3\)"):
        ridge(phi, y[:9], 0.1)
    with pytest.raises(ValueError, match="lam: expected a finite number >= 0, got -0.1"):
        ridge(phi, y, -0.1)
    with pytest.raises(ValueError, match="lam: expected a finite number >= 0, got nan"):
        ridge(phi, y, float("nan"))
    bad = phi.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="Phi: expected finite values, got 1 NaN/Inf"):
        ridge(bad, y, 0.1)
    bad_y = y.copy()
    bad_y[0, 0] = np.inf
    with pytest.raises(ValueError, match="Y: expected finite values"):
        ridge(phi, bad_y, 0.1)
    with pytest.raises(TypeError, match="Y: dtype float32 does not match Phi's dtype float64"):
        ridge(phi, y.astype(np.float32), 0.1)
    with pytest.raises(ValueError, match="method: expected"):
        ridge(phi, y, 0.1, "qr")
    with pytest.raises(ValueError, match="no rows were added"):
        GramAccumulator(3, 3).solve(0.1)


def test_no_warning_in_the_regular_case():
    phi, y = problem(50, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ridge(phi, y, 0.0)  # full rank: positive definite even without regularisation


@pytest.mark.parametrize("phi, y", [
    (np.full((2, 2), 1e-44, np.float32), np.zeros(2, np.float32)),  # Gram underflows to 0
    (np.full((1, 1), 1e-44, np.float32), np.ones(1, np.float32)),  # W = 1e44 > float32 max
])
def test_subnormal_float32_features_give_the_minimum_norm_solution(phi, y):
    """Found by tests/reliability/test_fuzz.py: float32 features of 1e-44 (subnormal), lam =
    0. Their squares underflow, so in float32 Phi is numerically zero: the SVD's cut-off
    (at least sqrt(tiny)) drops them and W = 0, with RankDeficientWarning; before, the SVD
    divided by s^2 = 0 and the float64 refinement cast 1e44 to float32 (inf)."""
    with pytest.warns(RankDeficientWarning):
        sol = ridge(phi, y, 0.0)
    assert sol.method == "svd" and sol.W.dtype == np.float32
    np.testing.assert_array_equal(sol.W, np.zeros((1, phi.shape[1]), np.float32))
