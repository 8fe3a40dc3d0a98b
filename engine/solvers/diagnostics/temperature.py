"""Temperature scaling of a classifier's logits, by the exact 1-D minimisation of the
held-out NLL (Guo et al., ICML 2017, "On calibration of modern neural networks"); the
notation and the scores are those of ``calibration``.

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

from ..._checks import is_real, positive_int
from .calibration import CalibrationWarning, _labels, _matrix

__all__ = ["STATUSES", "TemperatureProfile", "Temperature", "temperature_profile",
           "fit_temperature", "apply_temperature"]

STATUSES = ("minimum", "uniform", "flat", "max-iter")
BLOCK_ENTRIES = 1 << 22  # rows are processed in blocks of ~4M entries (32 MB per temporary)
MAX_GAMMA = 2.0 ** 1000  # the search in gamma = beta sigma gives up beyond (T < 2^-1000 sigma)


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
