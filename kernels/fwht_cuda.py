"""Fast Walsh-Hadamard transform on the GPU: Numba-CUDA kernels, in place.

Same convention as ``lastlayer.kernels.fwht``: y = H_n x over the last axis, unnormalised, Sylvester
order, times ``scale`` if given. The level with stride h maps the pairs (x[i], x[i + h]),
i mod 2h < h, to (x[i] + x[i + h], x[i] - x[i + h]); the levels h = 1, 2, ..., n/2 make
the transform. The kernels see the (rows, n) batch as one flat array of rows * n elements:
every level's pairs stay inside one row, because 2h divides n.

* Rows of n <= m elements (m = ``config.CUDA_SHARED_MAX``): ``_shared_levels``. A thread
  block loads a run of whole rows into shared memory (one row when n >= 2 *
  ``CUDA_THREADS_PER_BLOCK``, several short rows otherwise, so that no thread idles), does
  all log2(n) levels there with a barrier between levels, scales, and stores: the data
  crosses global memory once each way.
* Longer rows, n = m * M: (1) ``_shared_levels`` on every chunk of m contiguous elements
  does the levels h < m; (2) the levels h = m, 2m, ..., n/2 are done in global memory,
  three at a time (``_global_radix8``: each thread loads 8 elements, combines them over
  three levels in registers, stores them once), the one or two levels left over by
  ``_global_radix4`` / ``_global_radix2``. So the data crosses global memory
  1 + ceil(log2(M) / 3) times each way; the scale is applied in the last pass.

``fwht_device`` is the launcher (any C-contiguous 2-D device array, in place);
``fwht`` is the entry point for CuPy arrays that ``lastlayer.kernels.fwht`` dispatches to. CuPy is
imported only inside ``fwht``. Without a usable GPU (and without the CUDA simulator,
``NUMBA_ENABLE_CUDASIM=1``) both raise a RuntimeError that says so.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from . import butterfly, config
from .device import cupy_stream, require_cuda

_bf8 = cuda.jit(device=True)(butterfly.bf8)
_bf4 = cuda.jit(device=True)(butterfly.bf4)

# Dynamic shared memory a block may use without opting in to more (all GPUs since sm_20).
_SHARED_BYTES_LIMIT = 48 * 1024


@cuda.jit
def _shared_levels(x, m, per_block, scale):
    """The length-m transform of every m-element segment of the flat array ``x``, scaled.

    x : (rows * n,) float32/float64, C-contiguous, transformed in place; m divides
        rows * n. When m < n only the levels h < m of each row are done.
    per_block : elements owned by one block, a multiple of m: block b owns
        x[b * per_block : (b + 1) * per_block] (the last block possibly fewer, still a
        multiple of m). Launched with per_block * itemsize bytes of dynamic shared memory.
    scale : same dtype as x; every output is multiplied by it (1 when more passes follow).
    """
    buf = cuda.shared.array(0, dtype=x.dtype)  # (per_block,): sized by the launch
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    base = cuda.blockIdx.x * per_block  # int64: per_block is an int64 argument
    count = min(per_block, x.size - base)
    for i in range(t, count, nt):  # consecutive threads read consecutive elements
        buf[i] = x[base + i]
    cuda.syncthreads()
    h = 1
    while h < m:
        # butterfly k of this level, k = q * h + r with r < h, pairs i = q * 2h + r =
        # 2k - r with i + h. Pairs never straddle segments: 2h divides m.
        for k in range(t, count // 2, nt):
            i = 2 * k - (k & (h - 1))
            a = buf[i]
            b = buf[i + h]
            buf[i] = a + b
            buf[i + h] = a - b
        cuda.syncthreads()  # the next level reads what other threads wrote
        h *= 2
    for i in range(t, count, nt):
        x[base + i] = buf[i] * scale


@cuda.jit
def _global_radix2(x, h, scale):
    """Level h on the flat (rows * n,) array ``x`` in place, outputs times ``scale``.

    One thread per pair: thread g = q * h + r (r < h) owns x[p], x[p + h] with
    p = q * 2h + r = 2g - r, so consecutive threads touch consecutive addresses.
    Launch with at least x.size / 2 threads.
    """
    g = cuda.grid(1)  # int64
    if g < x.size // 2:
        p = 2 * g - (g & (h - 1))
        a0 = x[p]
        a1 = x[p + h]
        x[p] = (a0 + a1) * scale
        x[p + h] = (a0 - a1) * scale


@cuda.jit
def _global_radix4(x, h, scale):
    """Levels h and 2h on the flat (rows * n,) array ``x`` in place, outputs times ``scale``.

    One thread per group of 4: thread g = q * h + r (r < h) owns x[p + j * h], j = 0..3,
    with p = q * 4h + r = 4g - 3r. Launch with at least x.size / 4 threads.
    """
    g = cuda.grid(1)
    if g < x.size // 4:
        p = 4 * g - 3 * (g & (h - 1))
        r0, r1, r2, r3 = _bf4(x[p], x[p + h], x[p + 2 * h], x[p + 3 * h])
        x[p] = r0 * scale
        x[p + h] = r1 * scale
        x[p + 2 * h] = r2 * scale
        x[p + 3 * h] = r3 * scale


@cuda.jit
def _global_radix8(x, h, scale):
    """Levels h, 2h and 4h on the flat (rows * n,) array ``x`` in place, outputs times
    ``scale``.

    One thread per group of 8: thread g = q * h + r (r < h) owns x[p + j * h], j = 0..7,
    with p = q * 8h + r = 8g - 7r. Launch with at least x.size / 8 threads.
    """
    g = cuda.grid(1)
    if g < x.size // 8:
        p = 8 * g - 7 * (g & (h - 1))
        r0, r1, r2, r3, r4, r5, r6, r7 = _bf8(x[p], x[p + h], x[p + 2 * h], x[p + 3 * h],
                                              x[p + 4 * h], x[p + 5 * h], x[p + 6 * h],
                                              x[p + 7 * h])
        x[p] = r0 * scale
        x[p + h] = r1 * scale
        x[p + 2 * h] = r2 * scale
        x[p + 3 * h] = r3 * scale
        x[p + 4 * h] = r4 * scale
        x[p + 5 * h] = r5 * scale
        x[p + 6 * h] = r6 * scale
        x[p + 7 * h] = r7 * scale


# Global-memory pass fusing 1, 2 or 3 levels.
_GLOBAL_PASSES = {1: _global_radix2, 2: _global_radix4, 3: _global_radix8}


def _device_view(arr2d, sync: bool):
    """A zero-copy Numba view of ``arr2d`` for launching kernels on."""
    if hasattr(arr2d, "__cuda_array_interface__"):  # CuPy, Numba, PyTorch, ... arrays
        return cuda.as_cuda_array(arr2d, sync=sync)
    if numba.config.ENABLE_CUDASIM and hasattr(arr2d, "copy_to_host"):
        return arr2d  # the simulator's device arrays carry no interface; use them as they are
    raise TypeError(f"arr2d: expected a device array exposing __cuda_array_interface__, "
                    f"got {type(arr2d).__name__}")


def _check_tunables(threads: int, shared_max: int, itemsize: int) -> None:
    """Raise a ValueError for tunables the launches cannot use: a block's shared memory holds
    up to max(CUDA_SHARED_MAX, 2 * CUDA_THREADS_PER_BLOCK) elements (see fwht_device)."""
    if threads < 1 or shared_max < 1 or shared_max & (shared_max - 1):
        raise ValueError(f"lastlayer.kernels.config: CUDA_THREADS_PER_BLOCK must be >= 1 and "
                         f"CUDA_SHARED_MAX a power of two, got {threads} and {shared_max}")
    if max(shared_max, 2 * threads) * itemsize > _SHARED_BYTES_LIMIT:
        raise ValueError(f"lastlayer.kernels.config: a block would need {max(shared_max, 2 * threads)} "
                         f"elements of {itemsize} bytes of shared memory, over the "
                         f"{_SHARED_BYTES_LIMIT} bytes a block may use; lower CUDA_SHARED_MAX")


def fwht_device(arr2d, scale: float | None = None, *, stream=None) -> None:
    """Transform every row of a (rows, n) device array in place: x <- H_n x (times scale).

    Parameters
    ----------
    arr2d : C-contiguous float32 or float64 device array of shape (rows, n), n = 2^k:
        anything exposing ``__cuda_array_interface__`` (a CuPy or Numba device array), or
        a Numba device array of the CUDA simulator. rows may be 0.
    scale : multiply the result by this (1 / sqrt(n) for the normalised transform).
    stream : the Numba stream to launch on. None: the default stream, after synchronising
        the stream the array's interface names (Numba's default). With a stream given, the
        caller guarantees that the array is ready on it (``fwht`` passes CuPy's current
        stream).

    The launches are asynchronous; grid and block sizes come from ``lastlayer.kernels.config``
    (``CUDA_THREADS_PER_BLOCK``, ``CUDA_SHARED_MAX``), read at each call.
    """
    require_cuda("lastlayer.kernels.fwht_cuda")
    x = _device_view(arr2d, sync=stream is None)
    if x.ndim != 2:
        raise ValueError(f"arr2d: expected a 2-D (rows, n) array, got {x.ndim} axes")
    dtype = np.dtype(x.dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"arr2d: expected dtype float32 or float64, got {dtype}")
    if not x.is_c_contiguous():
        raise ValueError("arr2d: expected a C-contiguous array")
    rows, n = x.shape
    if n < 1 or n & (n - 1):
        raise ValueError(f"arr2d: the row length must be a power of two, got {n}")
    if rows == 0 or (n == 1 and scale is None):
        return  # nothing to do: H_1 is the identity
    threads = config.CUDA_THREADS_PER_BLOCK
    shared_max = config.CUDA_SHARED_MAX
    _check_tunables(threads, shared_max, dtype.itemsize)
    launch_stream = 0 if stream is None else stream
    total = rows * n
    flat = x.reshape(total)  # (rows * n,) view
    one = dtype.type(1.0)
    final_scale = dtype.type(1.0 if scale is None else scale)

    # Phase 1: the levels h < m in shared memory. A block owns per_block elements: one
    # m-segment, or as many as fill 2 * threads (one butterfly per thread per level).
    m = min(n, shared_max)
    per_block = min(m * max(1, 2 * threads // m), total)
    block_threads = min(threads, max(1, per_block // 2))
    blocks = -(-total // per_block)
    _shared_levels[blocks, block_threads, launch_stream, per_block * dtype.itemsize](
        flat, m, per_block, final_scale if m == n else one)

    # Phase 2: the levels h = m, ..., n/2 in global memory, up to three per pass.
    h = m
    while h < n:
        levels = min(3, (n // h).bit_length() - 1)  # log2(n / h) levels are left
        radix = 1 << levels
        groups = total // radix  # one thread per group of `radix` elements
        last = h * radix == n
        _GLOBAL_PASSES[levels][-(-groups // threads), threads, launch_stream](
            flat, h, final_scale if last else one)
        h *= radix


def fwht(x, scale: float | None = None, out=None):
    """H_n x over the last axis of a CuPy array (times ``scale``); called by ``lastlayer.kernels.fwht``,
    which has validated x (float32/float64, shape (..., n), n = 2^k) and out (x's shape and
    dtype, on the GPU).

    out : None (the result is a new C-contiguous array), ``x`` itself (in place), or another
        CuPy array to write to; any layout (a non-contiguous target receives a transformed
        contiguous copy). Returns the array holding the result. An empty batch returns an
        empty result.
    """
    import cupy

    n = x.shape[-1]
    if x.size == 0:
        return cupy.empty_like(x) if out is None else out
    stream = cupy_stream()
    if out is not None and out.flags.c_contiguous:
        if out is not x:  # copy x over first, through a temporary if they overlap
            cupy.copyto(out, x.copy() if cupy.may_share_memory(out, x) else x)
        fwht_device(out.reshape(-1, n), scale, stream=stream)
        return out
    work = cupy.array(x, order="C", copy=True)  # the result, or a contiguous copy for out
    fwht_device(work.reshape(-1, n), scale, stream=stream)
    if out is None:
        return work
    cupy.copyto(out, work)
    return out
