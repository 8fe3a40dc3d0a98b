"""Argument checks shared by the engine. Every error names the argument, what was expected
and what was received, so that a wrong call is fixed from the message alone.

Numbers are recognised by the abstract classes of ``numbers``: an integer is any
``numbers.Integral`` (Python int, every NumPy integer scalar such as ``np.int64(32)``), a
real number any ``numbers.Real`` (also ``np.float32``). A bool (Python or NumPy) is never
taken for a number, and a float (even 2.0) is never taken for an integer.
"""

from __future__ import annotations

import math
import numbers
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


def is_integer(value: Any) -> bool:
    """An integer (Python or NumPy scalar: ``numbers.Integral``), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """A real number (Python or NumPy scalar, integer or float: ``numbers.Real``), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer (``is_integer``) >= ``minimum``, else
    TypeError (a bool, a float such as 2.5 or 2.0, a string) or ValueError (too small)."""
    if not is_integer(value):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints (a tuple, a list or a 1-D NumPy array of two;
    e.g. a kernel size) to ``(int, int)``."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = tuple(value.tolist() if value.dtype.kind in "iu" else value)
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
    """``value`` as a float if it is a finite real number (``is_real``: Python or NumPy; not a
    bool) >= ``minimum`` (> with ``open_minimum``); else TypeError (not a number) or ValueError."""
    if not is_real(value):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    bound = "" if minimum is None else f" {'>' if open_minimum else '>='} {minimum:g}"
    if not math.isfinite(v) or (minimum is not None and (v < minimum or (open_minimum and v == minimum))):
        raise ValueError(f"{name}: expected a finite number{bound}, got {value!r}")
    return v


# N lam <= LAM_ROWS_MAX for every penalty lam ||W||^2 on N rows. The solvers form N lam (the
# ridge system's diagonal, e + N lam), 2 lam (the softmax Hessian), lam ||W||^2 and ratios
# of them; bounded so, N lam, its square (<= 1e300) and its products with the data's own sums
# (up to ~1e158) stay finite. No restriction in practice: at N lam = 1e150, W is 1e-150 of its
# unpenalised scale, zero for every purpose (b = mean(y), or the log class priors). Beyond it,
# lam = 1.7e308 gave the ridge head a NaN residual.
LAM_ROWS_MAX = 1e150


def penalty(value: Any, rows: int, name: str = "lam", *, allow_zero: bool = False) -> float:
    """``value`` as a float if it is a finite real number > 0 (>= 0 with ``allow_zero``)
    with ``rows`` * value <= ``LAM_ROWS_MAX``; else TypeError or ValueError naming ``name``."""
    v = real_number(value, name, minimum=0, open_minimum=not allow_zero)
    limit = LAM_ROWS_MAX / max(int(rows), 1)
    if v > limit:
        raise ValueError(f"{name}: expected N lam <= {LAM_ROWS_MAX:g} (N = {int(rows)} rows: lam <= "
                         f"{limit:.3g}), got {value!r}")
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
