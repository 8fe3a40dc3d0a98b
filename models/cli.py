"""The ``lastlayer`` command line.

    lastlayer verify [--only PREFIX ...] [--json PATH] [--list]
    lastlayer train [--data NAME] [--hidden 128,128] [--epochs E] [--optimizer NAME] ...

``verify`` prints the claims ledger, one row per check, and exits 1 if any row is FAIL.
``train`` trains an MLP on an embedded dataset and prints its final losses and accuracy
(or RMSE). Both exit 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from importlib import metadata

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from engine.optim import OPTIMIZERS
from engine.training import DATASETS, CheckpointError, NonFiniteLossError
from engine.training.io import atomic_write_text

from . import train_run
from .ledger import DIFFERS, FAIL, PASS, format_value, run_check, select, write_json
from .papers import PAPERS, all_checks, paper

STATUS_STYLE = {PASS: "green", FAIL: "bold red", DIFFERS: "yellow"}


def _console(stream=None) -> Console:
    stream = stream or sys.stdout
    # a pipe or a CI log gets a wide table rather than rich's default of 80 columns
    return Console(file=stream, width=None if stream.isatty() else 160)


def _version() -> str:
    try:
        return metadata.version("lastlayer")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def cmd_verify(args: argparse.Namespace) -> int:
    console = _console()
    checks = select(all_checks(), args.only)
    if not checks:
        known = sorted({c.id.split("-")[0] + "-" for c in all_checks()})
        print(f"lastlayer verify: --only {' '.join(args.only)} selects no check; IDs start "
              f"with {', '.join(known)} (see --list)", file=sys.stderr)
        return 2
    if args.list:
        for c in checks:
            console.print(f"{c.id:<18} {c.description}", highlight=False)
        return 0

    rows = []
    with Progress(TextColumn("verifying {task.fields[current]:<16}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
                  disable=args.quiet or not console.is_terminal) as progress:
        task = progress.add_task("verify", total=len(checks), current="")
        for check in checks:
            progress.update(task, current=check.id)
            rows.append(run_check(check))
            progress.advance(task)

    table = Table(title="lastlayer claims ledger", show_lines=False)
    for name, kwargs in [("id", {"no_wrap": True}), ("description", {"ratio": 1}),
                         ("measured", {"justify": "right"}), ("expected", {"justify": "right"}),
                         ("tolerance", {"justify": "right"}), ("status", {"no_wrap": True})]:
        table.add_column(name, **kwargs)
    for r in rows:
        # descriptions are plain text: "[...]" in them is not rich markup
        table.add_row(r.id, Text(r.description), Text(format_value(r.measured)),
                      format_value(r.expected), format_value(r.tolerance),
                      Text(r.status, style=STATUS_STYLE[r.status]))
    console.print(table)

    counts = {s: sum(r.status == s for r in rows) for s in (PASS, FAIL, DIFFERS)}
    console.print(f"{len(rows)} checks: {counts[PASS]} passed, {counts[FAIL]} failed, "
                  f"{counts[DIFFERS]} differ from the paper", highlight=False)
    if args.json:
        write_json(rows, args.json)
        console.print(f"rows written to {args.json}", highlight=False)
    return 1 if counts[FAIL] else 0


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
            raise ValueError(f"--{key.replace('_', '-')} {value} differs from the checkpoint's "
                             f"{was}; a resumed run keeps the settings it was started with")
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    console = _console()
    err = _console(sys.stderr)
    try:
        cfg = _config_from_args(args)
        result = train_run.run(cfg, epochs=args.epochs, iterations=args.iterations,
                               resume=args.resume, save=args.save, quiet=args.quiet)
    except (ValueError, TypeError, FileNotFoundError, CheckpointError) as e:
        err.print(f"lastlayer train: {e}", highlight=False, markup=False)
        return 2
    except NonFiniteLossError as e:
        err.print(f"lastlayer train: {e}", highlight=False, markup=False)
        return 1

    data, ts = result.data, result.state
    metric = "accuracy" if data.task == "classification" else "rmse"
    console.print(f"{data}; {ts.iteration} iterations in {result.seconds:.1f} s", highlight=False)
    table = Table()
    for name in ("set", "loss", metric) + (("rmse (original units)",) if data.target_scale is not None else ()):
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
        out = {"config": cfg.to_dict(), "iterations": ts.iteration, "seconds": result.seconds,
               "final": result.final, "history": {k: list(v) for k, v in ts.history.items()}}
        atomic_write_text(args.json, json.dumps(out, indent=1, allow_nan=True) + "\n")
        console.print(f"results written to {args.json}", highlight=False)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.seeds is not None and args.seeds < 1:
        print(f"lastlayer reproduce: --seeds: expected >= 1, got {args.seeds}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/{args.experiment}")
    console = _console()
    folder = paper(args.experiment).reproduce(out, quick=args.quick, seeds=args.seeds,
                                              quiet=args.quiet)
    console.print(f"{args.experiment}: results.h5, report.md and figures written to {folder}/",
                  highlight=False)
    return 0


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 128,128, got {text!r}")
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return widths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastlayer",
        description="A reference engine for research on the last layer of neural networks: "
                    "hand-written layers, closed-form solvers and a ledger of the papers' claims.",
    )
    parser.add_argument("--version", action="version", version=f"lastlayer {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    verify = sub.add_parser(
        "verify", help="run the claims ledger and print one row per check",
        description="Run every numerical check of the ledger (float64) and print one row per "
                    "check: id, description, measured, expected, tolerance, status. Exits 1 "
                    "if any row is FAIL.")
    verify.add_argument("--only", nargs="+", metavar="PREFIX",
                        help="run only the checks whose ID starts with one of these prefixes "
                             "(e.g. G-Conv, M)")
    verify.add_argument("--json", metavar="PATH",
                        help="also write the rows to PATH as a JSON list of objects")
    verify.add_argument("--list", action="store_true", help="list the selected checks, run none")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(func=cmd_verify)

    t = sub.add_parser(
        "train", help="train an MLP on an embedded dataset",
        description="Train an MLP with hand-written gradients on an embedded dataset (nothing "
                    "is downloaded) and print the final train / test loss and accuracy (RMSE "
                    "for regression). The same settings give bit-identical numbers; --resume "
                    "continues a saved run exactly as if it had never stopped.")
    t.add_argument("--data", choices=DATASETS, help="dataset (default digits)")
    t.add_argument("--hidden", type=_hidden, metavar="W1,W2,...",
                   help="hidden layer widths (default 128,128; '' for a linear model)")
    t.add_argument("--activation", choices=sorted(train_run.ACTIVATIONS), help="default relu")
    t.add_argument("--dropout", type=float, metavar="P", help="dropout after each hidden layer (default 0)")
    t.add_argument("--optimizer", choices=list(OPTIMIZERS), help="default adam")
    t.add_argument("--lr", type=float, help="learning rate (default: "
                   + ", ".join(f"{k} {v:g}" for k, v in train_run.DEFAULT_LR.items()) + ")")
    t.add_argument("--weight-decay", type=float, metavar="LAMBDA",
                   help="L2 penalty lambda ||w||^2 on every tensor (default 0)")
    t.add_argument("--batch-size", type=int, metavar="B", help="default 64")
    t.add_argument("--seed", type=int, help="initialisation, batch order and dropout (default 0)")
    t.add_argument("--split-seed", type=int, help="train/test split (default 0)")
    t.add_argument("--mode", choices=("epoch", "stream"),
                   help="batches: reshuffled per epoch (default) or a stream over reshuffled passes")
    t.add_argument("--dtype", choices=("float32", "float64"), help="default float64")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, default=30, help="passes over the training set (default 30)")
    budget.add_argument("--iterations", type=int, help="total number of updates (instead of --epochs)")
    t.add_argument("--save", metavar="CKPT", help="write an HDF5 checkpoint at the end")
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
    r.add_argument("--seeds", type=int, help="number of seeds (default: the paper's full run, e.g. 10; fewer "
                   "with --quick; each report states its count)")
    r.add_argument("--out", metavar="DIR", help="output folder (default runs/EXPERIMENT)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
