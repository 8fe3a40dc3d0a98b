"""Objective, gradient, Hessian and Hessian-vector products of a linear last layer.

With frozen features Phi (N, d), the last layer W (C, d), b (C,) gives logits
z_i = W Phi_i + b and the objective (docs/claims.md, their eq. 4; the bias is not penalised)

    J(W, b) = (1/N) sum_i loss(z_i, y_i) + lam ||W||_F^2

for ``loss`` = "ce" (softmax cross-entropy) or "squared" (||z - y||^2). Both are convex
in (W, b): per sample the Hessian in z is A_i = diag(p_i) - p_i p_i^T (CE, their
Appendix A: the matrix P) or 2 I (squared), and by the chain rule

    H_WW = (1/N) sum_i A_i (x) Phi_i Phi_i^T + 2 lam I,   H_Wb = (1/N) sum_i A_i (x) Phi_i,
    H_bb = (1/N) sum_i A_i.

Parameters are ordered [vec(W) row by row (class c, feature j) ; b]. ``hvp`` multiplies by
H without forming it (the PoF and ENTAME analyses use it), in O(N C d).

For soft CE targets t_i whose rows sum to s_i != 1, A_i is s_i (diag(p_i) - p_i p_i^T).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...losses import softmax, softmax_cross_entropy, squared_error

__all__ = ["LOSSES", "Objective", "objective", "hessian", "hvp", "logit_hessians"]

LOSSES = ("ce", "squared")


class Objective(NamedTuple):
    value: float
    grad_W: np.ndarray  # (C, d)
    grad_b: np.ndarray | None  # (C,), None when the layer has no bias


def _loss_fn(loss: str):
    if loss == "ce":
        return softmax_cross_entropy
    if loss == "squared":
        return squared_error
    raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")


def _logits(W, b, Phi):
    z = Phi @ W.T  # (N, C)
    if b is not None:
        z += b
    return z


def objective(W, b, Phi, targets, lam: float, loss: str = "ce") -> Objective:
    """J(W, b) and its gradient: dJ/dW = dz^T Phi + 2 lam W, dJ/db = sum_i dz_i, where
    dz = dloss/dz (the loss's own fused gradient, already divided by N)."""
    value, dz = _loss_fn(loss)(_logits(W, b, Phi), targets)
    grad_W = dz.T @ Phi + 2 * lam * W
    grad_b = dz.sum(axis=0) if b is not None else None
    return Objective(value + lam * float((W * W).sum()), grad_W, grad_b)


def logit_hessians(W, b, Phi, targets, loss: str = "ce") -> np.ndarray:
    """Per-sample Hessians A_i of the loss in the logits, shape (N, C, C) (without 1/N)."""
    z = _logits(W, b, Phi)
    n, c = z.shape
    if loss == "squared":
        return np.broadcast_to(2 * np.eye(c, dtype=z.dtype), (n, c, c))
    _loss_fn(loss)
    p = softmax(z)
    a = -p[:, :, None] * p[:, None, :]  # -p_m p_q
    a[:, np.arange(c), np.arange(c)] += p  # + p_m delta_mq
    return a * _target_mass(targets, n)[:, None, None]


def _target_mass(targets, n):
    """s_i = sum_c t_ic: 1 for labels and probability rows."""
    if targets.dtype.kind in "iu":
        return np.ones(n)
    return targets.sum(axis=1)


def hessian(W, b, Phi, targets, lam: float, loss: str = "ce", block_bytes: int = 64 << 20) -> np.ndarray:
    """The full Hessian of J, shape (C d + C, C d + C) with a bias, (C d, C d) without.

    With the per-sample A_i = s_i (diag(p_i) - p_i p_i^T) (CE; s_i the target mass) and
    r_i = sqrt(s_i) p_i, B = [Phi (r_1) ... Phi (r_C)] (N x C d, column block c = Phi scaled
    by r_ic):

        N H_WW = blockdiag_c(Phi^T diag(s p_c) Phi) - B^T B,   N H_Wb = D - B^T R,
        N H_bb = diag(sum_i s_i p_i) - R^T R,    D[(c, :), c] = sum_i s_i p_ic Phi_i,

    one product B^T B instead of C (C + 1) / 2 weighted Gram matrices (2-4x faster). For the
    squared loss A_i = 2 I: the block diagonal alone. Rows are taken in blocks so that B
    stays near ``block_bytes``; memory (C d)^2 for the result: for moderate C d only."""
    _loss_fn(loss)  # an unknown loss is an error
    n, d = Phi.shape
    c = W.shape[0]
    nw = c * d
    size = nw + (c if b is not None else 0)
    h = np.zeros((size, size), dtype=Phi.dtype)
    rows = max(1, block_bytes // (Phi.itemsize * max(nw, c * c)))
    for lo in range(0, n, rows):
        phi = Phi[lo:lo + rows]
        if loss == "ce":
            p = softmax(_logits(W, b, phi))
            mass = _target_mass(targets[lo:lo + rows], len(phi))
            weights = mass[:, None] * p  # (rows, C): the diagonal of A_i
            root = np.sqrt(mass)[:, None] * p  # (rows, C): A_i = diag(weights_i) - root_i root_i^T
            wide = (root[:, :, None] * phi[:, None, :]).reshape(len(phi), nw)  # B
            h[:nw, :nw] -= wide.T @ wide
        else:
            weights = np.full((len(phi), c), 2.0, dtype=Phi.dtype)
        for m in range(c):
            h[m * d:(m + 1) * d, m * d:(m + 1) * d] += (phi * weights[:, m:m + 1]).T @ phi
            if b is not None:
                h[m * d:(m + 1) * d, nw + m] += weights[:, m] @ phi
        if b is not None:
            h[nw:, nw:] += np.diag(weights.sum(axis=0))
            if loss == "ce":
                h[:nw, nw:] -= wide.T @ root
                h[nw:, nw:] -= root.T @ root
    if b is not None:
        h[nw:, :nw] = h[:nw, nw:].T
    h /= n
    h = 0.5 * (h + h.T)  # symmetric in exact arithmetic; make it so in floating point too
    h[np.arange(nw), np.arange(nw)] += 2 * lam
    return h


def hvp(W, b, Phi, targets, lam: float, V, v_b=None, loss: str = "ce"):
    """H [V; v_b] without forming H: returns (HV_W (C, d), HV_b (C,) or None).

    With U = Phi V^T + v_b (the change of the logits), A_i U_i is p_i o U_i - p_i (p_i . U_i)
    (times s_i) for CE and 2 U_i for the squared loss."""
    z = _logits(W, b, Phi)
    u = Phi @ V.T  # (N, C)
    if b is not None and v_b is not None:
        u += v_b
    if loss == "ce":
        p = softmax(z)
        au = p * u - p * (p * u).sum(axis=1, keepdims=True)
        au *= _target_mass(targets, len(Phi))[:, None]
    elif loss == "squared":
        au = 2 * u
    else:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    n = len(Phi)
    hv_w = au.T @ Phi / n + 2 * lam * V
    hv_b = au.sum(axis=0) / n if b is not None else None
    return hv_w, hv_b
