"""Progress over units of work (a reproduction's tasks): a rich progress bar on a
terminal, a line at each 10 % in a pipe or a log, and once the first unit is done an
estimate of the whole run."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["Steps", "duration"]


class Steps:
    """Progress over named units of work: on a terminal a rich progress bar with the time
    remaining; in a pipe or a log one line at each further 10 % (flushed); nothing when
    quiet. Either way, once the first unit is done, one line estimates the whole run from
    it ("about 6 min in all"), so that a run far longer than meant (``--seeds 10000``) can
    be stopped at once (Ctrl-C writes nothing partial)."""

    def __init__(self, total: int, quiet: bool, title: str, workers: int = 1):
        self.bar = None
        self.total, self.title, self.done, self.logged = total, title, 0, 0
        self.workers = max(1, int(workers))  # units run at once: the estimate divides by it
        self.quiet = quiet
        self.log = not quiet and not sys.stdout.isatty()
        self.t0 = time.perf_counter()
        if not quiet and not self.log:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
            from rich.progress import TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(f"{title} " + "{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
            self.task = self.bar.add_task("", total=total)

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    @contextmanager
    def step(self, description: str):
        """The block is one unit of work called ``description``."""
        if self.bar is not None:
            self.bar.update(self.task, description=description)
        yield
        self.advance(description)

    def advance(self, description: str) -> None:
        """One unit of work called ``description`` is done (run elsewhere, e.g. on a worker)."""
        if self.bar is not None and self.workers > 1:
            self.bar.update(self.task, description=description)
        self.done += 1
        if self.bar is not None:
            self.bar.advance(self.task)
        if self.quiet:
            return
        elapsed = self.seconds
        if self.done == 1 and self.total > 1:
            on = f" on {self.workers} workers" if self.workers > 1 else ""
            self._print(f"{self.title}: {self.total} tasks{on}; the first took {elapsed:.1f} s: "
                        f"at that rate the run needs about "
                        f"{duration(elapsed * self.total / self.workers)} (a rough guide: tasks "
                        f"differ in cost; the time left is updated as it goes)")
        percent = 100 * self.done // max(1, self.total)
        if self.log and percent >= self.logged + 10:
            self.logged = percent - percent % 10
            left = elapsed / self.done * (self.total - self.done)
            self._print(f"{self.title}: {self.done}/{self.total} tasks ({description}), "
                        f"{duration(elapsed)} so far, about {duration(left)} left")

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def duration(seconds: float) -> str:
    """'42 s', '6 min 20 s', '3 h 05 min', '2.5 days'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 86400:.1f} days"
