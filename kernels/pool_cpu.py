"""Max pooling on the CPU: one Numba pass over the input for the forward, one over the
output gradient for the backward (``lastlayer.kernels.pool`` checks the arguments and calls these).

Why a kernel. The array formulation (``lastlayer.engine.layers.conv.MaxPool2D`` on a device array)
makes kh * kw strided views and, per view, a comparison, a ``where`` and a masked store
of the window index: about 4 kh kw passes over memory. Measured on the project's 2-core
machine, a (256, 8, 26, 26) float32 2x2 pool took 12 ms that way, as long as the
convolution before it (profile of ``reproduce entame``'s image section); this loop reads
each input element once and writes y and the index once.

Semantics are the array formulation's, element for element: the window is scanned in
row-major order and an element replaces the running maximum only if it is strictly
greater, so the first of tied maxima wins (ties are common: ReLU's zeros) and a NaN wins
only where it comes first in its window (``NaN > v`` and ``v > NaN`` are both false). The
backward adds each dy to the input position of its window's winner, in the array
formulation's order where windows overlap (stride < pool), so it equals that
formulation's sum of ``dy * (argmax == k)`` bit for bit for finite dy.

Serial loops: ``lastlayer.kernels.pool`` runs them over slices of the batch on the thread
count the engine chose (kernels/threads.py: a pool of threads, not a prange, which spins
between calls); each sample is one thread's, so every count gives the same bits.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def maxpool2d_forward(x, kh, kw, sh, sw, y, argmax):
    """x (N, C, H, W) -> y (N, C, Ho, Wo) the window maxima and argmax (N, C, Ho, Wo)
    uint8 the winner's offset i * kw + j, both written in place."""
    if kh == 2 and kw == 2:
        _forward_2x2(x, sh, sw, y, argmax)
    elif kh == 1 and kw == 2:
        _forward_1x2(x, sh, sw, y, argmax)
    else:
        _forward_any(x, kh, kw, sh, sw, y, argmax)


@njit(cache=True, nogil=True, inline="always")
def _better(v, best, k, offset):
    """The running (maximum, offset) after element v at ``offset``: a select, no branch."""
    c = v > best
    return (v if c else best), (offset if c else k)


@njit(cache=True, nogil=True)
def _forward_2x2(x, sh, sw, y, argmax):
    """2x2 windows (the CNNs' pools) unrolled: 4.3x faster than ``_forward_any`` measured
    at (256, 8, 26, 26) float32, whose loops over a run-time window do not unroll and
    whose data-dependent branches mispredict on ReLU outputs."""
    n, c, ho, wo = y.shape
    for a in range(n):
        for b in range(c):
            xp, yp, ap = x[a, b], y[a, b], argmax[a, b]  # (H, W), (Ho, Wo) planes
            for p in range(ho):
                r0, r1 = xp[p * sh], xp[p * sh + 1]
                for q in range(wo):
                    s = q * sw
                    best, k = r0[s], 0
                    best, k = _better(r0[s + 1], best, k, 1)
                    best, k = _better(r1[s], best, k, 2)
                    best, k = _better(r1[s + 1], best, k, 3)
                    yp[p, q] = best
                    ap[p, q] = k


@njit(cache=True, nogil=True)
def _forward_1x2(x, sh, sw, y, argmax):
    """1x2 windows (one-row inputs such as mnist1d's) unrolled."""
    n, c, ho, wo = y.shape
    for a in range(n):
        for b in range(c):
            xp, yp, ap = x[a, b], y[a, b], argmax[a, b]
            for p in range(ho):
                row = xp[p * sh]
                for q in range(wo):
                    s = q * sw
                    best, k = _better(row[s + 1], row[s], 0, 1)
                    yp[p, q] = best
                    ap[p, q] = k


@njit(cache=True, nogil=True)
def _forward_any(x, kh, kw, sh, sw, y, argmax):
    n, c, ho, wo = y.shape
    for a in range(n):
        for b in range(c):
            xp, yp, ap = x[a, b], y[a, b], argmax[a, b]
            for p in range(ho):
                for q in range(wo):
                    r, s = p * sh, q * sw
                    best, k = xp[r, s], 0
                    for i in range(kh):
                        row = xp[r + i]
                        for j in range(kw):
                            best, k = _better(row[s + j], best, k, i * kw + j)
                    yp[p, q] = best
                    ap[p, q] = k


@njit(cache=True, nogil=True)
def maxpool2d_backward(argmax, dy, kh, kw, sh, sw, dx):
    """dx (N, C, H, W), zero on entry: dx[winner of window (p, q)] += dy[p, q].

    Overlapping windows (stride < pool) can send several dy to one input element; they
    are then added offset by offset, (i, j) in row-major order, as the array formulation
    adds them, so that the sums are rounded the same way (bit-identical dx)."""
    n, c, ho, wo = dy.shape
    if sh >= kh and sw >= kw:  # disjoint windows: one contribution per element
        for a in range(n):
            for b in range(c):
                for p in range(ho):
                    for q in range(wo):
                        k = argmax[a, b, p, q]
                        dx[a, b, p * sh + k // kw, q * sw + k % kw] += dy[a, b, p, q]
        return
    for i in range(kh):
        for j in range(kw):
            k = i * kw + j
            for a in range(n):
                for b in range(c):
                    for p in range(ho):
                        for q in range(wo):
                            if argmax[a, b, p, q] == k:
                                dx[a, b, p * sh + i, q * sw + j] += dy[a, b, p, q]

