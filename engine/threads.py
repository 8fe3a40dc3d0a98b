"""Thread counts chosen for the work: one thread where a second gains nothing.

BLAS (OpenBLAS, MKL) and Numba start one thread per core and, between calls, keep the
extra threads spinning. On a machine whose cores are shared (a laptop doing other work, a
second job, CI) those spinning threads take the cores the other work needs: two
lastlayer jobs on 2 cores ran 4-18x slower than one. A second thread only pays when each
call is large: measured on the project's 2-core machine (OpenBLAS, float64 matrix products),
a product of 3.4e7 flops ran 1.0x faster with two threads, 1.6e8 flops 1.65-2.0x, 2e9
flops 1.85x. So a command estimates the flops of its typical call and runs with

    threads = 1                                    below SECOND_THREAD_FLOPS (1e8) a call,
    threads = min(cores, flops // SECOND_THREAD_FLOPS)   above,

for both the BLAS pool (threadpoolctl) and Numba's parallel kernels. The choice depends on
the problem's size and the number of cores only, never on the load: the same command on
the same machine gives the same numbers.

Overrides: ``LASTLAYER_THREADS=N`` sets every count to N. A BLAS or OpenMP count the user
set (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS) leaves BLAS alone, and
NUMBA_NUM_THREADS leaves Numba alone: the user's choice stands.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager

__all__ = ["SECOND_THREAD_FLOPS", "ENV", "cores", "threads_for", "thread_limits", "blas_threads",
           "blas_for"]

SECOND_THREAD_FLOPS = 1e8
ENV = "LASTLAYER_THREADS"
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_blas = None  # threadpoolctl's controller of the BLAS pools, found once (blas_threads)


def cores() -> int:
    """Cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _override() -> int | None:
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV}: expected an integer >= 1, got {text!r}")
    return value


def threads_for(flops_per_call: float) -> int:
    """Threads for calls of ``flops_per_call`` each (module docstring); LASTLAYER_THREADS wins."""
    override = _override()
    if override is not None:
        return override
    return int(max(1, min(cores(), flops_per_call // SECOND_THREAD_FLOPS)))


@contextmanager
def thread_limits(flops_per_call: float = 0.0, *, threads: int | None = None):
    """Run the block with ``threads_for(flops_per_call)`` BLAS and Numba threads, except
    where the user fixed a count (module docstring). ``threads`` given: exactly that many,
    whatever the environment (the ledger and the paper experiments pin 1 so that their
    numbers never depend on the machine). Yields the count."""
    from threadpoolctl import threadpool_limits

    from lastlayer.kernels.threads import numba_threads

    exact = threads is not None
    n = int(threads) if exact else threads_for(flops_per_call)
    chosen = exact or _override() is not None
    with ExitStack() as stack:
        if chosen or not any(os.environ.get(k) for k in BLAS_ENV):
            stack.enter_context(threadpool_limits(limits=n))  # BLAS and OpenMP pools
        if chosen or not os.environ.get("NUMBA_NUM_THREADS"):
            stack.enter_context(numba_threads(n))
        yield n


@contextmanager
def blas_threads(n: int):
    """BLAS at ``n`` threads inside the block, the previous count restored after: for the
    products a layer runs itself on several threads (a convolution's per-sample products,
    ``lastlayer.engine.layers.conv``), each of which must then run on one. The BLAS
    libraries are looked up once (a fresh ``threadpool_limits`` costs 0.4 ms; this 0.01 ms)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    with _blas.limit(limits=int(n)):
        yield


@contextmanager
def blas_for(flops: float, xp=None):
    """BLAS at one thread inside the block where a product of ``flops`` is too small to gain
    from a second (below SECOND_THREAD_FLOPS), else as it is; nothing for CuPy arrays
    (``xp`` not NumPy). A layer's small product run on several BLAS threads gains nothing,
    and OpenBLAS's idle threads then spin for a while after it, taking the cores that the
    next layer's batch slices need (``lastlayer.engine.layers.conv``): in the CNN step at 2
    threads every layer's kernels ran no faster than at one."""
    if flops >= SECOND_THREAD_FLOPS or (xp is not None and xp.__name__ != "numpy"):
        yield
        return
    with blas_threads(1):
        yield
