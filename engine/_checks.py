"""Argument checks shared by the engine. Every error names the argument, what was expected
and what was received, so that a wrong call is fixed from the message alone."""

from __future__ import annotations

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
