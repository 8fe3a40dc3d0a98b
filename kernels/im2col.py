"""im2col / col2im of NumPy arrays by the compiled loops of ``lastlayer.kernels.im2col_cpu``.

    cols = im2col(x_pad, (kh, kw), (sh, sw))      # (N, C, H, W) -> (N, C, kh, kw, Ho, Wo)
    dx_pad = col2im(dcols, (sh, sw), x_pad_shape)  # (N, C, kh, kw, Ho, Wo) -> (N, C, H, W)

x_pad is the input after any zero padding; Ho = (H - kh) // sh + 1. Device arrays take the
array formulation of ``lastlayer.engine.layers.conv.Conv2D`` instead.

Both run over slices of the batch on ``kernel_threads()`` threads (``lastlayer.kernels.threads``;
``lastlayer.engine.threads`` chooses the count): each sample's copy, and each sample's sums,
are computed by one thread in the one-thread order, so the result is the same bit for bit
for any thread count.
"""

from __future__ import annotations

import numpy as np

from . import im2col_cpu
from .threads import over_batch

__all__ = ["im2col", "col2im"]


def _floating(name: str, a, ndim: int) -> None:
    if type(a) is not np.ndarray or a.ndim != ndim or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected a {ndim}-D float32 or float64 NumPy array, got "
                        f"{type(a).__name__} {getattr(a, 'dtype', '')} of shape "
                        f"{getattr(a, 'shape', None)}")


def _out(h: int, w: int, kernel, stride) -> tuple[int, int]:
    (kh, kw), (sh, sw) = kernel, stride
    if not (kh >= 1 and kw >= 1 and sh >= 1 and sw >= 1 and h >= kh and w >= kw):
        raise ValueError(f"im2col: expected windows and strides >= 1 and an input of at least "
                         f"one window, got kernel {kernel}, stride {stride}, input {h} x {w}")
    return (h - kh) // sh + 1, (w - kw) // sw + 1


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """x (N, C, H, W) -> cols (N, C, kh, kw, Ho, Wo) of x's dtype."""
    _floating("x", x, 4)
    n, c, h, w = x.shape
    ho, wo = _out(h, w, kernel, stride)
    cols = np.empty((n, c, kernel[0], kernel[1], ho, wo), dtype=x.dtype)
    (kh, kw), (sh, sw) = kernel, stride
    over_batch(lambda a, b: im2col_cpu.im2col(x[a:b], kh, kw, sh, sw, cols[a:b]), n)
    return cols


def col2im(dcols: np.ndarray, stride: tuple[int, int], x_shape: tuple) -> np.ndarray:
    """dcols (N, C, kh, kw, Ho, Wo) -> dx of ``x_shape`` (N, C, H, W), dcols' dtype."""
    _floating("dcols", dcols, 6)
    n, c, kh, kw, ho, wo = dcols.shape
    if len(x_shape) != 4 or tuple(x_shape[:2]) != (n, c) or \
            _out(x_shape[2], x_shape[3], (kh, kw), stride) != (ho, wo):
        raise ValueError(f"dcols: shape {dcols.shape} is not the im2col shape of "
                         f"{tuple(x_shape)} with stride {stride}")
    dx = np.zeros(x_shape, dtype=dcols.dtype)
    sh, sw = stride
    over_batch(lambda a, b: im2col_cpu.col2im(dcols[a:b], sh, sw, dx[a:b]), n)
    return dx
