"""What the commands share: flag types, the files check, and Ctrl-C / SIGTERM handling.

Flag types (``real``, ``integer``, ``hidden``, ``prefix``) turn a bad value into argparse's
one-line error naming the flag. ``Files`` collects a command's inputs and outputs and checks
them together before anything runs:

* every output can be written: not a directory, in an existing writable directory (a file
  is created and removed there, as the real write will); an output folder exists and is
  writable, or can be created;
* every input exists and is readable;
* no output names an input, another output, or a path inside an input folder (a .zarr
  store), with paths compared after resolving links: a head written over its features, a
  JSON summary over the head, would destroy work.

An array argument ``file.h5:dataset`` or ``dir.zarr:name`` names the file ``file.h5`` or
the folder ``dir.zarr``. The one exception, by design: ``train --resume C --save C``
continues a run in place (the checkpoint is read whole before its continuation replaces it
atomically).

Ctrl-C and SIGTERM are requests to stop cleanly. Inside ``graceful_stop()``, the first
SIGINT (Ctrl-C) or SIGTERM only records the signal: the work checks ``stop.requested`` at a
safe point (after a training iteration), finishes what it must (writes its checkpoint: a
save in progress is never cut short) and returns; the command then exits 128 + the signal
number (130 for SIGINT, 143 for SIGTERM). A second signal while stopping raises
``KeyboardInterrupt`` at once: atomic writes (``lastlayer.engine.training.io``) still leave
no temporary file behind. The previous handlers are restored on exit. Outside the main
thread (where Python cannot install handlers) it is a no-op whose ``requested`` stays None.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

__all__ = ["UsageError", "Files", "real", "integer", "hidden", "prefix", "array_file",
           "StopRequest", "graceful_stop", "exit_code"]


class UsageError(Exception):
    """A bad flag or path, found before any work: one line on stderr, exit 2."""


# ---- flag values ------------------------------------------------------------------------
def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def real(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False):
    """A finite float in the interval, e.g. real(0, low_open=True) for > 0."""
    lo, hi = ("(" if low_open else "["), (")" if high_open or high == math.inf else "]")
    interval = f"{lo}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{hi}"

    def parse(text: str) -> float:
        value = _number(text)
        if value < low or (low_open and value == low) or value > high or (high_open and value == high):
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
        return value

    return parse


def integer(low: int, high: int = 2**63 - 1):
    """An integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}"
                                             + (f" and <= {high}" if high < 2**63 - 1 else "")
                                             + f", got {text!r}")
        return value

    return parse


def hidden(text: str) -> tuple[int, ...]:
    """Comma-separated widths >= 1; '' (nothing) for a linear model."""
    if not text.strip():
        return ()
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 128,128 with no "
                                         f"empty entry, got {text!r}")
    try:
        widths = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 128,128, "
                                         f"got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return widths


def prefix(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty ID prefix such as C or G-Dense, got ''")
    return text


def array_file(spec: str) -> str:
    """The file or folder an array argument reads: 'x.h5:group/data' -> 'x.h5'."""
    for suffix in (".h5", ".hdf5", ".npz", ".zarr"):
        cut = spec.find(suffix + ":")
        if cut >= 0:
            return spec[:cut + len(suffix)]
    return spec


# ---- files ------------------------------------------------------------------------------
class Files:
    """The inputs and outputs of one command, each checked as it is added; ``distinct()``
    then refuses any output that names an input or another output (module docstring)."""

    def __init__(self) -> None:
        self.inputs: list[tuple[str, str]] = []  # (flag, path)
        self.outputs: list[tuple[str, str]] = []

    def input(self, path: str | None, flag: str, what: str = "file") -> None:
        """An existing readable file (or, for ``what="array"``, file or folder)."""
        if path is None:
            return
        _not_empty(path, flag)
        p = Path(path)
        if not p.exists():
            raise UsageError(f"{flag} {path}: no such file")
        if p.is_dir() and what != "array":
            raise UsageError(f"{flag} {path}: is a directory; expected a {what}")
        if not os.access(p, os.R_OK):
            raise UsageError(f"{flag} {path}: the file is not readable")
        self.inputs.append((flag, path))

    def output(self, path: str | None, flag: str) -> None:
        """A file that can be written: not a directory, in an existing writable directory."""
        if path is None:
            return
        _not_empty(path, flag)
        p = Path(path)
        if path.endswith(os.sep) or p.is_dir():
            raise UsageError(f"{flag} {path}: is a directory; expected a file name")
        parent = p.parent
        if not parent.exists():
            raise UsageError(f"{flag} {path}: directory {str(parent)!r} does not exist")
        if not parent.is_dir():
            raise UsageError(f"{flag} {path}: {str(parent)!r} is not a directory")
        if p.exists() and not os.access(p, os.W_OK):
            raise UsageError(f"{flag} {path}: the file is not writable")
        _probe(parent, flag, path)
        self.outputs.append((flag, path))

    def output_dir(self, path: str, flag: str) -> None:
        """A directory that exists and is writable, or can be created."""
        _not_empty(path, flag)
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise UsageError(f"{flag} {path}: exists and is not a directory")
        existing = p
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise UsageError(f"{flag} {path}: {str(existing)!r} is not a directory")
        _probe(existing, flag, path)
        self.outputs.append((flag, path))

    def distinct(self, allow: tuple[tuple[str, str], ...] = ()) -> None:
        """No output names an input (or lies inside an input folder) or another output.
        ``allow``: (input flag, output flag) pairs that may name one file (module docstring)."""
        inputs = [(flag, Path(os.path.realpath(p))) for flag, p in self.inputs]
        seen: list[tuple[str, Path]] = []
        for flag, path in self.outputs:
            real_path = Path(os.path.realpath(path))
            for other, known in seen:
                if real_path == known:
                    raise UsageError(f"{other} and {flag} name the same file {str(real_path)!r}")
            for source, known in inputs:
                if (source, flag) in allow and real_path == known:
                    continue
                if real_path == known or (known.is_dir() and real_path.is_relative_to(known)):
                    raise UsageError(f"{flag} {path}: would overwrite the input {source} "
                                     f"{str(known)!r}; write the output somewhere else")
            seen.append((flag, real_path))


def _not_empty(path: str, flag: str) -> None:
    if not path.strip():
        raise UsageError(f"{flag}: expected a path, got {path!r}")


def _probe(directory: Path, flag: str, path: str) -> None:
    """Create and remove a file in ``directory``: what the real write will need."""
    try:
        fd, name = tempfile.mkstemp(prefix=".lastlayer-probe.", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise UsageError(f"{flag} {path}: directory {str(directory)!r} is not writable "
                         f"({err.strerror})") from None


# ---- signals ----------------------------------------------------------------------------
_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class StopRequest:
    """The signal received so far (None: keep going). Callable: ``stop()`` is True once a
    signal arrived, the form ``lastlayer.engine.training.train(should_stop=...)`` takes."""

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
