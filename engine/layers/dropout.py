"""Inverted dropout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..backend import array_module
from .base import Layer


class DropoutCache(NamedTuple):
    mask: object  # same shape as x: 0 for dropped units, 1 / (1 - p) for kept ones; None if identity


@dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014): in training each unit is zeroed with
    probability ``p`` and the survivors are scaled by 1 / (1 - p), so E[y] = x and the
    layer is exactly the identity at inference (``train=False``), with no rescaling there.

    The mask is drawn from the generator passed as ``rng``: the same seed gives the same
    mask. A NumPy ``Generator`` (what ``lastlayer.engine.streams`` gives the training loop) draws on
    the host, and the mask is then copied to the input's device, so a CuPy run uses the
    very masks of the NumPy run; a CuPy generator draws on the device.
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
        keep = rng.random(x.shape) >= self.p  # P(keep) = 1 - p, on the generator's device
        mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        mask = array_module(x).asarray(mask)  # to x's device (no copy if already there)
        return x * mask, DropoutCache(mask)

    def backward(self, params, cache, dy):
        if cache.mask is None:
            return dy, {}
        self.check_upstream(dy, cache.mask.shape, cache.mask.dtype)
        return dy * cache.mask, {}
