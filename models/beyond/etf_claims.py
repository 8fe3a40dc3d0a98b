"""Ledger rows ETF1-ETF6: the fixed simplex-ETF head (Zhu et al., NeurIPS 2021, "A geometric
analysis of neural collapse with unconstrained features"), float64.

Head (``lastlayer.engine.layers.SimplexETFHead``, docs/claims.md): logits y = s x W^T + b with the
fixed classifier

    W^T = sqrt(C / (C - 1)) P (I_C - 1 1^T / C),     P (d, C),  P^T P = I_C (d >= C)

(d = C - 1: P = Q V^T with P^T P = I - 1 1^T / C, which gives the same W W^T). Its rows w_c
are a simplex ETF:

    W W^T = C / (C - 1) (I_C - 1 1^T / C):   ||w_c|| = 1,  cos(w_i, w_j) = -1 / (C - 1),
    sum_c w_c = 0.

ETF1-ETF4 measure these on the W the head applies, read back through its backward pass
(s = 1: dx = dy W with dy = I_C, so the Hadamard head is read without forming any d x d or
d x C matrix of its own), both methods, d from C - 1 to 2^16. ETF5 compares the matrix-free
path (the fast Walsh-Hadamard transform, and the centring as a row-mean subtraction) with the
dense products of an explicit W, in units of a rounding bound. ETF6 trains a small network
with the head on digits and compares its test accuracy with a learned Dense head's.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from lastlayer.engine import Dense, Network, ReLU
from lastlayer.engine.layers import SimplexETFHead
from lastlayer.engine.training import init_train_state, train
from lastlayer.engine.training.data import digits

from ..ledger import FAIL, PASS, Check, Outcome, at_most
from ..papers.fixed_classifier import protocol

U = np.finfo(np.float64).eps / 2  # unit roundoff of float64, 2^-53

# (d, C, method): d = C - 1, d = C and d > C; the Hadamard ones matrix-free up to d = 2^16
GEOMETRY_SHAPES = (
    (8, 5, "hadamard"), (64, 10, "hadamard"), (1024, 100, "hadamard"),
    (2048, 1000, "hadamard"), (2**16, 10, "hadamard"),
    (1, 2, "orthogonal"), (9, 10, "orthogonal"), (10, 10, "orthogonal"),
    (64, 10, "orthogonal"), (342, 100, "orthogonal"),
)
ORTHOGONAL_SEEDS = (0, 1, 2)
# Above the worst-case rounding bound of every geometry row: <= 2e-11 (the Gram entries and
# norms are dot products of up to 2^16 terms of unit vectors, gamma_d = 7.3e-12; Householder
# QR's loss of orthogonality for 342 x 100 is gamma~_{dC} ~ 3.8e-12 times a small constant),
# and 7 orders below the smallest construction error (a dropped sqrt(C/(C-1)) moves W W^T by
# 1/C >= 1e-3 here, a forgotten centring the cosines by 1/(C-1)).
GEOMETRY_TOL = 1e-10


def _gamma(k: int) -> float:
    """gamma_k = k u / (1 - k u): the relative error bound of k successive roundings."""
    return k * U / (1 - k * U)


def applied_w(layer: SimplexETFHead) -> np.ndarray:
    """The W (C, d) the head applies, read through its backward pass: with s = 1 (the
    layer's scale_init is not used), dx = dy W for dy = I_C. Matrix-free for the Hadamard
    method (one transform of a (C, d) buffer)."""
    plain = SimplexETFHead(layer.d_in, layer.n_classes, method=layer.resolved_method,
                           seed=layer.seed)
    c = layer.n_classes
    _, cache = plain.forward({}, np.zeros((c, layer.d_in)), state=plain.init_state())
    w, _ = plain.backward({}, cache, np.eye(c))
    return w


@lru_cache(maxsize=1)
def _geometry_heads() -> tuple[tuple[str, np.ndarray], ...]:
    """(label, W) for every shape of GEOMETRY_SHAPES (orthogonal: every seed)."""
    out = []
    for d, c, method in GEOMETRY_SHAPES:
        for seed in ORTHOGONAL_SEEDS if method == "orthogonal" else (0,):
            w = applied_w(SimplexETFHead(d, c, method=method, seed=seed))
            out.append((f"{method} {d}x{c} seed {seed}", w))
    return tuple(out)


# ---- ETF1-ETF4: the geometry ----------------------------------------------------------------
def etf1_norms() -> Outcome:
    """Equal norms: max over heads of (max_c ||w_c|| - min_c ||w_c||) / max_c ||w_c||."""
    worst = 0.0
    for _, w in _geometry_heads():
        n = np.linalg.norm(w, axis=1)
        worst = max(worst, float((n.max() - n.min()) / n.max()))
    return at_most(worst, GEOMETRY_TOL)


def etf2_cosines() -> Outcome:
    """Equal angles: max over heads and pairs i != j of |cos(w_i, w_j) + 1 / (C - 1)|."""
    worst = 0.0
    for _, w in _geometry_heads():
        c = len(w)
        n = np.linalg.norm(w, axis=1)
        cos = (w @ w.T) / np.outer(n, n)
        off = ~np.eye(c, dtype=bool)
        worst = max(worst, float(np.abs(cos[off] + 1 / (c - 1)).max()))
    return at_most(worst, GEOMETRY_TOL)


def etf3_gram() -> Outcome:
    """The tight frame: max over heads of |W W^T - C / (C - 1) (I - 1 1^T / C)| (unit norms
    on the diagonal, -1 / (C - 1) off it)."""
    worst = 0.0
    for _, w in _geometry_heads():
        c = len(w)
        target = c / (c - 1) * (np.eye(c) - 1 / c)
        worst = max(worst, float(np.abs(w @ w.T - target).max()))
    return at_most(worst, GEOMETRY_TOL)


def etf4_centred() -> Outcome:
    """The columns of W sum to zero: max over heads of ||(1/C) sum_c w_c||_2, the norm of
    the class vectors' centroid (they have unit norm)."""
    worst = max(float(np.linalg.norm(w.mean(axis=0))) for _, w in _geometry_heads())
    return at_most(worst, GEOMETRY_TOL)


# ---- ETF5: the matrix-free path against the dense products ----------------------------------
FWHT_SHAPES = ((8, 5, "hadamard"), (64, 10, "hadamard"), (1024, 100, "hadamard"),
               (2**16, 10, "hadamard"), (1, 2, "orthogonal"), (9, 10, "orthogonal"),
               (64, 10, "orthogonal"), (342, 100, "orthogonal"))
FWHT_BATCH = 5


def hadamard_columns(d: int, columns) -> np.ndarray:
    """H_d[:, columns] (d, len(columns)) from the entry rule H[i, j] = (-1)^popcount(i & j)
    (Sylvester), written here with NumPy's popcount, independently of ``kernels``."""
    i = np.arange(d, dtype=np.int64)[:, None]
    j = np.asarray(columns, dtype=np.int64)[None, :]
    return 1.0 - 2.0 * (np.bitwise_count(i & j) & 1)


def _explicit_p(layer: SimplexETFHead, state: dict) -> np.ndarray:
    """P (d, C) as a dense matrix: columns 1 .. C of H_d / sqrt(d), or the state's P."""
    if layer.resolved_method == "hadamard":
        return hadamard_columns(layer.d_in, range(1, layer.n_classes + 1)) / math.sqrt(layer.d_in)
    return state["P"]


def _ratio(diff: np.ndarray, size: np.ndarray, n: int) -> float:
    """max |diff| / (8 gamma_n size) (0 where both are 0, inf where only size is)."""
    bound = 8 * _gamma(n) * size
    ratio = np.divide(np.abs(diff), bound, out=np.zeros_like(bound), where=bound > 0)
    ratio[(bound == 0) & (diff != 0)] = np.inf
    return float(ratio.max(initial=0.0))


def fwht_path_ratio(d: int, c: int, method: str, rng: np.random.Generator) -> float:
    """For one head with a learned scale and bias: y, dx, dscale and db of the layer against
    y = s x W^T + b, dx = s dy W, dscale = sum(dy * x W^T), db = sum_rows dy with the dense
    W = sqrt(C/(C-1)) (I - 1 1^T/C) P^T, each entry in units of its rounding bound.

    Bound: each path is a sum of at most n = d + B C + 8 terms (the longest: x P, d terms,
    or dscale, B C) and a few roundings, so its error is at most gamma_n times the sum of
    the magnitudes it adds, which is at most 3 A: A = |s| g (|x| |P|) |K| + |b| for y,
    |s| g (|dy| |K|) |P|^T for dx, g sum(|dy| (|x| |P|) |K|) for dscale (g = sqrt(C/(C-1)),
    K = I - 1 1^T / C; the centring's row mean at most triples a magnitude). The two paths
    together: 6 gamma_n A; the measurement is in units of 8 gamma_n A."""
    layer = SimplexETFHead(d, c, method=method, learn_scale=True, bias=True, seed=1)
    state = layer.init_state()
    params = {"scale": rng.uniform(0.5, 2.0, 1), "b": rng.standard_normal(c)}
    x, dy = rng.standard_normal((FWHT_BATCH, d)), rng.standard_normal((FWHT_BATCH, c))
    y, cache = layer.forward(params, x, state=state)
    dx, grads = layer.backward(params, cache, dy)

    s, b, g = params["scale"][0], params["b"], layer.gain
    k = np.eye(c) - 1 / c
    p = _explicit_p(layer, state)
    w = g * k @ p.T  # (C, d)
    xw = x @ w.T  # (B, C)
    p_abs, k_abs = np.abs(p), np.abs(k)
    xpk = (np.abs(x) @ p_abs) @ k_abs  # (B, C)
    n = d + FWHT_BATCH * c + 8
    return max(
        _ratio(y - (s * xw + b), abs(s) * g * xpk + np.abs(b), n),
        _ratio(dx - s * dy @ w, abs(s) * g * (np.abs(dy) @ k_abs) @ p_abs.T, n),
        _ratio(grads["scale"] - (dy * xw).sum(), np.array([g * (np.abs(dy) * xpk).sum()]), n),
        _ratio(grads["b"] - dy.sum(axis=0), np.abs(dy).sum(axis=0), n),
    )


def etf5_fwht() -> Outcome:
    """The matrix-free head (FWHT for "hadamard", the row-mean centring for both) equals
    the dense products with the explicit W, forward and backward, learned s and b, d up
    to 2^16. Measured: the largest error in units of its rounding bound; <= 1 predicted."""
    rng = np.random.default_rng(5)
    worst = max(fwht_path_ratio(d, c, method, rng) for d, c, method in FWHT_SHAPES)
    return at_most(worst, 1.0)


# ---- ETF6: training with the head -----------------------------------------------------------
ETF6_ITERATIONS = 400
ETF6_SEEDS = 3
# As H7: digits has 449 test images (one is 0.22 points); the binomial std of a ~2.5 % error
# is 0.74 points per run, 0.43 for a 3-seed mean, so a 2-point gap of the means is ~3.3 sigma.
ETF6_GAP_TOL = 2.0


def etf6_network(head: str, n_features: int, n_classes: int, seed: int) -> Network:
    """The fixed-classifier rows' trunk (``protocol.HIDDEN``: d -> 256 -> 64, ReLU) ending in
    ``SimplexETFHead(64, C)`` (defaults: "auto" -> Hadamard, s = 1 fixed, no bias: no
    trainable number in the head) or a learned ``Dense(64, C)``."""
    layers = []
    width = n_features
    for h in protocol.HIDDEN:
        layers += [Dense(width, h), ReLU()]
        width = h
    last = SimplexETFHead(width, n_classes, seed=seed) if head == "etf" else Dense(width, n_classes)
    return Network(layers + [last])


def etf6_test_accuracy(head: str, seed: int) -> float:
    """Test accuracy (%) on digits after ETF6_ITERATIONS iterations of the fixed-classifier
    protocol (``protocol.optimizer``: SGD, momentum 0.9, lr 0.05 / 10 at 50 % and 75 %,
    coupled weight decay 5e-5 on every tensor; batch 64), from ``seed``."""
    data = digits(seed=0)
    net = etf6_network(head, data.n_features, data.n_classes, seed)
    opt = protocol.optimizer(ETF6_ITERATIONS)
    ts = train(net, opt, data, init_train_state(net, opt, seed), iterations=ETF6_ITERATIONS,
               batch_size=protocol.BATCH, eval_every=ETF6_ITERATIONS, eval_train=False,
               quiet=True)
    return 100 * float(ts.history["test_accuracy"][-1])


@lru_cache(maxsize=1)
def _etf6_runs() -> dict[str, float]:
    """Mean test accuracy (%) over ETF6_SEEDS seeds of the ETF head and the learned head."""
    return {head: float(np.mean([etf6_test_accuracy(head, s) for s in range(ETF6_SEEDS)]))
            for head in ("etf", "learned")}


def etf6_train() -> Outcome:
    """Zhu et al.'s experiments with the classifier fixed to a simplex ETF: test accuracy
    comparable to a learned classifier's. Digits, MLP trunk 64-256-64, 400 iterations, 3
    seeds. Measured: the ETF head's mean test accuracy (%); expected: the learned Dense
    head's with the same trunk, optimiser and budget; FAIL if it is more than 2 points
    lower."""
    r = _etf6_runs()
    gap = r["learned"] - r["etf"]
    ok = math.isfinite(gap) and gap <= ETF6_GAP_TOL
    return Outcome(r["etf"], r["learned"], ETF6_GAP_TOL, PASS if ok else FAIL)


def checks() -> list[Check]:
    shapes = "both methods, d = C - 1 .. 2^16 (Hadamard matrix-free), C = 2 .. 1000"
    return [
        Check("ETF1-norms", f"simplex-ETF head W ({shapes}): equal class norms, max relative "
              "spread (max - min) / max of ||w_c||", etf1_norms),
        Check("ETF2-cosines", "same heads: pairwise cosines = -1/(C-1), max |cos(w_i, w_j) + "
              "1/(C-1)|", etf2_cosines),
        Check("ETF3-gram", "same heads: W W^T = C/(C-1) (I - 1 1^T/C), max abs error",
              etf3_gram),
        Check("ETF4-centred", "same heads: the columns of W sum to zero, max ||(1/C) sum_c w_c||",
              etf4_centred),
        Check("ETF5-fwht", "matrix-free head (FWHT, row-mean centring) vs dense products with "
              "the explicit W (y, dx, dscale, db; d up to 2^16): max error / rounding bound",
              etf5_fwht),
        Check("ETF6-train", "digits MLP 64-256-64, 400 it., 3 seeds: test accuracy (%) with the "
              "fixed ETF head; expected: the learned Dense head's; tolerance: 2 points below",
              etf6_train),
    ]
