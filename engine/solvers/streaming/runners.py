"""Where chunk sums run: in this process, or on a Dask cluster.

A streaming solver expresses every pass over its data as a sum over row chunks of a
function ``fn(start, stop, *args) -> tuple of arrays`` (the Gram matrix, a gradient, a
Hessian-vector product...). A runner evaluates that map-reduce:

* ``LocalRunner``: chunk after chunk in this process; memory is one chunk plus the sums.
* ``DaskRunner``: one task per chunk on a ``dask.distributed`` cluster (an existing
  scheduler by address, or a ``LocalCluster`` of N worker processes it starts and stops);
  every worker reads its own rows from the file (``ArraySource`` is a path, not data; an
  in-memory array is broadcast once); the partial sums are added pairwise on the workers
  in a fixed tree, so only the final d x d (or C x d) result comes back.

The additions happen in chunk order (a fixed tree for Dask), so a result does not depend on
the number of workers or on which worker ran which chunk. A pass whose partial results are
not simply added (the ridge head's centred sums, merged pairwise) gives ``map_sum`` its
``combine(a, b)`` function, applied in the same order and tree. The small solves (d x d,
C d x C d) stay with the caller.

``check_scheduler(address)`` checks the form of a scheduler address (``tcp://host:port``,
``host:port``, tls / ws / wss / ucx) before anything connects: ``make_runner`` calls it, and
so can a command line before any work.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np

from ..._checks import positive_int
from .sources import ArraySource

__all__ = ["LocalRunner", "DaskRunner", "make_runner", "check_scheduler", "SchedulerError"]

Ranges = Sequence[tuple[int, int]]


class SchedulerError(ValueError):
    """The Dask scheduler could not be reached or a cluster could not be started."""


def _add(a, b):
    return tuple(x + y for x, y in zip(a, b))


PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")
_ADDRESS = re.compile(r"^(?:(?P<protocol>[A-Za-z][A-Za-z0-9+.-]*)://)?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")


def check_scheduler(address, name: str = "scheduler") -> str:
    """``address`` if it has the form of a Dask scheduler address, ``[PROTOCOL://]HOST:PORT``
    with PROTOCOL one of ``PROTOCOLS`` (default tcp), HOST a name, an IPv4 address or a
    bracketed IPv6 one, PORT in 1..65535; else a ValueError naming ``name``. Nothing is
    contacted: whether a scheduler answers there is found when the runner connects."""
    expected = (f"{name}: expected a Dask scheduler address [PROTOCOL://]HOST:PORT such as "
                f"tcp://127.0.0.1:8786 (PROTOCOL one of {', '.join(PROTOCOLS)}; PORT 1-65535)")
    if not isinstance(address, str):
        raise TypeError(f"{expected}, got {type(address).__name__} {address!r}")
    match = _ADDRESS.match(address.strip())
    if match is None:
        raise ValueError(f"{expected}, got {address!r}")
    protocol = (match["protocol"] or "tcp").lower()
    if protocol not in PROTOCOLS:
        raise ValueError(f"{expected}, got {address!r} (unknown protocol {protocol!r})")
    if not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"{expected}, got {address!r} (port {int(match['port'])} out of range)")
    return address.strip()


class LocalRunner:
    """Chunk sums in this process."""

    workers = 1

    def prepare(self, source: ArraySource):
        return source

    def map_sum(self, fn: Callable, ranges: Ranges, *args, progress: Callable[[int], None] | None = None,
                combine: Callable = _add):
        """The sum (or ``combine``, in chunk order) of ``fn(start, stop, *args)`` over the
        ``ranges``; a ValueError when there is none (no rows: nothing to sum)."""
        if not ranges:
            raise ValueError("ranges: a pass over the data needs at least one row")
        total = None
        for start, stop in ranges:
            part = fn(start, stop, *args)
            total = part if total is None else combine(total, part)
            if progress is not None:
                progress(stop - start)
        return total

    def map_list(self, fn: Callable, ranges: Ranges, *args) -> list:
        """[fn(start, stop, *args) for each range], in order (small results only)."""
        return [fn(start, stop, *args) for start, stop in ranges]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DaskRunner(LocalRunner):
    """Chunk sums as tasks on a dask.distributed cluster (module docstring)."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None,
                 timeout: float = 5.0):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as err:  # pragma: no cover - dask is a dependency of the extras
            raise SchedulerError("Dask is not installed: pip install 'lastlayer[dask]'") from err
        self._cluster = None
        try:
            if scheduler is not None:
                self.client = Client(scheduler, timeout=timeout)
            else:
                # the workers' own logs would repeat, with tracebacks, an error that the
                # caller reports once: keep them quiet
                with _worker_environment():
                    self._cluster = LocalCluster(n_workers=int(workers or 2),
                                                 threads_per_worker=1, processes=True,
                                                 dashboard_address=":0",
                                                 silence_logs=logging.CRITICAL)
                self.client = Client(self._cluster)
        except (OSError, TimeoutError) as err:
            self.close()
            where = f"the scheduler at {scheduler!r}" if scheduler else "a local cluster"
            raise SchedulerError(f"cannot connect to {where} within {timeout:g} s "
                                 f"({type(err).__name__}: {err})") from None
        self.workers = len(self.client.scheduler_info()["workers"])

    def prepare(self, source: ArraySource):
        if source.kind == "memory":  # the array itself, sent once to every worker
            return self.client.scatter(source, broadcast=True)
        return source

    def map_sum(self, fn: Callable, ranges: Ranges, *args, progress=None, combine: Callable = _add):
        if not ranges:
            raise ValueError("ranges: a pass over the data needs at least one row")
        shared = [self.client.scatter(a, broadcast=True) if isinstance(a, np.ndarray) and a.nbytes > 1 << 16
                  else a for a in args]
        level = [self.client.submit(fn, start, stop, *shared, pure=False) for start, stop in ranges]
        while len(level) > 1:  # pairwise, in chunk order: a fixed tree of additions
            level = [self.client.submit(combine, level[i], level[i + 1], pure=False)
                     if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
        total = level[0].result()
        if progress is not None:
            progress(sum(stop - start for start, stop in ranges))
        return total

    def map_list(self, fn: Callable, ranges: Ranges, *args) -> list:
        futures = [self.client.submit(fn, start, stop, *args, pure=False) for start, stop in ranges]
        return self.client.gather(futures)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


@contextmanager
def _worker_environment():
    """Start a LocalCluster's workers with glibc's own memory trimming and without Dask's
    sampling profiler, and leave this process's environment as it was.

    Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536 (so that freed memory
    goes back to the system at once), which also switches off glibc's adaptive mmap
    threshold: every large temporary array is then mapped, faulted in page by page and
    unmapped again. A CNN training run of 600 steps (the fixed-classifier image section's)
    took 10.1 s so, against 4.2 s without it, measured on the project's 2-core machine, one
    process alone. The profiler (for the dashboard) samples every task thread's stack each
    10 ms, taking the GIL from tasks that are mostly Python: a layer of Layca's toy network
    trained on a worker took 1.1-1.5x its time in this process with it, 1.0-1.1x without
    (measured beside another run). The nanny also writes its variables into this process's ``os.environ``
    (OMP_NUM_THREADS=1 would then read as the user's choice in ``lastlayer.engine.threads``);
    they are put back once the workers have started. A MALLOC_TRIM_THRESHOLD_ already in this
    process's environment (left there by a LocalCluster started without this wrapper) is kept
    from the workers too, and restored afterwards."""
    import os

    import dask

    saved = dict(os.environ)
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                              "distributed.worker.profile.enabled": False}):
            yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def make_runner(scheduler: str | None = None, workers: int | None = None) -> LocalRunner:
    """A DaskRunner when a scheduler address or a number of workers is given (not both),
    else local. Both are checked before anything starts or connects."""
    if scheduler is not None and workers is not None:
        raise ValueError(f"workers: give either workers (a local cluster) or scheduler (an "
                         f"existing one), not both; got workers={workers!r}, scheduler={scheduler!r}")
    if scheduler is not None:
        scheduler = check_scheduler(scheduler)
    if workers is not None:
        workers = positive_int(workers, "workers")
    if scheduler is None and workers is None:
        return LocalRunner()
    return DaskRunner(scheduler, workers)
