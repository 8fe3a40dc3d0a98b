"""The ridge head's sufficient statistics and cross-validation criteria
(lastlayer.engine.solvers.estimators.ridge_cv) against references computed directly in
float64, where summed statistics cancel: fewer rows than features (GCV, LOO), nearly exact
fits (GCV, K-fold), features far from the origin (centring)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_score

from lastlayer.engine.solvers.estimators import ExactRidgeHead
from lastlayer.engine.solvers.estimators.ridge_cv import fold_edges


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---- GCV and LOO at N < d --------------------------------------------------------------------------
def complement_basis(n: int) -> np.ndarray:
    """An orthonormal basis (n, n - 1) of the vectors orthogonal to 1 (Helmert's)."""
    q = np.zeros((n, n - 1))
    for k in range(1, n):
        q[:k, k - 1] = 1.0
        q[k, k - 1] = -k
        q[:, k - 1] /= np.sqrt(k * (k + 1))
    return q


def hat_matrix_references(x, y, lams, bias):
    """GCV and exact LOO scores from the hat matrix, formed directly in the dual: on the
    span of Q (1^perp with a bias, everything without), I - H = n lam (K + n lam I)^-1 with
    K = Q^T X X^T Q, so the residuals (I - H) y and the diagonal of I - H are positive
    forms, with no cancellation at small lambda."""
    n, c = y.shape
    q = complement_basis(n) if bias else np.eye(n)
    xq, yq = q.T @ x, q.T @ y
    k = xq @ xq.T
    gcv, loo = [], []
    for lam in lams:
        m = n * lam * np.linalg.inv(k + n * lam * np.eye(len(k)))  # I - H on span(Q)
        r = q @ (m @ yq)
        diag = np.einsum("ia,ab,ib->i", q, m, q)
        gcv.append(n * (r * r).sum() / c / np.trace(m) ** 2)
        loo.append(((r / diag[:, None]) ** 2).sum() / (n * c))
    return np.array(gcv), np.array(loo)


def refit_loo(x, y, lams, bias):
    """Leave-one-out by refitting without each row (the whole problem's penalty N lam, as
    RidgeCV), each refit solved in the dual on the n - 1 rows (d > n: the primal normal
    equations would square a condition number of ~1e10 at the smallest lambda)."""
    n, c = y.shape
    out = np.zeros(len(lams))
    for i in range(n):
        keep = np.arange(n) != i
        xt, yt = x[keep], y[keep]
        mu, ybar = (xt.mean(axis=0), yt.mean(axis=0)) if bias else (0.0, 0.0)
        q = complement_basis(n - 1) if bias else np.eye(n - 1)
        xq, yq = q.T @ (xt - mu), q.T @ (yt - ybar)
        k = xq @ xq.T
        for j, lam in enumerate(lams):
            alpha = np.linalg.solve(k + n * lam * np.eye(len(k)), yq)  # W^T = X_q^T alpha
            pred = (x[i] - mu) @ (xq.T @ alpha) + ybar
            out[j] += float(((pred - y[i]) ** 2).sum())
    return out / (n * c)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_gcv_and_loo_at_fewer_rows_than_features_equal_explicit_refits(bias):
    """N = 30 < d = 60: y'y - 2 b'w + w'Gw cancelled and was clamped to 0 at small lambda,
    so GCV scored the smallest lambda 0 and chose it (its scores were 2.6e3 times off, LOO's
    1.8e-6); now both equal the hat-matrix references and the literal refits to 1e-9, and
    choose their minimum, which lies inside the grid."""
    rng = np.random.default_rng(1)
    n, d, c = 30, 60, 2
    x = rng.standard_normal((n, d)) + 0.5
    y = 0.2 * x @ rng.standard_normal((d, c)) + 0.5 + rng.standard_normal((n, c))
    lams = np.logspace(-9, 2, 12)
    gcv_ref, loo_ref = hat_matrix_references(x, y, lams, bias)
    assert rel(refit_loo(x, y, lams, bias), loo_ref) < 1e-9  # the two references agree
    assert 0 < np.argmin(gcv_ref) < len(lams) - 1 and 0 < np.argmin(loo_ref) < len(lams) - 1
    gcv = ExactRidgeHead(lams=lams, cv="gcv", fit_intercept=bias, chunk_rows=7).fit(x, y)
    loo = ExactRidgeHead(lams=lams, cv="loo", fit_intercept=bias, chunk_rows=7).fit(x, y)
    assert np.abs(gcv.cv_scores_ / gcv_ref - 1).max() < 1e-9
    assert np.abs(loo.cv_scores_ / loo_ref - 1).max() < 1e-9
    assert gcv.lam_ == lams[np.argmin(gcv_ref)]
    assert loo.lam_ == lams[np.argmin(loo_ref)]


def exact_problem(n=200, d=6, seed=2):
    """Integer features and a target y = X w + 1/2 with dyadic w: every value is exact in
    float64, so the residuals of any fit are known in closed form (below), free of the
    rounding of y itself."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-8, 9, (n, d)).astype(np.float64)
    w = rng.integers(-4, 5, d) / 4
    return x, w, x @ w + 0.5


def test_nearly_exact_fits_equal_the_closed_form_residuals():
    """A noise-free target (N = 200 > d = 6, with a bias): the residual of the ridge fit on
    rows with mean mu is r_i = N lam (x_i - mu)^T (G + N lam I)^-1 w (G the centred Gram
    matrix of the training rows), of relative size 1e-5 .. 1e-3 here, so its square is
    1e-10 of the sums it was taken from: GCV's scores were 4.2e-6 off and K-fold's 4.4e-6.
    Now the sums are trusted only where they resolve it, and the rest is summed row by row:
    both equal the closed form to 1e-9."""
    x, w, y = exact_problem()
    n, d = x.shape
    lams = np.logspace(-4, -1, 4)
    mu = x.mean(axis=0)
    g = (x - mu).T @ (x - mu)
    gcv_ref = []
    for lam in lams:
        r = n * lam * (x - mu) @ np.linalg.solve(g + n * lam * np.eye(d), w)
        dof = n - 1 - np.trace(np.linalg.solve(g + n * lam * np.eye(d), g))  # N > d + 1: no cancellation
        gcv_ref.append(n * (r @ r) / dof ** 2)
    kfold_ref = np.zeros(len(lams))
    edges = fold_edges(n, 5)
    for f in range(5):
        held = np.arange(edges[f], edges[f + 1])
        train = np.setdiff1d(np.arange(n), held)
        mt = x[train].mean(axis=0)
        gt = (x[train] - mt).T @ (x[train] - mt)
        for i, lam in enumerate(lams):
            r = n * lam * (x[held] - mt) @ np.linalg.solve(gt + n * lam * np.eye(d), w)
            kfold_ref[i] += (r @ r) / len(held) / 5
    gcv = ExactRidgeHead(lams=lams, cv="gcv", chunk_rows=37).fit(x, y)
    kfold = ExactRidgeHead(lams=lams, cv=5, chunk_rows=37).fit(x, y)
    assert np.abs(gcv.cv_scores_ / np.array(gcv_ref) - 1).max() < 1e-9
    assert np.abs(kfold.cv_scores_ / kfold_ref - 1).max() < 1e-9


# ---- centring: features far from the origin ----------------------------------------------------------
N, D, C, LAM = 500, 8, 2, 1e-3


def offset_problem(offset):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((N, D))
    y = z @ rng.standard_normal((D, C)) + 0.5 + 0.3 * rng.standard_normal((N, C))
    return z, z + offset, y


@pytest.mark.parametrize("offset", [1e6, 1e8])
def test_offset_features_give_scikit_learns_ridge(offset, tmp_path):
    """With an intercept, features offset by 1e6 gave coefficients 3e-3 away from
    scikit-learn's (0.26 at 1e7: the centred Gram matrix was G - N mu mu^T). The centred,
    pairwise-merged sums keep every digit: in memory and streamed from a .npy file in 8
    chunks, the head equals Ridge(alpha=N lam) on the same inputs to 1e-9 at both offsets.

    Against the *unshifted* problem (features z, of which the inputs are z + offset rounded
    to float64) the limit is the inputs' own rounding: half an ulp of the offset, 3.7e-11 at
    1e6 but 7.5e-9 at 1e8, relative to the unit spread of z, which moves the solution by
    about that times the conditioning (~10 here): 1e-9 at 1e6, 1e-6 at 1e8."""
    z, x, y = offset_problem(offset)
    ref = Ridge(alpha=N * LAM).fit(x, y)
    unshifted = Ridge(alpha=N * LAM).fit(z, y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    heads = [ExactRidgeHead(LAM).fit(x, y),
             ExactRidgeHead(LAM, chunk_rows=64).fit(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))]
    for head in heads:
        assert rel(head.coef_, ref.coef_) < 1e-9
        assert rel(head.intercept_, ref.intercept_) < 1e-9
        assert rel(head.coef_, unshifted.coef_) < (1e-9 if offset == 1e6 else 1e-6)
        assert head.kkt_residual_ < 1e-6  # the rounding of b (~eps |b|) is all that is left


def test_offset_features_keep_the_kfold_scores():
    """The K-fold complements merge the folds' centred sums: at an offset of 1e6 the
    held-out MSEs equal scikit-learn's cross_val_score to 1e-9 (they were 2e-2 off)."""
    _, x, y = offset_problem(1e6)
    lams = np.logspace(-4, 0, 5)
    head = ExactRidgeHead(lams=lams, cv=5, chunk_rows=64).fit(x, y)
    sk = [-cross_val_score(Ridge(alpha=N * lam), x, y, cv=KFold(5), scoring="neg_mean_squared_error").mean()
          for lam in lams]
    assert np.abs(head.cv_scores_ / np.array(sk) - 1).max() < 1e-9


def test_pairwise_merge_is_exact_on_small_integers():
    """The merge of two chunks' centred sums equals the centred sums of their union: on
    integers, 4 rows in each chunk, every value is exact, and the two agree bit for bit."""
    # also the chunks' merge on Dask workers
    # also the chunks' merge on Dask workers
    from lastlayer.engine.solvers.estimators.ridge_cv import merge_statistics

    rng = np.random.default_rng(3)
    a, b = rng.integers(-4, 5, (4, 3)).astype(float), rng.integers(-4, 5, (4, 3)).astype(float)
    ya, yb = rng.integers(-4, 5, (4, 2)).astype(float), rng.integers(-4, 5, (4, 2)).astype(float)

    def sums(p, t):
        m, ym = p.mean(axis=0), t.mean(axis=0)
        return (np.array([len(p)], float), m[None], ((p - m).T @ (p - m))[None], ((p - m).T @ (t - ym))[None],
                ym[None], np.array([((t - ym) ** 2).sum()]))

    merged = merge_statistics(sums(a, ya), sums(b, yb))
    whole = sums(np.vstack([a, b]), np.vstack([ya, yb]))
    for got, want in zip(merged, whole):
        np.testing.assert_array_equal(got, want)
    empty = (np.zeros(1), np.zeros((1, 3)), np.zeros((1, 3, 3)), np.zeros((1, 3, 2)), np.zeros((1, 2)), np.zeros(1))
    for got, want in zip(merge_statistics(empty, sums(a, ya)), sums(a, ya)):
        np.testing.assert_array_equal(got, want)
