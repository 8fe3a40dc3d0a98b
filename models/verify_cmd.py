"""``lastlayer verify``: the claims ledger, one row per check (models/verify_run.py runs them).

On a terminal a progress bar, then a table cut to the terminal's width; in a pipe or a log
one line per row the moment it is measured. Exit 1 if any row is FAIL.
"""

from __future__ import annotations

import sys
import time

from rich.table import Table
from rich.text import Text

from engine.training.io import atomic_write_text

from .cli_checks import Files, UsageError
from .ledger import DIFFERS, FAIL, PASS, family, format_value, row_dict, select
from .papers import all_checks
from .verify_run import run_rows

STATUS_STYLE = {PASS: "green", FAIL: "bold red", DIFFERS: "yellow"}


def cmd_verify(args, console, dump) -> int:
    files = Files()
    files.output(args.json, "--json")
    checks = select(all_checks(), args.only)
    if not checks:
        prefixes = sorted({family(c.id) for c in all_checks()})
        raise UsageError(f"--only {' '.join(args.only)} selects no check; IDs start with "
                         f"{', '.join(prefixes)} (e.g. C1, G-Dense; see --list)")
    if args.list:
        for c in checks:
            console.print(f"{c.id:<18} {c.description}", highlight=False)
        return 0

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    stream = not sys.stdout.isatty()  # a pipe or a log: one line per row as it completes
    t0 = time.perf_counter()
    with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True,
                  disable=args.quiet or stream or not console.is_terminal) as progress:
        task = progress.add_task("verify", total=len(checks))

        def on_row(row, seconds):
            progress.advance(task)
            if stream and not args.quiet:
                print(row_line(row, args.wide), flush=True)

        rows, seconds = run_rows(checks, args.jobs, on_row)
    total = time.perf_counter() - t0

    if not stream or args.quiet:  # the rows were not streamed: the table
        console.print(table(rows, args.wide, console.width))
    counts = {s: sum(r.status == s for r in rows) for s in (PASS, FAIL, DIFFERS)}
    console.print(f"{len(rows)} checks: {counts[PASS]} passed, {counts[FAIL]} failed, "
                  f"{counts[DIFFERS]} differ from the paper ({total:.1f} s, {args.jobs} "
                  f"job{'s' if args.jobs > 1 else ''})", highlight=False)
    if args.json:
        result = {"rows": [row_dict(r) for r in rows]}
        atomic_write_text(args.json, dump(result, {"total_seconds": total, "jobs": args.jobs,
                                                   "row_seconds": seconds}))
        console.print(f"rows written to {args.json}", highlight=False)
    return 1 if counts[FAIL] else 0


def row_line(row, wide: bool) -> str:
    """One row as a line of a log."""
    description = row.description if wide or len(row.description) <= 72 else row.description[:71] + "~"
    return (f"{row.id:<14} {row.status:<18} measured {format_value(row.measured):>10}  expected "
            f"{format_value(row.expected):>12}  tolerance {format_value(row.tolerance):>9}  {description}")


def table(rows, wide: bool, width: int) -> Table:
    """The ledger for a terminal ``width`` columns wide: one line per row, descriptions
    (and long expected values) cut to fit, unless ``wide`` (whole texts, wrapped)."""
    out = Table(title="lastlayer claims ledger", show_lines=False)
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
        out.add_column(name, justify="left" if name in ("id", "status") else "right", **size, **cut)
    out.add_column("description", **({} if wide else {"width": max(20, width - used)}), **cut)
    for i, r in enumerate(rows):
        # descriptions are plain text: "[...]" in them is not rich markup
        out.add_row(r.id, Text(status[i], style=STATUS_STYLE[r.status]),
                    *(Text(columns[name][i]) for name in ("measured", "expected", "tolerance")),
                    Text(r.description))
    if not wide:
        out.caption = "DIFFERS: differs from the paper; --wide for whole descriptions"
    return out
