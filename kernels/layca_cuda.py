"""The fused Layca passes on the GPU: Numba-CUDA kernels on CuPy or Numba device arrays.

``lastlayer.kernels.layca`` holds the math and calls the passes of a ``Batch`` (same interface as
``lastlayer.kernels.layca_cpu.Batch``); every sum is accumulated in float64, also for float32 data.

* Pass 1, ``_reduce_partials``: a tensor of n elements gets min(ceil(n / threads),
  ``config.LAYCA_CUDA_MAX_BLOCKS``) blocks of ``config.LAYCA_CUDA_THREADS`` threads; each
  thread accumulates [w.w, s.w, s.s, non-finite count] over a grid-stride loop (consecutive
  threads read consecutive elements), the block adds its threads' sums with a tree
  reduction in shared memory and writes one row of a (blocks of all tensors, 4) float64
  partials array. ``_reduce_final`` then adds each tensor's rows, one block per tensor,
  all tensors in one launch; the (T, 4) result is copied to the host for the coefficients.
* The cancellation fallback, ``_residual_partials``: sum((s - k w)^2) the same way.
* Pass 2, ``_update_partials``: w <- a w + b s in place with a grid-stride loop, and the
  squares of the stored values summed per block (||w|| after), then ``_reduce_final``.

Non-finite s_i count as 0 everywhere. The tree reductions run in a fixed order: results do
not change from run to run. A call makes one launch per tensor and pass (Numba-CUDA cannot
index a list of arrays of different sizes inside a kernel), one ``_reduce_final`` launch per
pass for all tensors, two tiny host-to-device copies (where each tensor's partial rows
start) and two small device-to-host copies of the sums (three with the fallback), each
waiting for the work before it. A Numba launch costs microseconds of Python, so with
many small tensors a call is bound by its 2T + 2 launches rather than by memory.

CuPy is imported only when CuPy arrays arrive: the kernels then run on CuPy's current
stream and scratch arrays come from CuPy's memory pool. Without a usable GPU (and without
the CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``) ``Batch`` raises a RuntimeError that says so.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from . import config
from .device import cupy_stream, is_cupy_array, require_cuda

# Dynamic shared memory a block may use without opting in to more (all GPUs since sm_20).
_SHARED_BYTES_LIMIT = 48 * 1024


@cuda.jit(device=True)
def _tree_sum(buf, columns, t, nt):
    """Add up ``columns`` columns of nt values held in shared memory: column q is
    buf[q * nt : (q + 1) * nt], its sum lands in buf[q * nt]. nt is a power of two; every
    thread of the block calls this after a barrier that follows its writes to buf."""
    h = nt // 2
    while h > 0:
        if t < h:
            for q in range(columns):
                buf[q * nt + t] += buf[q * nt + t + h]
        cuda.syncthreads()
        h //= 2


@cuda.jit
def _reduce_partials(w, s, partials, row0):
    """Pass 1 for one tensor. w, s : (n,) float32/float64. partials : (P, 4) float64; block
    j writes row row0 + j: its [w.w, s.w, s.s, non-finite count]. Launched with
    4 * threads * 8 bytes of dynamic shared memory."""
    buf = cuda.shared.array(0, dtype=numba.float64)  # (4 * nt,)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    ww = 0.0
    sw = 0.0
    s2 = 0.0
    bad = 0.0
    for i in range(cuda.blockIdx.x * nt + t, w.size, cuda.gridDim.x * nt):
        wi = numba.float64(w[i])
        si = numba.float64(s[i])
        if math.isfinite(si):
            sw += si * wi
            s2 += si * si
        else:
            bad += 1.0
        ww += wi * wi
    buf[t] = ww
    buf[nt + t] = sw
    buf[2 * nt + t] = s2
    buf[3 * nt + t] = bad
    cuda.syncthreads()
    _tree_sum(buf, 4, t, nt)
    if t == 0:
        for q in range(4):
            partials[row0 + cuda.blockIdx.x, q] = buf[q * nt]


@cuda.jit
def _residual_partials(w, s, k, partials, row0):
    """The cancellation fallback for one tensor: block j writes sum((s_i - k w_i)^2) over
    its elements (non-finite s_i as 0) to partials[row0 + j, 0]; partials : (P, 1) float64.
    Launched with threads * 8 bytes of dynamic shared memory."""
    buf = cuda.shared.array(0, dtype=numba.float64)  # (nt,)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    acc = 0.0
    for i in range(cuda.blockIdx.x * nt + t, w.size, cuda.gridDim.x * nt):
        si = numba.float64(s[i])
        if not math.isfinite(si):
            si = 0.0
        d = si - k * numba.float64(w[i])
        acc += d * d
    buf[t] = acc
    cuda.syncthreads()
    _tree_sum(buf, 1, t, nt)
    if t == 0:
        partials[row0 + cuda.blockIdx.x, 0] = buf[0]


@cuda.jit
def _update_partials(w, s, a, b, partials, row0):
    """Pass 2 for one tensor: w <- a w + b s in place (float64 arithmetic, rounded once to
    w's dtype; non-finite s_i as 0); block j writes the sum of squares of the values it
    stored to partials[row0 + j, 0]; partials : (P, 1) float64. Launched with threads * 8
    bytes of dynamic shared memory."""
    buf = cuda.shared.array(0, dtype=numba.float64)  # (nt,)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    acc = 0.0
    for i in range(cuda.blockIdx.x * nt + t, w.size, cuda.gridDim.x * nt):
        si = numba.float64(s[i])
        if not math.isfinite(si):
            si = 0.0
        w[i] = a * numba.float64(w[i]) + b * si
        v = numba.float64(w[i])  # as stored
        acc += v * v
    buf[t] = acc
    cuda.syncthreads()
    _tree_sum(buf, 1, t, nt)
    if t == 0:
        partials[row0 + cuda.blockIdx.x, 0] = buf[0]


@cuda.jit
def _reduce_final(partials, first, count, out):
    """Block t adds rows first[t] .. first[t] + count[t] - 1 of partials (P, m) float64 into
    out[t, :] (out : (T, m) float64). Launched with T blocks and m * threads * 8 bytes of
    dynamic shared memory."""
    buf = cuda.shared.array(0, dtype=numba.float64)  # (m * nt,)
    tensor = cuda.blockIdx.x
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    columns = partials.shape[1]
    for q in range(columns):
        acc = 0.0
        for r in range(t, count[tensor], nt):
            acc += partials[first[tensor] + r, q]
        buf[q * nt + t] = acc
    cuda.syncthreads()
    _tree_sum(buf, columns, t, nt)
    if t == 0:
        for q in range(columns):
            out[tensor, q] = buf[q * nt]


def _check_tunables(threads: int, max_blocks: int) -> None:
    if threads < 1 or threads & (threads - 1) or max_blocks < 1:
        raise ValueError(f"lastlayer.kernels.config: LAYCA_CUDA_THREADS must be a power of two and "
                         f"LAYCA_CUDA_MAX_BLOCKS >= 1, got {threads} and {max_blocks}")
    if 4 * threads * 8 > _SHARED_BYTES_LIMIT:
        raise ValueError(f"lastlayer.kernels.config: LAYCA_CUDA_THREADS = {threads} needs {4 * threads * 8} "
                         f"bytes of shared memory per block, over {_SHARED_BYTES_LIMIT}")


class Batch:
    """The T tensors of one ``layca_update_many`` call on the GPU, ready for the passes.

    ws, ss : lists of T device arrays validated by ``lastlayer.kernels.layca`` (ss[t] has ws[t]'s
        float32/float64 dtype and shape): all CuPy arrays, or all Numba device arrays
        (including the simulator's). CuPy arrays may have any layout: a non-contiguous
        ws[t] is updated through a contiguous copy written back by ``update``, a
        non-contiguous ss[t] or one sharing memory with ws[t] is copied. Numba device
        arrays are C-contiguous (checked by ``lastlayer.kernels.layca``), and ss[t] must not overlap
        ws[t] (not checked: their memory ranges are not visible in the simulator).
    """

    def __init__(self, ws: list, ss: list):
        require_cuda("lastlayer.kernels.layca_cuda")
        threads = config.LAYCA_CUDA_THREADS
        max_blocks = config.LAYCA_CUDA_MAX_BLOCKS
        _check_tunables(threads, max_blocks)
        self.ntensors = len(ws)
        self._threads = threads
        self._write_back = []  # (original CuPy w, its contiguous copy)
        self._cupy = None
        if is_cupy_array(ws[0]):
            import cupy  # only when CuPy arrays arrive

            self._cupy = cupy
            self._stream = cupy_stream()
            ws, ss = self._flat_cupy(ws, ss)
        else:
            self._stream = 0  # the default stream: Numba device arrays carry no stream
            ws, ss = self._flat_numba(ws, ss)
        self._ws = ws
        self._ss = ss
        self._blocks = [max(1, min(max_blocks, -(-w.size // threads))) for w in ws]
        first = np.concatenate([[0], np.cumsum(self._blocks)[:-1]]).astype(np.int64)
        self._first_host = first
        self._rows = int(sum(self._blocks))
        self._first = self._to_device(first)
        self._count = self._to_device(np.array(self._blocks, dtype=np.int64))

    def _flat_cupy(self, ws, ss):
        cupy = self._cupy
        w_flat, s_flat = [], []
        for w, s in zip(ws, ss):
            if w.flags.c_contiguous:
                flat = w.reshape(-1)
            else:
                flat = cupy.ascontiguousarray(w).reshape(-1)
                self._write_back.append((w, flat))
            if cupy.may_share_memory(w, s):
                s = s.copy()  # pass 2 writes w while reading s
            w_flat.append(cuda.as_cuda_array(flat, sync=False))
            s_flat.append(cuda.as_cuda_array(cupy.ascontiguousarray(s).reshape(-1), sync=False))
        return w_flat, s_flat

    @staticmethod
    def _flat_numba(ws, ss):
        """Flat views of C-contiguous Numba device arrays (``lastlayer.kernels.layca`` checked that)."""
        return [w.reshape(w.size) for w in ws], [s.reshape(s.size) for s in ss]

    def _empty(self, shape):
        """A float64 device array: from CuPy's pool for CuPy inputs, else from Numba."""
        if self._cupy is not None:
            return cuda.as_cuda_array(self._cupy.empty(shape, dtype=np.float64), sync=False)
        return cuda.device_array(shape, dtype=np.float64)

    def _to_device(self, host: np.ndarray):
        if self._cupy is not None:
            return cuda.as_cuda_array(self._cupy.asarray(host), sync=False)
        return cuda.to_device(host)

    def _finish(self, partials):
        """Add each tensor's partial rows (one launch), copy the (T, m) sums to the host."""
        out = self._empty((self.ntensors, partials.shape[1]))
        shared = partials.shape[1] * self._threads * 8
        _reduce_final[self.ntensors, self._threads, self._stream, shared](
            partials, self._first, self._count, out)
        host = out.copy_to_host(stream=self._stream)
        if self._stream != 0:
            self._stream.synchronize()
        return host

    def reduce(self) -> np.ndarray:
        """(T, 4) float64 on the host: [w.w, s.w, s.s, number of non-finite s_i] per tensor."""
        partials = self._empty((self._rows, 4))
        for t, (w, s) in enumerate(zip(self._ws, self._ss)):
            _reduce_partials[self._blocks[t], self._threads, self._stream, 4 * self._threads * 8](
                w, s, partials, self._first_host[t])
        return self._finish(partials)

    def residual(self, k: np.ndarray, active: np.ndarray) -> np.ndarray:
        """(T,) float64: sum((s - k[t] w)^2) where active[t] ((T,) bool), 0 elsewhere."""
        partials = self._empty((self._rows, 1))
        for t in np.flatnonzero(active):
            _residual_partials[self._blocks[t], self._threads, self._stream, self._threads * 8](
                self._ws[t], self._ss[t], float(k[t]), partials, self._first_host[t])
        sums = self._finish(partials)[:, 0]  # rows of inactive tensors were never written
        return np.where(active, sums, 0.0)

    def update(self, a: np.ndarray, b: np.ndarray, active: np.ndarray) -> np.ndarray:
        """w <- a[t] w + b[t] s for every tensor with active[t] ((T,) float64 a, b, (T,)
        bool); returns (T,) ||w||^2 (0 for inactive tensors)."""
        partials = self._empty((self._rows, 1))
        for t in np.flatnonzero(active):
            _update_partials[self._blocks[t], self._threads, self._stream, self._threads * 8](
                self._ws[t], self._ss[t], float(a[t]), float(b[t]), partials, self._first_host[t])
        sums = self._finish(partials)[:, 0]  # rows of inactive tensors were never written
        for w, flat in self._write_back:
            w[...] = flat.reshape(w.shape)
        return np.where(active, sums, 0.0)
