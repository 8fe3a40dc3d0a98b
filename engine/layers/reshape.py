"""Shape-only layers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from .base import Layer


class FlattenCache(NamedTuple):
    x_shape: tuple  # (N, ...) input shape


@dataclass(frozen=True)
class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 d2 ...), row-major (C order). A view when x is contiguous."""

    def output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise self.shape_error("(N, ...)", input_shape)
        return (input_shape[0], math.prod(input_shape[1:]))

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        return x.reshape(x.shape[0], -1), FlattenCache(tuple(x.shape))

    def backward(self, params, cache, dy):
        self.check_upstream(dy, self.output_shape(cache.x_shape), dy.dtype)
        return dy.reshape(cache.x_shape), {}
