"""Calibration of a classifier's probabilities: NLL, Brier score, ECE / MCE, and the exact
temperature scaling of Guo et al. (ICML 2017, "On calibration of modern neural networks").

Notation: logits z (N, C), probabilities p (N, C) whose rows sum to 1, labels y (N,) in
[0, C), C >= 2. The confidence of sample i is c_i = max_k p_ik, its prediction
yhat_i = argmax_k p_ik (the first index on ties, as ``np.argmax``), and a_i = 1[yhat_i = y_i].

Scores (lower is better)::

    NLL   = -(1/N) sum_i log p_{i y_i}                                (Guo et al. Section 2)
    Brier = (1/N) sum_i sum_k (p_ik - 1[k = y_i])^2   in [0, 2]       (Brier 1950)

NLL from logits uses log p_iy = z_iy - lse(z_i) with lse(z) = m + log sum_k exp(z_k - m),
m = max_k z_k (``engine.losses.log_softmax``): no overflow for logits of any size. From
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

Temperature scaling (Guo et al. Section 4.2): p_i = softmax(z_i / T), one T > 0 fitted by
minimising the NLL of held-out data. With beta = 1 / T and p_i = softmax(beta z_i)::

    f(beta)   = (1/N) sum_i [lse(beta z_i) - beta z_iy]
    f'(beta)  = (1/N) sum_i (E_{p_i}[z_i] - z_iy)
    f''(beta) = (1/N) sum_i Var_{p_i}[z_i]  >= 0

f is the log-sum-exp of a linear function of beta minus a linear term: convex, strictly
unless every row of z is constant. Its limits f'(0) = (1/N) sum_i (mean_k z_ik - z_iy) and
f'(+inf) = (1/N) sum_i (max_k z_ik - z_iy) >= 0 decide the cases of ``fit_temperature``:

* every row constant: f = log C for every beta; any T is optimal: T = 1 is returned,
  status ``"flat"``, with a ``CalibrationWarning``;
* f'(+inf) = 0, i.e. every label's logit is a maximum of its row (all predictions right,
  ties with the label included): f' < 0 everywhere, and the infimum is approached as
  beta -> inf (T -> 0) but attained by no T > 0 (T = 0 is not a temperature): ValueError;
* f'(0) >= 0 (the label logits are on average no larger than the row means:
  anti-informative or uninformative logits): the minimiser over beta in R lies at
  beta <= 0, outside T > 0; over the closed range beta in [0, inf) the minimum is at
  beta = 0, which is T = inf, the uniform prediction (NLL = log C). That T = inf is
  returned (``apply_temperature`` accepts it), status ``"uniform"``, with a warning;
* otherwise f'(0) < 0 < f'(inf): one minimiser beta* in (0, inf), status ``"minimum"``.

The minimiser is computed to rounding by a safeguarded Newton iteration on f' (the exact
derivatives above): the logits are shifted by their row maximum (w = z - max_k z, the
shift leaves f unchanged) and divided by sigma, the power of two at or above the largest
row range (exact), so that the search starts at the scale gamma = beta sigma = 1 where no
softmax saturates. From there, while no upper bracket is known, Newton steps are capped at
4x (else quadruple); with a bracket [lo, hi], f'(lo) < 0 < f'(hi), a Newton step is taken
when it stays inside the bracket and shrinks at least geometrically, else the bracket is
bisected (Numerical Recipes' rtsafe). It stops when a step is below 2 ulp of gamma, when
the bracket has shrunk to 4 ulp, or at f' = 0 exactly. Near beta* Newton converges
quadratically (about 5 - 10 evaluations of f', f''); bisection alone needs ~52 per bracket.
(The reference code, gpleiss/temperature_scaling, takes one PyTorch L-BFGS step on T,
lr 0.01, at most 50 iterations: an approximation of the same minimiser.)

All arrays are float64 NumPy arrays: nothing is cast, a float32 input is a TypeError.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

from .._checks import is_real, positive_int
from ..losses import log_softmax

__all__ = ["PROB_SUM_ATOL", "BINNINGS", "CalibrationWarning", "ReliabilityBins",
           "CalibrationError", "TemperatureProfile", "Temperature", "nll", "brier", "ece",
           "mce", "temperature_profile", "fit_temperature", "apply_temperature"]

# |sum_k p_ik - 1| allowed per row. Float64 softmax rows are off by ~C u (u = 1.1e-16); the
# bound also admits probabilities computed in float32 and cast to float64 (off by
# ~sqrt(C) 6e-8 typically). The scores use the rows as given (never renormalised): such a
# deviation moves NLL, Brier and ECE by no more than ~1e-6.
PROB_SUM_ATOL = 1e-6
BINNINGS = ("width", "mass")
N_BINS_MAX = 100_000  # bins of a reliability table: beyond, a typo (1e9) would fill memory
INPUTS = ("logits", "probs")
STATUSES = ("minimum", "uniform", "flat", "max-iter")
BLOCK_ENTRIES = 1 << 22  # rows are processed in blocks of ~4M entries (32 MB per temporary)
MAX_GAMMA = 2.0 ** 1000  # the search in gamma = beta sigma gives up beyond (T < 2^-1000 sigma)


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


class TemperatureProfile(NamedTuple):
    value: float  # f(beta): the NLL of softmax(beta z)
    slope: float  # f'(beta) = mean_i (E_p[z_i] - z_iy)
    curvature: float  # f''(beta) = mean_i Var_p[z_i]


class Temperature(NamedTuple):
    """The result of ``fit_temperature``. slope and curvature are f'(beta) and f''(beta)
    at the returned beta = 1 / T (0 and 0 for "flat")."""

    T: float  # in (0, inf]; inf only for "uniform"
    beta: float  # 1 / T
    nll_before: float  # f(1): the NLL of softmax(z)
    nll_after: float  # f(beta): the NLL of softmax(z / T)
    iterations: int  # evaluations of (f', f'') by the Newton search (0 for the edge cases)
    slope: float
    curvature: float
    status: str  # "minimum", "uniform" (T = inf), "flat" (T = 1) or "max-iter"


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


# ---- temperature scaling ---------------------------------------------------------------
def _blocks(n: int, c: int):
    """Row ranges of at most BLOCK_ENTRIES entries, so temporaries stay ~32 MB each."""
    rows = max(1, BLOCK_ENTRIES // c)
    return ((lo, min(lo + rows, n)) for lo in range(0, n, rows))


def _value(u, y, gamma: float) -> float:
    """f at gamma for row-max-shifted logits u (N, C) (every row's max exactly 0)."""
    total = 0.0
    for lo, hi in _blocks(*u.shape):
        a = gamma * u[lo:hi]  # <= 0, row max 0: sum_k exp(a_k) lies in [1, C]
        total += float((np.log(np.exp(a).sum(axis=1)) - a[np.arange(hi - lo), y[lo:hi]]).sum())
    return total / len(y)


def _profile(u, y, gamma: float) -> tuple[float, float, float]:
    """f, f', f'' at gamma for row-max-shifted logits u (N, C) (every row's max exactly 0)."""
    value = slope = curvature = 0.0
    for lo, hi in _blocks(*u.shape):
        ub = u[lo:hi]
        e = np.exp(gamma * ub)
        s = e.sum(axis=1)
        p = e / s[:, None]
        mean = (p * ub).sum(axis=1)  # E_p[u_i]
        var = (p * (ub - mean[:, None]) ** 2).sum(axis=1)  # Var_p[u_i], two-pass: >= 0
        uy = ub[np.arange(hi - lo), y[lo:hi]]
        value += float((np.log(s) - gamma * uy).sum())
        slope += float((mean - uy).sum())
        curvature += float(var.sum())
    n = len(y)
    return value / n, slope / n, curvature / n


def _scaled(z) -> tuple[np.ndarray, float]:
    """(u, sigma): u = (z - row max) / sigma with sigma the power of two at or above the
    largest row range (1 if every row is constant), so that u lies in [-1, 0] and every
    row's max is exactly 0; the division is exact (barring subnormals)."""
    w = z - z.max(axis=1, keepdims=True)
    largest_range = float(-w.min())
    if largest_range == 0.0:
        return w, 1.0
    if not largest_range < 2.0 ** 1023:  # sigma would overflow (or z - max already did)
        raise ValueError(f"logits: expected row ranges max - min below 2^1023 (8.99e307), got "
                         f"{largest_range:.3g}; rescale the logits")
    sigma = math.ldexp(1.0, math.frexp(largest_range)[1])
    return w / sigma, sigma


def temperature_profile(logits, labels, beta: float) -> TemperatureProfile:
    """f(beta) = NLL of softmax(beta z), with its exact derivatives f'(beta), f''(beta).

    logits : (N, C) float64, finite. labels : (N,) NumPy integers in [0, C).
    beta : finite real >= 0 (beta = 1 / T; 0 is the uniform prediction).
    """
    z = _matrix(logits, "logits")
    y = _labels(labels, *z.shape)
    if not is_real(beta) or not (0 <= float(beta) < math.inf):
        raise ValueError(f"beta: expected a finite real number >= 0, got {beta!r}")
    u, sigma = _scaled(z)
    gamma = float(beta) * sigma
    if not math.isfinite(gamma):
        raise ValueError(f"beta: expected beta times the largest row range of the logits to be "
                         f"finite, got beta = {beta!r} and a range near {sigma:.3g}")
    value, g1, g2 = _profile(u, y, gamma)
    return TemperatureProfile(value, g1 * sigma, g2 * sigma * sigma)


def _newton_step(x: float, slope: float, curvature: float) -> float:
    """The Newton iterate x - f'(x) / f''(x) for the root of f' (NaN when f'' = 0)."""
    return x - slope / curvature if curvature > 0 else math.nan


def _temperature(gamma: float, sigma: float) -> float:
    """T = 1 / beta for beta = gamma / sigma."""
    return sigma / gamma


def fit_temperature(logits, labels, *, max_iter: int = 200) -> Temperature:
    """The temperature T > 0 minimising the NLL of softmax(z / T) on (held-out) data.

    logits : (N, C) float64, finite. labels : (N,) NumPy integer array in [0, C).
    max_iter : the most evaluations of (f', f'') (typically 5 - 10 are used).

    Returns a ``Temperature``. The exact minimiser over beta = 1 / T of the convex
    f(beta) (module docstring), to rounding. Edge cases: every row constant -> T = 1,
    status "flat" (CalibrationWarning); f'(0) >= 0 -> T = inf, the uniform prediction,
    status "uniform" (CalibrationWarning); every label logit a maximum of its row ->
    ValueError (the infimum is at T -> 0, attained by no T > 0); a minimiser beyond
    gamma = 2^1000 -> ValueError; max_iter reached -> status "max-iter" (warning).
    """
    z = _matrix(logits, "logits")
    y = _labels(labels, *z.shape)
    max_iter = positive_int(max_iter, "max_iter")
    n = len(y)
    u, sigma = _scaled(z)  # f, f', f'' unchanged by the shift; beta = gamma / sigma
    before = _value(u, y, sigma)  # beta = 1
    if not (u < 0).any():
        warnings.warn("fit_temperature: every row of logits is constant: the NLL is log C for "
                      "every T; returning T = 1 (status 'flat')", CalibrationWarning,
                      stacklevel=2)
        return Temperature(1.0, 1.0, before, before, 0, 0.0, 0.0, "flat")
    if not (u[np.arange(n), y] < 0).any():
        raise ValueError(f"labels: the label's logit is the largest of its row in all {n} "
                         f"samples, so the NLL of softmax(z / T) decreases all the way to "
                         f"T -> 0 and no T > 0 minimises it: temperature scaling is undefined "
                         f"on this set (fit it on held-out data that the model gets wrong "
                         f"at least once)")
    value0, slope0, curvature0 = _profile(u, y, 0.0)
    if slope0 >= 0:
        warnings.warn(f"fit_temperature: dNLL/dbeta = {slope0 * sigma:.3g} >= 0 at beta = 1/T = "
                      f"0 (the label logits are on average no larger than the row means): the "
                      f"NLL is smallest at beta <= 0, so over T > 0 the best is T = inf, the "
                      f"uniform prediction; returning T = inf (status 'uniform')",
                      CalibrationWarning, stacklevel=2)
        return Temperature(math.inf, 0.0, before, value0, 0, slope0 * sigma,
                           curvature0 * sigma * sigma, "uniform")
    gamma, g1, g2, iterations, converged = _search(u, y, max_iter)
    value = _value(u, y, gamma)
    if not converged:
        warnings.warn(f"fit_temperature: no convergence in max_iter = {max_iter} evaluations "
                      f"(dNLL/dbeta = {g1 * sigma:.3g})", CalibrationWarning, stacklevel=2)
    return Temperature(_temperature(gamma, sigma), gamma / sigma, before, value, iterations,
                       g1 * sigma, g2 * sigma * sigma, "minimum" if converged else "max-iter")


def _search(u, y, max_iter: int) -> tuple[float, float, float, int, bool]:
    """Root gamma of f' for scaled logits u (f'(0) < 0 < f'(inf) known), safeguarded Newton.

    Returns (gamma, f'(gamma), f''(gamma), evaluations, converged)."""
    eps = np.finfo(np.float64).eps
    lo, hi, x = 0.0, math.inf, 1.0
    last_step, done = math.inf, (x, math.nan, math.nan)
    for it in range(1, max_iter + 1):
        _, g1, g2 = _profile(u, y, x)
        done = (x, g1, g2)  # the last point evaluated
        if g1 == 0.0:
            return x, g1, g2, it, True
        if g1 < 0:
            lo = x
        else:
            hi = x
        newton = _newton_step(x, g1, g2)
        if abs(newton - x) <= 2 * eps * x:  # f' = 0 to the rounding of gamma (False for NaN)
            return x, g1, g2, it, True
        if hi == math.inf:  # no upper bracket yet: go up, at most 4x per step
            x_new = min(newton, 4 * x) if newton > x else 4 * x
            if x_new > MAX_GAMMA:
                raise ValueError(f"logits: the NLL keeps decreasing up to beta = "
                                 f"{MAX_GAMMA:.3g} / (largest row range): the label logits are "
                                 f"maximal in all rows but a few by margins too small to "
                                 f"resolve; no T representable in float64 minimises it")
        elif lo < newton < hi and abs(newton - x) <= 0.5 * last_step:
            x_new = newton
        else:
            x_new = 0.5 * (lo + hi)
        if hi < math.inf and hi - lo <= 4 * eps * hi:  # the bracket is 4 ulp wide
            return x, g1, g2, it, True
        last_step, x = abs(x_new - x), x_new
    return (*done, max_iter, False)


def apply_temperature(logits, T) -> np.ndarray:
    """z / T: the logits of temperature scaling (softmax of the result is the calibrated
    prediction). logits : (N, C) float64, finite. T : a real number in (0, inf] or a
    ``Temperature`` (its T); T = inf gives zeros, the uniform prediction.

    Returns a new (N, C) float64 array. For T > 0 the argmax of every row is unchanged (up to
    logits that differ by a rounding of the division).
    """
    if isinstance(T, Temperature):
        T = T.T
    if not is_real(T) or not float(T) > 0:
        raise ValueError(f"T: expected a real number > 0 (inf allowed), got {T!r}")
    z = _matrix(logits, "logits")
    with np.errstate(over="ignore"):
        out = z / float(T)
    if not np.isfinite(out).all():
        raise ValueError(f"T: expected a T > 0 for which z / T is finite; T = {float(T)!r} makes "
                         f"the largest |logit| {float(np.abs(z).max()):.3g} overflow float64")
    return out
