"""A network: an ordered stack of layers, with its arrays kept outside it.

    net = Network([Dense(64, 32), ReLU(), Dense(32, 10)])
    params = net.init(rng)                       # list (one per layer) of dicts of arrays
    state = net.init_state()                     # list of dicts (running statistics)
    y, caches = net.forward(params, x, train=True, state=state, rng=rng)
    state = net.update_state(state, caches)      # new running statistics after training
    dx, grads = net.backward(params, caches, dy) # grads: same structure as params

Splitting at index k gives a feature extractor ``net[:k]`` and a head ``net[k:]``; their
parameters are the same slices of the lists, ``params[:k]`` and ``params[k:]``.

Trainable masks are explicit (a list of dicts of bools, the structure of ``params``),
never matched by name strings; ``backward(..., mask=mask)`` leaves frozen tensors out of
the gradients and stops below the lowest trainable layer when ``input_grad=False``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._checks import check_mask
from .layers.base import Layer

Params = list[dict[str, Any]]
Mask = list[dict[str, bool]]


class Network:
    """An ordered, immutable stack of layers (hyper-parameters only)."""

    def __init__(self, layers: Sequence[Layer]):
        layers = tuple(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}]: expected a Layer, got {type(layer).__name__}")
        self.layers = layers

    # ---- structure --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        """``net[i]`` is a layer; ``net[a:b]`` is a Network of those layers."""
        if isinstance(index, slice):
            return Network(self.layers[index])
        return self.layers[index]

    def split(self, k: int) -> tuple[Network, Network]:
        """(feature extractor ``net[:k]``, head ``net[k:]``); split params as ``params[:k]``,
        ``params[k:]``. ``k`` may be negative: ``split(-1)`` makes the last layer the head."""
        if not -len(self) <= k <= len(self):
            raise IndexError(f"k: expected an index in [{-len(self)}, {len(self)}], got {k}")
        return self[:k], self[k:]

    def __repr__(self) -> str:
        lines = [f"  {i}: {layer}" for i, layer in enumerate(self.layers)]
        return "Network(\n" + "\n".join(lines) + "\n)"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Output shape for a full input shape; raises ValueError naming the first layer that
        does not fit."""
        shape = tuple(input_shape)
        for i, layer in enumerate(self.layers):
            with _named_layer(i):
                shape = layer.output_shape(shape)
        return shape

    # ---- arrays ---------------------------------------------------------------------
    def init(self, rng: np.random.Generator, dtype=np.float64) -> Params:
        """Parameters of every layer, drawn in layer order from ``rng``."""
        return [layer.init(rng, dtype) for layer in self.layers]

    def init_state(self, dtype=np.float64) -> list[dict]:
        """Running statistics of every layer (``{}`` for stateless layers)."""
        return [layer.init_state(dtype) for layer in self.layers]

    def num_params(self, params: Params, mask: Mask | None = None) -> int:
        """Number of scalar parameters (only the trainable ones if ``mask`` is given)."""
        return sum(int(p.size) for i, d in enumerate(params) for name, p in d.items()
                   if mask is None or mask[i].get(name, False))

    def forward(self, params: Params, x, train: bool = False, *, state: list | None = None,
                rng: np.random.Generator | None = None):
        """Run every layer. Returns ``(y, caches)``; ``caches[i]`` is layer i's cache.

        ``state`` is read by stateful layers (needed at inference); ``rng`` is used by
        stochastic layers in training. Errors raised by a layer are prefixed with its index.
        """
        self._check_lists(params, "params")
        if state is not None:
            self._check_lists(state, "state")
        caches = []
        for i, layer in enumerate(self.layers):
            with _named_layer(i):
                x, cache = layer.forward(params[i], x, train,
                                         state=None if state is None else state[i], rng=rng)
            caches.append(cache)
        return x, caches

    def update_state(self, state: list, caches: list) -> list:
        """New running statistics after a training forward (the input lists are untouched)."""
        self._check_lists(state, "state")
        return [layer.update_state(s, c) for layer, s, c in zip(self.layers, state, caches)]

    def backward(self, params: Params, caches: list, dy, *, mask: Mask | None = None,
                 input_grad: bool = True):
        """Back-propagate ``dy`` = d loss / d output. Returns ``(dx, grads)``.

        ``grads[i]`` holds the gradient of every parameter of layer i, or with ``mask`` only
        of its trainable ones. With ``input_grad=False`` back-propagation stops once no
        layer below has a trainable tensor, the lowest one it reaches computes its gradients
        alone (``Layer.param_grads``: no dx product), and ``dx`` is None.
        """
        self._check_lists(params, "params")
        if mask is not None:
            self._check_mask(params, mask)
        grads: Params = [{} for _ in self.layers]
        lowest = 0 if input_grad else self._lowest_trainable(params, mask)
        for i in range(len(self.layers) - 1, lowest - 1, -1):
            with _named_layer(i):
                if i == lowest and not input_grad:  # its dx is not needed: no dx product
                    dy, layer_grads = None, self.layers[i].param_grads(params[i], caches[i], dy)
                else:
                    dy, layer_grads = self.layers[i].backward(params[i], caches[i], dy)
            if mask is not None:
                layer_grads = {k: g for k, g in layer_grads.items() if mask[i][k]}
            grads[i] = layer_grads
        return dy, grads

    # ---- trainable masks -------------------------------------------------------------
    def trainable_mask(self, params: Params, *, frozen_layers: Iterable[int] = (),
                       frozen_tensors: Iterable[tuple[int, str]] = ()) -> Mask:
        """Mask with every tensor trainable except those of ``frozen_layers`` (indices, may
        be negative) and the ``(layer index, name)`` pairs of ``frozen_tensors``.

        Post-training (only the last layer trains):
        ``net.trainable_mask(params, frozen_layers=range(len(net) - 1))``.
        """
        self._check_lists(params, "params")
        mask = [{name: True for name in p} for p in params]
        for i in frozen_layers:
            j = self._index(i, "frozen_layers")
            mask[j] = {name: False for name in mask[j]}
        for i, name in frozen_tensors:
            j = self._index(i, "frozen_tensors")
            if name not in mask[j]:
                raise ValueError(f"frozen_tensors: layer {j} ({self.layers[j]}) has no "
                                 f"parameter '{name}'; it has {sorted(mask[j])}")
            mask[j][name] = False
        return mask

    # ---- helpers ---------------------------------------------------------------------
    def _index(self, i: int, argument: str) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{argument}: layer index {i} out of range for {len(self)} layers")
        return i % len(self)

    def _check_lists(self, lists: list, argument: str) -> None:
        if not isinstance(lists, (list, tuple)) or len(lists) != len(self.layers):
            got = f"{type(lists).__name__} of length {len(lists)}" if hasattr(lists, "__len__") \
                else type(lists).__name__
            raise ValueError(f"{argument}: expected a list of {len(self.layers)} dicts (one per "
                             f"layer), got {got}")

    def _check_mask(self, params: Params, mask: Mask) -> None:
        self._check_lists(mask, "mask")
        check_mask(mask, params,
                   layer_names=[f"layer {i} ({layer})" for i, layer in enumerate(self.layers)])

    def _lowest_trainable(self, params: Params, mask: Mask | None) -> int:
        """Index of the lowest layer with a trainable tensor (0 if none has any)."""
        for i in range(len(self.layers)):
            if any(mask[i].values()) if mask is not None else params[i]:
                return i
        return 0


class _named_layer:
    """Context manager: prefix a ValueError / TypeError from layer i with 'layer i: '."""

    def __init__(self, index: int):
        self.index = index

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type in (ValueError, TypeError) and not str(exc).startswith("layer "):
            raise exc_type(f"layer {self.index}: {exc}") from exc
        return False
