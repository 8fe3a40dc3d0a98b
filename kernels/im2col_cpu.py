"""im2col and col2im on the CPU: compiled copies (``lastlayer.kernels.im2col`` checks the
arguments).

Why a kernel. The array formulation (``lastlayer.engine.layers.conv.Conv2D`` on a device
array) copies one strided (N, C, Ho, Wo) slice per window offset; with rows as short as 11
elements (the second convolution of a 28x28 CNN) NumPy's copy loop spends its time per row:
measured on the project's 2-core machine, im2col of (500, 8, 13, 13) float32 for 3x3 windows
took 12.8 ms of that convolution's 15.6 ms forward. These loops copy row by row with the
innermost loop over the output columns. Measured (bench/test_conv_path.py, load 1): 7.0 ms
against 12.4 ms for that input, but 1.9 ms against 1.4 ms for a one-channel (256, 1, 28, 28)
input, whose nine slices NumPy copies in long runs; a slice-assignment form of the loops was
slower still (col2im 2.5x). Still 2.3x a plain copy of cols: the copies are not vectorised.

Both give exactly the array formulation's numbers: im2col is a copy, and col2im adds the
window offsets' contributions to each input element in the same (i, j) row-major order.
Serial loops; ``lastlayer.kernels.im2col`` runs them over slices of the batch (threads.py).
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def im2col(x, kh, kw, sh, sw, cols):
    """x (N, C, H, W), already padded -> cols (N, C, kh, kw, Ho, Wo) written in place:
    cols[n, c, i, j, p, q] = x[n, c, i + sh p, j + sw q]."""
    n, c, _, _, ho, wo = cols.shape
    for a in range(n):
        for b in range(c):
            xp = x[a, b]
            for i in range(kh):
                for j in range(kw):
                    cp = cols[a, b, i, j]
                    for p in range(ho):
                        src, dst = xp[i + sh * p], cp[p]
                        for q in range(wo):
                            dst[q] = src[j + sw * q]


@njit(cache=True, nogil=True)
def col2im(dcols, sh, sw, dx):
    """dcols (N, C, kh, kw, Ho, Wo) -> dx (N, C, H + 2 ph, W + 2 pw), zero on entry:
    dx[n, c, i + sh p, j + sw q] += dcols[n, c, i, j, p, q], offsets (i, j) in row-major order."""
    n, c, kh, kw, ho, wo = dcols.shape
    for a in range(n):
        for b in range(c):
            dp = dx[a, b]
            for i in range(kh):
                for j in range(kw):
                    cp = dcols[a, b, i, j]
                    for p in range(ho):
                        src, dst = cp[p], dp[i + sh * p]
                        for q in range(wo):
                            dst[j + sw * q] += src[q]
