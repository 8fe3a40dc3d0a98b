"""The references of ledger rows LA1-LA6 (``laplace_claims``), built from the definitions:
generated classification problems, the per-sample Jacobian J_i of the logits written out
entry by entry in the engine's parameter order [vec(W) row by row; b], the softmax
Hessians A_i, the prior and the explicit precision sum_i J_i^T A_i J_i + P0."""

from __future__ import annotations

import numpy as np

from lastlayer.engine.solvers.exact.softmax_regression import fit_softmax_regression
from lastlayer.engine.streams import stream


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), np.finfo(float).tiny))


def _classes(counter: int, n: int, d: int, c: int, sep: float):
    """Gaussian classes: means sep * N(0, I_d), unit noise; every class present."""
    rng = stream(0, "beyond-data", counter)
    mu = sep * rng.standard_normal((c, d))
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    return mu[y] + rng.standard_normal((n, d)), y


def _jacobian(x, c: int, bias: bool) -> np.ndarray:
    """dz/dtheta (C, P) of one input x (d,), the engine's order, entry by entry."""
    d = len(x)
    j = np.zeros((c, c * d + (c if bias else 0)))
    for k in range(c):
        j[k, k * d:(k + 1) * d] = x
        if bias:
            j[k, c * d + k] = 1.0
    return j


def _softmax_hessian(z) -> np.ndarray:
    p = np.exp(z - z.max())
    p /= p.sum()
    return np.diag(p) - np.outer(p, p)


def _prior(c: int, d: int, tau_w: float, tau_b: float | None) -> np.ndarray:
    return np.array([tau_w] * (c * d) + ([tau_b] * c if tau_b is not None else []))


def _explicit_precision(W, b, phi, tau_w, tau_b) -> np.ndarray:
    """sum_i J_i^T A_i J_i + P0 with the explicit Jacobians (CE)."""
    c = W.shape[0]
    lam = np.diag(_prior(c, W.shape[1], tau_w, tau_b))
    for x in phi:
        j = _jacobian(x, c, b is not None)
        lam += j.T @ _softmax_hessian(W @ x + (0.0 if b is None else b)) @ j
    return lam


def _class_major(c: int, d: int) -> np.ndarray:
    """The engine's index of parameter (class k, j <= d), j = d the bias: (C (d + 1),)."""
    return np.array([k * d + j if j < d else c * d + k for k in range(c) for j in range(d + 1)])


def _ce_head(counter, n, d, c, sep, lam):
    x, y = _classes(counter, n, d, c, sep)
    sol = fit_softmax_regression(x, y, lam, n_classes=c)
    return x, y, sol.W, sol.b
