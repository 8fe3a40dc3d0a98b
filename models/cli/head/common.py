"""What ``lastlayer head fit`` and ``head eval`` share (the package's ``__init__``): the usage error, the
head file's format tag, the files check, the sources, thread counts, progress and memory."""

from __future__ import annotations

import resource
import sys

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from lastlayer.engine.threads import thread_limits

from ..common import Files, UsageError, array_file

__all__ = ["HEAD_FORMAT", "HeadUsageError", "check_files", "open_sources", "head_threads",
           "peak_rss", "progress"]

HEAD_FORMAT = "lastlayer-head"


class HeadUsageError(UsageError):
    """Bad input found before (or while reading) the data: one line, exit 2."""


def check_files(inputs: dict, outputs: dict) -> None:
    """Check every file of the command before any work; no output may name an input or
    another output (models/cli/common.py)."""
    files = Files()
    for flag, spec in inputs.items():
        files.input(spec and array_file(spec), flag, "array")
    for flag, path in outputs.items():
        files.output(path, flag)
    files.distinct()


def head_threads(features, loss: str, chunk_rows: int | None):
    """BLAS / Numba threads for this head (lastlayer.engine.threads): the typical call is one chunk's
    product, the d x d Gram update for squared loss, the logits X W^T for ce (counted with 10
    classes: the class count is known only after a pass over the labels)."""
    from lastlayer.engine.solvers.streaming.sources import default_chunk_rows

    d = features.shape[1] if len(features.shape) > 1 else 1
    rows = min(features.rows, chunk_rows or default_chunk_rows(d))
    return thread_limits(2.0 * rows * d * (d if loss == "squared" else 10))


def open_sources(args):
    """(features, targets) ArraySources of FEATURES and --targets / --labels, their shapes,
    row counts and (labels) dtype checked."""
    from lastlayer.engine.solvers.estimators import as_source  # scikit-learn: imported when needed

    features = as_source(args.features, "FEATURES")
    if args.targets is not None:
        target, flag = as_source(args.targets, "--targets"), "--targets"
    else:
        target, flag = as_source(args.labels, "--labels"), "--labels"
    if len(features.shape) != 2:
        raise HeadUsageError(f"FEATURES: expected a 2-D array (N, d), got shape {features.shape}")
    if target.rows != features.rows:
        raise HeadUsageError(f"{flag}: {target.rows} rows, but FEATURES has {features.rows}")
    if args.labels is not None and (len(target.shape) != 1 or target.dtype.kind not in "iu"):
        raise HeadUsageError(f"--labels: expected integer class labels of shape (N,), got "
                             f"{target.dtype} {target.shape}")
    return features, target


def peak_rss() -> int:
    """Peak resident memory of this process, bytes: Linux's VmHWM (the high-water mark of
    this program's own address space; ``getrusage``'s ru_maxrss would include what a large
    parent held when it forked this process), else ru_maxrss."""
    from ..train import proc_kib

    peak = proc_kib("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


class progress:
    """Rows processed so far (every pass counts), with elapsed time; nothing when quiet."""

    def __init__(self, console: Console, quiet: bool, what: str):
        self.bar = Progress(SpinnerColumn(),
                            TextColumn(f"{what}: {{task.completed:,.0f}} rows read"),
                            TimeElapsedColumn(), console=console, transient=True,
                            disable=quiet or not console.is_terminal)

    def __enter__(self):
        self.bar.__enter__()
        task = self.bar.add_task("rows", total=None)
        return lambda rows: self.bar.advance(task, rows)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)
