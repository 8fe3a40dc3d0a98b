"""Where arrays live: NumPy on the host, CuPy on a GPU.

Engine code never imports CuPy and never names a device. It asks this module for the
array namespace of its inputs and allocates its outputs there::

    xp = array_module(x, W)        # numpy, or cupy if x and W are CuPy arrays
    y = xp.zeros_like(x)

CuPy is imported lazily: if it has not been imported by someone else, no array can be a CuPy
array, so ``array_module`` returns NumPy without touching CuPy at all. This keeps ``import
lastlayer.engine`` fast and free of GPU dependencies. What counts as a CuPy array is decided
in one place for the engine and the kernels: ``lastlayer.kernels.device.is_cupy_array``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

from lastlayer.kernels.device import is_cupy_array

__all__ = ["array_module", "is_cupy_array", "to_numpy", "to_device"]


def array_module(*arrays: Any) -> ModuleType:
    """Return ``numpy`` or ``cupy``: the array namespace of ``arrays``.

    ``None`` entries are ignored (optional arguments such as a missing bias).

    Raises
    ------
    TypeError
        If NumPy and CuPy arrays are mixed: silently copying between host and device
        would hide a slow path, so the caller must move them explicitly (``to_device``).
    """
    kinds = {is_cupy_array(a) for a in arrays if a is not None}
    if kinds == {True}:
        return sys.modules["cupy"]
    if kinds == {True, False}:
        raise TypeError(
            "arrays live on different devices (NumPy and CuPy mixed); "
            "move them with lastlayer.engine.backend.to_device first"
        )
    return np


def to_numpy(x: Any) -> np.ndarray:
    """Copy a CuPy array to the host; NumPy arrays are returned unchanged."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def to_device(tree: Any, xp: ModuleType) -> Any:
    """Move every array of a nested list / tuple / NamedTuple / dict structure to namespace
    ``xp``; other leaves (None, Python numbers such as an optimizer's step count) are kept.

    Used to move a training state to the GPU, e.g. ``to_device(params, cupy)`` for a
    network's parameter list (a list of dicts of arrays), ``to_device(opt_state, cupy)``
    for an optimizer's state (NamedTuples of such lists), and back with ``numpy``.
    """
    if isinstance(tree, dict):
        return {k: to_device(v, xp) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a NamedTuple: fields by position
        return type(tree)(*(to_device(v, xp) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_device(v, xp) for v in tree)
    if not (isinstance(tree, np.ndarray) or is_cupy_array(tree)):
        return tree
    if xp is np:
        return to_numpy(tree)
    return xp.asarray(tree)
