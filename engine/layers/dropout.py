"""Inverted dropout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .base import Layer


class DropoutCache(NamedTuple):
    mask: object  # same shape as x: 0 for dropped units, 1 / (1 - p) for kept ones; None if identity


@dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014): in training each unit is zeroed with
    probability ``p`` and the survivors are scaled by 1 / (1 - p), so E[y] = x and the
    layer is exactly the identity at inference (``train=False``), with no rescaling there.

    The mask is drawn from the generator passed as ``rng`` (a NumPy ``Generator`` for NumPy
    input, a CuPy one for CuPy input): the same seed gives the same mask.
    """

    p: float = 0.5

    stochastic = True

    def __post_init__(self):
        if not 0 <= self.p < 1:
            raise ValueError(f"p: expected a drop probability in [0, 1), got {self.p}")

    def __str__(self):
        return f"Dropout(p={self.p:g})"

    def output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise self.shape_error("(N, ...)", input_shape)
        return tuple(input_shape)

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        if not train or self.p == 0:
            return x, DropoutCache(None)
        if rng is None:
            raise ValueError(f"{self}: training mode draws a random mask; pass rng=...")
        keep = rng.random(x.shape) >= self.p  # P(keep) = 1 - p
        mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * mask, DropoutCache(mask)

    def backward(self, params, cache, dy):
        if cache.mask is None:
            return dy, {}
        self.check_upstream(dy, cache.mask.shape, cache.mask.dtype)
        return dy * cache.mask, {}
