"""``fwht``: the fast Walsh-Hadamard transform, on NumPy (Numba) or CuPy (Numba-CUDA) arrays.

Convention: ``fwht(x)`` is the **unnormalised** transform y = H_n x over the last axis, with
H_n the Sylvester-Hadamard matrix, H[i, j] = (-1)^popcount(i & j) (``lastlayer.kernels.hadamard``).
It is its own inverse up to a factor n: fwht(fwht(x)) = n x. With ``normalized=True`` the
result is divided by sqrt(n): the transform is then orthonormal and self-inverse.
For +-1 (or any small-integer) inputs every intermediate value is an integer, so the
result is exact in floating point as long as |values| * n stays below 2^24 (float32) or
2^53 (float64).
"""

from __future__ import annotations

import math

import numpy as np

from .device import is_cupy_array
from .hadamard import log2_exact, next_power_of_two

__all__ = ["fwht", "MAX_LOG2_N"]

MAX_LOG2_N = 24


def _validate(x) -> int:
    dtype = getattr(x, "dtype", None)
    if dtype is None or not hasattr(x, "shape"):
        raise TypeError(f"x: expected a float32 or float64 array, got {type(x).__name__}")
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"x: expected dtype float32 or float64, got {dtype} (cast explicitly; "
                        f"integers would overflow and complex inputs need two transforms)")
    if x.ndim == 0:
        raise ValueError("x: expected at least one axis (the transform runs over the last), got a scalar")
    n = x.shape[-1]
    if log2_exact(n) < 0:
        raise ValueError(f"x: the last axis has length {n}, which is not a power of two; "
                         f"zero-pad it to {next_power_of_two(n)}")
    if n > 1 << MAX_LOG2_N:
        raise ValueError(f"x: the last axis has length {n} = 2^{log2_exact(n)}; at most "
                         f"2^{MAX_LOG2_N} is supported")
    return n


def _check_out(x, out) -> None:
    """``out`` is None or an array of x's kind (NumPy, or CuPy on x's device), shape and
    dtype, writable; else a TypeError (its kind) or ValueError naming out. It may share
    memory with x, any way (x is copied first where they overlap)."""
    if out is None:
        return
    if is_cupy_array(x):
        if not is_cupy_array(out):
            raise TypeError(f"out: expected None or a CuPy array (x is one), got {type(out).__name__}")
        if out.device != x.device:
            raise ValueError(f"out: expected an array on x's device {x.device}, got one on {out.device}")
    elif not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected None or a NumPy array (x is one), got {type(out).__name__}")
    if tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype:
        raise ValueError(f"out: expected an array of shape {tuple(x.shape)} and dtype {x.dtype} on "
                         f"x's device, got shape {tuple(out.shape)} and dtype {out.dtype}")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out: the array is read-only")


def fwht(x, *, normalized: bool = False, out=None):
    """Fast Walsh-Hadamard transform over the last axis: y = H_n x, or H_n x / sqrt(n).

    Parameters
    ----------
    x : float32 or float64 array (NumPy or CuPy), shape (..., n) with n = 2^k, 0 <= k <= 24,
        any memory layout (a contiguous copy is made only when needed).
    normalized : divide by sqrt(n) (orthonormal, self-inverse).
    out : None (a new array), ``x`` itself (in place), or an array of x's kind (NumPy, or
        CuPy on x's device), shape and dtype to write to, writable; it may overlap x. Anything
        else is a TypeError (not such an array) or ValueError (shape, dtype, read-only).

    Returns the transformed array (``out`` if given). An empty batch returns an empty result.
    """
    n = _validate(x)
    if not isinstance(normalized, (bool, np.bool_)):
        raise TypeError(f"normalized: expected True or False, got {type(normalized).__name__} "
                        f"{normalized!r}")
    _check_out(x, out)
    scale = 1 / math.sqrt(n) if normalized else None
    if is_cupy_array(x):
        from . import fwht_cuda  # imported only when a CuPy array arrives

        return fwht_cuda.fwht(x, scale=scale, out=out)

    from .fwht_cpu import fwht_inplace

    if x.size == 0:
        return np.empty_like(x) if out is None else out
    target = out if out is not None else None
    if target is None:
        work = np.array(x, order="C", copy=True)  # the result array itself
        fwht_inplace(work.reshape(-1, n), scale)
        return work
    if target.flags.c_contiguous:
        if target is not x and not np.shares_memory(target, x):
            np.copyto(target, x)
        elif target is not x:
            np.copyto(target, x.copy())
        fwht_inplace(target.reshape(-1, n), scale)
        return target
    work = np.array(x, order="C", copy=True)  # a non-contiguous destination: transform a copy
    fwht_inplace(work.reshape(-1, n), scale)
    np.copyto(target, work)
    return target
