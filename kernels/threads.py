"""The number of threads Numba's parallel kernels (``parallel=True``: the FWHT over many
rows, the fused Layca step) may use. ``lastlayer.engine.threads`` decides it; this module
only sets it."""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["numba_threads"]


@contextmanager
def numba_threads(n: int):
    """Numba's parallel kernels use at most ``n`` threads inside the block (capped at
    NUMBA_NUM_THREADS, the size of Numba's pool); the previous count is restored after."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)
