"""Max pooling of NumPy arrays by the compiled loops of ``lastlayer.kernels.pool_cpu``.

    y, argmax = maxpool2d(x, (kh, kw), (sh, sw))          # x (N, C, H, W) float32 / float64
    dx = maxpool2d_backward(argmax, dy, x.shape, (kh, kw), (sh, sw))

No padding; Ho = (H - kh) // sh + 1 (rows that do not fill a window are dropped). argmax
is uint8, the winner's offset i * kw + j in its window (so kh * kw <= 256). Device arrays
take the array formulation of ``lastlayer.engine.layers.conv.MaxPool2D`` instead.

Both run over slices of the batch on ``kernel_threads()`` threads (``lastlayer.kernels.threads``):
no window crosses samples, so every thread count gives the one-thread result bit for bit.
"""

from __future__ import annotations

import numpy as np

from . import pool_cpu
from .threads import over_batch

__all__ = ["maxpool2d", "maxpool2d_backward"]


def _check(name: str, a, ndim: int) -> None:
    if type(a) is not np.ndarray or a.ndim != ndim:
        raise TypeError(f"{name}: expected a {ndim}-D NumPy array, got "
                        f"{type(a).__name__} of shape {getattr(a, 'shape', None)}")


def _geometry(shape, pool, stride) -> tuple[int, int]:
    (kh, kw), (sh, sw) = pool, stride
    if not (1 <= kh * kw <= 256 and sh >= 1 and sw >= 1 and shape[2] >= kh and shape[3] >= kw):
        raise ValueError(f"maxpool2d: expected 1 <= kh kw <= 256, strides >= 1 and an input of "
                         f"at least one window, got pool {pool}, stride {stride}, input {shape}")
    return (shape[2] - kh) // sh + 1, (shape[3] - kw) // sw + 1


def maxpool2d(x: np.ndarray, pool: tuple[int, int], stride: tuple[int, int]):
    """x (N, C, H, W) floating -> (y (N, C, Ho, Wo) of x's dtype, argmax (N, C, Ho, Wo) uint8)."""
    _check("x", x, 4)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x: expected float32 or float64, got {x.dtype}")
    ho, wo = _geometry(x.shape, pool, stride)
    y = np.empty((x.shape[0], x.shape[1], ho, wo), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.uint8)
    (kh, kw), (sh, sw) = pool, stride
    over_batch(lambda a, b: pool_cpu.maxpool2d_forward(x[a:b], kh, kw, sh, sw, y[a:b],
                                                       argmax[a:b]), x.shape[0])
    return y, argmax


def maxpool2d_backward(argmax: np.ndarray, dy: np.ndarray, x_shape: tuple, pool: tuple[int, int],
                       stride: tuple[int, int]) -> np.ndarray:
    """dy (N, C, Ho, Wo) -> dx (N, C, H, W) = x_shape, of dy's dtype."""
    _check("argmax", argmax, 4)
    _check("dy", dy, 4)
    if argmax.shape != dy.shape or argmax.dtype != np.uint8:
        raise ValueError(f"argmax: expected uint8 of dy's shape {dy.shape}, got {argmax.dtype} "
                         f"{argmax.shape}")
    if _geometry(x_shape, pool, stride) != dy.shape[2:] or tuple(x_shape[:2]) != dy.shape[:2]:
        raise ValueError(f"dy: shape {dy.shape} is not the pooled shape of {tuple(x_shape)}")
    dx = np.zeros(x_shape, dtype=dy.dtype)
    (kh, kw), (sh, sw) = pool, stride
    over_batch(lambda a, b: pool_cpu.maxpool2d_backward(argmax[a:b], dy[a:b], kh, kw, sh, sw,
                                                        dx[a:b]), dy.shape[0])
    return dx
