"""An experiment as independent tasks, run in this process or on a Dask cluster.

A reproduction (``lastlayer reproduce``, ``lastlayer compare``) is written in two phases:
it *submits* every unit of work (``Tasks.submit(label, fn, *args)``: one seed of one
strategy on one task, a pre-training, a sweep), then ``Tasks.run()`` runs them all, and
only then does it *assemble* its results from the handles (``Handle.result()``). A task's
arguments may be other tasks' handles (a pre-trained body that several fine-tunings start
from): the task runs after them, with their results.

Where the tasks run (``Execution``):

* ``workers=1`` (or no Execution): one after another in this process, in submission order:
  the reference run;
* ``workers=N``: a Dask ``LocalCluster`` of N single-threaded worker processes, started and
  stopped here;
* ``scheduler=ADDRESS``: an existing Dask cluster (``dask scheduler`` / ``dask worker``).

**The numbers do not depend on where.** Every task draws only from its own named streams
(``lastlayer.engine.streams``, keyed by seed and purpose), takes everything it needs as
arguments (no module state crosses to a worker), and runs with one BLAS and one Numba
thread (``lastlayer.engine.threads``), so a task computes the same bits in any process; the
assembly reads results by handle, never in completion order. tests/models/test_tasks.py
checks that results.h5 of ``compare`` is byte-identical with 1 and 2 workers, with a worker
killed mid-run, and on a scheduler with 2 separately started workers. (Workers on machines
with different CPUs may differ in the last bits where Numba compiles for the CPU.)

**Order.** Serially the tasks run in submission order. On Dask the longest chains of
tasks start first (each task's ``cost``, a rough guess of its seconds, plus the costs of
the tasks that wait for it): a paper's CNN runs, submitted last, would otherwise leave one
worker alone with the last of them (post-training: 127 s on 2 workers in submission order,
108 s by cost, simulated from the measured task times). The order changes the time, never
the numbers.

**Failures.** A worker process that dies (killed, out of memory) takes its task with it;
the task is retried once on another worker (the LocalCluster's scheduler allows one
failure: ``distributed.scheduler.allowed-failures``; an existing cluster uses its own
setting). A data set given by ``share`` that died with every worker holding it is sent
again before its task is retried. A second loss, or an exception inside a task, stops the
run: every other task is cancelled and the error is raised here. Ctrl-C does the same, as a KeyboardInterrupt.

**Resuming.** With a journal folder, every finished task's result is written there at once
(one file per task, atomically, with a SHA-256 of its contents, under the run's identity:
the experiment, its settings and the lastlayer version). A run with ``resume=True`` reads
the results of the same identity back and runs only the tasks without one (and the tasks
those need), so a resumed run equals one that never stopped; a file that is damaged
(checksum, truncated) is reported in one line and its task run again. The command removes
the journal once the run's folder is written (``lastlayer.models.cli.reproduce``). Journal files are Python pickles, read only
from the folder this run's own journal lives in; like a checkpoint, they are trusted data.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .journal import ResumeError, Journal

__all__ = ["Execution", "Handle", "ResumeError", "Shared", "Tasks", "TaskError"]

class TaskError(RuntimeError):
    """A task failed twice by losing its worker."""


@dataclass(frozen=True)
class Execution:
    """Where a run's tasks go (module docstring): ``workers`` processes of a local Dask
    cluster (1: this process, serially), or the cluster at ``scheduler``; ``journal``: the
    folder of finished tasks' results (None: none kept); ``resume``: reuse them."""

    workers: int | None = 1
    scheduler: str | None = None
    journal: Path | None = None
    resume: bool = False

    @property
    def serial(self) -> bool:
        return self.scheduler is None and (self.workers or 1) == 1


class Handle:
    """A submitted task: its ``label`` (unique in the run) and, once ``Tasks.run`` is done,
    its ``result()``."""

    __slots__ = ("label", "fn", "args", "kwargs", "cost", "_value", "_done")

    def __init__(self, label: str, fn: Callable, args: tuple, kwargs: dict, cost: float = 1.0):
        self.label, self.fn, self.args, self.kwargs = label, fn, args, kwargs
        self.cost = cost  # a rough guess of its seconds on one core (Tasks.submit)
        self._value, self._done = None, False

    def result(self):
        if not self._done:
            raise RuntimeError(f"task {self.label!r}: not run yet (call Tasks.run() before "
                               "reading results)")
        return self._value

    def _set(self, value) -> None:
        self._value, self._done = value, True

    def __repr__(self) -> str:
        return f"Handle({self.label!r}, {'done' if self._done else 'pending'})"


class Shared:
    """A large argument that many tasks take (a data set): sent once to every worker
    (``Tasks.share``), not once per task."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class _Timed(NamedTuple):
    """What a task gives back: its result and the seconds it took where it ran."""

    value: object
    seconds: float


def _call(fn: Callable, args: tuple, kwargs: dict) -> _Timed:
    """Run one task with one BLAS and one Numba thread, wherever it runs."""
    from lastlayer.engine.threads import thread_limits

    t0 = time.perf_counter()
    with thread_limits(threads=1):
        value = fn(*args, **kwargs)
    return _Timed(value, time.perf_counter() - t0)


class Tasks:
    """The tasks of one run (module docstring). ``identity``: what makes two runs the same
    (experiment, settings, version; a JSON-able dict) for the journal."""

    def __init__(self, execution: Execution | None = None, *, identity: dict | None = None,
                 title: str = "run", quiet: bool = True):
        self.execution = execution or Execution()
        self.identity = identity or {}
        self.title, self.quiet = title, quiet
        self.handles: list[Handle] = []
        self._labels: set[str] = set()
        self.seconds = 0.0  # wall time of run()
        self.ran = 0  # tasks run (not read back from the journal)
        self.durations: dict[str, float] = {}  # label -> seconds, of the tasks run

    # ---- phase 1: submit ---------------------------------------------------------------
    def submit(self, label: str, fn: Callable, *args, cost: float = 1.0, **kwargs) -> Handle:
        """A task ``fn(*args, **kwargs)``; ``fn`` a module-level function (it may be sent
        to another process), arguments picklable, Handles among them run first. ``cost``:
        a rough guess of its seconds on one core, used only to order the tasks (``_dask``)."""
        if label in self._labels:
            raise ValueError(f"label: every task needs its own, got {label!r} twice")
        if not (isinstance(cost, (int, float)) and math.isfinite(cost) and cost > 0):
            raise ValueError(f"cost: expected a finite number > 0 (seconds), got {cost!r}")
        for a in (*args, *kwargs.values()):
            if isinstance(a, Handle) and a not in self.handles:
                raise ValueError(f"task {label!r}: argument {a.label!r} is not a task of this run")
        handle = Handle(label, fn, args, kwargs, float(cost))
        self._labels.add(label)
        self.handles.append(handle)
        return handle

    def share(self, value) -> Shared:
        """``value`` as an argument of many tasks (class ``Shared``)."""
        return Shared(value)

    # ---- phase 2: run ------------------------------------------------------------------
    def run(self) -> None:
        """Run every submitted task not yet done (module docstring): serially in submission
        order, or on Dask; each result kept in its handle (and in the journal)."""
        t0 = time.perf_counter()
        journal = Journal(self.execution.journal, self.identity, self.execution.resume,
                           quiet=self.quiet)
        for h in self.handles:
            if not h._done and h.label in journal.results:
                h._set(journal.results[h.label])
        todo = [h for h in self.handles if not h._done]  # in submission order
        restored = sum(h._done for h in self.handles)
        if restored and not self.quiet:
            print(f"{self.title}: resuming: {restored} of {len(self.handles)} tasks read back "
                  f"from {journal.folder}", flush=True)
        workers = 1
        if todo:
            if self.execution.serial:
                self._serial(todo, journal)
            else:
                workers = self._dask(todo, journal)
        self.ran += len(todo)
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        if todo and not self.quiet:
            print(self.summary(todo, seconds, workers), flush=True)

    def summary(self, done: list[Handle], seconds: float, workers: int) -> str:
        """One line on how the run used its workers: how busy they were (the tasks'
        seconds over workers x the wall time) and the longest task."""
        from .progress import duration

        busy = sum(self.durations[h.label] for h in done)
        longest = max(done, key=lambda h: self.durations[h.label])
        on = f"on {workers} workers" if workers > 1 else "in this process"
        return (f"{self.title}: {len(done)} tasks in {duration(seconds)} {on}, busy "
                f"{100 * busy / (workers * seconds):.0f} % of the time; the longest, "
                f"{longest.label!r}, took {duration(self.durations[longest.label])}")

    def _steps(self, total: int, workers: int):
        from .progress import Steps

        return Steps(total, self.quiet, self.title, workers=workers)

    def _serial(self, todo: list[Handle], journal: Journal) -> None:
        with self._steps(len(todo), 1) as steps:
            for h in todo:
                with steps.step(h.label):
                    value, self.durations[h.label] = _call(h.fn, _resolved(h.args),
                                                           _resolved(h.kwargs))
                    h._set(value)
                journal.write(h.label, value)

    def _dask(self, todo: list[Handle], journal: Journal) -> int:
        """Run ``todo`` on Dask; returns the number of workers it had."""
        import dask
        from dask.distributed import as_completed

        from lastlayer.engine.solvers.streaming.runners import DaskRunner

        # the in-process scheduler's warnings on a lost worker: this run reports them itself
        log = logging.getLogger("distributed")
        level = log.level
        log.setLevel(logging.CRITICAL)
        try:
            with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                                  "distributed.worker.preload": [__name__]}):  # dask_setup
                runner = DaskRunner(self.execution.scheduler, self.execution.workers)
        except BaseException:
            log.setLevel(level)
            raise
        futures: dict[int, object] = {}
        try:
            client, shared = runner.client, {}

            def remote(a):  # a done task's result itself, a data set scattered once
                if isinstance(a, Shared):  # again if every worker holding it died
                    if id(a) not in shared or shared[id(a)].status != "finished":
                        shared[id(a)] = client.scatter(a.value, broadcast=True, hash=False)
                    return shared[id(a)]
                return a.result() if isinstance(a, Handle) else a

            for h in todo:  # to every worker before any task starts
                for a in (*h.args, *h.kwargs.values()):
                    if isinstance(a, Shared):
                        remote(a)

            # a task goes to the cluster once the tasks it needs are done, with their results:
            # a worker that dies then loses only the tasks it was running, never a result
            waiting = {id(h): {id(a) for a in (*h.args, *h.kwargs.values())
                               if isinstance(a, Handle) and not a._done} for h in todo}
            dependents: dict[int, list[Handle]] = {}
            for h in todo:
                for d in waiting[id(h)]:
                    dependents.setdefault(d, []).append(h)
            priority, by_key, running = _bottom_levels(todo), {}, as_completed()
            retried: set[int] = set()

            def start(h: Handle) -> None:
                futures[id(h)] = client.submit(
                    _call, h.fn, tuple(remote(a) for a in h.args),
                    {k: remote(a) for k, a in h.kwargs.items()}, pure=False,
                    priority=priority[id(h)], key=f"{h.label} {os.urandom(6).hex()}")
                by_key[futures[id(h)].key] = h
                running.add(futures[id(h)])

            with self._steps(len(todo), runner.workers) as steps:
                for h in todo:
                    if not waiting[id(h)]:
                        start(h)
                for future in running:
                    h = by_key[future.key]
                    try:
                        value, self.durations[h.label] = future.result()
                    except Exception as err:
                        lost = type(err).__name__ in ("KilledWorker", "FutureCancelledError")
                        if type(err).__name__ == "FutureCancelledError" and id(h) not in retried:
                            retried.add(id(h))  # its worker died and the scheduler dropped it
                            start(h)
                            continue
                        if lost:
                            raise TaskError(f"task {h.label!r} was lost twice: a worker process "
                                            f"running it, or holding its data, died (killed, "
                                            f"or out of memory?): {err}") from None
                        raise
                    h._set(value)
                    journal.write(h.label, value)
                    steps.advance(h.label)
                    for d in dependents.get(id(h), ()):
                        waiting[id(d)].discard(id(h))
                        if not waiting[id(d)]:
                            start(d)
            return runner.workers
        finally:
            try:
                runner.client.cancel(list(futures.values()))
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    runner.close()
            finally:
                log.setLevel(level)


def dask_setup(worker) -> None:
    """Run by Dask in every worker process of a local cluster (a preload, in the process's
    main thread). Ctrl-C at a terminal reaches every process of the command's group: the
    command itself cancels the tasks and stops the cluster, so its workers ignore SIGINT
    instead of each printing a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _bottom_levels(todo: list[Handle]) -> dict[int, float]:
    """Per task, its cost plus the longest chain of costs of the tasks that wait for it:
    the list scheduler's priority (the longest chains start first, so that no worker is
    left alone with one long task at the end; ties in submission order)."""
    level: dict[int, float] = {}
    waiting: dict[int, list[int]] = {id(h): [] for h in todo}
    for h in todo:
        for a in (*h.args, *h.kwargs.values()):
            if isinstance(a, Handle) and id(a) in waiting:
                waiting[id(a)].append(id(h))
    for h in reversed(todo):  # a task's dependents were submitted after it
        level[id(h)] = h.cost + max((level[d] for d in waiting[id(h)]), default=0.0)
    return level


def _local(value):
    """An argument as the task sees it: a Handle's result, a Shared's value."""
    if isinstance(value, Handle):
        return value.result()
    return value.value if isinstance(value, Shared) else value


def _resolved(values):
    if isinstance(values, dict):
        return {k: _local(v) for k, v in values.items()}
    return tuple(_local(v) for v in values)
