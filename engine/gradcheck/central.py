"""Central-difference gradient checks in float64.

A layer ``y = f(x; params)`` is checked through one scalar, the projection onto a fixed
random direction v (a vector-Jacobian product check)::

    s(x, params) = sum(v * f(x; params))
    backward(params, cache, dy=v)  must equal  d s / d x  and  d s / d params

and the numerical side differentiates s entry by entry with central differences

    d s / d x_k  ~=  (s(x + h e_k) - s(x - h e_k)) / (2 h),     h = eps max_j |x_j|,

(h = eps if x is all zeros) whose truncation error is O((h / scale)^2) and rounding error
O(u / h) (u = 2^-53): about 1e-11 relative for eps = 1e-6. The step follows the tensor's
own magnitude, so tiny inputs (a row of norm 1e-3 entering an L2 normalisation) are
differentiated on their own scale. Networks and losses are checked the same way with
the loss as the scalar.

Error measure: for each tensor, ``max_k |a_k - n_k| / S`` where S is the largest
gradient entry of the whole check, ``max(|a|, |n|)`` over every tensor checked together
(x and all parameters). It is 1 or more when a backward pass is wrong and ~1e-10 when it
is right. Normalising by the whole check's scale, not each tensor's own, keeps a tensor
whose true gradient is exactly zero (a convolution bias followed by batch normalisation)
from being judged on the central difference's rounding noise; the price is that a tensor
whose gradient is below ~1e-7 S is checked only in absolute terms.

Inputs must avoid kinks (ReLU at 0, max-pool ties) by more than h, or the central
difference straddles the kink: the cases in ``lastlayer.engine.gradcheck.cases`` choose such inputs.
All checks insist on float64: in float32 the rounding error alone is ~1e-2.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..layers.base import Layer
from ..network import Network

__all__ = ["relative_error", "numerical_gradient", "check_layer", "check_loss", "check_network"]


def relative_error(analytic, numeric, scale: float | None = None) -> float:
    """``max|a - n| / scale``, by default ``scale = max(max|a|, max|n|)``; 0.0 when the
    scale is zero (both gradients identically zero)."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"analytic and numeric gradients differ in shape: {a.shape} vs {n.shape}")
    if a.size == 0:
        return 0.0
    if scale is None:
        scale = _scale([(a, n)])
    if scale == 0.0:
        return 0.0
    return float(np.abs(a - n).max() / scale)


def _scale(pairs) -> float:
    """Largest |entry| over all (analytic, numeric) pairs."""
    return max((float(np.abs(g).max()) for pair in pairs for g in pair if np.size(g)), default=0.0)


def _errors(pairs: dict) -> dict[str, float]:
    """Per-tensor errors of {name: (analytic, numeric)}, all against the common scale."""
    scale = _scale(pairs.values())
    return {name: relative_error(a, n, scale) for name, (a, n) in pairs.items()}


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` w.r.t. the array ``x``.

    ``x`` is perturbed in place, one entry at a time, and restored exactly afterwards;
    ``f`` must read ``x`` (it takes no argument so that x can be any tensor it closes over).
    """
    _require_float64(x, "x")
    grad = np.zeros_like(x)
    scale = float(np.abs(x).max()) if x.size else 0.0
    h = eps * (scale if scale > 0 else 1.0)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)  # views (x must be contiguous)
    if not np.shares_memory(flat_x, x):
        raise ValueError("x: numerical_gradient needs a contiguous array to perturb in place")
    for k in range(flat_x.size):
        orig = flat_x[k]
        flat_x[k] = orig + h
        f_plus = f()
        flat_x[k] = orig - h
        f_minus = f()
        flat_x[k] = orig
        flat_g[k] = (f_plus - f_minus) / (2 * h)
    return grad


def check_layer(layer: Layer, params: dict, x: np.ndarray, *, train: bool = False,
                state: dict | None = None, seed: int = 0, eps: float = 1e-6) -> dict[str, float]:
    """Check ``layer.backward`` against central differences of ``layer.forward``.

    Returns ``{"x": err, "<param>": err, ...}``, one relative error per tensor. A
    stochastic layer gets a fresh ``np.random.default_rng(seed)`` at every evaluation, so
    its random mask is the same in each.
    """
    _require_float64(x, "x")
    for name, p in params.items():
        _require_float64(p, f"params['{name}']")
    x = np.array(x, dtype=np.float64)  # private contiguous copies, perturbed in place
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}

    def run():
        return layer.forward(params, x, train, state=state, rng=np.random.default_rng(seed))

    y, cache = run()
    v = np.random.default_rng(seed + 1).standard_normal(y.shape)  # projection direction

    def s():
        return float(np.sum(v * run()[0]))

    dx, grads = layer.backward(params, cache, v)
    pairs = {"x": (dx, numerical_gradient(s, x, eps))}
    for name in params:
        pairs[name] = (grads[name], numerical_gradient(s, params[name], eps))
    return _errors(pairs)


def check_loss(loss: Callable, pred: np.ndarray, targets, *, eps: float = 1e-6) -> float:
    """Check the gradient returned by ``loss(pred, targets) -> (value, dpred)``."""
    _require_float64(pred, "pred")
    pred = np.array(pred, dtype=np.float64)
    _, dpred = loss(pred, targets)
    return relative_error(dpred, numerical_gradient(lambda: loss(pred, targets)[0], pred, eps))


def check_network(net: Network, params: list, x: np.ndarray, loss: Callable, targets, *,
                  train: bool = False, state: list | None = None, seed: int = 0,
                  eps: float = 1e-6) -> dict[str, float]:
    """Check the whole chain ``loss(net(x), targets)`` w.r.t. x and every parameter.

    Returns ``{"x": err, "0.W": err, "3.gamma": err, ...}`` (layer index . name).
    """
    _require_float64(x, "x")
    x = np.array(x, dtype=np.float64)
    params = [{k: np.array(v, dtype=np.float64) for k, v in p.items()} for p in params]
    for i, p in enumerate(params):
        for name, arr in p.items():
            _require_float64(arr, f"params[{i}]['{name}']")

    def run():
        y, caches = net.forward(params, x, train, state=state, rng=np.random.default_rng(seed))
        value, dy = loss(y, targets)
        return value, dy, caches

    def value():
        return run()[0]

    _, dy, caches = run()
    dx, grads = net.backward(params, caches, dy)
    pairs = {"x": (dx, numerical_gradient(value, x, eps))}
    for i, p in enumerate(params):
        for name in p:
            pairs[f"{i}.{name}"] = (grads[i][name], numerical_gradient(value, p[name], eps))
    return _errors(pairs)


def _require_float64(a, name: str) -> None:
    dtype = getattr(a, "dtype", None)
    if dtype != np.float64:
        raise TypeError(f"{name}: gradient checks run in float64, got dtype {dtype} "
                        f"(float32 rounding alone is ~1e-2 of a central difference)")
