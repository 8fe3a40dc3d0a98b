"""Ctrl-C and SIGTERM as requests to stop cleanly, for the command line.

Inside ``graceful_stop()``, the first SIGINT (Ctrl-C) or SIGTERM only records the signal:
the work checks ``stop.requested`` at a safe point (after a training iteration), finishes
what it must (writes its checkpoint: a save in progress is never cut short) and returns;
the command then exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second
signal while stopping raises ``KeyboardInterrupt`` at once: atomic writes
(``engine.training.io``) still leave no temporary file behind. The previous handlers are
restored on exit. Outside the main thread (where Python cannot install handlers) it is a
no-op whose ``requested`` stays None.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

__all__ = ["StopRequest", "graceful_stop", "exit_code"]

_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class StopRequest:
    """The signal received so far (None: keep going). Callable: ``stop()`` is True once a
    signal arrived, the form ``engine.training.train(should_stop=...)`` takes."""

    def __init__(self) -> None:
        self.requested: int | None = None

    def __call__(self) -> bool:
        return self.requested is not None

    @property
    def name(self) -> str:
        return _NAMES.get(self.requested, f"signal {self.requested}")


def exit_code(signum: int) -> int:
    """The conventional exit status after stopping on ``signum``: 128 + its number."""
    return 128 + int(signum)


@contextmanager
def graceful_stop():
    """Yield a ``StopRequest`` that the first SIGINT / SIGTERM sets (module docstring)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        stop.requested = signum

    previous = {s: signal.signal(s, handler) for s in _NAMES}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
