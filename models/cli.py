"""The ``lastlayer`` command line.

    lastlayer verify [--only PREFIX ...] [--json PATH] [--list]

prints the claims ledger, one row per check, and exits 1 if any row is FAIL (2 on a
usage error, such as a prefix that selects nothing).
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .checks import all_checks
from .ledger import DIFFERS, FAIL, PASS, format_value, run_check, select, write_json

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
