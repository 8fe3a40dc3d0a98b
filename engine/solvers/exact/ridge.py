"""Exact closed forms for a squared-loss last layer (Moreau & Audiffren 2017, eqs. 7-8).

Objective (docs/claims.md, the mean-loss convention used everywhere in lastlayer)::

    J(W) = (1/N) ||Phi W^T - Y||_F^2 + lam ||W||_F^2,     Phi: (N, d), Y: (N, C), W: (C, d)

Setting the gradient (2/N) (Phi W^T - Y)^T Phi + 2 lam W to zero gives

    primal:  W^T = (Phi^T Phi + N lam I_d)^-1 Phi^T Y                       (d x d system)
    dual:    alpha = (Phi Phi^T + N lam I_N)^-1 Y,  W^T = Phi^T alpha         (N x N system)

which agree by the push-through identity. The paper's eq. 8 writes ``lam`` where the mean
convention needs ``N lam``: it solves the *summed* loss (their released code uses N lam).

Numerics (as scikit-learn's ``_ridge.py``): the Gram matrix is formed with one symmetric
rank-k update (BLAS ``syrk``, half the flops of a general product), ``N lam`` is added to
its diagonal in place, and the system is solved by Cholesky, never by an explicit
inverse. ``auto`` picks the primal system when d <= N and the dual otherwise. When the
system is not positive definite (lam = 0 and Phi rank-deficient), the SVD gives the
minimum-norm solution, with a warning. Forming Phi^T Phi squares the condition number of
Phi: in float32 that loses every digit from cond(Phi) ~ 4e3 on, so a float32 system whose
LAPACK condition estimate shows more than half the digits lost (rcond < sqrt(eps32)) is
solved again in float64 and W rounded to float32 once (``FLOAT32_RCOND_MIN``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.linalg
from scipy.linalg.blas import get_blas_funcs

from ..._checks import LAM_ROWS_MAX, all_finite, float_array, penalty

__all__ = ["RidgeSolution", "ridge", "ridge_path", "GramAccumulator", "kernel_ridge",
           "rkhs_norm", "ridge_objective", "ridge_gradient", "RankDeficientWarning"]


class RankDeficientWarning(RuntimeWarning):
    """The ridge system was singular; the minimum-norm solution was returned instead."""


class RidgeSolution(NamedTuple):
    W: np.ndarray  # (C, d)
    b: np.ndarray | None  # (C,) unpenalised bias, or None without fit_bias
    method: str  # "primal", "dual" or "svd": the method that produced W


# ---- validation ------------------------------------------------------------------------
def _check_problem(phi, y, lam):
    float_array(phi, "Phi")
    if phi.ndim != 2 or phi.shape[0] == 0 or phi.shape[1] == 0:
        raise ValueError(f"Phi: expected shape (N, d) with N, d >= 1, got {tuple(phi.shape)}")
    float_array(y, "Y")
    if y.ndim not in (1, 2) or y.shape[0] != phi.shape[0]:
        raise ValueError(f"Y: expected shape ({phi.shape[0]}, C) or ({phi.shape[0]},) to match "
                         f"Phi's {phi.shape[0]} rows, got {tuple(y.shape)}")
    if y.dtype != phi.dtype:
        raise TypeError(f"Y: dtype {y.dtype} does not match Phi's dtype {phi.dtype}")
    all_finite(phi, "Phi")
    all_finite(y, "Y")
    penalty(lam, phi.shape[0], "lam", allow_zero=True)  # N lam <= LAM_ROWS_MAX: no product overflows
    return y.reshape(len(y), -1)  # (N, C)


# ---- Gram matrices (one syrk each) ---------------------------------------------------------
def _gram_features(phi):
    """Upper triangle of Phi^T Phi (d, d), Fortran order, as LAPACK's Cholesky reads it."""
    syrk = get_blas_funcs("syrk", (phi,))
    return syrk(1.0, phi.T, trans=0, lower=0)  # phi.T is (d, N) Fortran-contiguous: no copy


def _gram_samples(phi):
    """Upper triangle of Phi Phi^T (N, N), Fortran order."""
    syrk = get_blas_funcs("syrk", (phi,))
    return syrk(1.0, phi.T, trans=1, lower=0)


def _add_to_diagonal(a, value):
    a.flat[:: a.shape[0] + 1] += value  # in place, no N x N identity built


def _cholesky_solve(a, rhs):
    """Solve a x = rhs for symmetric positive definite a (upper triangle used, overwritten);
    raises LinAlgError if a is not positive definite. Returns x and LAPACK's estimate of
    the reciprocal condition number of a (1-norm)."""
    upper = np.triu(a)
    anorm = float(np.abs(upper + np.triu(a, 1).T).sum(axis=0).max())  # ||a||_1 of the symmetric a
    factor = scipy.linalg.cho_factor(a, lower=False, overwrite_a=True, check_finite=False)
    pocon = scipy.linalg.get_lapack_funcs("pocon", (factor[0],))
    rcond, _ = pocon(factor[0], anorm, uplo="U")
    return scipy.linalg.cho_solve(factor, rhs, check_finite=False), float(rcond)


# float32 normal equations square cond(Phi): where the system's reciprocal condition falls
# below sqrt(eps32) (more than half of float32's digits lost), it is solved again in float64.
FLOAT32_RCOND_MIN = float(np.sqrt(np.finfo(np.float32).eps))


def _svd_solve(phi, y, n_lam):
    """W^T = V diag(s / (s^2 + N lam)) U^T Y, singular values below the rank cut-off
    dropped (the minimum-norm solution when lam = 0). The cut-off is the usual
    max(s) max(N, d) eps, and at least sqrt(tiny) of the dtype: a singular value whose
    square underflows (float32 features of 1e-44, subnormal) is numerically zero."""
    u, s, vt = scipy.linalg.svd(phi, full_matrices=False, check_finite=False)
    info = np.finfo(phi.dtype)
    cutoff = max(s.max(initial=0.0) * max(phi.shape) * info.eps, float(np.sqrt(info.tiny)))
    keep = s > cutoff
    scale = np.zeros_like(s)
    scale[keep] = s[keep] / (s[keep] ** 2 + n_lam)
    return vt.T @ (scale[:, None] * (u.T @ y))  # (d, C)


def _normal_equations(phi, y, n_lam, method):
    """W^T (d, C) from the primal (d x d) or dual (N x N) system, and its rcond."""
    if method == "primal":
        a = _gram_features(phi)  # (d, d)
        _add_to_diagonal(a, n_lam)
        return _cholesky_solve(a, phi.T @ y)  # (d, C)
    k = _gram_samples(phi)  # (N, N)
    _add_to_diagonal(k, n_lam)
    alpha, rcond = _cholesky_solve(k, y)
    return phi.T @ alpha, rcond  # W^T = Phi^T alpha


def ridge(Phi, Y, lam: float, method: str = "auto", fit_bias: bool = False) -> RidgeSolution:
    """The minimiser of J(W) = (1/N) ||Phi W^T - Y||^2 + lam ||W||^2 (module docstring).

    Parameters
    ----------
    Phi : (N, d) features, float32 or float64, finite
    Y : (N, C) or (N,) targets of Phi's dtype (a 1-D Y is one output: W is then (1, d))
    lam : >= 0, with N lam <= 1e150 (``lastlayer.engine._checks.LAM_ROWS_MAX``: no product overflows)
    method : "auto" (primal if d <= N else dual), "primal", "dual" or "svd"
    fit_bias : also fit an unpenalised bias b, by centring Phi and Y on their means
        (then b = mean(Y) - W mean(Phi))

    Returns ``RidgeSolution(W, b, method)``; ``method`` says which solver produced W
    ("svd" after a fall-back, which also warns ``RankDeficientWarning``).
    """
    y = _check_problem(Phi, Y, lam)
    if method not in ("auto", "primal", "dual", "svd"):
        raise ValueError(f"method: expected 'auto', 'primal', 'dual' or 'svd', got {method!r}")
    phi = Phi
    if fit_bias:
        phi_mean, y_mean = Phi.mean(axis=0), y.mean(axis=0)
        phi, y = Phi - phi_mean, y - y_mean
    n, d = phi.shape
    n_lam = n * lam
    if method == "auto":
        method = "primal" if d <= n else "dual"

    wt = None
    if method in ("primal", "dual"):
        try:
            try:
                wt, rcond = _normal_equations(phi, y, n_lam, method)
                refine = phi.dtype == np.float32 and rcond < FLOAT32_RCOND_MIN
            except np.linalg.LinAlgError:
                if phi.dtype != np.float32:
                    raise
                refine = True  # singular in float32 need not be singular in float64
            if refine:
                wt, _ = _normal_equations(phi.astype(np.float64), y.astype(np.float64), n_lam, method)
                if np.abs(wt).max(initial=0.0) > np.finfo(np.float32).max:
                    # the float64 solution does not fit float32: rank-deficient in float32
                    raise np.linalg.LinAlgError("the float64 solution overflows float32")
                wt = wt.astype(np.float32)
        except np.linalg.LinAlgError:
            warnings.warn(f"ridge: the {method} system with lam = {lam:g} is not positive definite "
                          f"(Phi is rank-deficient); returning the minimum-norm solution from the SVD",
                          RankDeficientWarning, stacklevel=2)
            method = "svd"
    if method == "svd":
        wt = _svd_solve(phi, y, n_lam)
    W = np.ascontiguousarray(wt.T)  # (C, d)
    b = (y_mean - W @ phi_mean) if fit_bias else None
    return RidgeSolution(W, b, method)


def ridge_objective(W, Phi, Y, lam: float) -> float:
    """J(W) = (1/N) ||Phi W^T - Y||_F^2 + lam ||W||_F^2."""
    r = Phi @ W.T - Y.reshape(len(Y), -1)
    return float((r * r).sum() / len(Phi) + lam * (W * W).sum())


def ridge_gradient(W, Phi, Y, lam: float) -> np.ndarray:
    """dJ/dW = (2/N) (Phi W^T - Y)^T Phi + 2 lam W, shape (C, d)."""
    r = Phi @ W.T - Y.reshape(len(Y), -1)
    return (2 / len(Phi)) * (r.T @ Phi) + 2 * lam * W


# ---- many lambdas from one decomposition ---------------------------------------------------
def ridge_path(Phi, Y, lams: Iterable[float]) -> np.ndarray:
    """Ridge solutions for every ``lam`` of ``lams`` from one symmetric eigendecomposition.

    d <= N: Phi^T Phi = Q diag(e) Q^T, W(lam)^T = Q ((Q^T Phi^T Y) / (e + N lam)).
    d >  N: Phi Phi^T = Q diag(e) Q^T, W(lam)^T = Phi^T Q ((Q^T Y) / (e + N lam)).
    One O(N d min(N, d)) decomposition, then O(min(N, d) (d + N) C) per lambda instead of a
    new factorisation. Eigenvalues below the rank cut-off are dropped (minimum norm at lam = 0;
    for lam = 0 on ill-conditioned data prefer ``ridge(method="svd")``, which does not square
    the condition number).

    Returns W of shape (len(lams), C, d).
    """
    lams = np.asarray(list(lams), dtype=np.float64)
    y = _check_problem(Phi, Y, 0.0)
    if lams.ndim != 1 or lams.size == 0 or not np.all(np.isfinite(lams)) or np.any(lams < 0) or \
            np.any(lams * len(Phi) > LAM_ROWS_MAX):
        raise ValueError(f"lams: expected a non-empty sequence of finite numbers >= 0 with N lam <= "
                         f"{LAM_ROWS_MAX:g} (N = {len(Phi)}), got {lams}")
    n, d = Phi.shape
    primal = d <= n
    gram = Phi.T @ Phi if primal else Phi @ Phi.T
    e, q = scipy.linalg.eigh(gram, check_finite=False)
    cutoff = max(e.max(initial=0.0), 0.0) * max(n, d) * np.finfo(Phi.dtype).eps
    keep = e > cutoff
    e, q = e[keep], q[:, keep]
    proj = q.T @ (Phi.T @ y) if primal else q.T @ y  # (r, C)
    out = np.empty((lams.size, y.shape[1], d), dtype=Phi.dtype)
    for i, lam in enumerate(lams):
        coef = proj / (e + n * lam)[:, None]  # (r, C)
        wt = q @ coef if primal else Phi.T @ (q @ coef)
        out[i] = wt.T
    return out


# ---- Phi^T Phi from chunks --------------------------------------------------------------
@dataclass
class GramAccumulator:
    """Accumulate Phi^T Phi and Phi^T Y chunk by chunk, then solve the primal system.

    For features that do not fit in memory: only the d x d and d x C sums are kept. Also
    accumulates the column sums, so that ``solve(lam, fit_bias=True)`` can centre the
    system exactly (G_c = G - N mu mu^T, B_c = B - N mu mu_y^T).

        acc = GramAccumulator(d, C)
        for phi_chunk, y_chunk in chunks: acc.add(phi_chunk, y_chunk)
        W, b, _ = acc.solve(lam)
    """

    d: int
    c: int
    dtype: np.dtype = np.dtype(np.float64)

    def __post_init__(self):
        self.dtype = np.dtype(self.dtype)
        self.gram = np.zeros((self.d, self.d), self.dtype, order="F")  # upper triangle kept
        self.cross = np.zeros((self.d, self.c), self.dtype)  # Phi^T Y
        self.sum_phi = np.zeros(self.d, self.dtype)
        self.sum_y = np.zeros(self.c, self.dtype)
        self.n = 0

    def add(self, phi, y) -> None:
        """Add the rows of one chunk: phi (n, d), y (n, C) or (n,)."""
        y = _check_problem(phi, y, 0.0)
        if phi.shape[1] != self.d or y.shape[1] != self.c or phi.dtype != self.dtype:
            raise ValueError(f"chunk: expected Phi (n, {self.d}) and Y (n, {self.c}) of dtype "
                             f"{self.dtype}, got {tuple(phi.shape)}, {tuple(y.shape)}, {phi.dtype}")
        syrk = get_blas_funcs("syrk", (phi,))
        self.gram = syrk(1.0, phi.T, trans=0, lower=0, beta=1.0, c=self.gram, overwrite_c=True)
        self.cross += phi.T @ y
        self.sum_phi += phi.sum(axis=0)
        self.sum_y += y.sum(axis=0)
        self.n += len(phi)

    def add_h5(self, phi_dataset, y_dataset, chunk_rows: int = 4096) -> None:
        """Add every row of two h5py datasets (or any arrays sliced by rows), reading
        ``chunk_rows`` rows at a time."""
        n = phi_dataset.shape[0]
        if y_dataset.shape[0] != n:
            raise ValueError(f"y_dataset: expected {n} rows like phi_dataset, got {y_dataset.shape[0]}")
        for start in range(0, n, chunk_rows):
            self.add(np.asarray(phi_dataset[start:start + chunk_rows]),
                     np.asarray(y_dataset[start:start + chunk_rows]))

    def solve(self, lam: float, fit_bias: bool = False) -> RidgeSolution:
        """The primal ridge solution over all rows added (same conventions as ``ridge``)."""
        if self.n == 0:
            raise ValueError("GramAccumulator.solve: no rows were added")
        penalty(lam, self.n, "lam", allow_zero=True)
        a = np.triu(self.gram)
        a = a + np.triu(a, 1).T  # full symmetric copy (the accumulator keeps its state)
        b = self.cross.copy()
        if fit_bias:
            mu, mu_y = self.sum_phi / self.n, self.sum_y / self.n
            a -= self.n * np.outer(mu, mu)
            b -= self.n * np.outer(mu, mu_y)
        _add_to_diagonal(a, self.n * lam)
        try:
            wt, _ = _cholesky_solve(np.asfortranarray(a), b)
        except np.linalg.LinAlgError:
            warnings.warn(f"GramAccumulator.solve: the system with lam = {lam:g} is not positive "
                          f"definite; returning the minimum-norm solution", RankDeficientWarning,
                          stacklevel=2)
            wt = scipy.linalg.lstsq(a, b, check_finite=False)[0]
        W = np.ascontiguousarray(wt.T)
        bias = (self.sum_y / self.n - W @ (self.sum_phi / self.n)) if fit_bias else None
        return RidgeSolution(W, bias, "primal")


# ---- the kernel view (the paper's Section 3) ------------------------------------------------
def kernel_ridge(Phi, Y, lam: float) -> np.ndarray:
    """Dual coefficients alpha (N, C) of kernel ridge regression with the linear kernel
    k(x, x') = <Phi(x), Phi(x')> (the paper's eqs. 5-8, mean convention):

        alpha = (K + N lam I_N)^-1 Y,  K = Phi Phi^T,   prediction g(x) = sum_i alpha_i k(x_i, x)

    so that W^T = Phi^T alpha is the ridge solution (the representer theorem, their eq. 7).
    Needs lam > 0 unless K is non-singular."""
    y = _check_problem(Phi, Y, lam)
    k = _gram_samples(Phi)
    _add_to_diagonal(k, len(Phi) * lam)
    return _cholesky_solve(k, y)[0]


def rkhs_norm(W, Phi) -> float:
    """||g_W||_H for g_W(x) = <W, Phi(x)> on the sample (claim M3): the smallest ||v|| with
    <v, Phi(x_i)> = g_W(x_i) for every i, i.e. ||P W^T||_F with P the orthogonal projector
    onto the span of the rows of Phi. Equals ||W||_F when the rows of Phi span R^d."""
    _, s, vt = scipy.linalg.svd(Phi, full_matrices=False, check_finite=False)
    rank = int((s > s.max(initial=0.0) * max(Phi.shape) * np.finfo(Phi.dtype).eps).sum())
    basis = vt[:rank]  # (r, d) orthonormal rows spanning the row space of Phi
    return float(np.linalg.norm(basis @ np.atleast_2d(W).T))
