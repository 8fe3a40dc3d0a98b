"""Ledger rows M1-M7: the post-training paper (Moreau & Audiffren 2017) checked exactly.

Objective (docs/claims.md): J(W) = (1/N) sum_i loss(Phi_i W^T, y_i) + lam ||W||_F^2, float64.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from lastlayer.engine import Dense, Network, optim
from lastlayer.engine.solvers import (
    fit_softmax_regression, hessian, hvp, kernel_ridge, logit_hessians, objective, ridge,
    ridge_gradient, rkhs_norm,
)
from lastlayer.engine.training import Dataset
from lastlayer.engine.training.data import digits, simulated_regression

from ...ledger import DIFFERS, FAIL, PASS, Check, Outcome, at_most
from . import protocol


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(float).tiny))


def _ce_problem(seed=0, n=60, d=5, c=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)), rng.integers(0, c, n), 0.3 * rng.standard_normal((c, d)),
            0.3 * rng.standard_normal(c))


def _ridge_problem(n, d, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, c))


# ---- M1: convexity -----------------------------------------------------------------------
def m1_hessian() -> Outcome:
    """Hand-written Hessian (and Hessian-vector product) vs central differences of the
    hand-written gradient, softmax CE with bias."""
    phi, y, W, b = _ce_problem()
    lam, h = 0.05, 1e-6
    c, d = W.shape
    H = hessian(W, b, phi, y, lam, "ce")
    n_p = c * d + c
    fd = np.empty((n_p, n_p))
    theta = np.concatenate([W.ravel(), b])
    for k in range(n_p):
        e = np.zeros(n_p)
        e[k] = h
        gp = objective(*_split(theta + e, c, d), phi, y, lam)
        gm = objective(*_split(theta - e, c, d), phi, y, lam)
        fd[:, k] = (np.concatenate([gp.grad_W.ravel(), gp.grad_b])
                    - np.concatenate([gm.grad_W.ravel(), gm.grad_b])) / (2 * h)
    v = np.random.default_rng(1).standard_normal(n_p)
    hv_w, hv_b = hvp(W, b, phi, y, lam, v[:c * d].reshape(c, d), v[c * d:])
    hvp_err = _rel(np.concatenate([hv_w.ravel(), hv_b]), H @ v)
    return at_most(max(_rel(H, fd), hvp_err), 1e-7)


def _split(theta, c, d):
    return theta[:c * d].reshape(c, d), theta[c * d:]


def m1_p_matrix() -> Outcome:
    """P_mp = p_m (delta_mp - p_p): symmetric, non-negative diagonal, diagonally dominant
    (weakly: |P_mm| = sum_{p != m} |P_mp| exactly, as rows sum to 0). Measured: the
    largest violation of the three over 60 samples (0 up to rounding)."""
    phi, y, W, b = _ce_problem()
    a = logit_hessians(W, b, phi, y, "ce")  # (N, C, C)
    asym = np.abs(a - a.transpose(0, 2, 1)).max()
    diag = np.diagonal(a, axis1=1, axis2=2)
    neg = max(0.0, -diag.min())
    off = np.abs(a).sum(axis=2) - np.abs(diag)
    dominance_deficit = max(0.0, (off - diag).max())
    return at_most(float(max(asym, neg, dominance_deficit)), 1e-15)


def m1_eigenvalue() -> Outcome:
    """Smallest eigenvalue of the full Hessian of J(W) (no bias, as in docs/claims.md) divided
    by 2 lam: must be >= 1 (up to rounding)."""
    phi, y, W, _ = _ce_problem()
    lam = 0.05
    e_min = scipy.linalg.eigvalsh(hessian(W, None, phi, y, lam, "ce"))[0]
    ratio = e_min / (2 * lam)
    return Outcome(ratio, ">= 1", 1e-10, PASS if ratio >= 1 - 1e-10 else FAIL)


# ---- M2: the closed form -------------------------------------------------------------------
def m2_primal_dual() -> Outcome:
    """Primal, dual and SVD solutions, for d < N and d > N: largest relative difference."""
    worst = 0.0
    for n, d in ((200, 30), (30, 200)):
        phi, y = _ridge_problem(n, d)
        sols = [ridge(phi, y, 1e-2, m).W for m in ("primal", "dual", "svd")]
        alpha = kernel_ridge(phi, y, 1e-2)  # the dual coefficients, W^T = Phi^T alpha
        worst = max(worst, _rel(sols[0], sols[2]), _rel(sols[1], sols[2]),
                    _rel((phi.T @ alpha).T, sols[2]))
    return at_most(worst, 1e-10)


def m2_gradient() -> Outcome:
    """||grad J(W*)||_max / ||Phi^T Y / N||_max at the closed form (auto method)."""
    worst = 0.0
    for n, d in ((200, 30), (30, 200)):
        phi, y = _ridge_problem(n, d, seed=1)
        W = ridge(phi, y, 1e-2).W
        worst = max(worst, float(np.abs(ridge_gradient(W, phi, y, 1e-2)).max()
                                 / np.abs(phi.T @ y / n).max()))
    return at_most(worst, 1e-10)


def m2_paper_eq8() -> Outcome:
    """Their eq. 8 puts lam (not N lam) on the diagonal. Measured: the relative gradient of
    the mean-convention J at their solution (0 if it were the optimum). It is the optimum
    of the summed loss instead: it equals the mean-convention solution at lam / N."""
    phi, y = _ridge_problem(200, 30, seed=2)
    n, lam = len(phi), 1e-2
    k = phi @ phi.T
    k[np.diag_indices(n)] += lam  # their (Phi Phi^T + lam I)^-1 Y
    W_paper = (phi.T @ scipy.linalg.solve(k, y, assume_a="pos")).T
    grad = float(np.abs(ridge_gradient(W_paper, phi, y, lam)).max() / np.abs(phi.T @ y / n).max())
    same_as_sum_convention = _rel(W_paper, ridge(phi, y, lam / n).W) < 1e-10
    status = DIFFERS if (grad > 1e-6 and same_as_sum_convention) else FAIL
    return Outcome(grad, 0.0, 1e-10, status)


# ---- M3: RKHS norm -------------------------------------------------------------------------
def m3_full_rank() -> Outcome:
    """Rows of Phi span R^d: ||g_W||_H = ||W||_2. Measured: relative difference."""
    phi, _ = _ridge_problem(50, 8, seed=3)
    W = np.random.default_rng(4).standard_normal((1, 8))
    return at_most(abs(rkhs_norm(W, phi) - np.linalg.norm(W)) / np.linalg.norm(W), 1e-12)


def _deficient():
    rng = np.random.default_rng(5)
    phi = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 8))  # rank 3 < d = 8
    return phi, rng.standard_normal((1, 8))


def m3_rank_deficient_ratio() -> Outcome:
    """Rank-deficient Phi (rank 3, d = 8): ||g_W||_H / ||W||_2, strictly below 1."""
    phi, W = _deficient()
    ratio = rkhs_norm(W, phi) / np.linalg.norm(W)
    return Outcome(ratio, "< 1", "-", PASS if ratio < 1 - 1e-6 else FAIL)


def m3_rank_deficient_definition() -> Outcome:
    """||g_W||_H from its definition, the smallest ||v|| with <v, Phi_i> = <W, Phi_i> for
    all i (minimum-norm least squares), vs the projection formula ||P_span W||."""
    phi, W = _deficient()
    v = scipy.linalg.lstsq(phi, phi @ W.ravel())[0]  # minimum-norm interpolant
    return at_most(abs(np.linalg.norm(v) - rkhs_norm(W, phi)) / np.linalg.norm(v), 1e-10)


# ---- M4: gradient post-training converges to the closed form -------------------------------
def _linear_problem():
    """A network whose features are the inputs: post-training it is plain ridge."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((400, 10))
    y = x @ rng.standard_normal((10, 1)) + 0.1 * rng.standard_normal((400, 1))
    data = Dataset("linear", x, y, x[:50], y[:50], "regression")
    net = Network([Dense(10, 1, bias=False)])
    return net, net.init(np.random.default_rng(0)), net.init_state(), data


def m4_gd() -> Outcome:
    """Full-batch gradient descent (step 1/L) on J over W alone, from the network's W, after
    1500 steps: relative distance ||W_t - W*|| / ||W*|| (lam = 1e-2). The curve must also
    decrease at every step until it reaches the rounding floor (1e-13)."""
    net, params, state, data = _linear_problem()
    lr = protocol.gd_step_size(data.x_train, 1e-2)
    curve = protocol.convergence_to_closed_form(net, params, state, data, lam=1e-2, steps=1500,
                                                base=optim.sgd(lr), batch_size=len(data.x_train))
    d = curve.distance
    above_floor = d[:-1] > 1e-13  # below that, rounding makes the distance jitter
    monotone = bool(np.all(np.diff(d)[above_floor] <= 0))
    final = float(d[-1])
    return Outcome(final, 0.0, 1e-10, PASS if (final <= 1e-10 and monotone) else FAIL)


# ---- M5: their Table 2 ordering ------------------------------------------------------------
def m5_table2() -> Outcome:
    """Simulated regression (released-code recipe), 5 seeds: at 250 / 500 / 750 training
    iterations the mean test RMSE satisfies optimal <= post-trained <= classic. Measured:
    how many of the 3 orderings fail."""
    table = protocol.table2(simulated_regression("code", seed=0), range(5))
    failures = sum(not ok for ok in protocol.ordering_holds(table).values())
    return Outcome(failures, 0, 0, PASS if failures == 0 else FAIL)


# ---- M6: a post-training step is cheaper --------------------------------------------------
def m6_cost() -> Outcome:
    """Time of a full training step / time of a post-training step (features cached), small
    CNN on digits, batch 64; > 1 expected (they report 4x on CIFAR-10)."""
    full, post = protocol.step_times(protocol.digits_cnn(), digits(images=True))
    ratio = full / post
    return Outcome(ratio, "> 1 (paper: 4)", "-", PASS if ratio > 1 else FAIL)


# ---- M7: unique CE optimum, two solvers ----------------------------------------------------
def _m7_problem():
    ds = digits(seed=0)
    return ds.x_train[:400], ds.y_train[:400], 1e-2


def m7_agree() -> Outcome:
    """Newton (exact Hessian) vs L-BFGS on the softmax-CE last layer (digits, 400 x 64, 10
    classes, lam = 1e-2, with bias): relative difference of W."""
    phi, y, lam = _m7_problem()
    a = fit_softmax_regression(phi, y, lam, method="newton", n_classes=10)
    b = fit_softmax_regression(phi, y, lam, method="lbfgs", n_classes=10)
    return at_most(_rel(b.W, a.W), 1e-6)


def m7_kkt() -> Outcome:
    """KKT residual ||grad J||_2 at Newton's optimum."""
    phi, y, lam = _m7_problem()
    return at_most(fit_softmax_regression(phi, y, lam, n_classes=10).kkt_residual, 1e-8)


def m7_unique() -> Outcome:
    """Uniqueness: Newton from zero and from a random start reach the same W (relative
    difference), as strong convexity (lam > 0) demands."""
    phi, y, lam = _m7_problem()
    rng = np.random.default_rng(7)
    a = fit_softmax_regression(phi, y, lam, n_classes=10)
    b = fit_softmax_regression(phi, y, lam, n_classes=10, W0=rng.standard_normal((10, 64)),
                               b0=rng.standard_normal(10))
    return at_most(_rel(b.W, a.W), 1e-10)


def checks() -> list[Check]:
    return [
        Check("M1-hessian", "softmax-CE last layer: hand-written Hessian and HVP vs central "
              "differences of the gradient (their Appendix A): max rel. error", m1_hessian),
        Check("M1-P", "P_mp = p_m (delta_mp - p_p) symmetric, diagonal >= 0, diagonally "
              "dominant: largest violation", m1_p_matrix),
        Check("M1-eig", "smallest Hessian eigenvalue of J(W) / (2 lam)", m1_eigenvalue),
        Check("M2-primal-dual", "ridge closed form (their eqs. 7-8, N lam): primal == dual == SVD "
              "== kernel-ridge alpha, d < N and d > N: max rel. difference", m2_primal_dual),
        Check("M2-gradient", "gradient of J at the closed form, relative to Phi^T Y / N",
              m2_gradient),
        Check("M2-eq8", "their eq. 8 as printed (lam, not N lam): relative gradient of the "
              "mean-loss J at its solution (it solves the summed loss, = ours at lam / N)",
              m2_paper_eq8),
        Check("M3-full-rank", "RKHS norm = ||W||_2 when the rows of Phi span R^d: rel. difference",
              m3_full_rank),
        Check("M3-deficient", "rank-deficient Phi: ||g_W||_H / ||W||_2", m3_rank_deficient_ratio),
        Check("M3-definition", "rank-deficient Phi: min-norm interpolant norm vs ||P_span W||: "
              "rel. difference", m3_rank_deficient_definition),
        Check("M4", "gradient post-training (full batch, step 1/L, 1500 steps) -> closed form: "
              "||W_t - W*|| / ||W*||, decreasing at every step down to 1e-13", m4_gd),
        Check("M5", "their Table 2 on simulated regression (code recipe, 5 seeds): orderings "
              "optimal <= post-trained <= classic failing at 250/500/750", m5_table2),
        Check("M6", "full training step time / post-training step time (CNN on digits)", m6_cost),
        Check("M7-agree", "softmax-CE optimum: Newton vs L-BFGS, rel. difference of W", m7_agree),
        Check("M7-kkt", "softmax-CE optimum: KKT residual ||grad J|| after Newton", m7_kkt),
        Check("M7-unique", "softmax-CE optimum from two starting points: rel. difference of W",
              m7_unique),
    ]
