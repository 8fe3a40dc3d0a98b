"""Exercise leaky-relu: a LeakyReLU layer, forward and backward.

    y = x          where x > 0
    y = slope x    where x <= 0          (0 <= slope < 1; 0.01 is the usual value)

that is y = max(x, slope x). Unlike ReLU, a negative input still passes a gradient back:

    dL/dx = dL/dy              where x > 0
    dL/dx = slope dL/dy        where x <= 0   (at x = 0 take the slope, as ReLU takes 0)

Write the three methods below that raise NotImplementedError, following the layer protocol
of lastlayer (docs/design.md, "Protocol 1: layers"; read engine/layers/activations.py,
whose ReLU is the same layer with slope 0):

* the layer is a frozen dataclass of hyper-parameters (here ``slope``); arrays live outside
  it, and it has no parameters: ``init`` and ``param_shapes`` of ``Layer`` return ``{}``;
* ``output_shape(input_shape)``: any shape (N, ...) with the batch dimension maps to
  itself; a shape without it, (), raises the ValueError of ``self.shape_error``;
* ``forward(params, x, train, state=None, rng=None)`` returns ``(y, cache)``: y of the
  shape and dtype of x (nothing is cast: a float32 x gives a float32 y), and a cache
  (a NamedTuple) holding what backward needs; x itself is never modified;
* ``backward(params, cache, dy)`` returns ``(dx, grads)``: dx of the shape of x and
  ``grads == {}`` (no parameters); dy is never modified.

Hints: ``self.check_input(params, x)`` checks x and the (empty) params and calls
output_shape; NumPy's ``where`` picks between two arrays element by element.

Check your work with

    lastlayer exercise check leaky-relu leaky_relu.py

which compares forward with max(x, slope x) and backward with central differences of
your forward (``lastlayer.engine.gradcheck.check_layer``), on inputs kept away from the kink at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lastlayer.engine.layers.base import Layer


class LeakyReLUCache(NamedTuple):
    """What backward needs (change it if you need something else)."""

    x: np.ndarray  # the input: its sign says which slope each entry had


@dataclass(frozen=True)
class LeakyReLU(Layer):
    """y = max(x, slope x), element-wise. Input (N, ...) -> output of the same shape."""

    slope: float = 0.01

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, ...) -> (N, ...); () raises ``self.shape_error("(N, ...)", input_shape)``."""
        raise NotImplementedError("return the input shape, or raise "
                                  "the ValueError of self.shape_error for ()")

    def forward(self, params: dict, x: np.ndarray, train: bool = False, *,
                state: dict | None = None, rng: np.random.Generator | None = None):
        """x (N, ...) -> (y (N, ...), cache)."""
        raise NotImplementedError("y = max(x, slope x) and a cache")

    def backward(self, params: dict, cache: LeakyReLUCache, dy: np.ndarray):
        """dy (N, ...) -> (dx (N, ...), {})."""
        raise NotImplementedError("dx = dy where x > 0, slope dy elsewhere")
