"""Exercise conv1d: a 1-D convolution layer, forward and backward.

The layers of deep learning compute the cross-correlation (no kernel flip), with stride s
and zero padding p on both ends:

    y[n, o, t] = b[o] + sum_c sum_j W[o, c, j] x_pad[n, c, s t + j]

    x_pad = x with p zeros before and after along L,     j = 0 .. k - 1,
    L_out = (L + 2 p - k) // s + 1          (a tail that does not fill a window is dropped)

Shapes: parameters W (c_out, c_in, k) and b (c_out,); input x (N, c_in, L) -> output
y (N, c_out, L_out). The gradients follow from the sum by the chain rule:

    dW[o, c, j] = sum_n sum_t dy[n, o, t] x_pad[n, c, s t + j]
    db[o]       = sum_n sum_t dy[n, o, t]
    dx_pad[n, c, s t + j] += sum_o W[o, c, j] dy[n, o, t]      (then cut the padding off)

Write the three methods below that raise NotImplementedError, following the layer protocol
of lastlayer (docs/design.md, "Protocol 1: layers"). ``Conv2D`` in engine/layers/conv.py is
the same layer in two dimensions: read how it loops over the kernel offsets.

* ``output_shape((N, c_in, L))`` returns (N, c_out, L_out); a shape that is not 3-D, has
  another channel count, or is too short for one window (L + 2 p < k) raises the
  ValueError of ``self.shape_error``;
* ``forward(params, x, train, state=None, rng=None)`` returns ``(y, cache)``, y of x's
  dtype; x is never modified;
* ``backward(params, cache, dy)`` returns ``(dx, {"W": dW, "b": db})``, each of the shape of
  what it is the gradient of; dy is never modified.

Hints: loop over the k offsets j, never over positions: for offset j the inputs that meet
W[:, :, j] are the strided slice ``x_pad[:, :, j : j + s (L_out - 1) + 1 : s]``, of shape
(N, c_in, L_out), and ``np.einsum("oc,ncl->nol", W[:, :, j], window)`` is their share of
y. ``np.pad(x, ((0, 0), (0, 0), (p, p)))`` pads; ``self.check_input(params, x)`` checks x,
W and b and calls output_shape.

Check your work with

    lastlayer exercise check conv1d conv1d.py

which compares forward with the direct sum above and checks the gradient of x, W and b
with central differences of your forward (``lastlayer.engine.gradcheck.check_layer``) for strides
1 to 3, padding 0 to 2 and kernels of 1 to 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lastlayer.engine.layers.base import Layer


class Conv1DCache(NamedTuple):
    """What backward needs (change it if you need something else)."""

    x_pad: np.ndarray  # (N, c_in, L + 2 p) the padded input, for dW
    x_shape: tuple  # (N, c_in, L), to cut the padding off dx


@dataclass(frozen=True)
class Conv1D(Layer):
    """Cross-correlation of (N, c_in, L) inputs with c_out kernels of length k, stride s,
    zero padding p. Parameters W (c_out, c_in, k), b (c_out,)."""

    c_in: int
    c_out: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 0

    def __str__(self):
        return (f"Conv1D({self.c_in} -> {self.c_out}, k {self.kernel_size}, stride "
                f"{self.stride}, padding {self.padding})")

    def param_shapes(self):
        return {"W": (self.c_out, self.c_in, self.kernel_size), "b": (self.c_out,)}

    def init(self, rng: np.random.Generator, dtype=np.float64):
        """He-normal W (std sqrt(2 / (c_in k))), b = 0."""
        std = np.sqrt(2.0 / (self.c_in * self.kernel_size))
        w = std * rng.standard_normal(self.param_shapes()["W"])
        return {"W": w.astype(dtype), "b": np.zeros(self.c_out, dtype=dtype)}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, c_in, L) -> (N, c_out, L_out), L_out = (L + 2 p - k) // s + 1."""
        raise NotImplementedError("(N, c_out, L_out), or the ValueError "
                                  "of self.shape_error for an input that does not fit")

    def forward(self, params: dict, x: np.ndarray, train: bool = False, *,
                state: dict | None = None, rng: np.random.Generator | None = None):
        """x (N, c_in, L) -> (y (N, c_out, L_out), cache)."""
        raise NotImplementedError("y[n, o, t] = b[o] + sum_c sum_j "
                                  "W[o, c, j] x_pad[n, c, s t + j]")

    def backward(self, params: dict, cache: Conv1DCache, dy: np.ndarray):
        """dy (N, c_out, L_out) -> (dx (N, c_in, L), {"W": (c_out, c_in, k), "b": (c_out,)})."""
        raise NotImplementedError("dx, and the gradients of W and b")
