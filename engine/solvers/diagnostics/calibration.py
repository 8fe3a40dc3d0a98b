"""Calibration of a classifier's probabilities: NLL, Brier score, ECE / MCE (Guo et al., ICML
2017, "On calibration of modern neural networks"); their temperature scaling is in
``temperature``.

Notation: logits z (N, C), probabilities p (N, C) whose rows sum to 1, labels y (N,) in
[0, C), C >= 2. The confidence of sample i is c_i = max_k p_ik, its prediction
yhat_i = argmax_k p_ik (the first index on ties, as ``np.argmax``), and a_i = 1[yhat_i = y_i].

Scores (lower is better)::

    NLL   = -(1/N) sum_i log p_{i y_i}                                (Guo et al. Section 2)
    Brier = (1/N) sum_i sum_k (p_ik - 1[k = y_i])^2   in [0, 2]       (Brier 1950)

NLL from logits uses log p_iy = z_iy - lse(z_i) with lse(z) = m + log sum_k exp(z_k - m),
m = max_k z_k (``lastlayer.engine.losses.log_softmax``): no overflow for logits of any size. From
probabilities, p_iy = 0 gives NLL = +inf. The Brier score is Brier's multi-class form: the
squared error *summed over the C classes*, averaged over samples; 0 for a one-hot correct
prediction, 2 for a one-hot wrong one, 1 - 1/C for the uniform prediction. (Some libraries
average over classes too, which divides this by C.)

Calibration errors (Naeini, Cooper & Hauskrecht, AAAI 2015; Guo et al. Section 2)::

    ECE = sum_m (|B_m| / N) |acc(B_m) - conf(B_m)|,       MCE = max_m |acc(B_m) - conf(B_m)|

acc(B_m) = mean of a_i over the bin, conf(B_m) = mean of c_i; MCE runs over non-empty bins.
Two binnings of the confidences, with M = ``n_bins``:

* ``"width"`` (Guo et al.; gpleiss/temperature_scaling's ``_ECELoss``): edges b_m = m / M
  (each correctly rounded: ``np.arange(M + 1) / M``), bins right-closed,
  B_1 = [0, b_1] and B_m = (b_{m-1}, b_m] for m >= 2. A confidence equal to an edge goes
  into the bin below it (0.8 with M = 15: bin 12, (11/15, 12/15]); a confidence of exactly
  1.0 goes into the last bin. Every one of the M bins is reported, empty ones with count 0.
* ``"mass"`` (equal mass, the adaptive bins of Nixon et al., CVPR-W 2019): the confidences
  sorted ascending, boundaries at the sorted positions floor(m N / M), m = 1 .. M - 1 (bin
  sizes floor(N / M) or ceil(N / M)). Ties: a boundary that falls inside a run of equal
  confidences moves up to the end of that run, so a run is never split (the whole run joins
  the lower bin); bins left empty by such moves (or by N < M) are dropped. Membership then
  depends on the confidence values only, not on the order of the samples.

Each bin's sum of confidences is exact (``math.fsum``, correctly rounded) and its number of
correct predictions an integer k_m, so ECE = (1/N) fsum_m |k_m - S_m| is computed to within
a few roundings and is bit-for-bit invariant under permutations of the samples.

All arrays are float64 NumPy arrays: nothing is cast, a float32 input is a TypeError.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..._checks import positive_int
from ...losses import log_softmax

__all__ = ["PROB_SUM_ATOL", "BINNINGS", "N_BINS_MAX", "CalibrationWarning", "ReliabilityBins",
           "CalibrationError", "nll", "brier", "ece", "mce"]

# |sum_k p_ik - 1| allowed per row. Float64 softmax rows are off by ~C u (u = 1.1e-16); the
# bound also admits probabilities computed in float32 and cast to float64 (off by
# ~sqrt(C) 6e-8 typically). The scores use the rows as given (never renormalised): such a
# deviation moves NLL, Brier and ECE by no more than ~1e-6.
PROB_SUM_ATOL = 1e-6
BINNINGS = ("width", "mass")
N_BINS_MAX = 100_000  # bins of a reliability table: beyond, a typo (1e9) would fill memory
INPUTS = ("logits", "probs")


class CalibrationWarning(UserWarning):
    """fit_temperature returned a degenerate temperature (flat or uninformative logits)."""


class ReliabilityBins(NamedTuple):
    """The per-bin table of a reliability diagram, B rows (B = n_bins for "width"; at most
    n_bins, empty bins dropped, for "mass")."""

    lower: np.ndarray  # (B,) "width": the edge (m - 1) / M; "mass": the smallest confidence
    upper: np.ndarray  # (B,) "width": the edge m / M; "mass": the largest confidence
    confidence: np.ndarray  # (B,) mean confidence of the bin (NaN where count is 0)
    accuracy: np.ndarray  # (B,) fraction of correct predictions (NaN where count is 0)
    count: np.ndarray  # (B,) int64, number of samples; sums to N


class CalibrationError(NamedTuple):
    ece: float  # expected calibration error, in [0, 1]
    mce: float  # maximum calibration error over the non-empty bins, in [0, 1]
    bins: ReliabilityBins
    binning: str  # "width" or "mass"
    n_bins: int  # M as asked


# ---- validation ------------------------------------------------------------------------
def _matrix(x, name: str) -> np.ndarray:
    """A float64 NumPy array (N, C), N >= 1, C >= 2, finite."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a float64 NumPy array of shape (N, C), got "
                        f"{type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(f"{name}: expected dtype float64 (nothing is cast; convert with "
                        f".astype(np.float64)), got {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2:
        raise ValueError(f"{name}: expected shape (N, C) with N >= 1 and C >= 2 classes (for a "
                         f"single binary logit s, pass the columns [0, s]), got {x.shape}")
    n_bad = int(x.size - np.isfinite(x).sum())
    if n_bad:
        raise ValueError(f"{name}: expected finite values, got {n_bad} NaN/Inf of {x.size} "
                         f"entries")
    return x


def _probabilities(p, name: str = "probs") -> np.ndarray:
    _matrix(p, name)
    if p.min() < 0:
        i, k = np.unravel_index(int(np.argmin(p)), p.shape)
        raise ValueError(f"{name}: expected probabilities >= 0, got {float(p[i, k])!r} at row "
                         f"{i}, column {k}")
    dev = np.abs(p.sum(axis=1) - 1.0)
    if dev.max() > PROB_SUM_ATOL:
        i, off = int(np.argmax(dev)), int((dev > PROB_SUM_ATOL).sum())
        raise ValueError(f"{name}: expected rows summing to 1 within {PROB_SUM_ATOL:g}, got a "
                         f"row sum of {float(p[i].sum())!r} at row {i} ({off} of {len(p)} rows "
                         f"off; for logits pass inputs='logits' to nll, or apply a softmax)")
    return p


def _labels(labels, n: int, c: int) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu":
        what = (f"{labels.dtype} array" if isinstance(labels, np.ndarray)
                else type(labels).__name__)
        raise TypeError(f"labels: expected a NumPy integer array of shape ({n},), got {what}")
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},) (one label per row), got "
                         f"{labels.shape}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= c:
        raise ValueError(f"labels: expected values in [0, {c}) for C = {c} classes, got values "
                         f"in [{lo}, {hi}]")
    return labels.astype(np.intp, copy=False)


def _choice(value, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got "
                         f"{value!r}")
    return value


# ---- scores ----------------------------------------------------------------------------
def nll(logits_or_probs, labels, *, inputs: str) -> float:
    """Mean negative log-likelihood of the labels.

    logits_or_probs : (N, C) float64, finite; logits if ``inputs="logits"`` (any real
        values; log-softmax with the row-maximum shift), probabilities if
        ``inputs="probs"`` (>= 0, rows summing to 1 within ``PROB_SUM_ATOL``).
    labels : (N,) NumPy integer array in [0, C).
    inputs : "logits" or "probs" (required: a row of logits can look like probabilities).

    Returns -(1/N) sum_i log p_iy, a float >= 0; +inf when some p_iy = 0 (probs only).
    """
    _choice(inputs, "inputs", INPUTS)
    name = "logits" if inputs == "logits" else "probs"
    x = _matrix(logits_or_probs, name) if inputs == "logits" else _probabilities(logits_or_probs)
    y = _labels(labels, *x.shape)
    rows = np.arange(len(y))
    if inputs == "logits":
        return float(-log_softmax(x)[rows, y].mean())
    with np.errstate(divide="ignore"):  # log(0) = -inf: the NLL is +inf, honestly
        return float(-np.log(x[rows, y]).mean())


def _brier_rows(p, y) -> np.ndarray:
    """(N,) per-sample sum_k (p_ik - 1[k = y_i])^2."""
    d = p.copy()
    d[np.arange(len(y)), y] -= 1.0
    return (d * d).sum(axis=1)


def brier(probs, labels) -> float:
    """Brier score (1/N) sum_i sum_k (p_ik - 1[k = y_i])^2 (summed over classes, mean over
    samples), in [0, 2].

    probs : (N, C) float64 probabilities (>= 0, rows summing to 1 within PROB_SUM_ATOL).
    labels : (N,) NumPy integer array in [0, C).
    """
    p = _probabilities(probs)
    y = _labels(labels, *p.shape)
    return float(_brier_rows(p, y).mean())


def _predictions(p, y) -> tuple[np.ndarray, np.ndarray]:
    """(N,) confidences max_k p_ik and (N,) bools argmax_k p_ik == y_i (first index on ties)."""
    return p.max(axis=1), p.argmax(axis=1) == y


def _width_bins(conf, n_bins: int) -> np.ndarray:
    """Bin index in [0, M) of each confidence: B_1 = [0, 1/M], B_m = ((m-1)/M, m/M]."""
    inner = np.arange(1, n_bins) / n_bins  # the M - 1 inner edges, each correctly rounded
    # side="left": the number of inner edges strictly below c, so c = m/M stays in bin m
    return np.searchsorted(inner, conf, side="left")


def _mass_boundaries(sorted_conf, n_bins: int) -> list[int]:
    """Sorted positions 0 = s_0 < s_1 < ... < s_B = N of the equal-mass bins: floor(m N / M),
    each moved up to the end of a run of equal confidences it falls into."""
    n = len(sorted_conf)
    bounds = [0]
    for m in range(1, n_bins):
        k = m * n // n_bins
        if 0 < k < n and sorted_conf[k - 1] == sorted_conf[k]:
            k = int(np.searchsorted(sorted_conf, sorted_conf[k], side="right"))
        if bounds[-1] < k < n:
            bounds.append(k)
    bounds.append(n)
    return bounds


def ece(probs, labels, n_bins: int = 15, binning: str = "width") -> CalibrationError:
    """Expected and maximum calibration error, and the reliability table.

    probs : (N, C) float64 probabilities (>= 0, rows summing to 1 within PROB_SUM_ATOL).
    labels : (N,) NumPy integer array in [0, C).
    n_bins : M >= 1. binning : "width" (M equal-width bins on [0, 1]) or "mass" (equal
        numbers of samples); the edge and tie conventions are in the module docstring.

    Returns ``CalibrationError(ece, mce, bins, binning, n_bins)``; ``bins`` holds per bin
    the edges, mean confidence, accuracy and count (a reliability diagram's data).
    """
    n_bins = positive_int(n_bins, "n_bins")
    if n_bins > N_BINS_MAX:
        raise ValueError(f"n_bins: expected an integer from 1 to {N_BINS_MAX} (the reliability "
                         f"table has a row per bin), got {n_bins}")
    _choice(binning, "binning", BINNINGS)
    p = _probabilities(probs)
    y = _labels(labels, *p.shape)
    conf, correct = _predictions(p, y)
    if binning == "width":
        idx = _width_bins(conf, n_bins)
        order = np.argsort(idx, kind="stable")
        counts = np.bincount(idx, minlength=n_bins)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        edges = np.arange(n_bins + 1) / n_bins
        lower, upper = edges[:-1], edges[1:]
    else:
        order = np.argsort(conf, kind="stable")
        bounds = np.asarray(_mass_boundaries(conf[order], n_bins))
        lower, upper = conf[order][bounds[:-1]], conf[order][bounds[1:] - 1]
    c_sorted, a_sorted = conf[order], correct[order]
    n_rows = len(bounds) - 1
    sums, hits = np.zeros(n_rows), np.zeros(n_rows, dtype=np.int64)
    for m in range(n_rows):
        lo, hi = int(bounds[m]), int(bounds[m + 1])
        sums[m] = math.fsum(c_sorted[lo:hi].tolist())
        hits[m] = int(a_sorted[lo:hi].sum())
    count = np.diff(bounds).astype(np.int64)
    full = count > 0
    gaps = np.abs(hits[full] - sums[full])  # n_m |acc_m - conf_m|, one rounding each
    value = math.fsum(gaps.tolist()) / len(y)
    worst = float((gaps / count[full]).max())
    confidence, accuracy = np.full(n_rows, np.nan), np.full(n_rows, np.nan)
    confidence[full], accuracy[full] = sums[full] / count[full], hits[full] / count[full]
    table = ReliabilityBins(np.array(lower, dtype=np.float64), np.array(upper, dtype=np.float64),
                            confidence, accuracy, count)
    return CalibrationError(value, worst, table, binning, n_bins)


def mce(probs, labels, n_bins: int = 15, binning: str = "width") -> float:
    """Maximum calibration error max_m |acc(B_m) - conf(B_m)| (non-empty bins): ``ece``'s
    ``mce``, with the same arguments and conventions."""
    return ece(probs, labels, n_bins, binning).mce
