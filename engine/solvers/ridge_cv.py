"""The ridge head from sufficient statistics, lambda chosen by K-fold, leave-one-out or GCV.

Objective (mean convention, docs/claims.md): J(W, b) = (1/N) ||Phi W^T + 1 b^T - Y||^2 +
lam ||W||^2, the bias unpenalised; scikit-learn's ``Ridge(alpha=N lam)`` minimises the same.

One pass over the data (in chunks, by a runner: in memory, streamed from disk or on Dask)
accumulates, per fold k of K contiguous folds (scikit-learn's ``KFold`` without shuffling),
in float64:

    n_k,  G_k = sum Phi_i Phi_i^T (d x d),  B_k = sum Phi_i y_i^T (d x C),
    s_k = sum Phi_i,  t_k = sum y_i,  q_k = sum ||y_i||^2.

Everything else is d x d algebra on them:

* fit on any union of folds: centred G_c = G - n mu mu^T, B_c = B - n mu ybar^T (with a
  bias), W^T = (G_c + n lam I)^-1 B_c, b = ybar - W mu;
* K-fold: one eigendecomposition of each training complement's G_c gives W for every lam
  (with the whole problem's penalty N lam ||W||^2, as scikit-learn's RidgeCV keeps one
  alpha = N lam for every fold), and the held-out fold's squared error follows from its
  own sums,
  SSE = tr(W G_v W^T) + 2 b^T W s_v - 2 tr(W B_v) + n_v ||b||^2 - 2 b^T t_v + q_v;
  the score is the mean over folds of SSE / (n_v C) (as ``GridSearchCV`` averages);
* GCV (Golub, Heath & Wahba): n SSE(lam) / (n - tr H(lam))^2 with tr H = sum_j e_j /
  (e_j + n lam) (+ 1 for the bias): no further pass;
* exact leave-one-out (scikit-learn ``RidgeCV``'s default): residuals r_i / (1 - h_ii),
  h_ii = [1/n] + z_i^T diag(1 / (e + n lam)) z_i with z_i = V^T (Phi_i - mu): one more
  pass over the data for all lambdas together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.linalg.blas import get_blas_funcs

from .sources import ArraySource, check_chunk

__all__ = ["RidgeStatistics", "fold_edges", "ridge_statistics", "solve_ridge", "ridge_cv_scores",
           "loo_scores"]


def fold_edges(n: int, k: int) -> np.ndarray:
    """Row boundaries of K contiguous folds as scikit-learn's KFold(k) cuts them (the
    first n % k folds one row longer): (K + 1,) int64."""
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def _targets(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1).astype(np.float64, copy=False)


def _chunk_statistics(start, stop, phi_src: ArraySource, y_src: ArraySource, edges):
    """Per-fold sums of rows [start, stop) (run by a runner, possibly on a worker)."""
    phi = phi_src.read(start, stop)
    y = y_src.read(start, stop)
    check_chunk(phi, start, "features")
    check_chunk(y, start, "targets")
    phi = phi.astype(np.float64, copy=False)
    y = _targets(y)
    k, d, c = len(edges) - 1, phi.shape[1], y.shape[1]
    n = np.zeros(k)
    gram = np.zeros((k, d, d))
    cross = np.zeros((k, d, c))
    sums = np.zeros((k, d))
    tsum = np.zeros((k, c))
    qsum = np.zeros(k)
    syrk = get_blas_funcs("syrk", (phi,))
    for f in range(k):
        lo, hi = max(start, edges[f]), min(stop, edges[f + 1])
        if lo >= hi:
            continue
        p, t = phi[lo - start:hi - start], y[lo - start:hi - start]
        upper = syrk(1.0, p.T, trans=0, lower=0)  # p.T is (d, n) Fortran: no copy
        gram[f] = upper + np.triu(upper, 1).T
        cross[f] = p.T @ t
        sums[f] = p.sum(axis=0)
        tsum[f] = t.sum(axis=0)
        qsum[f] = float((t * t).sum())
        n[f] = hi - lo
    return n, gram, cross, sums, tsum, qsum


@dataclass(frozen=True)
class RidgeStatistics:
    """Per-fold sums (module docstring); index -1 is not used: fold k is [k]."""

    n: np.ndarray  # (K,)
    gram: np.ndarray  # (K, d, d)
    cross: np.ndarray  # (K, d, C)
    sums: np.ndarray  # (K, d)
    tsum: np.ndarray  # (K, C)
    qsum: np.ndarray  # (K,)

    @property
    def folds(self) -> int:
        return len(self.n)

    def total(self, exclude: int | None = None) -> RidgeStatistics:
        """The sums over every fold but ``exclude`` (all folds if None), as one fold."""
        keep = [f for f in range(self.folds) if f != exclude]
        return RidgeStatistics(*(a[keep].sum(axis=0, keepdims=True) for a in
                                 (self.n, self.gram, self.cross, self.sums, self.tsum, self.qsum)))

    def fold(self, f: int) -> RidgeStatistics:
        return RidgeStatistics(*(a[f:f + 1] for a in
                                 (self.n, self.gram, self.cross, self.sums, self.tsum, self.qsum)))


def ridge_statistics(runner, phi: ArraySource, y: ArraySource, folds: int, chunk_rows: int,
                     progress=None) -> RidgeStatistics:
    """One pass over the data: the per-fold sums, in float64."""
    from .sources import row_chunks

    edges = fold_edges(phi.rows, folds)
    out = runner.map_sum(_chunk_statistics, row_chunks(phi.rows, chunk_rows), runner.prepare(phi),
                         runner.prepare(y), edges, progress=progress)
    return RidgeStatistics(*out)


def _centred(stats: RidgeStatistics, fit_bias: bool):
    """(n, G_c, B_c, mu, ybar) of a one-fold statistics object."""
    n = float(stats.n[0])
    gram, cross = stats.gram[0], stats.cross[0]
    mu, ybar = stats.sums[0] / n, stats.tsum[0] / n
    if fit_bias:
        gram = gram - n * np.outer(mu, mu)
        cross = cross - n * np.outer(mu, ybar)
    return n, gram, cross, mu, ybar


def solve_ridge(stats: RidgeStatistics, lam: float, fit_bias: bool):
    """(W (C, d), b (C,) or None) from one-fold statistics, by a Cholesky solve (SVD-based
    least squares when the system is singular, lam = 0 on rank-deficient features)."""
    n, gram, cross, mu, ybar = _centred(stats, fit_bias)
    a = gram + n * lam * np.eye(len(gram))
    try:
        wt = scipy.linalg.solve(a, cross, assume_a="pos", check_finite=False)
    except np.linalg.LinAlgError:
        wt = scipy.linalg.lstsq(a, cross, check_finite=False)[0]
    W = np.ascontiguousarray(wt.T)
    return W, (ybar - W @ mu) if fit_bias else None


def _eigen(gram):
    e, v = scipy.linalg.eigh(gram, check_finite=False)
    cutoff = max(e.max(initial=0.0), 0.0) * len(gram) * np.finfo(np.float64).eps
    keep = e > cutoff
    return e[keep], v[:, keep]


def _sse(W, b, v: RidgeStatistics) -> float:
    """Squared error of (W, b) on the rows summarised by one-fold statistics ``v``."""
    sse = float(np.einsum("cd,de,ce->", W, v.gram[0], W)) - 2 * float(np.einsum("cd,dc->", W, v.cross[0]))
    sse += float(v.qsum[0])
    if b is not None:
        sse += 2 * float(b @ (W @ v.sums[0])) + float(v.n[0]) * float(b @ b) - 2 * float(b @ v.tsum[0])
    return max(sse, 0.0)


def ridge_cv_scores(stats: RidgeStatistics, lams: np.ndarray, fit_bias: bool, method: str) -> np.ndarray:
    """(L,) criterion per lambda, lower is better: "kfold" (stats with K >= 2 folds: mean
    validation MSE over folds) or "gcv" (on all rows)."""
    c = stats.cross.shape[2]
    if method == "gcv":
        n, gram, cross, mu, ybar = _centred(stats.total(), fit_bias)
        e, v = _eigen(gram)
        proj = v.T @ cross
        out = []
        for lam in lams:
            W = (v @ (proj / (e + n * lam)[:, None])).T
            b = (ybar - W @ mu) if fit_bias else None
            trace = float((e / (e + n * lam)).sum()) + (1 if fit_bias else 0)
            out.append(n * _sse(W, b, stats.total()) / c / (n - trace) ** 2)
        return np.array(out)
    scores = np.zeros(len(lams))
    n_all = float(stats.n.sum())
    for f in range(stats.folds):
        n, gram, cross, mu, ybar = _centred(stats.total(exclude=f), fit_bias)
        e, v = _eigen(gram)
        proj = v.T @ cross
        held = stats.fold(f)
        for i, lam in enumerate(lams):
            # the penalty of the whole problem, N lam ||W||^2, also on a fold's n < N rows
            # (as RidgeCV and GridSearchCV use one alpha = N lam for every fold)
            W = (v @ (proj / (e + n_all * lam)[:, None])).T
            b = (ybar - W @ mu) if fit_bias else None
            scores[i] += _sse(W, b, held) / (float(held.n[0]) * c)
    return scores / stats.folds


def _chunk_loo(start, stop, phi_src, y_src, v, mu, ybar, coefs, inv, fit_bias, n):
    """Sum over rows [start, stop) of the squared leave-one-out residuals, for every lambda:
    coefs (L, r, C) = diag(1/(e + n lam)) V^T B_c, inv (L, r) = 1/(e + n lam)."""
    phi = phi_src.read(start, stop).astype(np.float64, copy=False)
    y = _targets(y_src.read(start, stop))
    z = (phi - mu) @ v if fit_bias else phi @ v  # (rows, r)
    z2 = z * z
    out = np.zeros(len(coefs))
    for i in range(len(coefs)):
        h = z2 @ inv[i] + (1.0 / n if fit_bias else 0.0)
        fitted = z @ coefs[i] + (ybar if fit_bias else 0.0)
        r = (y - fitted) / (1.0 - h)[:, None]
        out[i] = float((r * r).sum())
    return (out,)


def loo_scores(runner, phi: ArraySource, y: ArraySource, stats: RidgeStatistics, lams,
               fit_bias: bool, chunk_rows: int, progress=None) -> np.ndarray:
    """(L,) mean squared exact leave-one-out residual per lambda (a second data pass)."""
    from .sources import row_chunks

    n, gram, cross, mu, ybar = _centred(stats.total(), fit_bias)
    e, v = _eigen(gram)
    proj = v.T @ cross
    inv = np.array([1.0 / (e + n * lam) for lam in lams])  # (L, r)
    coefs = inv[:, :, None] * proj[None]  # (L, r, C)
    (sums,) = runner.map_sum(_chunk_loo, row_chunks(phi.rows, chunk_rows), runner.prepare(phi),
                             runner.prepare(y), v, mu, ybar, coefs, inv, fit_bias, n,
                             progress=progress)
    return sums / (n * cross.shape[1])
