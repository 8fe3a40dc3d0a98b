"""Element-wise activations. Input and output have the same (any) shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..backend import array_module
from .base import Layer


class ActivationCache(NamedTuple):
    y: object  # the output; each derivative below is a function of y alone


class _Elementwise(Layer):
    def output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise self.shape_error("(N, ...)", input_shape)
        return tuple(input_shape)


@dataclass(frozen=True)
class ReLU(_Elementwise):
    """y = max(x, 0). Derivative 1 where x > 0, else 0 (the subgradient 0 is taken at 0)."""

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        xp = array_module(x)
        y = xp.maximum(x, 0)
        return y, ActivationCache(y)

    def backward(self, params, cache, dy):
        self.check_upstream(dy, cache.y.shape, cache.y.dtype)
        return dy * (cache.y > 0), {}  # y > 0 exactly where x > 0


@dataclass(frozen=True)
class Tanh(_Elementwise):
    """y = tanh(x); dy/dx = 1 - y^2."""

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        y = array_module(x).tanh(x)
        return y, ActivationCache(y)

    def backward(self, params, cache, dy):
        self.check_upstream(dy, cache.y.shape, cache.y.dtype)
        y = cache.y
        return dy * (1 - y * y), {}


@dataclass(frozen=True)
class Sigmoid(_Elementwise):
    """y = 1 / (1 + exp(-x)); dy/dx = y (1 - y).

    Evaluated as 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0 with e = exp(-|x|), so
    exp never overflows and tiny outputs keep full relative precision (no 1 - 1 cancels).
    """

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        xp = array_module(x)
        e = xp.exp(-xp.abs(x))  # in (0, 1]
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return y, ActivationCache(y)

    def backward(self, params, cache, dy):
        self.check_upstream(dy, cache.y.shape, cache.y.dtype)
        y = cache.y
        return dy * (y * (1 - y)), {}
