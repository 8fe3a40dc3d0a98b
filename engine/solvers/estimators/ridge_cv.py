"""The ridge head from sufficient statistics, lambda chosen by K-fold, leave-one-out or GCV.

Objective (mean convention, docs/claims.md): J(W, b) = (1/N) ||Phi W^T + 1 b^T - Y||^2 +
lam ||W||^2, the bias unpenalised; scikit-learn's ``Ridge(alpha=N lam)`` minimises the same.

Statistics. One pass over the data (in chunks, by a runner: in memory, streamed from disk or
on Dask) accumulates, per fold k of K contiguous folds (scikit-learn's ``KFold`` without
shuffling), in float64, *centred* sums of the rows shifted by the first row (s = Phi_0,
t = y_0: every product is of differences of nearby numbers, so features offset by 1e8 keep
their digits):

    n_k,  m_k = mean(Phi_i - s),  G_k = sum (Phi_i - s - m_k)(Phi_i - s - m_k)^T  (d x d),
    B_k = sum (Phi_i - s - m_k)(y_i - t - ybar_k)^T  (d x C),
    ybar_k = mean(y_i - t),  q_k = sum ||y_i - t - ybar_k||^2.

A chunk computes its own means and centred sums (two passes over the chunk in memory); two
sets are merged by the pairwise update of Chan, Golub & LeVeque (1979),

    n = n_a + n_b,  delta = m_b - m_a,  m = m_a + delta n_b / n,
    G = G_a + G_b + (n_a n_b / n) delta delta^T      (B and q alike, with the target deltas),

which adds only non-negative terms: merging chunks on Dask workers (``runners``, the same
fixed tree) and merging the folds of a K-fold complement lose no digits, where
G - N mu mu^T from raw sums loses log10(|mu|^2 / var(Phi)) of them (a 3e-3 error against
scikit-learn at an offset of 1e6 before). Without a bias the raw sums are rebuilt from
these, G_0 = G + n mu mu^T (a sum of non-negative terms).

Solve on any union of folds: W^T = (G + n lam I)^-1 B, b = ybar - W mu (mu = s + m).

Cross-validation, with G = V diag(e) V^T (eigenvalues e_j above the rank cut-off, at most
n - [bias] of them: r), c_j = V_j^T B (1 x C) and rho_j = n lam / (e_j + n lam) in (0, 1):

* K-fold: one eigendecomposition per training complement gives W for every lam (with the
  whole problem's penalty N lam ||W||^2, as scikit-learn's RidgeCV keeps one alpha = N lam
  for every fold); the held-out fold v's squared error follows from its centred sums,
  SSE = [tr(W G_v W^T) - 2 tr(W B_v) + q_v] + n_v ||W m_v + b' - ybar_v||^2 (b' the
  intercept in the shifted coordinates); the score is the mean over folds of SSE / (n_v C)
  (as ``GridSearchCV`` averages). The bracket cancels when the held-out fit is nearly
  exact: where its rounding, about (d + C + sqrt(n)) eps/2 times the magnitudes summed
  (tr G_v ||W||^2 + 2 ||W|| ||B_v|| + q_v), could exceed ``TRUST`` = 1e-9 of it, those
  folds' errors are summed row by row in one more pass over their rows.
* GCV (Golub, Heath & Wahba 1979): n SSE(lam) / (C (n - tr H(lam))^2), written without
  cancellation as

      SSE(lam) = ||P_perp Y||^2 + sum_j ||c_j||^2 rho_j^2 / e_j,
      n - tr H(lam) = (n - [bias] - r) + sum_j rho_j,

  P_perp the projection onto the complement of the (centred) features' column space. At
  full row rank (r = n - [bias]: N <= d, features in general position) ||P_perp Y||^2 = 0;
  otherwise it is q - sum_j ||c_j||^2 / e_j when that difference is resolved (``TRUST``,
  with the magnitude q + e_max sum_j ||c_j||^2 / e_j^2), else summed row by row in one more pass,
  ||y_i - ybar - z_i diag(1/e) c||^2 with z_i = V^T (Phi_i - mu). Before, the residual
  q - 2 tr(W B) + tr(W G W^T) cancelled to 0 at N < d and GCV always chose the smallest lam.
* exact leave-one-out (scikit-learn ``RidgeCV``'s default): residuals r_i / (1 - h_ii) in
  one more pass for all lambdas together, both parts written as a lambda-independent term
  plus positive ones,

      r_i = [y_i - ybar - z_i diag(1/e) c] + z_i diag(rho / e) c,
      1 - h_ii = [1 - 1/n - z_i diag(1/e) z_i^T] + z_i diag(rho / e) z_i^T,

  the brackets (the projection's residual and leverage complement) exactly 0 at full row
  rank ([1/n] and ybar only with a bias).

The lambdas must be > 0 (the GCV and LOO denominators vanish at lam = 0 at full row rank)
and N lam at most ``lastlayer.engine._checks.LAM_ROWS_MAX``; at full row rank both criteria
are divided through by max_j rho_j, so that no square of a small rho underflows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.linalg.blas import get_blas_funcs

from ..streaming.sources import ArraySource, check_chunk, fold_edges, ranges_of, row_chunks

__all__ = ["RidgeStatistics", "ridge_statistics", "merge_statistics", "solve_ridge",
           "ridge_cv_scores", "ridge_kkt", "TRUST"]

TRUST = 1e-9  # relative accuracy asked of a quantity taken from the sums (else: a row pass)
_U = np.finfo(np.float64).eps / 2


def _targets(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1).astype(np.float64, copy=False)


def _rows(start, stop, phi_src: ArraySource, y_src: ArraySource, shift, yshift):
    """Rows [start, stop) shifted by the first row: (Phi - s, y - t), float64, checked finite."""
    phi = phi_src.read(start, stop)
    y = y_src.read(start, stop)
    check_chunk(phi, start, "features")
    check_chunk(y, start, "targets")
    return phi.astype(np.float64, copy=False) - shift, _targets(y) - yshift


def _chunk_statistics(start, stop, phi_src: ArraySource, y_src: ArraySource, edges, shift, yshift):
    """Per-fold centred sums of rows [start, stop) (run by a runner, possibly on a worker)."""
    p, t = _rows(start, stop, phi_src, y_src, shift, yshift)
    k, d, c = len(edges) - 1, p.shape[1], t.shape[1]
    n = np.zeros(k)
    mean = np.zeros((k, d))
    gram = np.zeros((k, d, d))
    cross = np.zeros((k, d, c))
    ymean = np.zeros((k, c))
    qsum = np.zeros(k)
    syrk = get_blas_funcs("syrk", (p,))
    for f in range(k):
        lo, hi = max(start, edges[f]), min(stop, edges[f + 1])
        if lo >= hi:
            continue
        pf, tf = p[lo - start:hi - start], t[lo - start:hi - start]
        mean[f], ymean[f] = pf.mean(axis=0), tf.mean(axis=0)
        pc, tc = pf - mean[f], tf - ymean[f]
        upper = syrk(1.0, pc.T, trans=0, lower=0)  # pc.T is (d, n) Fortran: no copy
        gram[f] = upper + np.triu(upper, 1).T
        cross[f] = pc.T @ tc
        qsum[f] = float((tc * tc).sum())
        n[f] = hi - lo
    return n, mean, gram, cross, ymean, qsum


def merge_statistics(a: tuple, b: tuple) -> tuple:
    """The pairwise (Chan et al.) merge of two tuples of per-fold centred sums (n, m, G, B,
    ybar, q), fold by fold (module docstring); an empty fold (n = 0) merges as nothing."""
    na, ma, ga, ba, ya, qa = a
    nb, mb, gb, bb, yb, qb = b
    n = na + nb
    wb = nb / np.maximum(n, 1.0)  # n_b / n (0 for two empty folds)
    f = na * wb  # n_a n_b / n
    dm, dy = mb - ma, yb - ya
    mean = ma + dm * wb[:, None]
    ymean = ya + dy * wb[:, None]
    gram = ga + gb + f[:, None, None] * (dm[:, :, None] * dm[:, None, :])
    cross = ba + bb + f[:, None, None] * (dm[:, :, None] * dy[:, None, :])
    qsum = qa + qb + f * (dy * dy).sum(axis=1)
    return n, mean, gram, cross, ymean, qsum


@dataclass(frozen=True)
class RidgeStatistics:
    """Per-fold centred sums (module docstring): fold k is index k of each array."""

    n: np.ndarray  # (K,)
    mean: np.ndarray  # (K, d): mean of Phi - shift
    gram: np.ndarray  # (K, d, d): centred scatter
    cross: np.ndarray  # (K, d, C)
    ymean: np.ndarray  # (K, C): mean of y - yshift
    qsum: np.ndarray  # (K,): sum ||y - yshift - ymean||^2
    shift: np.ndarray  # (d,): Phi_0
    yshift: np.ndarray  # (C,): y_0

    @property
    def folds(self) -> int:
        return len(self.n)

    def _parts(self, f: int) -> tuple:
        return tuple(a[f:f + 1] for a in (self.n, self.mean, self.gram, self.cross, self.ymean, self.qsum))

    def total(self, exclude: int | None = None) -> RidgeStatistics:
        """The sums over every fold but ``exclude`` (all folds if None), as one fold,
        merged in fold order."""
        keep = [f for f in range(self.folds) if f != exclude]
        out = self._parts(keep[0])
        for f in keep[1:]:
            out = merge_statistics(out, self._parts(f))
        return RidgeStatistics(*out, self.shift, self.yshift)

    def fold(self, f: int) -> RidgeStatistics:
        return RidgeStatistics(*self._parts(f), self.shift, self.yshift)

    @property
    def mu(self) -> np.ndarray:
        """mean(Phi) of a one-fold statistics object."""
        return self.shift + self.mean[0]

    @property
    def ybar(self) -> np.ndarray:
        return self.yshift + self.ymean[0]


def ridge_statistics(runner, phi: ArraySource, y: ArraySource, folds: int, chunk_rows: int,
                     progress=None) -> RidgeStatistics:
    """One pass over the data: the per-fold centred sums, in float64 (module docstring)."""
    first = phi.read(0, 1)  # the shift; a non-finite row 0 is reported by the chunk pass,
    first_y = y.read(0, 1)  # which counts every bad entry of its chunk
    shift = first.astype(np.float64).reshape(-1)
    yshift = _targets(first_y).reshape(-1)
    edges = fold_edges(phi.rows, folds)
    out = runner.map_sum(_chunk_statistics, row_chunks(phi.rows, chunk_rows), runner.prepare(phi),
                         runner.prepare(y), edges, shift, yshift, progress=progress,
                         combine=merge_statistics)
    stats = RidgeStatistics(*out, shift, yshift)
    if not (np.isfinite(stats.gram).all() and np.isfinite(stats.mean).all()):
        raise ValueError(f"X: the features' sums of squares overflow float64 (largest |x| = "
                         f"{np.abs(shift).max():.3g} in row 0); rescale the features")
    if not (np.isfinite(stats.cross).all() and np.isfinite(stats.qsum).all()):
        raise ValueError("y: the targets' sums of squares (or their products with the features) "
                         "overflow float64; rescale the targets")
    return stats


def _system(st: RidgeStatistics, fit_bias: bool):
    """(n, G, B, q) of the system solved on one-fold statistics: the centred sums with a
    bias, the raw sums about 0 without (G_0 = G + n mu mu^T, B_0 = B + n mu ybar^T,
    q_0 = q + n ||ybar||^2)."""
    n = float(st.n[0])
    gram, cross, q = st.gram[0], st.cross[0], float(st.qsum[0])
    if not fit_bias:
        mu, ybar = st.mu, st.ybar
        gram = gram + n * np.outer(mu, mu)
        cross = cross + n * np.outer(mu, ybar)
        q = q + n * float(ybar @ ybar)
    return n, gram, cross, q


def _shifted_intercept(st: RidgeStatistics, W, fit_bias: bool) -> np.ndarray:
    """b' of the model in the shifted coordinates, y - t = W (Phi - s) + b': ybar' - W m'
    with a bias (W fitted on ``st``), W s - t without."""
    if fit_bias:
        return st.ymean[0] - W @ st.mean[0]
    return W @ st.shift - st.yshift


def solve_ridge(stats: RidgeStatistics, lam: float, fit_bias: bool):
    """(W (C, d), b (C,) or None) from one-fold statistics, by a Cholesky solve (SVD-based
    least squares when the system is singular, lam = 0 on rank-deficient features)."""
    n, gram, cross, _ = _system(stats, fit_bias)
    a = gram + n * lam * np.eye(len(gram))
    try:
        wt = scipy.linalg.solve(a, cross, assume_a="pos", check_finite=False)
    except np.linalg.LinAlgError:
        wt = scipy.linalg.lstsq(a, cross, check_finite=False)[0]
    W = np.ascontiguousarray(wt.T)
    return W, (stats.ybar - W @ stats.mu) if fit_bias else None


def ridge_kkt(stats: RidgeStatistics, W, b, lam: float) -> float:
    """||grad J|| at (W, b) from the centred sums of all rows, with r0 = W mu + b - ybar
    (the mean residual):

        dJ/dW = (2/n)(W G - B^T) + 2 lam W + [2 r0 mu^T without a bias],   dJ/db = 2 r0.

    With a bias the gradient is taken in the coordinates (W, b + W mu) of the centred
    features, where the term 2 r0 mu^T vanishes: in the raw ones the rounding of b (about
    eps |b|) times mean(Phi) would dominate it on offset features, whatever the solver."""
    n = float(stats.n[0])
    r0 = W @ stats.mu + (0.0 if b is None else b) - stats.ybar
    gW = (2 / n) * (W @ stats.gram[0] - stats.cross[0].T) + 2 * lam * W
    if b is None:
        gW += 2 * np.outer(r0, stats.mu)
        return float(np.sqrt((gW * gW).sum()))
    return float(np.sqrt((gW * gW).sum() + 4 * (r0 * r0).sum()))


def _eigen(gram, cap: int):
    """Eigenpairs of the PSD ``gram`` above the rank cut-off (e_max d eps), at most ``cap``
    of them (the rank of the centred features cannot exceed n - [bias]), largest last."""
    e, v = scipy.linalg.eigh(gram, check_finite=False)
    cutoff = max(e.max(initial=0.0), 0.0) * len(gram) * np.finfo(np.float64).eps
    keep = np.flatnonzero(e > cutoff)[-max(cap, 0):] if cap > 0 else np.zeros(0, dtype=np.int64)
    return e[keep], v[:, keep]


def _resolved(value: float, magnitude: float, terms: float) -> bool:
    """True when ``value``, computed as a difference of sums of about ``magnitude``, is
    known to ``TRUST`` relative accuracy: its rounding, about ``terms`` eps/2 magnitude, is
    below TRUST value (module docstring)."""
    return value > 0 and terms * _U * magnitude <= TRUST * value


def _system_rows(start, stop, phi_src, y_src, stats_arrays, fit_bias):
    """Rows [start, stop) in the coordinates of the system (``_system``): centred, Phi - mu
    and y - ybar (as (Phi - s) - m', (y - t) - ybar'), with a bias; raw without.
    ``stats_arrays`` = (s, t, m', ybar')."""
    shift, yshift, m, ym = stats_arrays
    if fit_bias:
        p, t = _rows(start, stop, phi_src, y_src, shift, yshift)
        return p - m, t - ym
    return _rows(start, stop, phi_src, y_src, 0.0, 0.0)


# ---- K-fold ----------------------------------------------------------------------------------------
def _chunk_fold_sse(start, stop, phi_src, y_src, edges, folds, models, fit_bias, n_lams):
    """Squared errors of rows [start, stop) under their own fold's models, for every lambda:
    ``models[i]`` = (centre, V, e, V^T B) of the training complement of fold ``folds[i]``
    (W(lam)^T = V diag(1 / (e + N lam)) V^T B), ``n_lams`` (L,) = N lam. Returns ((F, L) sums,)."""
    out = np.zeros((len(folds), len(n_lams)))
    for i, f in enumerate(folds):
        lo, hi = max(start, edges[f]), min(stop, edges[f + 1])
        if lo >= hi:
            continue
        centre, v, e, proj = models[i]
        xc, yc = _system_rows(lo, hi, phi_src, y_src, centre, fit_bias)
        z = xc @ v  # (rows, r)
        for j, nl in enumerate(n_lams):
            r = z @ (proj / (e + nl)[:, None]) - yc  # W (x - mu) - (y - ybar): the residual
            out[i, j] = float((r * r).sum())
    return (out,)


def _kfold_scores(runner, phi, y, stats: RidgeStatistics, lams, fit_bias, chunk_rows, progress):
    c = stats.cross.shape[2]
    d = stats.gram.shape[1]
    n_all = float(stats.n.sum())
    terms = d + c + math.sqrt(n_all)
    sse = np.zeros((stats.folds, len(lams)))
    redo, models = [], []
    for f in range(stats.folds):
        train, held = stats.total(exclude=f), stats.fold(f)
        n, gram, cross, _ = _system(train, fit_bias)
        e, v = _eigen(gram, int(round(n)) - (1 if fit_bias else 0))
        proj = v.T @ cross
        gv, bv, qv, nv = held.gram[0], held.cross[0], float(held.qsum[0]), float(held.n[0])
        resolved = True
        for i, lam in enumerate(lams):
            # the penalty of the whole problem, N lam ||W||^2, also on a fold's n < N rows
            # (as RidgeCV and GridSearchCV use one alpha = N lam for every fold)
            W = (v @ (proj / (e + n_all * lam)[:, None])).T
            b = _shifted_intercept(train, W, fit_bias)
            quad = float(np.einsum("cd,de,ce->", W, gv, W)) - 2 * float(np.einsum("cd,dc->", W, bv)) + qv
            w2 = float((W * W).sum())
            magnitude = float(np.trace(gv)) * w2 + 2 * math.sqrt(w2 * float((bv * bv).sum())) + qv
            resolved &= _resolved(quad, magnitude, terms)
            r0 = W @ held.mean[0] + b - held.ymean[0]
            sse[f, i] = max(quad, 0.0) + nv * float(r0 @ r0)
        if not resolved:
            redo.append(f)
            models.append(((stats.shift, stats.yshift, train.mean[0], train.ymean[0]), v, e, proj))
    if redo:  # the held-out errors of these folds, row by row (module docstring)
        edges = fold_edges(phi.rows, stats.folds)
        ranges = ranges_of([(int(edges[f]), int(edges[f + 1])) for f in redo], chunk_rows)
        (exact,) = runner.map_sum(_chunk_fold_sse, ranges, runner.prepare(phi), runner.prepare(y),
                                  edges, redo, models, fit_bias, n_all * np.asarray(lams), progress=progress)
        sse[redo] = exact
    return (sse / (stats.n[:, None] * c)).mean(axis=0)


# ---- GCV and leave-one-out on all rows -------------------------------------------------------------
@dataclass(frozen=True)
class _Spectrum:
    """The eigenbasis of the whole problem's system (module docstring)."""

    n: float
    e: np.ndarray  # (r,)
    v: np.ndarray  # (d, r)
    c: np.ndarray  # (r, C) = V^T B
    q: float
    full: bool  # r = n - [bias]: P_perp Y = 0 and the leverage complements are 0
    bias: int
    centre: tuple  # (s, t, m', ybar'): the rows' coordinates (``_system_rows``)


def _spectrum(stats: RidgeStatistics, fit_bias: bool) -> _Spectrum:
    total = stats.total()
    n, gram, cross, q = _system(total, fit_bias)
    bias = 1 if fit_bias else 0
    cap = int(round(n)) - bias
    e, v = _eigen(gram, cap)
    centre = (stats.shift, stats.yshift, total.mean[0], total.ymean[0])
    return _Spectrum(n, e, v, v.T @ cross, q, len(e) == cap, bias, centre)


def _ratios(sp: _Spectrum, lam: float):
    """rho_j = n lam / (e_j + n lam) and the scale they are divided by: max rho at full
    row rank (no square of a small rho underflows), else 1."""
    nl = sp.n * lam
    rho = nl / (sp.e + nl)
    scale = float(rho.max()) if sp.full and rho.size else 1.0
    return rho, scale


def _chunk_perp(start, stop, phi_src, y_src, centre, fit_bias, v, proj):
    """Sum over rows [start, stop) of ||P_perp y||^2: ||y_c - z diag(1/e) c||^2, z = V^T x_c
    (``proj`` = diag(1/e) c)."""
    xc, yc = _system_rows(start, stop, phi_src, y_src, centre, fit_bias)
    r = yc - (xc @ v) @ proj
    return (np.array([float((r * r).sum())]),)


def _gcv_scores(runner, phi, y, stats, lams, fit_bias, chunk_rows, progress):
    sp = _spectrum(stats, fit_bias)
    c = sp.c.shape[1]
    cc = (sp.c * sp.c).sum(axis=1)
    if sp.full:
        perp2 = 0.0
    else:
        perp2 = sp.q - float((cc / sp.e).sum())
        magnitude = sp.q + (float(sp.e.max()) * float((cc / sp.e ** 2).sum()) if sp.e.size else 0.0)
        if not _resolved(perp2, magnitude, len(stats.shift) + c + math.sqrt(sp.n)):
            (out,) = runner.map_sum(_chunk_perp, row_chunks(phi.rows, chunk_rows), runner.prepare(phi),
                                    runner.prepare(y), sp.centre, fit_bias, sp.v,
                                    sp.c / sp.e[:, None], progress=progress)
            perp2 = float(out[0])
    free = sp.n - sp.bias - len(sp.e)  # n - [bias] - r
    scores = []
    for lam in lams:
        rho, scale = _ratios(sp, lam)
        r = rho / scale
        sse = perp2 / scale ** 2 + float((cc / sp.e * r * r).sum())
        dof = free / scale + float(r.sum())
        scores.append(sp.n * sse / c / dof ** 2)
    return np.array(scores)


def _chunk_loo(start, stop, phi_src, y_src, centre, bias, v, e, proj, full, n, weights, scales):
    """Sum over rows [start, stop) of the squared leave-one-out residuals for every lambda
    (module docstring): weights (L, r) = rho / (e scale), scales (L,)."""
    xc, yc = _system_rows(start, stop, phi_src, y_src, centre, bool(bias))
    z = xc @ v  # (rows, r)
    z2 = z * z
    if full:
        perp, lev = np.zeros_like(yc), np.zeros(len(z))
    else:
        perp = yc - z @ (proj / e[:, None])  # the projection's residual
        lev = np.maximum(1.0 - bias / n - z2 @ (1.0 / e), 0.0)  # its leverage complement, >= 0
    out = np.zeros(len(weights))
    for i in range(len(weights)):
        num = perp / scales[i] + z @ (weights[i][:, None] * proj)
        den = lev / scales[i] + z2 @ weights[i]
        r = num / den[:, None]
        out[i] = float((r * r).sum())
    return (out,)


def _loo_scores(runner, phi, y, stats, lams, fit_bias, chunk_rows, progress):
    sp = _spectrum(stats, fit_bias)
    weights, scales = [], []
    for lam in lams:
        rho, scale = _ratios(sp, lam)
        weights.append(rho / (sp.e * scale))
        scales.append(scale)
    (sums,) = runner.map_sum(_chunk_loo, row_chunks(phi.rows, chunk_rows), runner.prepare(phi),
                             runner.prepare(y), sp.centre, sp.bias, sp.v, sp.e, sp.c, sp.full, sp.n,
                             np.array(weights).reshape(len(lams), -1),
                             np.array(scales), progress=progress)
    return sums / (sp.n * sp.c.shape[1])


def ridge_cv_scores(runner, phi: ArraySource, y: ArraySource, stats: RidgeStatistics, lams,
                    fit_bias: bool, method: str, chunk_rows: int, progress=None) -> np.ndarray:
    """(L,) criterion per lambda (each >= 0), lower is better (module docstring):
    "kfold" (stats with K >= 2 folds: mean held-out MSE over folds), "gcv" or "loo" (the
    mean squared exact leave-one-out residual) on all rows. "loo" takes one more pass over
    the data; "kfold" and "gcv" only where the sums cannot resolve the residual."""
    lams = np.asarray(lams, dtype=np.float64)
    if method == "kfold":
        return _kfold_scores(runner, phi, y, stats, lams, fit_bias, chunk_rows, progress)
    if float(stats.n.sum()) < 2:
        raise ValueError(f"cv: {method} needs at least 2 rows, got {int(stats.n.sum())}")
    if method == "gcv":
        return _gcv_scores(runner, phi, y, stats, lams, fit_bias, chunk_rows, progress)
    if method == "loo":
        return _loo_scores(runner, phi, y, stats, lams, fit_bias, chunk_rows, progress)
    raise ValueError(f"method: expected 'kfold', 'gcv' or 'loo', got {method!r}")
