"""A network's architecture as plain data (JSON), and back.

    description = describe(net)      # [{"type": "Dense", "d_in": 64, "d_out": 10, ...}, ...]
    net = build(description)          # an equal Network

Layers and initialisers are frozen dataclasses, so their description is their fields.
Only the classes listed in ``LAYERS`` and ``INITIALIZERS`` can be built: a description
never names arbitrary code to run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import layers
from ..layers import initializers
from ..network import Network

__all__ = ["describe", "build", "LAYERS", "INITIALIZERS"]

LAYERS = {cls.__name__: cls for cls in (
    layers.Dense, layers.ReLU, layers.Tanh, layers.Sigmoid, layers.Conv2D, layers.MaxPool2D,
    layers.Flatten, layers.BatchNorm, layers.Dropout, layers.L2Normalize, layers.ZNormalize,
    layers.HadamardHead,
    layers.OrthogonalHead, layers.SimplexETFHead,
)}
INITIALIZERS = {cls.__name__: cls for cls in (
    initializers.HeNormal, initializers.HeUniform, initializers.GlorotNormal,
    initializers.GlorotUniform, initializers.TruncatedNormal, initializers.Constant,
    initializers.MaxEntropy,
)}


def _describe(obj: Any) -> dict:
    out = {"type": type(obj).__name__}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _describe(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def describe(net: Network) -> list[dict]:
    """JSON-ready description of every layer, in order."""
    for i, layer in enumerate(net):
        if type(layer).__name__ not in LAYERS:
            raise TypeError(f"layer {i}: {type(layer).__name__} cannot be described "
                            f"(known layers: {', '.join(LAYERS)})")
    return [_describe(layer) for layer in net]


def _build(desc: dict, registry: dict, what: str):
    if not isinstance(desc, dict) or desc.get("type") not in registry:
        got = desc.get("type") if isinstance(desc, dict) else type(desc).__name__
        raise ValueError(f"{what}: unknown type {got!r}; known: {', '.join(registry)}")
    kwargs = {}
    for key, value in desc.items():
        if key == "type":
            continue
        if isinstance(value, dict) and "type" in value:
            value = _build(value, INITIALIZERS, f"{what}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return registry[desc["type"]](**kwargs)
    except TypeError as err:
        raise ValueError(f"{what}: cannot build {desc['type']} from {kwargs}: {err}") from err


def build(description: list[dict]) -> Network:
    """The Network described by ``describe``'s output."""
    if not isinstance(description, list):
        raise ValueError(f"description: expected a list of layer descriptions, got "
                         f"{type(description).__name__}")
    return Network([_build(d, LAYERS, f"layer {i}") for i, d in enumerate(description)])
