"""Argument checks shared by the engine. Every error names the argument, what was expected
and what was received, so that a wrong call is fixed from the message alone."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import array_module

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else raise TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{name}: expected float32 or float64, got {dtype!r}") from err
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {dt}")
    return dt


def float_array(x: Any, name: str) -> None:
    """Raise TypeError unless ``x`` is a NumPy/CuPy array of dtype float32 or float64.

    Nothing is converted: a float16, integer or complex array, a list or a scalar is an
    error, because a silent cast would change the numbers the caller gets back.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None or not hasattr(x, "shape"):
        raise TypeError(f"{name}: expected a float32 or float64 array, got {type(x).__name__}")
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {dtype}")


def all_finite(x: Any, name: str) -> None:
    """Raise ValueError if ``x`` holds a NaN or an infinity, saying how many."""
    n_bad = int(x.size - array_module(x).isfinite(x).sum())
    if n_bad:
        raise ValueError(f"{name}: expected finite values, got {n_bad} NaN/Inf of {x.size} entries")


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints (e.g. a kernel size) to ``(int, int)``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
        return (positive_int(value[0], name, minimum), positive_int(value[1], name, minimum))
    v = positive_int(value, name, minimum)
    return (v, v)


def check_mask(mask: Any, tree: Any, *, name: str = "mask", tree_name: str = "params",
               exact: bool = True, layer_names: list[str] | None = None) -> None:
    """Check that ``mask`` (a tree of bools, ints or floats: a trainable mask, Layca's
    layer index, per-tensor multipliers) has the structure of ``tree`` (parameters or
    gradients: a list of per-layer dicts, or any nest of dicts and lists).

    exact=True: every dict of the mask names exactly the keys of ``tree``'s dict there (a
    mask of the parameters). exact=False: it names at least those keys (gradients may leave
    frozen tensors out). Raises ValueError naming ``name``, the position (``[1]`` is layer
    1 of a network, or ``layer_names[1]`` when given) and both key sets.
    """

    def walk(m: Any, t: Any, where: str) -> None:
        at = f" at {where}" if where else ""
        if isinstance(t, dict):
            if not isinstance(m, dict):
                raise ValueError(f"{name}: expected a dict{at} (like {tree_name}), got "
                                 f"{type(m).__name__}")
            missing = set(t) - set(m)
            extra = set(m) - set(t) if exact else set()
            if missing or extra:
                raise ValueError(f"{name}{at} names {sorted(m, key=str)}, but {tree_name} there "
                                 f"hold {sorted(t, key=str)}")
            for key in t:
                walk(m[key], t[key], f"{where}[{key!r}]")
        elif isinstance(t, (list, tuple)):
            if not isinstance(m, (list, tuple)) or len(m) != len(t):
                got = f"{type(m).__name__} of length {len(m)}" if isinstance(m, (list, tuple)) \
                    else type(m).__name__
                raise ValueError(f"{name}: expected a list of {len(t)} entries{at} (like "
                                 f"{tree_name}; one per layer for a network), got {got}")
            for i, (mm, tt) in enumerate(zip(m, t)):
                top = not where and layer_names is not None
                walk(mm, tt, layer_names[i] if top else f"{where}[{i}]")

    walk(mask, tree, "")


def real_number(value: Any, name: str, *, minimum: float | None = None,
                open_minimum: bool = False) -> float:
    """``value`` as a float if it is a finite real number (Python or NumPy; not a bool)
    >= ``minimum`` (> with ``open_minimum``); else TypeError (not a number) or ValueError."""
    import numbers

    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    bound = "" if minimum is None else f" {'>' if open_minimum else '>='} {minimum:g}"
    if not math.isfinite(v) or (minimum is not None and (v < minimum or (open_minimum and v == minimum))):
        raise ValueError(f"{name}: expected a finite number{bound}, got {value!r}")
    return v


def boolean(value: Any, name: str) -> bool:
    """``value`` if it is a bool (Python or NumPy), else TypeError: a string such as "yes"
    or a number is not silently taken as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def positive_number(value: Any, name: str) -> None:
    """Raise ValueError unless ``value`` > 0 (NaN fails)."""
    if not value > 0:
        raise ValueError(f"{name}: expected > 0, got {value}")


def decay_rate(value: Any, name: str) -> None:
    """Raise ValueError unless 0 <= ``value`` < 1 (an EMA's decay; NaN fails)."""
    if not 0 <= value < 1:
        raise ValueError(f"{name}: expected a decay rate in [0, 1), got {value}")
