"""The layer protocol.

A layer object holds hyper-parameters only (sizes, flags). Arrays live outside it::

    params = layer.init(rng, dtype)                       # dict name -> array
    y, cache = layer.forward(params, x, train)            # cache: what backward needs
    dx, grads = layer.backward(params, cache, dy)         # grads: dict like params

Two optional capabilities, both explicit:

* **Running statistics** (``stateful = True``, e.g. BatchNorm): ``init_state(dtype)`` gives
  the state dict, ``forward(..., state=state)`` reads it at inference, and after a training
  forward ``update_state(state, cache)`` returns the *new* state (the old one is untouched).
* **Randomness** (``stochastic = True``, e.g. Dropout): ``forward(..., rng=rng)`` draws from
  the generator it is given; the same seed gives the same mask.

Every layer accepts ``state`` and ``rng`` keywords so that a network can call all of them
the same way; layers that do not need them ignore them.

Shapes always include the batch dimension N. ``output_shape(input_shape)`` maps a full
input shape to the full output shape and raises ValueError, naming the layer, when the
input does not fit; ``forward`` runs the same check on every call.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._checks import float_array, float_dtype
from .initializers import fans

Params = dict[str, Any]
State = dict[str, Any]


class Layer:
    """Base class of all layers. Subclasses are frozen dataclasses of hyper-parameters."""

    stateful: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False

    # ---- parameters and state -------------------------------------------------------
    def init(self, rng: np.random.Generator, dtype=np.float64) -> Params:
        """Draw the parameters. Layers without parameters return ``{}``."""
        return {}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter (``{}`` for layers without parameters)."""
        return {}

    def init_state(self, dtype=np.float64) -> State:
        """Initial running statistics. Stateless layers return ``{}``."""
        return {}

    def update_state(self, state: State, cache: Any) -> State:
        """New running statistics after a training forward. Stateless: unchanged."""
        return state

    # ---- computation ---------------------------------------------------------------
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def forward(self, params: Params, x, train: bool = False, *, state: State | None = None,
                rng: np.random.Generator | None = None):
        raise NotImplementedError

    def backward(self, params: Params, cache: Any, dy):
        raise NotImplementedError

    def param_grads(self, params: Params, cache: Any, dy) -> Params:
        """The gradients of ``backward`` alone, for a layer whose dx nobody needs (the
        lowest layer a training step back-propagates to). Layers whose dx costs a product
        of its own (Dense, Conv2D) skip it; the others return ``backward``'s."""
        return self.backward(params, cache, dy)[1]

    # ---- helpers for subclasses ----------------------------------------------------
    def shape_error(self, expected: str, got: tuple[int, ...]) -> ValueError:
        """The one error message for an input that does not fit."""
        return ValueError(f"{self}: expected input of shape {expected}, got {tuple(got)}")

    def check_input(self, params: Params, x) -> None:
        """Validate ``params`` (names, shapes, dtypes) and ``x`` (dtype, shape) for forward."""
        float_array(x, f"{self}: input")
        expected = self.param_shapes()
        if set(params) != set(expected):
            raise ValueError(f"{self}: expected parameters {sorted(expected)}, got {sorted(params)}")
        for name, shape in expected.items():
            p = params[name]
            if tuple(p.shape) != shape:
                raise ValueError(f"{self}: parameter '{name}' must have shape {shape}, "
                                 f"got {tuple(p.shape)}")
            if p.dtype != x.dtype:
                raise TypeError(
                    f"{self}: input dtype {x.dtype} does not match parameter '{name}' dtype "
                    f"{p.dtype}; cast one of them explicitly (nothing is cast silently)"
                )
        self.output_shape(tuple(x.shape))

    def check_upstream(self, dy, expected_shape: tuple[int, ...], dtype) -> None:
        """Validate the gradient handed to ``backward``: it must match the forward output."""
        if tuple(dy.shape) != tuple(expected_shape) or dy.dtype != dtype:
            raise ValueError(
                f"{self}: backward expected dy of shape {tuple(expected_shape)} and dtype "
                f"{dtype}, got shape {tuple(dy.shape)} and dtype {dy.dtype}"
            )

    def __str__(self) -> str:  # short form used in error messages; repr has every field
        return type(self).__name__


def init_kernel_and_bias(layer: Layer, rng: np.random.Generator, dtype) -> Params:
    """Parameters of a Dense / Conv2D-like layer: kernel ``W`` drawn by ``layer.weight_init``
    with the kernel's fans, and bias ``b`` (if the layer has one) by ``layer.bias_init``."""
    dt = float_dtype(dtype)
    shapes = layer.param_shapes()
    fan_in, fan_out = fans(shapes["W"])
    params = {"W": layer.weight_init(rng, shapes["W"], fan_in, fan_out, dt)}
    if "b" in shapes:
        params["b"] = layer.bias_init(rng, shapes["b"], fan_in, fan_out, dt)
    return params
