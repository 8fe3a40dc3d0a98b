"""Fully connected layer ``y = x W^T + b``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .._checks import positive_int
from ..backend import array_module
from ..threads import blas_for
from .initializers import Constant, HeNormal, Initializer
from .base import Layer, init_kernel_and_bias


class DenseCache(NamedTuple):
    x: object  # (N, d_in) input, needed for dW


@dataclass(frozen=True)
class Dense(Layer):
    """Affine map ``y = x W^T + b``.

    The kernel is stored as ``W`` of shape (d_out, d_in), the convention of the papers
    (a last layer W is C x d, logits = Phi W^T) and of PyTorch.

    Parameters: ``W`` (d_out, d_in), ``b`` (d_out,) if ``bias``.
    Input (N, d_in) -> output (N, d_out).
    """

    d_in: int
    d_out: int
    bias: bool = True
    weight_init: Initializer = field(default_factory=HeNormal)
    bias_init: Initializer = field(default_factory=Constant)

    def __post_init__(self):
        positive_int(self.d_in, "d_in")
        positive_int(self.d_out, "d_out")

    def __str__(self):
        return f"Dense({self.d_in} -> {self.d_out}{'' if self.bias else ', no bias'})"

    def param_shapes(self):
        shapes = {"W": (self.d_out, self.d_in)}
        if self.bias:
            shapes["b"] = (self.d_out,)
        return shapes

    def init(self, rng, dtype=np.float64):
        return init_kernel_and_bias(self, rng, dtype)

    def output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] != self.d_in:
            raise self.shape_error(f"(N, {self.d_in})", input_shape)
        return (input_shape[0], self.d_out)

    def _blas(self, a):
        """Each of the layer's products has 2 N d_in d_out flops: at one BLAS thread below
        the engine's threshold for a second (``lastlayer.engine.threads.blas_for``)."""
        return blas_for(2.0 * a.shape[0] * self.d_in * self.d_out, array_module(a))

    def forward(self, params, x, train=False, *, state=None, rng=None):
        """x: (N, d_in) -> y: (N, d_out)."""
        self.check_input(params, x)
        with self._blas(x):
            y = x @ params["W"].T  # (N, d_out)
        if self.bias:
            y += params["b"]  # broadcast (d_out,) over N, in place
        return y, DenseCache(x)

    def backward(self, params, cache, dy):
        """dy: (N, d_out) -> dx: (N, d_in); grads W: (d_out, d_in), b: (d_out,)."""
        self.check_upstream(dy, (cache.x.shape[0], self.d_out), cache.x.dtype)
        with self._blas(dy):
            grads = {"W": dy.T @ cache.x}  # (d_out, N) @ (N, d_in)
            dx = dy @ params["W"]  # (N, d_out) @ (d_out, d_in)
        if self.bias:
            grads["b"] = dy.sum(axis=0)  # (d_out,)
        return dx, grads

    def param_grads(self, params, cache, dy):
        """backward's grads without dx (Layer.param_grads): no (N, d_out) @ (d_out, d_in)."""
        self.check_upstream(dy, (cache.x.shape[0], self.d_out), cache.x.dtype)
        with self._blas(dy):
            grads = {"W": dy.T @ cache.x}
        if self.bias:
            grads["b"] = dy.sum(axis=0)
        return grads
