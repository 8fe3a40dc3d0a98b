"""Fast Walsh-Hadamard transform on the CPU: Numba, in place, cache-blocked, parallel.

Each butterfly level with stride h maps the pairs (x[j], x[j + h]) to their sum and
difference. Doing one level per pass over memory would read and write the array log2(n)
times; instead the kernel keeps data in cache across levels (FFHT's "depth-first" idea):

* levels are fused two or three at a time (radix-4 / radix-8 butterflies): 4 or 8 values
  are loaded, combined in registers across 2 or 3 levels, and stored once;
* a row of at most ``BLOCK`` elements is transformed completely while it sits in L1/L2;
* a longer row (n = BLOCK * M) is done in two cache-resident phases: (1) every block of
  BLOCK contiguous elements is transformed (the levels h < BLOCK); (2) the levels
  h >= BLOCK are, for each column j of the (M, BLOCK) view of the row, a length-M transform
  down that column: tiles of GROUP adjacent columns (GROUP * M elements) are transformed
  completely while in cache, with the inner loop running along contiguous memory.

So any row is read and written about twice at most (once for n <= BLOCK), whatever n.
Rows are processed in parallel; with fewer rows than threads, the blocks and tiles of
one row are processed in parallel instead. ``scale`` (for the normalised transform) is
applied while the data is still in cache. All functions work on a C-contiguous
(rows, n) array in place; validation is the caller's job (``kernels.fwht``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from . import butterfly, config


_bf8 = njit(cache=True, inline="always")(butterfly.bf8)
_bf4 = njit(cache=True, inline="always")(butterfly.bf4)


@njit(cache=True, inline="always")
def _radix8(v0, v1, v2, v3, v4, v5, v6, v7, width):
    """Apply _bf8 elementwise to 8 equally long vectors (views), in place. The loop runs
    over contiguous memory in every view: it compiles to SIMD loads, adds and stores."""
    for e in range(width):
        r0, r1, r2, r3, r4, r5, r6, r7 = _bf8(v0[e], v1[e], v2[e], v3[e], v4[e], v5[e], v6[e], v7[e])
        v0[e] = r0
        v1[e] = r1
        v2[e] = r2
        v3[e] = r3
        v4[e] = r4
        v5[e] = r5
        v6[e] = r6
        v7[e] = r7


@njit(cache=True, inline="always")
def _radix4(v0, v1, v2, v3, width):
    for e in range(width):
        r0, r1, r2, r3 = _bf4(v0[e], v1[e], v2[e], v3[e])
        v0[e] = r0
        v1[e] = r1
        v2[e] = r2
        v3[e] = r3


@njit(cache=True, inline="always")
def _radix2(v0, v1, width):
    for e in range(width):
        a0 = v0[e]
        a1 = v1[e]
        v0[e] = a0 + a1
        v1[e] = a0 - a1


@njit(cache=True, inline="always")
def _first_levels(row):
    """Levels h = 1, 2, 4 (or fewer for n < 8) on a contiguous row view: an 8-point
    transform of every contiguous chunk of 8 values. Returns the next stride, h = min(n, 8)."""
    n = row.size
    if n >= 8:
        chunks = row.reshape(n // 8, 8)
        for c in range(n // 8):
            r0, r1, r2, r3, r4, r5, r6, r7 = _bf8(chunks[c, 0], chunks[c, 1], chunks[c, 2],
                                                  chunks[c, 3], chunks[c, 4], chunks[c, 5],
                                                  chunks[c, 6], chunks[c, 7])
            chunks[c, 0] = r0
            chunks[c, 1] = r1
            chunks[c, 2] = r2
            chunks[c, 3] = r3
            chunks[c, 4] = r4
            chunks[c, 5] = r5
            chunks[c, 6] = r6
            chunks[c, 7] = r7
        return 8
    if n == 4:
        r0, r1, r2, r3 = _bf4(row[0], row[1], row[2], row[3])
        row[0] = r0
        row[1] = r1
        row[2] = r2
        row[3] = r3
    elif n == 2:
        _radix2(row[0:1], row[1:2], 1)
    return n


@njit(cache=True, inline="always")
def _contiguous(row):
    """The whole transform of a contiguous row view (all levels, in cache): first the
    8-point chunks, then levels h >= 8 fused by radix 8 / 4 / 2 on views of length h."""
    n = row.size
    h = _first_levels(row)
    while h < n:
        if 8 * h <= n:
            for i in range(0, n, 8 * h):
                _radix8(row[i:i + h], row[i + h:i + 2 * h], row[i + 2 * h:i + 3 * h],
                        row[i + 3 * h:i + 4 * h], row[i + 4 * h:i + 5 * h],
                        row[i + 5 * h:i + 6 * h], row[i + 6 * h:i + 7 * h],
                        row[i + 7 * h:i + 8 * h], h)
            h *= 8
        elif 4 * h <= n:
            for i in range(0, n, 4 * h):
                _radix4(row[i:i + h], row[i + h:i + 2 * h], row[i + 2 * h:i + 3 * h],
                        row[i + 3 * h:i + 4 * h], h)
            h *= 4
        else:
            for i in range(0, n, 2 * h):
                _radix2(row[i:i + h], row[i + h:i + 2 * h], h)
            h *= 2


@njit(cache=True, inline="always")
def _tile(grid, g, group):
    """Phase 2 on a (M, BLOCK) view ``grid`` of one row: the length-M transform down each
    of the columns g .. g + group - 1, all levels while the M x group tile is in cache.
    Each butterfly combines whole row segments grid[k, g:g + group] (contiguous)."""
    m = grid.shape[0]
    h = 1
    while h < m:
        if 8 * h <= m:
            for i in range(0, m, 8 * h):
                for k in range(i, i + h):
                    _radix8(grid[k, g:g + group], grid[k + h, g:g + group],
                            grid[k + 2 * h, g:g + group], grid[k + 3 * h, g:g + group],
                            grid[k + 4 * h, g:g + group], grid[k + 5 * h, g:g + group],
                            grid[k + 6 * h, g:g + group], grid[k + 7 * h, g:g + group], group)
            h *= 8
        elif 4 * h <= m:
            for i in range(0, m, 4 * h):
                for k in range(i, i + h):
                    _radix4(grid[k, g:g + group], grid[k + h, g:g + group],
                            grid[k + 2 * h, g:g + group], grid[k + 3 * h, g:g + group], group)
            h *= 4
        else:
            for i in range(0, m, 2 * h):
                for k in range(i, i + h):
                    _radix2(grid[k, g:g + group], grid[k + h, g:g + group], group)
            h *= 2


@njit(cache=True, inline="always")
def _scale(v, scale):
    for e in range(v.size):
        v[e] *= scale


@njit(cache=True, inline="always")
def _one_row(row, block, group, scale, do_scale):
    """The whole transform of one row by one thread: in one piece if it fits a block,
    else blocks then tiles (module docstring)."""
    n = row.size
    if n <= block:
        _contiguous(row)
        if do_scale:
            _scale(row, scale)
    else:
        grid = row.reshape(n // block, block)
        for b in range(n // block):
            _contiguous(grid[b])
        for g in range(0, block, group):
            _tile(grid, g, group)
            if do_scale:
                for k in range(n // block):
                    _scale(grid[k, g:g + group], scale)


@njit(cache=True)
def _rows_serial(x2d, block, group, scale, do_scale):
    """Small inputs: one thread, no parallel launch (whose overhead would dominate)."""
    for r in range(x2d.shape[0]):
        _one_row(x2d[r], block, group, scale, do_scale)


@njit(cache=True, parallel=True)
def _rows_in_parallel(x2d, block, group, scale, do_scale):
    """Rows distributed over threads; each row transformed by one thread, in cache."""
    for r in prange(x2d.shape[0]):
        _one_row(x2d[r], block, group, scale, do_scale)


@njit(cache=True, parallel=True)
def _within_row_parallel(x2d, block, group, scale, do_scale):
    """Few long rows: the blocks, then the tiles, of each row distributed over threads."""
    rows, n = x2d.shape
    m = n // block
    for r in range(rows):
        grid = x2d[r].reshape(m, block)
        for b in prange(m):
            _contiguous(grid[b])
        for t in prange(block // group):
            g = t * group
            _tile(grid, g, group)
            if do_scale:
                for k in range(m):
                    _scale(grid[k, g:g + group], scale)


def fwht_inplace(x2d: np.ndarray, scale: float | None = None) -> None:
    """Transform every row of the C-contiguous (rows, n) float32/float64 array in place
    (n a power of two); multiply by ``scale`` if given."""
    rows, n = x2d.shape
    if rows == 0:
        return
    block = min(config.FWHT_BLOCK, n)
    # phase-2 tiles of about FWHT_TILE elements: wide when the row has few blocks
    group = min(block, max(config.FWHT_GROUP, config.FWHT_TILE // (n // block)))
    do_scale = scale is not None
    s = x2d.dtype.type(1.0 if scale is None else scale)
    if x2d.size <= config.FWHT_SERIAL_MAX:
        _rows_serial(x2d, block, group, s, do_scale)
    elif n > block and rows < numba.get_num_threads() * config.FWHT_MIN_ROWS_PER_THREAD:
        _within_row_parallel(x2d, block, group, s, do_scale)
    else:
        _rows_in_parallel(x2d, block, group, s, do_scale)
