"""The fused Layca passes on the CPU: Numba, parallel over chunks of all tensors of a call.

``lastlayer.kernels.layca`` holds the math and calls the passes of a ``Batch``:

* ``reduce``: per tensor, [w.w, s.w, s.s, count of non-finite s_i], reading w and s once.
  The hot loop does not test s_i: a NaN or Inf in s makes s.s NaN or Inf, and only such
  tensors are read once more by a loop that counts the non-finite s_i and sums them as 0;
* ``residual`` (only for steps nearly parallel to w): sum((s - k w)^2), reading them again;
* ``update``: w <- a w + b s in place (non-finite s_i as 0), reading w and s and writing w
  once, and summing the squares of the stored values (||w|| after, at no extra traffic).

All arithmetic is float64, also for float32 data, which is converted on load and rounded
once on store: the sums of float32 data are accurate (exact products), and the update is
the float64 result rounded once. (Doing the float32 update in float32 was measured about
5 % faster on that pass, for up to two roundings more.)

Parallel work. The tensors of one call are cut into chunks of ``config.LAYCA_CHUNK``
elements (a tensor's last chunk may be shorter); one ``prange`` over the chunks of all
tensors keeps every thread busy whether the call holds one large tensor or many small ones,
with one parallel region per pass for the whole call. Each chunk writes its partial sums to
its own row; the rows are then added in chunk order, so the results do not depend on the
number of threads. Two details keep the kernels at memory speed: each chunk is looped over
as a slice indexed from 0 (a loop over ``range(lo, hi)`` of the whole array keeps Numba's
negative-index checks and does not vectorise: 3.4x slower), and the chunk rows are added
with scalar loops (an array expression there becomes one parallel region per chunk).

Passing a list of arrays of different sizes. Several arrays are handed to the kernels as
two ``numba.typed.List`` of 1-D C-contiguous arrays, one pair per dtype; a single array as a
1-tuple. Measured on this project's 2-core test machine, for 50 arrays: building a typed
List costs about 2 us per array (about 0.2 ms for w and s of 50 tensors, 2 % of the
ResNet-34-sized call in bench/test_layca.py); a table of raw data addresses costs about as
much to build (reading an address from Python is about 1.4 us per array) and needs an
unsafe int-to-pointer cast; a ``UniTuple`` costs about 0.1 us per array but compiles every
kernel anew for every distinct number of tensors (about 4 s each); copying the tensors into
one concatenated buffer would add two array passes; and one kernel call per tensor pays
Numba's dispatch and a parallel region (at least 3 us, far more when the threads have been
descheduled) twice per tensor.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange
from numba.typed import List

from . import config

# Let LLVM reorder the float64 sums (SIMD accumulators) and fuse a * w + b * s into FMAs.
# Never "nnan" / "ninf": the kernels test every s_i with math.isfinite.
_FASTMATH = {"reassoc", "contract"}


@njit(cache=True)
def _chunk_table(sizes, chunk):
    """Cut tensors of ``sizes`` (T,) elements into chunks of at most ``chunk`` elements.

    Returns (owner, start), both (C,) int64: chunk c covers elements start[c] ..
    min(start[c] + chunk, sizes[owner[c]]) - 1 of tensor owner[c]. Empty tensors get none.
    """
    count = 0
    for t in range(sizes.size):
        count += (sizes[t] + chunk - 1) // chunk
    owner = np.empty(count, dtype=np.int64)
    start = np.empty(count, dtype=np.int64)
    c = 0
    for t in range(sizes.size):
        for lo in range(0, sizes[t], chunk):
            owner[c] = t
            start[c] = lo
            c += 1
    return owner, start


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _reduce(ws, ss, owner, start, chunk, ntensors):
    """Pass 1. ws, ss : typed Lists (or 1-tuples) of T (n_t,) arrays; owner, start : the
    chunk table (``_chunk_table``). Returns (T, 3) float64 sums [w.w, s.w, s.s]. Any
    NaN/Inf in s makes s.s NaN or Inf: ``_reduce_masked`` then redoes that tensor (testing
    every s_i here would slow the common case by about 7 %)."""
    nchunks = owner.size
    part = np.empty((nchunks, 3))
    for c in prange(nchunks):
        lo = start[c]
        w = ws[owner[c]][lo:lo + chunk]  # this chunk, as views: indices from 0 let the
        s = ss[owner[c]][lo:lo + chunk]  # loop vectorise (range(lo, hi) does not)
        ww = 0.0
        sw = 0.0
        s2 = 0.0
        for i in range(w.size):
            wi = np.float64(w[i])
            si = np.float64(s[i])
            ww += wi * wi
            sw += si * wi
            s2 += si * si
        part[c, 0] = ww
        part[c, 1] = sw
        part[c, 2] = s2
    sums = np.zeros((ntensors, 3))
    for c in range(nchunks):  # in chunk order: independent of the thread count
        for q in range(3):  # scalars: an array expression would become a parallel region
            sums[owner[c], q] += part[c, q]
    return sums


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _reduce_masked(ws, ss, active, owner, start, chunk, ntensors):
    """Pass 1 again for the tensors t with active[t]: (T, 4) float64 sums [w.w, s.w, s.s,
    number of non-finite s_i], non-finite s_i counting as 0; zeros for the others."""
    nchunks = owner.size
    part = np.zeros((nchunks, 4))
    for c in prange(nchunks):
        t = owner[c]
        if active[t]:
            lo = start[c]
            w = ws[t][lo:lo + chunk]
            s = ss[t][lo:lo + chunk]
            ww = 0.0
            sw = 0.0
            s2 = 0.0
            bad = 0.0
            for i in range(w.size):
                wi = np.float64(w[i])
                si = np.float64(s[i])
                finite = math.isfinite(si)
                si = si if finite else 0.0
                bad += 0.0 if finite else 1.0
                ww += wi * wi
                sw += si * wi
                s2 += si * si
            part[c, 0] = ww
            part[c, 1] = sw
            part[c, 2] = s2
            part[c, 3] = bad
    sums = np.zeros((ntensors, 4))
    for c in range(nchunks):
        for q in range(4):
            sums[owner[c], q] += part[c, q]
    return sums


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _residual(ws, ss, k, active, owner, start, chunk, ntensors):
    """The cancellation fallback. Returns (T,) float64: sum_i (s_i - k[t] w_i)^2 for the
    tensors t with active[t] (non-finite s_i as 0), 0 for the others."""
    nchunks = owner.size
    part = np.zeros(nchunks)
    for c in prange(nchunks):
        t = owner[c]
        if active[t]:
            lo = start[c]
            w = ws[t][lo:lo + chunk]
            s = ss[t][lo:lo + chunk]
            kt = k[t]
            acc = 0.0
            for i in range(w.size):
                si = np.float64(s[i])
                si = si if math.isfinite(si) else 0.0
                d = si - kt * np.float64(w[i])
                acc += d * d
            part[c] = acc
    sums = np.zeros(ntensors)
    for c in range(nchunks):
        sums[owner[c]] += part[c]
    return sums


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _update(ws, ss, a, b, masked, active, owner, start, chunk, ntensors):
    """Pass 2: w <- a[t] w + b[t] s in place where active[t], computed in float64 and
    rounded once to w's dtype; non-finite s_i count as 0 in the tensors with masked[t] (the
    others have none). Returns (T,) float64: ||w||^2 of the stored values (0 if inactive)."""
    nchunks = owner.size
    part = np.zeros(nchunks)
    for c in prange(nchunks):
        t = owner[c]
        if not active[t]:
            continue
        lo = start[c]
        w = ws[t][lo:lo + chunk]
        s = ss[t][lo:lo + chunk]
        at = a[t]
        bt = b[t]
        acc = 0.0
        if masked[t]:
            for i in range(w.size):
                si = np.float64(s[i])
                si = si if math.isfinite(si) else 0.0
                w[i] = at * np.float64(w[i]) + bt * si
                v = np.float64(w[i])  # the value as stored (rounded for float32)
                acc += v * v
        else:
            for i in range(w.size):
                w[i] = at * np.float64(w[i]) + bt * np.float64(s[i])
                v = np.float64(w[i])
                acc += v * v
        part[c] = acc
    sums = np.zeros(ntensors)
    for c in range(nchunks):
        sums[owner[c]] += part[c]
    return sums


class _Group:
    """The tensors of one dtype in a call: their positions, the arrays as the kernels take
    them, the chunk table, and (after ``Batch.reduce``) which of them hold non-finite s_i.

    Several tensors travel as typed Lists; a single one as a 1-tuple, which Numba unboxes
    in about 1 us where building two typed Lists costs about 60 us (the kernels are compiled
    once for each of the two container types)."""

    def __init__(self, positions: list[int], ws: list[np.ndarray], ss: list[np.ndarray], chunk: int):
        self.positions = np.array(positions)
        if len(ws) == 1:
            self.ws, self.ss = (ws[0],), (ss[0],)
        else:
            array_type = numba.typeof(ws[0])  # 1-D C-contiguous of the group's dtype
            self.ws = List.empty_list(array_type)
            self.ss = List.empty_list(array_type)
            for w, s in zip(ws, ss):
                self.ws.append(w)
                self.ss.append(s)
        self.chunk = chunk
        self.owner, self.start = _chunk_table(np.array([w.size for w in ws], dtype=np.int64), chunk)
        self.masked = np.zeros(len(ws), dtype=bool)


class Batch:
    """The T tensors of one ``layca_update_many`` call on the CPU, ready for the passes.

    ws, ss : lists of T NumPy arrays, validated by ``lastlayer.kernels.layca`` (ss[t] has ws[t]'s
        float32/float64 dtype and shape; ws[t] writeable). Kernels see flat C-contiguous
        views: a non-contiguous ws[t] is updated through a copy written back by ``update``;
        a non-contiguous ss[t], or one sharing memory with ws[t], is copied.
    """

    def __init__(self, ws: list[np.ndarray], ss: list[np.ndarray]):
        chunk = config.LAYCA_CHUNK
        if chunk < 1:
            raise ValueError(f"lastlayer.kernels.config: LAYCA_CHUNK must be >= 1, got {chunk}")
        self.ntensors = len(ws)
        self._write_back = []  # (original w, its contiguous copy)
        by_dtype: dict[np.dtype, tuple[list[int], list[np.ndarray], list[np.ndarray]]] = {}
        for t, (w, s) in enumerate(zip(ws, ss)):
            if w.flags.c_contiguous:
                w_flat = w.reshape(-1)
            else:
                w_flat = np.ascontiguousarray(w).reshape(-1)
                self._write_back.append((w, w_flat))
            if np.may_share_memory(w, s):
                s = s.copy()  # pass 2 writes w while reading s
            s_flat = np.ascontiguousarray(s).reshape(-1)
            positions, wl, sl = by_dtype.setdefault(w.dtype, ([], [], []))
            positions.append(t)
            wl.append(w_flat)
            sl.append(s_flat)
        self._groups = [_Group(p, wl, sl, chunk) for p, wl, sl in by_dtype.values()]

    def reduce(self) -> np.ndarray:
        """(T, 4) float64: [w.w, s.w, s.s, number of non-finite s_i] per tensor. Remembers
        which tensors hold non-finite s_i, for ``update``."""
        out = np.zeros((self.ntensors, 4))
        for g in self._groups:
            sums = _reduce(g.ws, g.ss, g.owner, g.start, g.chunk, g.positions.size)  # (T_g, 3)
            g.masked = ~np.isfinite(sums[:, 2])  # NaN/Inf in s (or squares overflowing float64)
            out[g.positions, :3] = sums
            if g.masked.any():  # one more pass over those tensors, testing every s_i
                redo = _reduce_masked(g.ws, g.ss, g.masked, g.owner, g.start, g.chunk,
                                      g.positions.size)  # (T_g, 4)
                out[g.positions[g.masked]] = redo[g.masked]
        return out

    def residual(self, k: np.ndarray, active: np.ndarray) -> np.ndarray:
        """(T,) float64: sum((s - k[t] w)^2) where active[t] ((T,) bool), 0 elsewhere."""
        out = np.zeros(self.ntensors)
        for g in self._groups:
            out[g.positions] = _residual(g.ws, g.ss, k[g.positions], active[g.positions],
                                         g.owner, g.start, g.chunk, g.positions.size)
        return out

    def update(self, a: np.ndarray, b: np.ndarray, active: np.ndarray) -> np.ndarray:
        """w <- a[t] w + b[t] s for every tensor with active[t] ((T,) float64 a, b, (T,)
        bool), non-finite s_i as 0 where ``reduce`` found some; returns (T,) ||w||^2 of the
        stored values (0 for inactive tensors)."""
        out = np.empty(self.ntensors)
        for g in self._groups:
            out[g.positions] = _update(g.ws, g.ss, a[g.positions], b[g.positions], g.masked,
                                       active[g.positions], g.owner, g.start, g.chunk,
                                       g.positions.size)
        for w, w_flat in self._write_back:
            w[...] = w_flat.reshape(w.shape)
        return out
