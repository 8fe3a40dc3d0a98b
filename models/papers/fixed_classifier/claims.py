"""Ledger rows H1-H7: the fixed classifier (Hoffer, Hubara & Soudry 2018), float64.

Head (docs/claims.md): x_hat = x / ||x||_2, logits = alpha * (Q x_hat) + b, Q fixed (C x N).
H1-H6 are exact or bounded by a rounding analysis; H7 re-runs a small version of their
experiments (digits, ``protocol``) and reports what it finds.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.linalg

from lastlayer.engine import Dense, HadamardHead, Network, OrthogonalHead
from lastlayer.engine.gradcheck import check_layer
from lastlayer.engine.training.data import digits
from lastlayer.kernels import fwht
from lastlayer.kernels.hadamard import dense_hadamard, hadamard_entry, hadamard_rows

from ...ledger import DIFFERS, FAIL, PASS, Check, Outcome, at_most
from . import method, protocol

MAX_LOG2_N = 10  # H1, H2: n = 1 .. 1024


def _gamma(k: int, u: float) -> float:
    """gamma_k = k u / (1 - k u): the relative error bound of k successive roundings."""
    return k * u / (1 - k * u)


# ---- H1: the Sylvester-Hadamard matrix ------------------------------------------------------
def h1_sylvester() -> Outcome:
    """For n = 2^0 .. 2^10: the entry rule H[i, j] = (-1)^popcount(i & j) gives +-1 entries,
    H H^T = n I exactly, and it equals scipy.linalg.hadamard(n), the Kronecker recursion
    (``dense_hadamard``) and ``hadamard_rows`` (what the head uses). Measured: the number
    of entries violating any of these (all integers, exact in float64)."""
    bad = 0
    for k in range(MAX_LOG2_N + 1):
        n = 2**k
        idx = np.arange(n)
        h = hadamard_entry(idx[:, None], idx[None, :]).astype(np.float64)
        bad += np.count_nonzero(np.abs(h) != 1)
        bad += np.count_nonzero(h @ h.T != n * np.eye(n))
        for other in (scipy.linalg.hadamard(n), dense_hadamard(n), hadamard_rows(idx, n)):
            bad += np.count_nonzero(h != other)
    return Outcome(int(bad), 0, 0, PASS if bad == 0 else FAIL)


# ---- H2: the fast transform -----------------------------------------------------------------
def _sizes():
    return [2**k for k in range(MAX_LOG2_N + 1)]


def h2_exact() -> Outcome:
    """Random +-1 rows (8 per n, float64 and float32), n = 1 .. 1024: fwht(x) == x H_n and
    fwht(fwht(x)) == n x, exactly (every intermediate value is an integer below 2^24).
    Measured: the largest absolute difference."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for n in _sizes():
        h = dense_hadamard(n)
        x = rng.choice([-1.0, 1.0], size=(8, n))
        for dtype in (np.float64, np.float32):
            xd = x.astype(dtype)
            y = fwht(xd)
            worst = max(worst, float(np.abs(y - x @ h).max()),
                        float(np.abs(fwht(y) - n * x).max()))
    return Outcome(worst, 0.0, 0.0, PASS if worst == 0 else FAIL)


def _exact_transform(x: np.ndarray) -> np.ndarray:
    """H_n x for every row of x, each sum correctly rounded (math.fsum of exact products)."""
    h = dense_hadamard(x.shape[1])
    return np.array([[math.fsum(v) for v in (h * row).tolist()] for row in x])


def h2_rounding() -> Outcome:
    """Gaussian rows (2 per n), n = 2 .. 1024, float64 and float32: |fwht(x) - H x| against the
    correctly rounded H x, in units of the bound (gamma_k + u) sum|x| (k = log2 n
    levels of additions per output, plus the reference's own rounding). Measured: the
    largest ratio; the rounding analysis says <= 1."""
    rng = np.random.default_rng(1)
    worst = 0.0
    for n in _sizes()[1:]:
        x = rng.standard_normal((2, n))
        for dtype in (np.float64, np.float32):
            xd = x.astype(dtype)
            exact = _exact_transform(xd.astype(np.float64))
            u = np.finfo(dtype).eps / 2
            bound = (_gamma(int(math.log2(n)), u) + u) * np.abs(xd).astype(np.float64).sum(axis=1)
            worst = max(worst, float((np.abs(fwht(xd) - exact).max(axis=1) / bound).max()))
    return at_most(worst, 1.0)


def h2_inverse() -> Outcome:
    """Gaussian rows in float64, n = 2 .. 1024: fwht(fwht(x)) / n - x, in units of the bound
    2 gamma_k (1 + gamma_k) sum|x| (first transform off by gamma_k sum|x| per entry, H
    amplifies that by n, the second adds gamma_k sum|y| <= n gamma_k (1 + gamma_k) sum|x|;
    dividing by n = 2^k is exact). Measured: the largest ratio; <= 1 predicted."""
    rng = np.random.default_rng(2)
    u = np.finfo(np.float64).eps / 2
    worst = 0.0
    for n in _sizes()[1:]:
        x = rng.standard_normal((4, n))
        g = _gamma(int(math.log2(n)), u)
        bound = 2 * g * (1 + g) * np.abs(x).sum(axis=1)
        worst = max(worst, float((np.abs(fwht(fwht(x)) / n - x).max(axis=1) / bound).max()))
    return at_most(worst, 1.0)


# ---- H3: the random orthonormal head --------------------------------------------------------
H3_SHAPES = ((64, 10), (342, 100), (64, 64), (5, 1))  # (N, C)
H3_TOL = 1e-13  # Householder QR: ||Q Q^T - I|| = O(N u) with a small constant; N <= 342


def h3_orthonormal() -> Outcome:
    """``OrthogonalHead(N, C, seed).init_state()['Q']`` for (N, C) in H3_SHAPES, 3 seeds:
    max |Q Q^T - I_C| (their section 'Choosing the projection matrix')."""
    worst = 0.0
    for n_features, n_classes in H3_SHAPES:
        for seed in range(3):
            q = OrthogonalHead(n_features, n_classes, seed=seed).init_state()["Q"]
            worst = max(worst, float(np.abs(q @ q.T - np.eye(n_classes)).max()))
    return at_most(worst, H3_TOL)


# ---- H4: the truncated Hadamard head --------------------------------------------------------
H4_RULE_SHAPES = ((5, 3), (8, 8), (64, 10), (100, 10), (3, 10), (342, 100), (1, 1), (16, 1))


def h4_rule() -> Outcome:
    """Q read back through ``HadamardHead``'s forward pass (both methods) equals
    scipy.linalg.hadamard(n)[:C, :N] with n = 2^ceil(log2 max(N, C)), for N < n, N = n and
    C > N. Measured: mismatching entries (plus 1 per wrong n)."""
    bad = 0
    for n_features, n_classes in H4_RULE_SHAPES:
        n = 2 ** math.ceil(math.log2(max(n_features, n_classes)))
        bad += HadamardHead(n_features, n_classes, allow_duplicate_rows=True).n != n
        expected = scipy.linalg.hadamard(n)[:n_classes, :n_features]
        for path in ("fwht", "dense"):
            q = method.hadamard_head_q(n_features, n_classes, path)
            bad += np.count_nonzero(q != expected)
    return Outcome(int(bad), 0, 0, PASS if bad == 0 else FAIL)


def _paper_configs(full: bool):
    """Their networks' (N, C) with N = n (``full``) or N < n."""
    return [(nf, nc) for _, _, nf, nc in protocol.PAPER_CONFIGS
            if (HadamardHead(nf, nc).n == nf) == full]


def h4_orthogonal() -> Outcome:
    """N = n (ResNet-56 / CIFAR-10: 64 x 10, ResNet-50 / ImageNet: 2048 x 1000):
    max |Q Q^T - N I| / N, exactly 0 predicted (the rows of H_n are orthogonal)."""
    worst = max(method.gram_deviation(method.hadamard_head_q(nf, nc))
                for nf, nc in _paper_configs(True))
    return Outcome(worst, 0.0, 0.0, PASS if worst == 0 else FAIL)


def h4_truncated() -> Outcome:
    """N < n (DenseNet-BC-100 / CIFAR-100: 342 x 100, DenseNet-169: 1664 x 1000,
    ShuffleNet: 960 x 1000): max |Q Q^T - N I| / N, the largest |cosine| between two
    class rows. Their section 'Using a Hadamard matrix' calls the truncated rows
    orthogonal (0); the partial Walsh sums (``predicted_gram_deviation``) predict the
    value exactly. Status: DIFFERS-FROM-PAPER when the measurement equals our prediction
    and it is not 0, PASS if both are 0, FAIL if they disagree."""
    configs = _paper_configs(False)
    measured = max(method.gram_deviation(method.hadamard_head_q(nf, nc)) for nf, nc in configs)
    predicted = max(method.predicted_gram_deviation(nf, nc) for nf, nc in configs)
    if measured != predicted:
        status = FAIL
    else:
        status = DIFFERS if predicted > 0 else PASS
    return Outcome(measured, predicted, 0.0, status)


# ---- H5: gradients ----------------------------------------------------------------------------
H5_TOL = 1e-7


def _h5_cases():
    """(layer, batch, input scale): N < n, N = n, C > N, C = 1, batch 1, fixed alpha, rows
    of norm ~1e-3 (the normalisation's 1/||x|| large)."""
    cases = []
    for path in ("fwht", "dense"):
        cases += [(HadamardHead(6, 3, method=path), 4, 1.0),
                  (HadamardHead(8, 8, method=path), 1, 1.0),
                  (HadamardHead(3, 5, method=path, allow_duplicate_rows=True), 2, 1.0),
                  (HadamardHead(7, 1, method=path), 3, 1e-3),
                  (HadamardHead(5, 4, learn_alpha=False, alpha_init=2.0, method=path), 2, 1.0)]
    cases += [(OrthogonalHead(6, 3, seed=1), 4, 1.0), (OrthogonalHead(4, 4), 1, 1e-3),
              (OrthogonalHead(5, 2, learn_alpha=False), 3, 1.0)]
    return cases


def h5_gradients() -> Outcome:
    """d logits / d (x, alpha, b) of both heads (Hadamard: both methods) vs central
    differences (``lastlayer.engine.gradcheck.check_layer``), through the normalisation; b ~ N(0, 1)
    and alpha ~ U(0.5, 2) (a tiny alpha would leave the check measuring only the central
    difference's rounding noise, u |logits| / (h |gradient|)). Measured: the largest
    relative error over all cases and tensors."""
    rng = np.random.default_rng(3)
    worst = 0.0
    for layer, batch, scale in _h5_cases():
        params = {"b": rng.standard_normal(layer.n_classes)}
        if layer.learn_alpha:
            params["alpha"] = rng.uniform(0.5, 2.0, 1)
        x = scale * rng.standard_normal((batch, layer.d_in))
        errors = check_layer(layer, params, x, state=layer.init_state(), seed=0)
        worst = max(worst, *errors.values())
    return at_most(worst, H5_TOL)


# ---- H6: parameter count and storage ------------------------------------------------------------
H6_SHAPE = (2048, 1000)  # ResNet-50 on ImageNet: N features, C classes


def h6_count() -> Outcome:
    """Trainable numbers of the head for ResNet-50 / ImageNet (N = 2048, C = 1000): both
    fixed heads C + 1 = 1001, a Dense head C N + C = 2 049 000. Measured: the fixed heads'
    count (FAIL if the two differ or the Dense count is not C N + C)."""
    n_features, n_classes = H6_SHAPE
    rng = np.random.default_rng(0)
    counts = [Network([layer]).num_params([layer.init(rng)]) for layer in (
        HadamardHead(n_features, n_classes), OrthogonalHead(n_features, n_classes),
        Dense(n_features, n_classes))]
    ok = counts[0] == counts[1] == n_classes + 1 and counts[2] == n_classes * n_features + n_classes
    return Outcome(counts[0], n_classes + 1, 0, PASS if ok else FAIL)


def _array_bytes(values) -> int:
    return sum(v.nbytes for v in values if isinstance(v, np.ndarray))


def h6_bytes() -> Outcome:
    """Bytes a ResNet-50-sized HadamardHead holds for Q after a forward and backward pass:
    arrays among the layer's attributes, its state, its parameters other than alpha and b,
    and its cache's Q slot (the OrthogonalHead keeps C N float64 = 16.4 MB in its state).
    Measured: those bytes, 0 predicted."""
    n_features, n_classes = H6_SHAPE
    rng = np.random.default_rng(0)
    layer = HadamardHead(n_features, n_classes)
    params, state = layer.init(rng), layer.init_state()
    y, cache = layer.forward(params, rng.standard_normal((2, n_features)), state=state)
    layer.backward(params, cache, np.ones_like(y))
    held = (_array_bytes(vars(layer).values()) + _array_bytes(state.values())
            + _array_bytes(v for k, v in params.items() if k not in ("alpha", "b"))
            + _array_bytes([cache.q]))
    return Outcome(held, 0, 0, PASS if held == 0 else FAIL)


# ---- H7: their experiments, small ---------------------------------------------------------------
H7_ITERATIONS = 400
H7_SEEDS = 2
# "Close": digits has 449 test images; one image is 0.22 points, and the binomial std of a
# ~2.5 % error is 0.74 points per run, so a 2-point gap of 2-seed means is ~2.7 sigma.
H7_GAP_TOL = 2.0


@lru_cache(maxsize=1)
def _h7_runs() -> dict[str, dict[str, float]]:
    """Final train and test error (%) of every variant of the reproduction on digits, mean
    over seeds, after H7_ITERATIONS iterations (the reproduction's protocol, shortened)."""
    data = digits(seed=0)
    out = {}
    for variant in method.VARIANTS:
        runs = [protocol.train_variant(data, variant, seed, H7_ITERATIONS, 1)
                for seed in range(H7_SEEDS)]
        out[variant] = {k: float(np.mean([r[k][-1] for r in runs]))
                        for k in ("train_error", "test_error")}
    return out


def h7_test() -> Outcome:
    """Their Table 1 / Fig. 2: a fixed head's test accuracy is close to the learned head's.
    Digits, MLP trunk 64-256-64, 400 iterations, 2 seeds. Measured: the larger test-error
    excess (points) of the orthogonal and Hadamard heads over the Dense head."""
    r = _h7_runs()
    gap = max(r[v]["test_error"] - r["learned"]["test_error"] for v in ("orthogonal", "hadamard"))
    return at_most(gap, H7_GAP_TOL)


def h7_train() -> Outcome:
    """Their Fig. 2: the fixed head's training error is higher than the learned head's.
    Same runs as H7-test. Measured: the smaller train-error excess (points) of the two
    fixed heads; > 0 is their observation. Where both heads fit the training set (0 %
    error) the excess is 0 and the row says DIFFERS-FROM-PAPER: the effect is not seen at
    this scale."""
    r = _h7_runs()
    excess = min(r[v]["train_error"] - r["learned"]["train_error"] for v in ("orthogonal", "hadamard"))
    return Outcome(excess, "> 0", "-", PASS if excess > 0 else DIFFERS)


def h7_alpha() -> Outcome:
    """Their Fig. 3: with alpha fixed at 1 or 10 the test accuracy is close to that of the
    learned alpha (Hadamard head). Measured: the larger test-error excess (points) of
    alpha = 1 and alpha = 10 over the learned alpha."""
    r = _h7_runs()
    gap = max(r[f"alpha={a:g}"]["test_error"] - r["hadamard"]["test_error"] for a in (1, 10))
    return at_most(gap, H7_GAP_TOL)


def h7_alpha_small() -> Outcome:
    """Their Fig. 3: alpha = 0.1 does not suffice (their text names only 1 and 10).
    Measured: test-error excess (points) of alpha = 0.1 over the learned alpha; PASS
    when above the 2-point closeness tolerance, DIFFERS-FROM-PAPER otherwise."""
    r = _h7_runs()
    gap = r["alpha=0.1"]["test_error"] - r["hadamard"]["test_error"]
    return Outcome(gap, f"> {H7_GAP_TOL:g}", "-", PASS if gap > H7_GAP_TOL else DIFFERS)


def checks() -> list[Check]:
    return [
        Check("H1", "Sylvester-Hadamard H_n, n <= 1024: entries +-1, H H^T = n I, entry rule == "
              "scipy / Kronecker / hadamard_rows: violating entries", h1_sylvester),
        Check("H2-exact", "fwht == dense H_n product and fwht(fwht(x)) == n x for +-1 inputs "
              "(float64 and float32, n <= 1024): max abs difference", h2_exact),
        Check("H2-rounding", "fwht of Gaussian inputs vs correctly rounded H x (float64, float32): "
              "max error / ((gamma_log2n + u) sum|x|)", h2_rounding),
        Check("H2-inverse", "fwht(fwht(x)) / n vs x (float64): max error / "
              "(2 gamma_log2n (1 + gamma) sum|x|)", h2_inverse),
        Check("H3", "random orthonormal Q (QR of a seeded Gaussian), C <= N: max |Q Q^T - I_C|",
              h3_orthonormal),
        Check("H4-rule", "HadamardHead's Q (both methods) == H_n[:C, :N], "
              "n = 2^ceil(log2 max(N, C)), incl. C > N: mismatching entries", h4_rule),
        Check("H4-orthogonal", "truncated Hadamard, N = n (ResNet-56 64x10, ResNet-50 2048x1000): "
              "max |Q Q^T - N I| / N", h4_orthogonal),
        Check("H4-truncated", "truncated Hadamard, N < n (DenseNet-BC 342x100, DenseNet-169 "
              "1664x1000, ShuffleNet 960x1000): max |Q Q^T - N I| / N = max |cos| between rows; "
              "expected = partial-Walsh-sum prediction; the paper says 0 (rows orthogonal)",
              h4_truncated),
        Check("H5", "head gradients (x through the normalisation, alpha, b; both heads, both "
              "Hadamard methods, fixed alpha, batch 1, tiny rows) vs central differences: "
              "max rel. error", h5_gradients),
        Check("H6-count", "trainable numbers of a fixed head, N = 2048, C = 1000: C + 1 "
              "(Dense: C N + C = 2 049 000)", h6_count),
        Check("H6-bytes", "bytes of Q held by a 2048x1000 HadamardHead (layer, state, params, "
              "cache) after forward + backward", h6_bytes),
        Check("H7-test", "digits MLP, 400 it., 2 seeds: test error of the fixed heads minus the "
              "learned head's, points (their Table 1: close)", h7_test),
        Check("H7-train", "same runs: train error of the fixed heads minus the learned head's, "
              "points (their Fig. 2: higher); 0 = both fit the training set", h7_train),
        Check("H7-alpha", "same protocol, Hadamard head: test error with alpha fixed at 1 / 10 "
              "minus with alpha learned, points (their Fig. 3: 1 or 10 suffice)", h7_alpha),
        Check("H7-alpha-0.1", "same: test error with alpha fixed at 0.1 minus learned, points "
              "(their Fig. 3: 0.1 does not suffice)", h7_alpha_small),
    ]
