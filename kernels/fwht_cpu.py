"""Fast Walsh-Hadamard transform on the CPU: Numba, explicit SIMD, in place, cache-blocked,
parallel.

Each butterfly level with stride h maps the pairs (x[j], x[j + h]) to their sum and
difference. Every level runs on SIMD vectors of one cache line (``lastlayer.kernels.simd``: 16
float32 or 8 float64 lanes; the generated code is vector shuffles, multiply-adds, adds and
subtracts only), and levels are fused so that data is read from memory about once
(FFHT's "depth-first" idea):

* **in registers**: 8 consecutive vectors (128 float32 / 64 float64 values) are loaded, get
  every level below the vector length by in-vector shuffles and multiply-adds, then three
  more levels by vertical adds between the vectors, and are stored once; rows shorter than
  a vector are packed several to a vector (a tail shorter than a vector is scalar code);
* **in cache**: the remaining levels of a row of at most ``FWHT_BLOCK`` values are radix-8
  (or 4, 2) butterflies of whole vectors, done while the row sits in L1/L2;
* **two phases** for a longer row (n = BLOCK * M): (1) every block of BLOCK contiguous
  values gets the levels h < BLOCK; (2) the levels h >= BLOCK are, for each column c of
  the (M, BLOCK) view of the row, a length-M transform down that column: tiles of GROUP
  adjacent columns are transformed completely while in cache. The M segments of a tile
  lie a power-of-two stride apart and so fall into the same few cache sets: for M > 8
  they are gathered into a contiguous buffer first (without it n = 2^20 ran 1.7x slower).

So any row is read and written about twice at most (once for n <= BLOCK), whatever n. A
batch of short rows is cut into segments of whole rows (``FWHT_SEGMENT`` values), the
units of parallel work; while a segment is transformed in cache, the next one is
prefetched into L2 (``lastlayer.kernels.simd.prefetch``), so that memory traffic and arithmetic
overlap (this took n = 2^10 .. 2^12 from about 1.6x to 1.1-1.3x the one-pass memory floor).
With fewer long rows than threads, the blocks and tiles of one row are processed in
parallel instead. ``scale`` (for the normalised transform) is applied while the data is in
cache. The order of the levels is always h = 1, 2, 4, ...: results are bit for bit those of
the reference (``lastlayer.kernels.fwht_reference``). All functions work in place on a C-contiguous
(rows, n) array; validation is the caller's job (``lastlayer.kernels.fwht``). Measured against the
compiled SIMD C library fht-cpu in bench/test_fwht.py.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from . import butterfly, config
from .simd import LANE_BYTES, butterfly_kernel, prefetch

_bf8 = njit(cache=True, inline="always")(butterfly.bf8)
_bf4 = njit(cache=True, inline="always")(butterfly.bf4)

# (nvec, inner): nvec vectors, in-vector levels h < inner (see lastlayer.kernels.simd)
_PACKED_2 = butterfly_kernel(1, 2)  # rows of 2, 4, 8 values packed in one vector
_PACKED_4 = butterfly_kernel(1, 4)
_PACKED_8 = butterfly_kernel(1, 8)
_LINE_1 = butterfly_kernel(1, LANE_BYTES)  # 1, 2, 4, 8 contiguous vectors: all levels in registers
_LINE_2 = butterfly_kernel(2, LANE_BYTES)
_LINE_4 = butterfly_kernel(4, LANE_BYTES)
_LINE_8 = butterfly_kernel(8, LANE_BYTES)
_LINE_16 = butterfly_kernel(16, LANE_BYTES)
_ACROSS_2 = butterfly_kernel(2, 1)  # radix 2, 4, 8 between vectors at a given stride
_ACROSS_4 = butterfly_kernel(4, 1)
_ACROSS_8 = butterfly_kernel(8, 1)
_ACROSS_16 = butterfly_kernel(16, 1)

# phase-2 tiles of at most this many rows are transformed in place, taller ones in a buffer
# (L1 has 12 ways per set on current x86 cores, at least 8 on older ones)
_DIRECT_TILE_ROWS = 8


@njit(cache=True, inline="always")
def _scalar_levels(seg, n):
    """Levels h < n (n <= 8) on every n-chunk of a segment shorter than one vector."""
    for c in range(0, seg.size, n):
        if n == 8:
            r0, r1, r2, r3, r4, r5, r6, r7 = _bf8(seg[c], seg[c + 1], seg[c + 2], seg[c + 3],
                                                  seg[c + 4], seg[c + 5], seg[c + 6], seg[c + 7])
            seg[c], seg[c + 1], seg[c + 2], seg[c + 3] = r0, r1, r2, r3
            seg[c + 4], seg[c + 5], seg[c + 6], seg[c + 7] = r4, r5, r6, r7
        elif n == 4:
            r0, r1, r2, r3 = _bf4(seg[c], seg[c + 1], seg[c + 2], seg[c + 3])
            seg[c], seg[c + 1], seg[c + 2], seg[c + 3] = r0, r1, r2, r3
        elif n == 2:
            a, b = seg[c], seg[c + 1]
            seg[c], seg[c + 1] = a + b, a - b


@njit(cache=True, inline="always")
def _log2(v):
    k = 0
    while (1 << k) < v:
        k += 1
    return k


@njit(cache=True, inline="always")
def _passes(levels, radix_levels):
    """Passes over the data that ``levels`` levels take, at most ``radix_levels`` per pass."""
    return (levels + radix_levels - 1) // radix_levels


@njit(cache=True, inline="always")
def _in_registers(seg, n, ahead):
    """First pass over the contiguous segment ``seg`` (size a multiple of n): every level
    h < min(n, 8 or 16 vectors) on groups of up to 16 vectors held in registers, while the
    next ``ahead`` values after ``seg`` are prefetched. Returns the stride of the next
    level still to do.

    Groups of 16 vectors do one more level in registers than groups of 8, but use all of
    AVX-512's registers: they are taken only where they save a whole pass over the data
    (measured: n = 2^12, 2^14 float32 and 2^10, 2^14 float64 about 10 % faster; n = 2^10
    float32 and 2^12 float64, where the pass count is the same, about 12 % slower)."""
    w = LANE_BYTES // seg.itemsize
    size = seg.size
    if n >= 16 * w:
        rest = _log2(n // w)  # levels above the vector length
        if 1 + _passes(rest - 4, 4) < 1 + _passes(rest - 3, 3):
            for i in range(0, size, 16 * w):
                _LINE_16(seg, i, w)
                if ahead > 0:
                    for q in range(16):
                        prefetch(seg, size + i + q * w)
            return 16 * w
    if n >= 8 * w:
        for i in range(0, size, 8 * w):
            _LINE_8(seg, i, w)
            if ahead > 0:
                for q in range(8):
                    prefetch(seg, size + i + q * w)
        return 8 * w
    if n == 4 * w:
        for i in range(0, size, 4 * w):
            _LINE_4(seg, i, w)
    elif n == 2 * w:
        for i in range(0, size, 2 * w):
            _LINE_2(seg, i, w)
    elif n == w:
        for i in range(0, size, w):
            _LINE_1(seg, i, w)
    else:  # rows shorter than a vector: w // n of them per vector, the rest (< w) scalar
        full = size - size % w
        if n == 8:
            for i in range(0, full, w):
                _PACKED_8(seg, i, w)
        elif n == 4:
            for i in range(0, full, w):
                _PACKED_4(seg, i, w)
        elif n == 2:
            for i in range(0, full, w):
                _PACKED_2(seg, i, w)
        _scalar_levels(seg[full:], n)
    return n


@njit(cache=True, inline="always")
def _column_levels(x, start, unit, m, width):
    """The length-m transform down the first ``width`` columns of the (m, unit) matrix
    whose element (k, c) is x[start + k * unit + c]: level j pairs rows k and k + j, at
    memory stride j * unit; radix 16 (where it saves a pass), 8, 4 or 2 butterflies of
    whole vectors. ``width`` and ``unit`` are multiples of the vector length."""
    w = LANE_BYTES // x.itemsize
    wide = _passes(_log2(m), 4) < _passes(_log2(m), 3)
    j = 1
    while j < m:
        stride = j * unit
        if wide and 16 * j <= m:
            for i in range(0, m, 16 * j):
                for k in range(i, i + j):
                    base = start + k * unit
                    for e in range(base, base + width, w):
                        _ACROSS_16(x, e, stride)
            j *= 16
        elif 8 * j <= m:
            for i in range(0, m, 8 * j):
                for k in range(i, i + j):
                    base = start + k * unit
                    for e in range(base, base + width, w):
                        _ACROSS_8(x, e, stride)
            j *= 8
        elif 4 * j <= m:
            for i in range(0, m, 4 * j):
                for k in range(i, i + j):
                    base = start + k * unit
                    for e in range(base, base + width, w):
                        _ACROSS_4(x, e, stride)
            j *= 4
        else:
            for i in range(0, m, 2 * j):
                for k in range(i, i + j):
                    base = start + k * unit
                    for e in range(base, base + width, w):
                        _ACROSS_2(x, e, stride)
            j *= 2


@njit(cache=True, inline="always")
def _scale(v, scale):
    for e in range(v.size):
        v[e] *= scale


@njit(cache=True)
def _segment(seg, n, ahead, scale, do_scale):
    """Every level h < n on each n-chunk of the contiguous ``seg`` (size a multiple of n):
    the in-register pass, then the larger strides chunk by chunk while it is in cache."""
    h = _in_registers(seg, n, ahead)
    if h < n:
        for start in range(0, seg.size, n):
            _column_levels(seg, start, h, n // h, h)
    if do_scale:
        _scale(seg, scale)


@njit(cache=True)
def _tile(row, block, g, group, buf, scale, do_scale):
    """Phase 2 on one long row: the levels h >= block down the columns g .. g + group - 1
    of its (M, block) view. The M segments of the tile lie a power-of-two stride apart,
    which maps them all to the same few cache sets: up to ``_DIRECT_TILE_ROWS`` of them
    share a set without evicting each other, and are transformed where they are; more are
    gathered into the contiguous (M, group) scratch ``buf``, transformed there in L1, and
    scattered back (scaled)."""
    m = row.size // block
    if m <= _DIRECT_TILE_ROWS:
        _column_levels(row, g, block, m, group)
        if do_scale:
            for k in range(m):
                _scale(row[k * block + g:k * block + g + group], scale)
        return
    for k in range(m):
        src = row[k * block + g:k * block + g + group]
        dst = buf[k * group:(k + 1) * group]
        for e in range(group):
            dst[e] = src[e]
    _column_levels(buf, 0, group, m, group)
    for k in range(m):
        src = buf[k * group:(k + 1) * group]
        dst = row[k * block + g:k * block + g + group]
        if do_scale:
            for e in range(group):
                dst[e] = src[e] * scale
        else:
            for e in range(group):
                dst[e] = src[e]


@njit(cache=True)
def _long_row(row, block, group, scale, do_scale):
    """The whole transform of one row longer than a block, by one thread: blocks, then tiles."""
    for b in range(0, row.size, block):
        _segment(row[b:b + block], block, row.size - b - block, scale, False)
    buf = np.empty((row.size // block) * group, dtype=row.dtype)
    for g in range(0, block, group):
        _tile(row, block, g, group, buf, scale, do_scale)


@njit(cache=True)
def _segments_serial(flat, n, segment, scale, do_scale):
    """Rows of at most a block, one thread: small inputs, where a parallel launch costs more."""
    for lo in range(0, flat.size, segment):
        _segment(flat[lo:min(lo + segment, flat.size)], n, flat.size - lo - segment, scale, do_scale)


@njit(cache=True, parallel=True)
def _segments_in_parallel(flat, n, segment, scale, do_scale):
    """Rows of at most a block: segments of whole rows distributed over threads."""
    for s in prange((flat.size + segment - 1) // segment):
        lo = s * segment
        _segment(flat[lo:min(lo + segment, flat.size)], n, flat.size - lo - segment, scale, do_scale)


@njit(cache=True)
def _long_rows_serial(x2d, block, group, scale, do_scale):
    for r in range(x2d.shape[0]):
        _long_row(x2d[r], block, group, scale, do_scale)


@njit(cache=True, parallel=True)
def _long_rows_in_parallel(x2d, block, group, scale, do_scale):
    """Many long rows: each transformed by one thread, in cache."""
    for r in prange(x2d.shape[0]):
        _long_row(x2d[r], block, group, scale, do_scale)


@njit(cache=True, parallel=True)
def _within_row_parallel(x2d, block, group, scale, do_scale):
    """Few long rows: the blocks, then the tiles, of each row distributed over threads."""
    rows, n = x2d.shape
    for r in range(rows):
        row = x2d[r]
        for b in prange(n // block):
            _segment(row[b * block:(b + 1) * block], block, n - (b + 1) * block, scale, False)
        for t in prange(block // group):
            buf = np.empty((n // block) * group, dtype=row.dtype)
            _tile(row, block, t * group, group, buf, scale, do_scale)


def _check_tunables(block: int, group: int, segment: int) -> None:
    """The tiles' columns and the blocks must be whole vectors (16 float32 = 2 x 8 float64)."""
    for name, value, least in (("FWHT_BLOCK", block, 16), ("FWHT_GROUP", group, 16),
                               ("FWHT_SEGMENT", segment, 1)):
        if value < least or value & (value - 1):
            raise ValueError(f"lastlayer.kernels.config.{name}: expected a power of two >= {least}, got {value}")
    if group > block:
        raise ValueError(f"lastlayer.kernels.config.FWHT_GROUP: expected at most FWHT_BLOCK = {block}, got {group}")


def fwht_inplace(x2d: np.ndarray, scale: float | None = None) -> None:
    """Transform every row of the C-contiguous (rows, n) float32/float64 array in place
    (n a power of two); multiply by ``scale`` if given."""
    rows, n = x2d.shape
    if rows == 0:
        return
    block, group = config.FWHT_BLOCK, config.FWHT_GROUP
    _check_tunables(block, group, config.FWHT_SEGMENT)
    do_scale = scale is not None
    s = x2d.dtype.type(1.0 if scale is None else scale)
    serial = x2d.size <= config.FWHT_SERIAL_MAX
    if n <= block:
        flat = x2d.reshape(-1)
        segment = max(n, config.FWHT_SEGMENT)
        (_segments_serial if serial else _segments_in_parallel)(flat, n, segment, s, do_scale)
        return
    # phase-2 tiles of about FWHT_TILE values: wide when the row has few blocks
    group = min(block, max(group, config.FWHT_TILE // (n // block)))
    if serial:
        _long_rows_serial(x2d, block, group, s, do_scale)
    elif rows < numba.get_num_threads() * config.FWHT_MIN_ROWS_PER_THREAD:
        _within_row_parallel(x2d, block, group, s, do_scale)
    else:
        _long_rows_in_parallel(x2d, block, group, s, do_scale)
