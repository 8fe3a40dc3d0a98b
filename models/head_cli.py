"""``lastlayer head fit`` / ``lastlayer head eval``: exact last layers on a user's features.

    lastlayer head fit FEATURES (--targets Y | --labels L) --loss {squared,ce}
                       (--lam LAM | --lam-grid LO:HI:N) [--cv K|loo|gcv] [--bias]
                       [--workers N | --scheduler ADDRESS] [--chunk-rows R] --out HEAD.h5
    lastlayer head eval HEAD.h5 FEATURES (--targets Y | --labels L)

An array argument is ``file.npy``, ``file.npz:name``, ``file.h5:dataset/path`` or
``dir.zarr[:name]``; it is read in chunks (``engine.solvers.sources``), so features larger
than memory work. A thin layer over ``engine.solvers.estimators`` (ExactRidgeHead,
ExactSoftmaxHead): everything is checked before any work (the files, the datasets, their
row counts and dtypes, the output paths, the scheduler), the head file is written
atomically at the end, and a bad input is one line and exit 2.

The head file (HDF5): datasets ``W`` (C, d), ``b`` (C,) when fitted, ``classes`` (C,) for
``ce``, ``cv_lams`` / ``cv_scores`` when lambda was cross-validated; attributes ``lam``,
``loss``, ``method``, ``kkt_residual``, ``converged``, ``rows``, ``features``, ``cv``,
``lastlayer``. Next to it, ``HEAD.cv.png``: the cross-validation curve.
"""

from __future__ import annotations

import argparse
import logging
import math
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.solvers.runners import SchedulerError, check_scheduler
from engine.threads import thread_limits
from engine.training.io import atomic_path, atomic_write_text

from .cli_checks import Files, UsageError, array_file
from .experiment import version

__all__ = ["add_parser"]

HEAD_FORMAT = "lastlayer-head"
GRID_MAX = 1000  # lambdas in a grid: a typo (1e-3:1:10000000) is refused, not run for hours


class HeadUsageError(UsageError):
    """Bad input found before (or while reading) the data: one line, exit 2."""


def _lam_grid(text: str) -> np.ndarray:
    """LO:HI:N -> N log-spaced values from LO to HI (LO > 0, HI > LO, N >= 2)."""
    parts = text.split(":")
    try:
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"expected LO:HI:N such as 1e-6:1:20, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi and 2 <= n <= GRID_MAX):
        raise argparse.ArgumentTypeError(f"expected 0 < LO < HI (finite) and 2 <= N <= {GRID_MAX}, "
                                         f"got {text!r}")
    return np.logspace(math.log10(lo), math.log10(hi), n)


def _cv(text: str):
    if text in ("loo", "gcv"):
        return text
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K >= 2 folds, 'loo' or 'gcv', got {text!r}") from None
    if k < 2:
        raise argparse.ArgumentTypeError(f"expected K >= 2 folds, 'loo' or 'gcv', got {text!r}")
    return k


def add_parser(sub, parser_class, real, integer):
    """The ``head`` command and its ``fit`` / ``eval`` subcommands (flag types from cli)."""
    head = sub.add_parser("head", help="fit or evaluate an exact last layer on your own features",
                          description="Exact last layers on frozen features read from .npy, .npz, "
                                      ".h5 or .zarr files, in chunks: the closed-form ridge head "
                                      "or the exact L2-regularised softmax head.")
    actions = head.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=parser_class)
    fit = actions.add_parser("fit", help="fit a head, lambda given or cross-validated",
                             description="Fit the exact head and write it to --out (HDF5).")
    fit.add_argument("features", metavar="FEATURES", help="file.npy, file.npz:NAME, file.h5:DATASET or dir.zarr[:NAME]")
    target = fit.add_mutually_exclusive_group(required=True)
    target.add_argument("--targets", metavar="Y", help="real targets (N,) or (N, C), for --loss squared")
    target.add_argument("--labels", metavar="L", help="integer class labels (N,), for --loss ce")
    fit.add_argument("--loss", choices=("squared", "ce"), required=True,
                     help="squared: the closed-form ridge head; ce: the exact softmax head")
    lam = fit.add_mutually_exclusive_group(required=True)
    lam.add_argument("--lam", type=real(0), help="the penalty lam ||W||^2 (mean loss convention; "
                     "scikit-learn's alpha = N lam, C = 1 / (2 N lam))")
    lam.add_argument("--lam-grid", type=_lam_grid, metavar="LO:HI:N",
                     help="N log-spaced lambdas, chosen by --cv")
    fit.add_argument("--cv", type=_cv, metavar="K|loo|gcv",
                     help="K contiguous folds, or (squared only) exact leave-one-out or GCV; "
                          "needs --lam-grid (default with a grid: 5)")
    fit.add_argument("--bias", action="store_true", help="also fit an unpenalised bias b")
    where = fit.add_mutually_exclusive_group()
    where.add_argument("--workers", type=integer(1), metavar="N", help="run on a local Dask cluster of N processes")
    where.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster, e.g. tcp://host:8786")
    fit.add_argument("--chunk-rows", type=integer(1), metavar="R", help="rows per chunk (default: about 32 MB)")
    fit.add_argument("--tol", type=real(0, low_open=True), default=1e-10,
                     help="KKT residual the softmax head is solved to (default 1e-10)")
    fit.add_argument("--out", required=True, metavar="HEAD.h5", help="where to write the head (HDF5)")
    fit.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    fit.add_argument("--quiet", action="store_true", help="no progress display")

    ev = actions.add_parser("eval", help="RMSE or accuracy of a fitted head on features",
                            description="Evaluate a head written by `lastlayer head fit`.")
    ev.add_argument("head", metavar="HEAD.h5")
    ev.add_argument("features", metavar="FEATURES")
    target = ev.add_mutually_exclusive_group(required=True)
    target.add_argument("--targets", metavar="Y")
    target.add_argument("--labels", metavar="L")
    ev.add_argument("--chunk-rows", type=integer(1), metavar="R")
    ev.add_argument("--json", metavar="PATH")
    ev.add_argument("--quiet", action="store_true")
    return head


# ---- fit ------------------------------------------------------------------------------------------
def cmd_head(args, dump, console_for) -> int:
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # its connection retries are not ours to print
    try:
        return (_fit if args.action == "fit" else _eval)(args, dump, console_for)
    except (UsageError, SchedulerError, ValueError, TypeError) as err:
        print(f"lastlayer head {args.action}: {_flag_names(str(err), args)}", file=sys.stderr)
        return 2


def _flag_names(message: str, args) -> str:
    """The estimators name their Python arguments (X, y, rows); on the command line those are
    FEATURES and --targets / --labels."""
    target = "--targets" if args.targets is not None else "--labels"
    for python, flag in (("X: ", f"FEATURES {args.features}: "), ("y: ", f"{target} "
                         f"{args.targets if args.targets is not None else args.labels}: "),
                         ("features: ", f"FEATURES {args.features}: "),
                         ("targets: ", f"--targets {args.targets}: "),
                         ("rows: ", f"FEATURES {args.features}: rows: ")):
        if message.startswith(python):
            return flag + message[len(python):]
    return message


def _files(args, inputs: dict, outputs: dict) -> None:
    """Check every file of the command before any work; no output may name an input or
    another output (models/cli_checks.py)."""
    files = Files()
    for flag, spec in inputs.items():
        files.input(spec and array_file(spec), flag, "array")
    for flag, path in outputs.items():
        files.output(path, flag)
    files.distinct()


def _threads(features, loss: str, chunk_rows: int | None):
    """BLAS / Numba threads for this head (engine.threads): the typical call is one chunk's
    product, the d x d Gram update for squared loss, the logits X W^T for ce (counted with 10
    classes: the class count is known only after a pass over the labels)."""
    from engine.solvers.sources import default_chunk_rows

    d = features.shape[1] if len(features.shape) > 1 else 1
    rows = min(features.rows, chunk_rows or default_chunk_rows(d))
    return thread_limits(2.0 * rows * d * (d if loss == "squared" else 10))


def _sources(args):
    from engine.solvers.estimators import as_source  # scikit-learn: imported when needed

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


def _fit(args, dump, console_for) -> int:
    if args.loss == "ce" and args.labels is None:
        raise HeadUsageError("--loss ce needs --labels (integer classes), not --targets")
    if args.loss == "squared" and args.targets is None:
        raise HeadUsageError("--loss squared needs --targets (real values), not --labels")
    if args.cv is not None and args.lam_grid is None:
        raise HeadUsageError("--cv needs --lam-grid LO:HI:N (the lambdas to choose from)")
    if args.cv in ("loo", "gcv") and args.loss == "ce":
        raise HeadUsageError(f"--cv {args.cv} is for --loss squared; use K folds for ce")
    if args.loss == "ce" and args.lam is not None and args.lam <= 0:
        raise HeadUsageError(f"--lam: expected > 0 for --loss ce (no finite optimum at 0), got {args.lam:g}")
    figure = Path(args.out).with_suffix(".cv.png") if Path(args.out).name else None  # "." is refused below
    _files(args, {"FEATURES": args.features, "--targets": args.targets, "--labels": args.labels},
           {"--out": args.out, "--json": args.json,
            "--out (its CV curve)": str(figure) if figure and args.lam_grid is not None else None})
    if args.scheduler is not None:
        check_scheduler(args.scheduler, "--scheduler")  # its form; whether it answers, on connecting
    features, target = _sources(args)
    from sklearn.exceptions import ConvergenceWarning

    from engine.solvers.estimators import (
        ExactRidgeHead, ExactSoftmaxHead, check_cv, check_lams, evaluate_head,
    )

    # the numbers, against the data's size, before any pass over it
    if args.lam is not None:
        check_lams(args.lam, features.rows, "--lam", allow_zero=args.loss == "squared")
    else:
        check_lams(args.lam_grid, features.rows, "--lam-grid")
    cv = args.cv if args.cv is not None else (5 if args.lam_grid is not None else None)
    check_cv(cv, features.rows, args.loss, "--cv" if args.cv is not None else "--cv (default 5 with a grid)")
    common = dict(lams=args.lam_grid, cv=cv, fit_intercept=args.bias, chunk_rows=args.chunk_rows,
                  workers=args.workers, scheduler=args.scheduler)
    lam = args.lam if args.lam is not None else 1.0
    head = (ExactRidgeHead(lam, **common) if args.loss == "squared"
            else ExactSoftmaxHead(lam, tol=args.tol, **common))
    console = console_for(sys.stdout)
    t0 = time.perf_counter()
    with _threads(features, args.loss, args.chunk_rows), warnings.catch_warnings(record=True) as caught, \
            _progress(console, args.quiet, "fitting") as advance:
        warnings.simplefilter("always", ConvergenceWarning)
        head.fit(features, target, progress=advance)
        W = np.atleast_2d(head.W_ if args.loss == "squared" else head.coef_)
        b = np.atleast_1d(head.intercept_).astype(np.float64) if args.bias else None
        classes = getattr(head, "classes_", None)
        metrics = evaluate_head(features, target, W, b, args.loss, classes, chunk_rows=args.chunk_rows,
                                workers=args.workers, scheduler=args.scheduler, progress=advance)
    seconds = time.perf_counter() - t0
    method = ("closed form: Cholesky on the d x d Gram matrix" if args.loss == "squared"
              else "Newton-CG on chunked gradients and Hessian-vector products")
    attrs = {"format": HEAD_FORMAT, "loss": args.loss, "lam": head.lam_, "method": method,
             "kkt_residual": head.kkt_residual_, "converged": bool(getattr(head, "converged_", True)),
             "rows": features.rows, "features": features.shape[1], "bias": bool(args.bias),
             "cv": "none" if cv is None else str(cv), "source": args.features}
    for w in caught:  # each unconverged solve, one line (the head is still written, marked)
        if issubclass(w.category, ConvergenceWarning):
            print(f"lastlayer head fit: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    _write_head(args.out, W, b, classes, head.cv_lams_, head.cv_scores_, attrs)
    stale = None
    if head.cv_scores_ is not None:
        _cv_figure(figure, head.cv_lams_, head.cv_scores_, head.lam_, args.loss, cv)
    elif figure is not None and figure.is_file():  # an earlier fit's curve: it no longer describes the head
        figure.unlink()
        stale = figure
    peak = _peak_rss()

    table = Table(title=f"exact {'ridge' if args.loss == 'squared' else 'softmax'} head")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    rows = [("rows x features", f"{features.rows:,} x {features.shape[1]}"),
            ("outputs" if args.loss == "squared" else "classes", str(W.shape[0])),
            ("lambda", f"{head.lam_:.4g}" + (f" (chosen by {cv}-fold CV)" if isinstance(cv, int)
                                              else f" (chosen by {cv.upper()})" if cv else "")),
            ("KKT residual ||grad J||", f"{head.kkt_residual_:.2e}"
             + ("" if attrs["converged"] else f" (NOT converged to --tol {args.tol:g})"))]
    rows += [(f"train {k}", f"{v:.6g}") for k, v in metrics.items() if k != "rows"]
    rows += [("time", f"{seconds:.1f} s"), ("peak memory", f"{peak / 2**20:.0f} MiB")]
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(f"head written to {args.out}" + (f", CV curve to {figure}" if head.cv_scores_ is not None else "")
                  + (f"; removed {stale}, the CV curve of an earlier fit to {args.out}" if stale else ""),
                  highlight=False)
    if args.json:
        result = {"head": args.out, "attrs": attrs, "train": metrics,
                  "cv": None if head.cv_scores_ is None else
                  {"lams": head.cv_lams_.tolist(), "scores": head.cv_scores_.tolist()}}
        atomic_write_text(args.json, dump(result, {"seconds": seconds, "peak_rss_bytes": peak}))
    return 0


def _write_head(path, W, b, classes, cv_lams, cv_scores, attrs) -> None:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["W"] = W
        if b is not None:
            f["b"] = b
        if classes is not None:
            f["classes"] = classes
        if cv_scores is not None:
            f["cv_lams"] = cv_lams
            f["cv_scores"] = cv_scores
        for k, v in {**attrs, "lastlayer": version()}.items():
            f.attrs[k] = v



def _cv_figure(path: Path, lams, scores, chosen, loss, cv) -> None:
    from models.experiment import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.semilogx(lams, scores, "o-", label=f"{cv}-fold" if isinstance(cv, int) else str(cv).upper())
    ax.axvline(chosen, color="C3", linestyle="--", label=f"chosen lam = {chosen:.3g}")
    ax.set_xlabel("lam (penalty lam ||W||^2, mean loss)")
    ax.set_ylabel("held-out MSE" if loss == "squared" else "held-out cross-entropy")
    ax.set_title("cross-validation curve")
    ax.legend()
    save_figure(fig, path)


def _peak_rss() -> int:
    """Peak resident memory of this process, bytes: Linux's VmHWM (the high-water mark of
    this program's own address space; ``getrusage``'s ru_maxrss would include what a large
    parent held when it forked this process), else ru_maxrss."""
    from .train_run import proc_kib

    peak = proc_kib("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


class _progress:
    """Rows processed so far (every pass counts), with elapsed time; nothing when quiet."""

    def __init__(self, console: Console, quiet: bool, what: str):
        self.bar = Progress(SpinnerColumn(), TextColumn(f"{what}: {{task.completed:,.0f}} rows read"),
                            TimeElapsedColumn(), console=console, transient=True,
                            disable=quiet or not console.is_terminal)

    def __enter__(self):
        self.bar.__enter__()
        task = self.bar.add_task("rows", total=None)
        return lambda rows: self.bar.advance(task, rows)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


# ---- eval -----------------------------------------------------------------------------------------
def _read_head(path: str) -> dict:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != HEAD_FORMAT:
                raise HeadUsageError(f"HEAD {path}: not a head written by `lastlayer head fit`")
            return {"W": f["W"][()], "b": f["b"][()] if "b" in f else None,
                    "classes": f["classes"][()] if "classes" in f else None,
                    "loss": str(f.attrs["loss"]), "lam": float(f.attrs["lam"])}
    except (OSError, KeyError) as err:
        raise HeadUsageError(f"HEAD {path}: cannot read it ({err})") from None


def _eval(args, dump, console_for) -> int:
    _files(args, {"HEAD": args.head, "FEATURES": args.features, "--targets": args.targets,
                  "--labels": args.labels}, {"--json": args.json})
    head = _read_head(args.head)
    if head["loss"] == "ce" and args.labels is None:
        raise HeadUsageError("this is a softmax (ce) head: give --labels")
    if head["loss"] == "squared" and args.targets is None:
        raise HeadUsageError("this is a ridge (squared) head: give --targets")
    features, target = _sources(args)
    from engine.solvers.estimators import evaluate_head

    console = console_for(sys.stdout)
    t0 = time.perf_counter()
    with _threads(features, head["loss"], args.chunk_rows), \
            _progress(console, args.quiet, "evaluating") as advance:
        metrics = evaluate_head(features, target, head["W"], head["b"], head["loss"], head["classes"],
                                chunk_rows=args.chunk_rows, progress=advance)
    seconds = time.perf_counter() - t0
    table = Table(title=f"{args.head} on {args.features}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else f"{v:.6g}")
    own = _network_scores(args.features)  # features of `lastlayer features`: the trained head too
    for k, v in (own or {}).items():
        table.add_row(f"the network's own last layer: {k}", f"{v:.6g}")
    console.print(table)
    if args.json:
        atomic_write_text(args.json, dump({"head": args.head, "features": args.features,
                                           "metrics": metrics, "network": own}, {"seconds": seconds}))
    return 0


def _network_scores(spec: str) -> dict | None:
    from .features_cmd import network_scores

    group = spec[len(array_file(spec)) + 1:].rpartition("/")[0]
    return network_scores(array_file(spec), group) if group else None
