"""How many threads the kernels may use, and the small pool that runs them.

``lastlayer.engine.threads`` decides the count; this module only sets it
(``numba_threads``: Numba's count, which the batch-sliced kernels read too) and runs work
over slices of the batch axis (``over_batch``).

Why a pool of Python threads and not Numba's ``prange``. The conv path's kernels
(``kernels/im2col_cpu.py``, ``kernels/pool_cpu.py``) are compiled with ``nogil=True``; run
on contiguous slices of the batch, each thread computes exactly the elements it would
compute alone, in the same order, so the result is bit for bit the one-thread result for
any thread count (no reduction crosses the batch axis). Numba's OpenMP layer (the one this
machine's Numba picks) makes every parallel region wait at a barrier for all its threads:
measured on the project's 2-core machine while other work held the cores (load 1.3-3.3),
im2col of (64, 32, 13, 13) float32 at two threads took 7.7-8.0 ms as a ``prange`` over N
against 1.8-3.9 ms on this pool (1.7 ms on one thread), col2im 6.4-8.0 ms against
2.3-4.1 ms. The pool's idle threads wait on a queue, spinning nothing between calls.
NumPy's matrix products release the GIL too, so the engine runs a convolution's
per-sample products on the same pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

__all__ = ["numba_threads", "kernel_threads", "over_batch"]

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


@contextmanager
def numba_threads(n: int):
    """Numba's parallel kernels, and ``over_batch``, use at most ``n`` threads inside the
    block (capped at NUMBA_NUM_THREADS, the size of Numba's pool); the previous count is
    restored after. The count is the calling thread's own (Numba keeps it per thread)."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def kernel_threads() -> int:
    """The calling thread's kernel thread count: Numba's (``numba_threads`` sets it)."""
    import numba

    return numba.get_num_threads()


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool, grown to at least ``workers`` threads (started lazily, never shrunk)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lastlayer-batch")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def batch_bounds(n: int, threads: int) -> list[int]:
    """``t + 1`` bounds of ``t = min(threads, n)`` contiguous, nearly equal slices of range(n)."""
    t = max(1, min(int(threads), int(n)))
    return [n * i // t for i in range(t + 1)]


def over_batch(work: Callable[[int, int], object], n: int, threads: int | None = None) -> None:
    """Run ``work(start, stop)`` over contiguous slices of the batch range(n): one slice per
    thread, ``threads`` (default: ``kernel_threads()``) at most, the first on the calling
    thread and the others on the shared pool; returns when all are done, re-raising the
    first error. One thread (or n <= 1): exactly ``work(0, n)`` on the calling thread.
    ``work`` must release the GIL to gain anything (nogil Numba kernels, NumPy products)
    and must write disjoint slices of its outputs."""
    bounds = batch_bounds(n, kernel_threads() if threads is None else threads)
    if len(bounds) <= 2:
        work(0, n)
        return
    pool = _executor(len(bounds) - 2)
    futures = [pool.submit(work, bounds[i], bounds[i + 1]) for i in range(1, len(bounds) - 1)]
    try:
        work(bounds[0], bounds[1])
    finally:
        wait(futures)  # no slice is still being written when this returns, error or not
    for f in futures:
        f.result()
