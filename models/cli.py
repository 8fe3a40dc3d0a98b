"""The ``lastlayer`` command line.

    lastlayer verify [--only PREFIX ...] [--json PATH] [--list] [--wide] [--jobs N]
    lastlayer train [--data NAME] [--hidden 128,128] [--epochs E] [--optimizer NAME] ...
    lastlayer reproduce PAPER [--quick] [--seeds N] [--out DIR]
    lastlayer head fit FEATURES (--targets Y | --labels L) --loss {squared,ce} ... --out HEAD.h5
    lastlayer head eval HEAD.h5 FEATURES (--targets Y | --labels L)

``verify`` prints the claims ledger, one row per check, and exits 1 if any row is FAIL.
``train`` trains an MLP on an embedded dataset and prints its final losses and accuracy
(or RMSE). ``reproduce`` runs a paper's experiments. ``head`` fits the exact ridge or
softmax last layer on features read from files (``models/head_cli.py``).

Bad input never starts work: every flag is checked (finite, in range, named in the message)
and every output path is checked writable before anything runs; a usage error exits 2 with
one line on stderr. Any other OSError is one line too (exit 1), never a traceback. Ctrl-C
or SIGTERM during ``train`` stops after the current iteration, writes the checkpoint when
``--save`` is given and says how to resume (exit 130 / 143); during ``verify`` and
``reproduce`` it stops at once, writing nothing partial (exit 130 / 143).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from engine.optim import OPTIMIZERS
from engine.training import DATASETS, CheckpointError, NonFiniteLossError, load
from engine.training.io import atomic_write_text

from . import head_cli, train_run
from .experiment import version
from .ledger import DIFFERS, FAIL, PASS, format_value, json_value, row_dict, select
from .papers import PAPERS, all_checks, paper
from .signals import exit_code, graceful_stop
from .verify_run import default_jobs, run_rows

STATUS_STYLE = {PASS: "green", FAIL: "bold red", DIFFERS: "yellow"}


class UsageError(Exception):
    """A bad flag or path, found before any work: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: "lastlayer train: argument --epochs: ..."."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _console(stream=None) -> Console:
    stream = stream or sys.stdout
    # a pipe or a CI log gets a wide table rather than rich's default of 80 columns
    return Console(file=stream, width=None if stream.isatty() else 160)


def _dump(result: dict, timings: dict) -> str:
    """Result JSON: the numbers under "result" (sorted keys: identical runs, and a resumed
    run and one that never stopped, give byte-identical blocks), wall times apart."""
    return json.dumps({"result": result, "timings": timings, "lastlayer": version()},
                      indent=1, sort_keys=True, allow_nan=False) + "\n"


# ---- flag values ------------------------------------------------------------------------
def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _real(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False):
    """A finite float in the interval, e.g. _real(0, low_open=True) for > 0."""
    lo, hi = ("(" if low_open else "["), (")" if high_open or high == math.inf else "]")
    interval = f"{lo}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{hi}"

    def parse(text: str) -> float:
        value = _number(text)
        if value < low or (low_open and value == low) or value > high or (high_open and value == high):
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
        return value

    return parse


def _integer(low: int, high: int = 2**63 - 1):
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


def _hidden(text: str) -> tuple[int, ...]:
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


def _prefix(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty ID prefix such as C or G-Dense, got ''")
    return text


# ---- output paths, checked before any work -------------------------------------------------
def _check_output_file(path: str, flag: str) -> None:
    """``path`` can be written: not a directory, in an existing writable directory."""
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


def _check_output_dir(path: str, flag: str) -> None:
    """``path`` is a directory that exists and is writable, or can be created."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: {str(existing)!r} is not a directory")
    _probe(existing, flag, path)


def _probe(directory: Path, flag: str, path: str) -> None:
    """Create and remove a file in ``directory``: what the real write will need."""
    try:
        fd, name = tempfile.mkstemp(prefix=".lastlayer-probe.", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise UsageError(f"{flag} {path}: directory {str(directory)!r} is not writable "
                         f"({err.strerror})") from None


def _check_input_file(path: str, flag: str) -> None:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; expected a checkpoint file")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{flag} {path}: the file is not readable")


def _distinct(**paths: str | None) -> None:
    given = {flag: os.path.realpath(p) for flag, p in paths.items() if p}
    seen: dict[str, str] = {}
    for flag, real in given.items():
        if real in seen:
            raise UsageError(f"{seen[real]} and {flag} name the same file {real!r}")
        seen[real] = flag


# ---- verify --------------------------------------------------------------------------------
def cmd_verify(args: argparse.Namespace) -> int:
    if args.json:
        _check_output_file(args.json, "--json")
    checks = select(all_checks(), args.only)
    if not checks:
        prefixes = sorted({c.id[:1] for c in all_checks()})
        raise UsageError(f"--only {' '.join(args.only)} selects no check; IDs start with "
                         f"{', '.join(prefixes)} (e.g. C1, G-Dense; see --list)")
    console = _console()
    if args.list:
        for c in checks:
            console.print(f"{c.id:<18} {c.description}", highlight=False)
        return 0

    stream = not sys.stdout.isatty()  # a pipe or a log: one line per row as it completes
    t0 = time.perf_counter()
    with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True,
                  disable=args.quiet or stream or not console.is_terminal) as progress:
        task = progress.add_task("verify", total=len(checks))

        def on_row(row, seconds):
            progress.advance(task)
            if stream and not args.quiet:
                print(_row_line(row, args.wide), flush=True)

        rows, seconds = run_rows(checks, args.jobs, on_row)
    total = time.perf_counter() - t0

    if not stream or args.quiet:  # the rows were not streamed: the table
        console.print(_table(rows, args.wide, console.width))
    counts = {s: sum(r.status == s for r in rows) for s in (PASS, FAIL, DIFFERS)}
    console.print(f"{len(rows)} checks: {counts[PASS]} passed, {counts[FAIL]} failed, "
                  f"{counts[DIFFERS]} differ from the paper ({total:.1f} s, {args.jobs} "
                  f"job{'s' if args.jobs > 1 else ''})", highlight=False)
    if args.json:
        result = {"rows": [row_dict(r) for r in rows]}
        atomic_write_text(args.json, _dump(result, {"total_seconds": total, "jobs": args.jobs,
                                                    "row_seconds": seconds}))
        console.print(f"rows written to {args.json}", highlight=False)
    return 1 if counts[FAIL] else 0


def _row_line(row, wide: bool) -> str:
    description = row.description if wide or len(row.description) <= 72 else row.description[:71] + "~"
    return (f"{row.id:<14} {row.status:<18} measured {format_value(row.measured):>10}  expected "
            f"{format_value(row.expected):>12}  tolerance {format_value(row.tolerance):>9}  {description}")


def _table(rows, wide: bool, width: int) -> Table:
    """The ledger for a terminal ``width`` columns wide: one line per row, descriptions
    (and long expected values) cut to fit, unless ``wide`` (whole texts, wrapped)."""
    table = Table(title="lastlayer claims ledger", show_lines=False)
    status = [("DIFFERS" if r.status == DIFFERS and not wide else r.status) for r in rows]
    columns = {"id": [r.id for r in rows], "status": status,
               **{name: [format_value(getattr(r, name)) for r in rows]
                  for name in ("measured", "expected", "tolerance")}}
    widths = {name: max(len(name), *(len(v) for v in values)) for name, values in columns.items()}
    if not wide:
        widths["expected"] = min(widths["expected"], 14)
    used = sum(widths.values()) + 3 * (len(widths) + 1) + 1  # cells, padding and borders
    cut = {"no_wrap": not wide, "overflow": "fold" if wide else "ellipsis"}
    for name in columns:
        size = {} if wide else {"width": widths[name]}
        table.add_column(name, justify="left" if name in ("id", "status") else "right", **size, **cut)
    table.add_column("description", **({} if wide else {"width": max(20, width - used)}), **cut)
    for i, r in enumerate(rows):
        # descriptions are plain text: "[...]" in them is not rich markup
        table.add_row(r.id, Text(status[i], style=STATUS_STYLE[r.status]),
                      *(Text(columns[name][i]) for name in ("measured", "expected", "tolerance")),
                      Text(r.description))
    if not wide:
        table.caption = "DIFFERS: differs from the paper; --wide for whole descriptions"
    return table


# ---- train -------------------------------------------------------------------------------------
CONFIG_OPTIONS = ("data", "hidden", "activation", "dropout", "optimizer", "lr", "weight_decay",
                  "batch_size", "seed", "split_seed", "mode", "dtype")


def _config_from_args(args: argparse.Namespace) -> train_run.TrainConfig:
    """Settings from the command line; on --resume, those of the checkpoint, and any option
    given explicitly must agree with them (a resumed run keeps its settings)."""
    given = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k) is not None}
    if not args.resume:
        return train_run.TrainConfig(**given)
    cfg = train_run.config_of_checkpoint(args.resume)
    saved = cfg.to_dict()
    for key, value in given.items():
        value = list(value) if isinstance(value, tuple) else value
        if value != saved[key]:
            was = saved[key] if key != "lr" or saved[key] is not None else \
                f"{cfg.learning_rate:g} (the {cfg.optimizer} default)"
            raise UsageError(f"--{key.replace('_', '-')} {value} differs from the checkpoint's "
                             f"{was}; a resumed run keeps the settings it was started with")
    return cfg


def _check_memory(cfg: train_run.TrainConfig) -> None:
    """Refuse a network that cannot fit, with the estimate, before allocating it."""
    available = train_run.available_memory()
    if available is None:
        return
    need = train_run.memory_estimate(load(cfg.data, seed=cfg.split_seed), cfg)
    if need["total"] > available:
        raise UsageError(f"--hidden {','.join(map(str, cfg.hidden))}: the run needs about "
                         f"{_bytes(need['total'])} ({need['parameters']:,} parameters with their "
                         f"gradients and optimizer state: {_bytes(need['parameter_bytes'])}; "
                         f"activations: {_bytes(need['activation_bytes'])}), more than the "
                         f"{_bytes(available)} of memory available")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def cmd_train(args: argparse.Namespace) -> int:
    if args.save_every is not None and not args.save:
        raise UsageError("--save-every needs --save CKPT (where to write the checkpoints)")
    for flag, path in (("--save", args.save), ("--json", args.json)):
        if path:
            _check_output_file(path, flag)
    _distinct(**{"--save": args.save, "--json": args.json})
    if args.resume:
        _check_input_file(args.resume, "--resume")
        _distinct(**{"--resume": args.resume, "--json": args.json})
    try:
        cfg = _config_from_args(args)
    except (ValueError, TypeError, CheckpointError) as err:
        raise UsageError(str(err)) from None
    _check_memory(cfg)

    console = _console()
    with graceful_stop() as stop:
        try:
            result = train_run.run(cfg, epochs=args.epochs, iterations=args.iterations,
                                   resume=args.resume, save=args.save, save_every=args.save_every,
                                   should_stop=stop, quiet=args.quiet)
        except (ValueError, TypeError, CheckpointError) as e:
            raise UsageError(str(e)) from None
        except NonFiniteLossError as e:
            print(f"lastlayer train: {e}", file=sys.stderr)
            return 1
    ts = result.state
    if result.final is None:  # stopped by a signal
        budget = (f"--iterations {args.iterations}" if args.iterations is not None
                  else f"--epochs {args.epochs:g}")
        where = (f"checkpoint written to {args.save}; continue with: lastlayer train --resume "
                 f"{args.save} {budget}" + (f" --save {args.save}" if args.save else "")
                 if args.save else "nothing saved (pass --save CKPT to keep the progress)")
        print(f"lastlayer train: stopped by {stop.name} at iteration {ts.iteration} of "
              f"{result.target}; {where}", file=sys.stderr)
        return exit_code(stop.requested)

    data = result.data
    metric = "accuracy" if data.task == "classification" else "rmse"
    console.print(f"{data}; {ts.iteration} iterations in {result.seconds:.1f} s", highlight=False)
    table = Table()
    extra = ("rmse (original units)",) if data.target_scale is not None else ()
    for name in ("set", "loss", metric) + extra:
        table.add_column(name, justify="right" if name != "set" else "left")
    for name in ("train", "test"):
        m = result.final[name]
        row = [name, f"{m['loss']:.6f}", f"{m[metric]:.4f}"]
        if data.target_scale is not None:
            row.append(f"{m['rmse_original_units']:.3f}")
        table.add_row(*row)
    console.print(table)
    if args.save:
        console.print(f"checkpoint written to {args.save}", highlight=False)
    if args.json:
        out = {"config": cfg.to_dict(), "iterations": ts.iteration, "final": result.final,
               "history": {k: [json_value(v) for v in values] for k, values in ts.history.items()}}
        atomic_write_text(args.json, _dump(out, {"seconds": result.seconds}))
        console.print(f"results written to {args.json}", highlight=False)
    return 0


# ---- reproduce ---------------------------------------------------------------------------------
def cmd_reproduce(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/{args.experiment}")
    _check_output_dir(str(out), "--out")
    console = _console()
    folder = paper(args.experiment).reproduce(out, quick=args.quick, seeds=args.seeds,
                                              quiet=args.quiet)
    console.print(f"{args.experiment}: results.h5, report.md and figures written to {folder}/",
                  highlight=False)
    return 0


# ---- head ----------------------------------------------------------------------------------------
def cmd_head(args: argparse.Namespace) -> int:
    return head_cli.cmd_head(args, _check_output_file, _dump, _console)


# ---- the parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lastlayer",
        description="A reference engine for research on the last layer of neural networks: "
                    "hand-written layers, closed-form solvers and a ledger of the papers' claims.",
    )
    parser.add_argument("--version", action="version", version=f"lastlayer {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)

    verify = sub.add_parser(
        "verify", help="run the claims ledger and print one row per check",
        description="Run every numerical check of the ledger (float64) and print one row per "
                    "check: id, status, measured, expected, tolerance, description. Exits 1 "
                    "if any row is FAIL. On a terminal a progress bar, then the table; in a "
                    "pipe or a log, one line per row as it completes.")
    verify.add_argument("--only", nargs="+", metavar="PREFIX", type=_prefix,
                        help="run only the checks whose ID starts with one of these prefixes "
                             "(e.g. G-Conv, M, C1)")
    verify.add_argument("--json", metavar="PATH",
                        help="also write the rows (whole descriptions) and timings to PATH")
    verify.add_argument("--list", action="store_true", help="list the selected checks, run none")
    verify.add_argument("--wide", action="store_true",
                        help="whole descriptions (default: cut to the terminal's width)")
    verify.add_argument("--jobs", type=_integer(1, 256), default=default_jobs(), metavar="N",
                        help=f"worker processes (default: one per core, here {default_jobs()})")
    verify.add_argument("--quiet", action="store_true",
                        help="no progress bar and no line per row: only the table at the end")
    verify.set_defaults(func=cmd_verify)

    t = sub.add_parser(
        "train", help="train an MLP on an embedded dataset",
        description="Train an MLP with hand-written gradients on an embedded dataset (nothing "
                    "is downloaded) and print the final train / test loss and accuracy (RMSE "
                    "for regression). The same settings give bit-identical numbers; --resume "
                    "continues a saved run exactly as if it had never stopped. Ctrl-C stops "
                    "after the current iteration and writes the checkpoint (with --save).")
    t.add_argument("--data", choices=DATASETS, help="dataset (default digits)")
    t.add_argument("--hidden", type=_hidden, metavar="W1,W2,...",
                   help="hidden layer widths (default 128,128; '' for a linear model)")
    t.add_argument("--activation", choices=sorted(train_run.ACTIVATIONS), help="default relu")
    t.add_argument("--dropout", type=_real(0, 1, high_open=True), metavar="P",
                   help="dropout probability after each hidden layer, in [0, 1) (default 0)")
    t.add_argument("--optimizer", choices=list(OPTIMIZERS), help="default adam")
    t.add_argument("--lr", type=_real(0, low_open=True), help="learning rate > 0 (default: "
                   + ", ".join(f"{k} {v:g}" for k, v in train_run.DEFAULT_LR.items()) + ")")
    t.add_argument("--weight-decay", type=_real(0), metavar="LAMBDA",
                   help="L2 penalty lambda ||w||^2 on every tensor, >= 0 (default 0)")
    t.add_argument("--batch-size", type=_integer(1), metavar="B", help="default 64")
    t.add_argument("--seed", type=_integer(0), help="initialisation, batch order and dropout (default 0)")
    t.add_argument("--split-seed", type=_integer(0), help="train/test split (default 0)")
    t.add_argument("--mode", choices=("epoch", "stream"),
                   help="batches: reshuffled per epoch (default) or a stream over reshuffled passes")
    t.add_argument("--dtype", choices=("float32", "float64"), help="default float64")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=_real(0, low_open=True), default=30,
                        help="passes over the training set, > 0 (default 30)")
    budget.add_argument("--iterations", type=_integer(1),
                        help="total number of updates, >= 1 (instead of --epochs)")
    t.add_argument("--save", metavar="CKPT", help="write an HDF5 checkpoint at the end (and on Ctrl-C)")
    t.add_argument("--save-every", type=_integer(1), metavar="N",
                   help="also write the checkpoint every N iterations (needs --save)")
    t.add_argument("--resume", metavar="CKPT", help="continue the run saved in CKPT up to the budget")
    t.add_argument("--json", metavar="PATH", help="write settings, final metrics and history as JSON")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser(
        "reproduce", help="reproduce a paper's experiments on embedded data",
        description="Run a paper's experiments at the scale of embedded data and write an HDF5 "
                    "results file, a markdown report and PNG figures to --out.")
    r.add_argument("experiment", choices=[p.name for p in PAPERS],
                   help="which paper: " + "; ".join(f"{p.name} ({p.authors}, {p.title})"
                                                    for p in PAPERS))
    r.add_argument("--quick", action="store_true", help="fewer seeds and points (a smoke run)")
    r.add_argument("--seeds", type=_integer(1), help="number of seeds, >= 1 (default: the paper's "
                   "full run, e.g. 10; fewer with --quick; each report states its count)")
    r.add_argument("--out", metavar="DIR", help="output folder (default runs/EXPERIMENT)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_reproduce)

    head = head_cli.add_parser(sub, _Parser, _real, _integer)
    head.set_defaults(func=cmd_head)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = f"lastlayer {args.command}"
    signals = {signal.SIGINT: None, signal.SIGTERM: None}

    def terminate(signum, frame):  # SIGTERM as an interrupt: atomic writes clean up
        signals[signal.SIGTERM] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate) if args.command != "train" else None
    try:
        return args.func(args)
    except UsageError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"{prog}: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        code = exit_code(signal.SIGTERM if signals[signal.SIGTERM] else signal.SIGINT)
        print(f"{prog}: interrupted; nothing partial was written", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
