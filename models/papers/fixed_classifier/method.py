"""The fixed classifier (Hoffer, Hubara & Soudry 2018): the last layer replaced by a fixed
matrix Q with a learned scale, logits = alpha * Q (x / ||x||) + b.

The heads themselves are engine layers (``lastlayer.engine.HadamardHead``: a truncated
Sylvester-Hadamard Q applied by the fast Walsh-Hadamard transform and never stored;
``lastlayer.engine.OrthogonalHead``: a fixed random orthonormal Q). This module builds them by name
and measures the geometry of the Hadamard Q: the paper calls its C truncated rows
orthogonal, which holds exactly only when 2^ceil(log2 C) divides N (ledger row H4).
"""

from __future__ import annotations

import numpy as np

from lastlayer.engine import Dense, HadamardHead, Layer, OrthogonalHead

# The Hadamard heads of the experiments apply Q by the dense +-1 product. Both paths give the
# same numbers to rounding (ledger rows H2, H4, H5), and at C = 10, N = 64 on a small CPU one
# BLAS call beats the padded transform, whose per-call parallel dispatch dominates at this size.
HADAMARD_METHOD = "dense"
HEADS = ("learned", "orthogonal", "hadamard")
FIXED_ALPHAS = (0.1, 1.0, 10.0)
VARIANTS = HEADS + tuple(f"alpha={a:g}" for a in FIXED_ALPHAS)


def head(variant: str, n_features: int, n_classes: int, seed: int) -> Layer:
    """The last layer of ``variant`` (one of ``VARIANTS``); the orthogonal Q is drawn from
    the run's seed."""
    if variant == "learned":
        return Dense(n_features, n_classes)
    if variant == "orthogonal":
        return OrthogonalHead(n_features, n_classes, seed=seed)
    if variant == "hadamard":
        return HadamardHead(n_features, n_classes, method=HADAMARD_METHOD)
    if variant.startswith("alpha="):
        alpha = float(variant.removeprefix("alpha="))
        return HadamardHead(n_features, n_classes, alpha_init=alpha, learn_alpha=False,
                            method=HADAMARD_METHOD)
    raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")


# ---- the Hadamard head's geometry (ledger row H4) -------------------------------------
def hadamard_head_q(d_in: int, n_classes: int, method: str = "auto") -> np.ndarray:
    """The Q (C, N) that ``HadamardHead`` applies, read back through its forward pass:
    logits of the unit rows of I_N with alpha = 1, b = 0 and eps = 1e-300 (so that
    ||e_k|| + eps == 1 exactly) are the columns of Q. Any C, duplicate rows included."""
    layer = HadamardHead(d_in, n_classes, eps=1e-300, method=method, allow_duplicate_rows=True)
    qt, _ = layer.forward({"alpha": np.ones(1), "b": np.zeros(n_classes)}, np.eye(d_in))
    return qt.T


def gram_deviation(q: np.ndarray) -> float:
    """max |Q Q^T - N I| / N: the largest |cosine| between two rows of a +-1 matrix
    (0 when the rows are orthogonal); exact in float64 (integer sums below 2^53)."""
    n_cols = q.shape[1]
    return float(np.abs(q @ q.T - n_cols * np.eye(len(q))).max() / n_cols)


def predicted_gram_deviation(d_in: int, n_classes: int) -> float:
    """Closed form of ``gram_deviation`` for the truncated Sylvester-Hadamard Q.

    (Q Q^T)_ij = sum_{k < N} H[i, k] H[j, k] = sum_{k < N} H[m, k] with m = i xor j: a
    partial sum of one Walsh row. If t is the lowest set bit of m, that row is made of
    blocks of 2^t equal signs alternating, so the sum over aligned blocks of p = 2^(t+1)
    vanishes and |(Q Q^T)_ij| = min(r, p - r), r = N mod p. Every t below bit_length(C - 1)
    occurs (i = 0, j = 2^t), so the deviation is the max of min(r, p - r) / N over those t:
    0 exactly when 2^ceil(log2 C) divides N (in particular when N = n).
    """
    worst = 0
    for t in range((n_classes - 1).bit_length()):
        p = 2 ** (t + 1)
        r = d_in % p
        worst = max(worst, min(r, p - r))
    return worst / d_in
