"""Exact one-dimensional minimisation of a last-layer loss along a direction (PoF's eq. 2).

For frozen features Phi (N, d), a linear last layer (W (C, d), b (C,)) and a direction
(dW, db) in its parameter space, the loss along the line theta - xi (dW, db) is

    f(xi) = loss(Z0 - xi U),    Z0 = Phi W^T + b,   U = Phi dW^T + db            (N, C)
    f'(xi) = -<dloss/dZ, U>,    f''(xi) = (1/N) sum_i U_i^T A_i U_i

with A_i the loss's Hessian in the logits of sample i (softmax CE: diag(p_i) - p_i p_i^T;
squared error: 2 I). Both losses are convex in the logits and Z is affine in xi, so f is
convex: its minimiser over xi >= 0 is where f' changes sign, and each evaluation costs one
(N, C) pass once Z0 and U are known (``LineProfile``).

``line_minimum`` finds it to a relative accuracy ``rtol`` (default 1e-12): a first step
from Newton's estimate -f'(0) / f''(0) (exact for a quadratic), doubled until the slope
turns non-negative (a bracket), then safeguarded Newton steps on f' inside the bracket,
bisecting whenever a Newton step would leave it. A profile whose slope stays negative
for ``max_doublings`` doublings has no minimum within reach (softmax CE of a batch that
the direction separates: the loss falls towards an asymptote); it gets the status
``"no-minimum"``, as does one that the paper's PoF would discard. A direction along which
the loss does not decrease at 0 gives ``"at-start"`` (xi = 0).

``released_line_search`` is the scheme of the PoF authors' code (DensoITLab/PoF-v1): the
step along the (unnormalised) direction doubles from 1 until the loss exceeds its value at
0 (or a cap), then the best of 16 equally spaced points up to that bound is taken.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..._checks import float_array
from ...losses import softmax, softmax_cross_entropy, squared_error

__all__ = ["LineProfile", "LineMinimum", "line_minimum", "released_line_search"]

STATUSES = ("minimum", "no-minimum", "at-start")


class LineMinimum(NamedTuple):
    xi: float  # the minimiser along the line (0 for "at-start"; the last point tried for "no-minimum")
    value: float  # f(xi)
    slope: float  # f'(xi): 0 up to rounding at a "minimum"
    status: str  # "minimum", "no-minimum" or "at-start"
    evaluations: int  # profile evaluations used
    bracket: tuple[float, float]  # (lo, hi) with f'(lo) < 0 <= f'(hi) at the end (minimum)


class LineProfile:
    """The loss of a linear last layer along theta - xi (dW, db): value, slope, curvature.

    Phi : (N, d) float features. targets : (N,) integer labels, or (N, C) real targets
    (probabilities for CE). W : (C, d), b : (C,) or None. dW : (C, d), db : (C,) or None.
    loss : "ce" (softmax cross-entropy, mean over samples) or "squared" (mean over samples
    of ||z - y||^2, no factor 1/2): the conventions of ``lastlayer.engine.losses``.
    """

    def __init__(self, Phi, targets, W, b, dW, db=None, loss: str = "ce"):
        float_array(Phi, "Phi")
        if loss not in ("ce", "squared"):
            raise ValueError(f"loss: expected 'ce' or 'squared', got {loss!r}")
        if Phi.ndim != 2 or W.ndim != 2 or W.shape[1] != Phi.shape[1]:
            raise ValueError(f"W: expected shape (C, {Phi.shape[1] if Phi.ndim == 2 else 'd'}) "
                             f"for Phi of shape {tuple(Phi.shape)}, got {tuple(W.shape)}")
        if tuple(dW.shape) != tuple(W.shape):
            raise ValueError(f"dW: expected W's shape {tuple(W.shape)}, got {tuple(dW.shape)}")
        if (b is None) != (db is None):
            raise ValueError("db: give a bias direction exactly when the layer has a bias b")
        self.loss = loss
        self.targets = targets
        self.z0 = Phi @ W.T  # (N, C)
        self.u = Phi @ dW.T  # (N, C): the change of the logits per unit of xi
        if b is not None:
            self.z0 += b
            self.u += db
        self.n = Phi.shape[0]
        self.mass = None  # CE with real targets: sum_c t_ic scales A_i
        if loss == "ce" and targets.dtype.kind not in "iu":
            self.mass = targets.sum(axis=1)

    def evaluate(self, xi: float) -> tuple[float, float, float]:
        """(f(xi), f'(xi), f''(xi)) in one pass over the (N, C) logits."""
        z = self.z0 - xi * self.u  # (N, C)
        u = self.u
        if self.loss == "ce":
            value, dz = softmax_cross_entropy(z, self.targets)  # dz = dloss/dz, includes 1/N
            p = softmax(z)
            pu = (p * u).sum(axis=1)  # (N,)
            per_sample = (p * u * u).sum(axis=1) - pu * pu  # u_i^T A_i u_i without the mass
            if self.mass is not None:
                per_sample *= self.mass
            curvature = float(per_sample.sum()) / self.n
        else:
            value, dz = squared_error(z, self.targets)
            curvature = 2.0 * float((u * u).sum()) / self.n
        slope = -float((dz * u).sum())
        return float(value), slope, curvature

    def value(self, xi: float) -> float:
        return self.evaluate(xi)[0]

    def scan(self, xis) -> tuple[np.ndarray, np.ndarray]:
        """(f, f') at every point of the 1-D array ``xis`` at once (plots, dense scans)."""
        xis = np.asarray(xis, dtype=np.float64).reshape(-1)
        z = self.z0[None] - xis[:, None, None] * self.u[None]  # (G, N, C)
        if self.loss == "ce":
            zmax = z.max(axis=2, keepdims=True)
            logp = z - zmax - np.log(np.exp(z - zmax).sum(axis=2, keepdims=True))
            p = np.exp(logp)
            t = np.eye(z.shape[2])[self.targets] if self.targets.dtype.kind in "iu" \
                else self.targets
            values = -(t[None] * logp).sum(axis=(1, 2)) / self.n
            dz = (p * t.sum(axis=1)[None, :, None] - t[None]) / self.n
        else:
            r = z - self.targets[None]
            values = (r * r).sum(axis=(1, 2)) / self.n
            dz = 2 * r / self.n
        return values, -(dz * self.u[None]).sum(axis=(1, 2))

    def slope(self, xi: float) -> float:
        return self.evaluate(xi)[1]


def line_minimum(profile: LineProfile, *, rtol: float = 1e-12, max_doublings: int = 60,
                 max_iterations: int = 200) -> LineMinimum:
    """The minimiser of ``profile`` over xi >= 0 (module docstring); exact to ``rtol``
    relative on xi, and on a quadratic profile to rounding after one Newton step."""
    if not 0 < rtol < 1:
        raise ValueError(f"rtol: expected a value in (0, 1), got {rtol}")
    f0, s0, c0 = profile.evaluate(0.0)
    count = 1
    if not (math.isfinite(f0) and math.isfinite(s0) and math.isfinite(c0)):
        raise ValueError(f"profile: the loss at xi = 0 is not finite (value {f0}, slope {s0})")
    if s0 >= 0:
        return LineMinimum(0.0, f0, s0, "at-start", count, (0.0, 0.0))
    # bracket: from Newton's estimate (exact for a quadratic), doubled until f' >= 0
    # (a slope of exactly 0 is a minimum only if the slope is positive further on: the
    # slope of a softmax CE that saturates underflows to 0 and stays there)
    low = (0.0, f0, s0, c0)  # (xi, f, f', f'') with f' < 0
    flat = None  # the first point where f' == 0
    hi = (-s0 / c0) if c0 > 0 else 1.0
    for _ in range(max_doublings + 1):
        f, s, c = profile.evaluate(hi)
        count += 1
        if not math.isfinite(f):
            raise ValueError(f"profile: the loss at xi = {hi} is not finite")
        if s > 0:
            break
        if s < 0:
            low = (hi, f, s, c)
        elif flat is None:
            flat = (hi, f, s, c)
        hi *= 2.0
    else:
        end = flat or low
        return LineMinimum(end[0], end[1], end[2], "no-minimum", count, (low[0], hi))
    if flat is not None:
        return LineMinimum(flat[0], flat[1], flat[2], "minimum", count, (low[0], flat[0]))
    high = (hi, f, s, c)  # f' > 0
    # safeguarded Newton on f' inside the bracket, from its end with the smaller |f'|
    x, fx, sx, cx = min(low, high, key=lambda point: abs(point[2]))
    lo, hi = low[0], high[0]
    for _ in range(max_iterations):
        newton = sx / cx if cx > 0 else math.inf
        if sx == 0.0 or abs(newton) <= rtol * x or hi - lo <= rtol * hi:
            break  # x is the root to rtol (a Newton step from it would not move it further)
        candidate = x - newton
        if not lo < candidate < hi:
            candidate = 0.5 * (lo + hi)
        fx, sx, cx = profile.evaluate(candidate)
        x = candidate
        count += 1
        if sx < 0:
            lo = x
        elif sx > 0:
            hi = x
    return LineMinimum(x, fx, sx, "minimum", count, (lo, hi))


def released_line_search(profile: LineProfile, *, points: int = 16,
                         cap: float = 2.0**20) -> tuple[float, str, int]:
    """The PoF authors' scheme along the direction of ``profile`` (their unnormalised
    gradient): the step s = 1, 2, 4, ... doubles until f(s) > f(0) (or s exceeds ``cap``),
    then the best of ``points`` equally spaced steps s_k = k * bound / points, k = 1 ..
    points, is returned. Returns (s, status, evaluations) with status "bounded" or "cap"
    (the loss never rose above f(0) up to the cap)."""
    f0 = profile.value(0.0)
    count = 1
    bound, status = 1.0, "bounded"
    while True:
        count += 1
        if profile.value(bound) > f0:
            break
        if bound >= cap:
            status = "cap"
            break
        bound *= 2.0
    grid = bound * np.arange(1, points + 1) / points
    values = [profile.value(float(s)) for s in grid]
    count += points
    return float(grid[int(np.argmin(values))]), status, count
