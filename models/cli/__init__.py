"""The ``lastlayer`` command line: the parser and ``main``; each command in its own module.

    lastlayer verify [--only PREFIX ...] [--json PATH] [--list] [--wide] [--jobs N]      verify.py
    lastlayer train [--data NAME] [--hidden 128,128] [--epochs E] [--optimizer NAME] ... train.py
    lastlayer reproduce PAPER [--quick] [--seeds N] [--out DIR] [--workers N | --scheduler A]
                              [--resume]                                             reproduce.py
    lastlayer compare [--quick] [--seeds N] [--tasks T,...] [--out DIR] [--workers N ...] compare.py
    lastlayer features CHECKPOINT [--data NAME] --out F.h5                             features.py
    lastlayer head fit FEATURES (--targets Y | --labels L) --loss {squared,ce} ... --out HEAD.h5
    lastlayer head eval HEAD.h5 FEATURES (--targets Y | --labels L)                        head/
    lastlayer exercise list | start NAME [--out FILE] | check NAME [FILE]               exercise.py

Bad input never starts work: every flag is checked (finite, in range, named in the message)
and every file a command reads or writes is checked before anything runs, no output naming
an input or another output (``common.py``, with the signal handling the commands share); a
usage error exits 2 with one line on stderr. Any other OSError is one line too (exit 1),
never a traceback. Ctrl-C or SIGTERM during ``train`` stops after the current iteration,
writes the checkpoint when ``--save`` is given and says how to resume (exit 130 / 143);
during ``verify``, ``reproduce``, ``compare`` and ``head`` it stops at once, writing
nothing partial (exit 130 / 143). Each command runs with the BLAS and Numba thread counts
its problem size calls for (``lastlayer.engine.threads``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from rich.console import Console

from lastlayer.engine.optim import OPTIMIZERS
from lastlayer.engine.threads import threads_for
from lastlayer.engine.training import DATASETS

from ..exercises import EXERCISES
from ..experiment import version
from ..papers import PAPERS
from ..tasks import TaskError
from . import head, train
from .common import UsageError, exit_code, hidden, integer, prefix, real
from .compare import cmd_compare, task_list
from .exercise import cmd_exercise
from .features import cmd_features
from .reproduce import cmd_reproduce
from .train import cmd_train
from .verify import cmd_verify, default_jobs

__all__ = ["main", "build_parser", "UsageError"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: "lastlayer train: argument --epochs: ..."."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def console_for(stream=None) -> Console:
    stream = stream or sys.stdout
    # a pipe or a CI log gets a wide table rather than rich's default of 80 columns
    return Console(file=stream, width=None if stream.isatty() else 160)


def dump(result: dict, timings: dict) -> str:
    """Result JSON: the numbers under "result" (sorted keys: identical runs, and a resumed
    run and one that never stopped, give byte-identical blocks), wall times apart."""
    return json.dumps({"result": result, "timings": timings, "lastlayer": version()},
                      indent=1, sort_keys=True, allow_nan=False) + "\n"


COMMANDS = {
    "verify": lambda args: cmd_verify(args, console_for(), dump),
    "train": lambda args: cmd_train(args, console_for(), dump),
    "reproduce": lambda args: cmd_reproduce(args, console_for()),
    "compare": lambda args: cmd_compare(args, console_for()),
    "head": lambda args: head.cmd_head(args, dump, console_for),
    "features": lambda args: cmd_features(args, console_for()),
    "exercise": cmd_exercise,
}


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
    verify.add_argument("--only", nargs="+", metavar="PREFIX", type=prefix,
                        help="run only the checks whose ID starts with one of these prefixes "
                             "(e.g. G-Conv, M, C1); a prefix of letters only names a whole "
                             "family: E is ENTAME's E1 .. E6, ETF the ETF rows, LA the Laplace's")
    verify.add_argument("--json", metavar="PATH",
                        help="also write the rows (whole descriptions) and timings to PATH")
    verify.add_argument("--list", action="store_true", help="list the selected checks, run none")
    verify.add_argument("--wide", action="store_true",
                        help="whole descriptions (default: cut to the terminal's width)")
    verify.add_argument("--jobs", type=integer(1, 256), default=default_jobs(), metavar="N",
                        help=f"worker processes (default: one per core, here {default_jobs()})")
    verify.add_argument("--quiet", action="store_true",
                        help="no progress bar and no line per row: only the table at the end")

    t = sub.add_parser(
        "train", help="train an MLP or a CNN on an embedded dataset",
        description="Train an MLP or a CNN with hand-written gradients on an embedded dataset (nothing "
                    "is downloaded) and print the final train / test loss and accuracy (RMSE "
                    "for regression). The same settings give bit-identical numbers; --resume "
                    "continues a saved run exactly as if it had never stopped. Ctrl-C stops "
                    "after the current iteration and writes the checkpoint (with --save). In "
                    "a pipe or a log, progress is one line at each 1 %% of the budget.")
    t.add_argument("--data", choices=DATASETS, help="dataset (default digits)")
    t.add_argument("--arch", choices=train.ARCHS,
                   help="mlp (default) or cnn: convolution blocks (conv, activation, 2x2 max "
                        "pool; 1-D for mnist1d) before the dense layers; image data only")
    t.add_argument("--channels", type=hidden, metavar="C1,C2,...",
                   help="convolution widths of --arch cnn (default 32,64)")
    t.add_argument("--hidden", type=hidden, metavar="W1,W2,...",
                   help="hidden dense widths (default 128,128 for mlp, 128 for cnn after the "
                        "convolutions; '' for none)")
    t.add_argument("--activation", choices=sorted(train.ACTIVATIONS), help="default relu")
    t.add_argument("--dropout", type=real(0, 1, high_open=True), metavar="P",
                   help="dropout probability after each hidden layer, in [0, 1) (default 0)")
    t.add_argument("--optimizer", choices=list(OPTIMIZERS), help="default adam")
    t.add_argument("--lr", type=real(0, low_open=True), help="learning rate > 0 (default: "
                   + ", ".join(f"{k} {v:g}" for k, v in train.DEFAULT_LR.items()) + ")")
    t.add_argument("--weight-decay", type=real(0), metavar="LAMBDA",
                   help="L2 penalty lambda ||w||^2 on every tensor, >= 0 (default 0)")
    t.add_argument("--batch-size", type=integer(1), metavar="B", help="default 64")
    t.add_argument("--seed", type=integer(0), help="initialisation, batch order and dropout (default 0)")
    t.add_argument("--split-seed", type=integer(0), help="train/test split (default 0)")
    t.add_argument("--mode", choices=("epoch", "stream"),
                   help="batches: reshuffled per epoch (default) or a stream over reshuffled passes")
    t.add_argument("--dtype", choices=("float32", "float64"), help="default float64")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=real(0, low_open=True), default=30,
                        help="passes over the training set, > 0 (default 30)")
    budget.add_argument("--iterations", type=integer(1),
                        help="total number of updates, >= 1 (instead of --epochs)")
    t.add_argument("--save", metavar="CKPT", help="write an HDF5 checkpoint at the end (and on Ctrl-C)")
    t.add_argument("--save-every", type=integer(1), metavar="N",
                   help="also write the checkpoint every N iterations (needs --save)")
    t.add_argument("--resume", metavar="CKPT", help="continue the run saved in CKPT up to the budget "
                   "(--save CKPT, the same file, continues it in place)")
    t.add_argument("--json", metavar="PATH", help="write settings, final metrics and history as JSON")
    t.add_argument("--quiet", action="store_true", help="no progress display")

    r = sub.add_parser(
        "reproduce", help="reproduce a paper's experiments on embedded data",
        description="Run a paper's experiments at the scale of embedded data and write an HDF5 "
                    "results file, a markdown report and PNG figures to --out, whole or not at "
                    "all. An --out holding an earlier run of the same paper is replaced whole; "
                    "one holding anything else is refused.")
    r.add_argument("experiment", choices=[p.name for p in PAPERS],
                   help="which paper: " + "; ".join(f"{p.name} ({p.authors}, {p.title})"
                                                    for p in PAPERS))
    r.add_argument("--quick", action="store_true", help="fewer seeds and points (a smoke run)")
    r.add_argument("--seeds", type=integer(1), help="number of seeds, >= 1 (default: the paper's "
                   "full run, e.g. 10; fewer with --quick; intervals and tests from 3 seeds on)")
    r.add_argument("--out", metavar="DIR", help="output folder (default runs/EXPERIMENT)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _task_flags(r)

    cp = sub.add_parser(
        "compare", help="every last-layer strategy on the same tasks, seeds and budgets",
        description="Train every last-layer strategy (learned head, post-trained SGD / exact, "
                    "fixed Hadamard, fixed simplex ETF, Layca, PoF after SAM; transfer: "
                    "fine-tuning, ENTAME, LP-FT) on the same tasks, networks, budgets and "
                    "seeds; measure each plain, temperature-scaled and with the last-layer "
                    "Laplace; write results.h5, report.md (one table with 95 % intervals and "
                    "Holm-corrected paired tests against the baseline) and fig_compare.png to "
                    "--out, whole or not at all. Full: digits, mnist1d, mnist, 5 seeds "
                    "(about 4.5 min on 2 workers, 8 min on one); --quick: digits and "
                    "mnist1d, 3 seeds (about 1 min).")
    cp.add_argument("--quick", action="store_true", help="digits and mnist1d, 3 seeds, "
                    "shorter budgets (a smoke run that still has intervals and tests)")
    cp.add_argument("--seeds", type=integer(1), help="number of seeds, >= 1 (default 5; 3 "
                    "with --quick; intervals and tests from 3 seeds on)")
    cp.add_argument("--tasks", type=task_list, help="comma-separated tasks from digits, "
                    "mnist1d, mnist (default: all three; digits,mnist1d with --quick)")
    cp.add_argument("--out", metavar="DIR", help="output folder (default runs/compare)")
    cp.add_argument("--quiet", action="store_true", help="no progress bar")
    _task_flags(cp)

    f = sub.add_parser(
        "features", help="a trained network's penultimate features, for `head fit`",
        description="Run the network of a `lastlayer train` checkpoint up to its last layer on "
                    "the train and test parts of its data set and write those features, the "
                    "labels, and the network's own scores to one HDF5 file, so that `lastlayer "
                    "head fit F.h5:train/features --labels F.h5:train/labels ...` post-trains "
                    "the network exactly and `head eval` compares the two last layers.")
    f.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint of `lastlayer train --save`")
    f.add_argument("--data", choices=DATASETS,
                   help="data set (default: the one the checkpoint was trained on)")
    f.add_argument("--out", required=True, metavar="F.h5", help="where to write the features (HDF5)")
    f.add_argument("--quiet", action="store_true", help="no progress lines")

    head.add_parser(sub, _Parser, real, integer)

    e = sub.add_parser(
        "exercise", help="exercises with self-checks: write a layer, a loss or a solver",
        description="Exercises with self-checks: `start` copies an exercise's template (its "
                    "docstring states the task), `check` runs your copy through the engine's "
                    "own gradient check and a closed form and prints one PASS / FAIL line per "
                    "check, naming what is wrong (which gradient, by how much). Exits 1 if a "
                    "check fails.")
    actions = e.add_subparsers(dest="action", metavar="ACTION", required=True,
                               parser_class=_Parser)
    actions.add_parser("list", help="the exercises, one line each",
                       description="List the exercises: name and title, one line each.")
    names = ", ".join(EXERCISES)
    s = actions.add_parser("start", help="copy an exercise's template to fill in",
                           description="Copy the template of exercise NAME to FILE; an "
                                       "existing file is never overwritten.")
    s.add_argument("name", metavar="NAME", help=f"the exercise: {names}")
    s.add_argument("--out", metavar="FILE", help="where to write the copy (default: the "
                   "template's name in the current folder, e.g. leaky_relu.py)")
    c = actions.add_parser("check", help="check your implementation of an exercise",
                           description="Run the checks of exercise NAME on your FILE: one "
                                       "PASS / FAIL line per check. Exits 0 if all pass, 1 if "
                                       "any fails.")
    c.add_argument("name", metavar="NAME", help=f"the exercise: {names}")
    c.add_argument("file", metavar="FILE", nargs="?", help="your copy of the template "
                   "(default: the name `start` gives it, e.g. leaky_relu.py)")
    return parser


def _task_flags(p: argparse.ArgumentParser) -> None:
    """Where ``reproduce`` and ``compare`` run their tasks (``lastlayer.models.tasks``)."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=integer(1), metavar="N",
                       help="run the tasks on a local Dask cluster of N single-threaded worker "
                            "processes (default: one per core; 1: one after another in this "
                            "process); the results are the same bits for every N")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the tasks on an existing Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command: the tasks it "
                        "finished are read back, not run again")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = f"lastlayer {args.command}"
    signals = {signal.SIGINT: None, signal.SIGTERM: None}

    def terminate(signum, frame):  # SIGTERM as an interrupt: atomic writes clean up
        signals[signal.SIGTERM] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate) if args.command != "train" else None
    try:
        try:
            threads_for(0)  # a bad LASTLAYER_THREADS is refused before any work
        except ValueError as err:
            raise UsageError(str(err)) from None
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    except TaskError as err:  # a task lost twice with its worker
        print(f"{prog}: {err}; nothing partial was written", file=sys.stderr)
        return 1
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
