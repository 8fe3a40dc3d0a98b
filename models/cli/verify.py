"""``lastlayer verify``: the claims ledger, one row per check, run in worker processes.

On a terminal a progress bar, then a table cut to the terminal's width; in a pipe or a log
one line per row the moment it is measured. Exit 1 if any row is FAIL.

The checks are grouped by paper or topic (the letters their ID starts with,
``ledger.family``: a paper's rows share cached computations, such as a trained model, that
a split would compute twice) and the groups are handed to ``jobs`` worker processes,
longest first (``GROUP_SECONDS``, measured on 2 cores). Each worker sends every row back
the moment it is measured, so the caller can print it. Every check runs with the BLAS and
OpenMP pools limited to one thread, in a worker or not: the numbers do not depend on the
number of jobs or of cores.

Workers are started with "spawn" (fresh interpreters: no state inherited from a parent that
may already run Numba or BLAS threads). A worker that fails or dies is reported at once,
not waited for, and the workers are terminated whenever the parent stops (Ctrl-C).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Sequence

from rich.table import Table
from rich.text import Text

from lastlayer.engine.threads import thread_limits
from lastlayer.engine.training.io import atomic_write_text

from ..ledger import (
    DIFFERS, FAIL, PASS, Check, Row, family, format_value, row_dict, run_check, select,
)
from ..papers import all_checks
from .common import Files, UsageError

__all__ = ["cmd_verify", "GROUP_SECONDS", "default_jobs", "groups", "run_rows"]


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


# Seconds each group took on the project's 2-core machine (serially, one BLAS thread);
# groups are scheduled longest first. Unknown groups come after these.
GROUP_SECONDS = {"P": 21.0, "C": 16.0, "H": 9.0, "NC": 5.0, "M": 5.0, "LA": 4.0, "ETF": 3.0,
                 "E": 3.0, "CAL": 2.5, "G": 2.0}


def default_jobs() -> int:
    """One worker per available core (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def groups(checks: Sequence[Check]) -> list[list[int]]:
    """Indices of ``checks`` grouped by the family of the ID (``ledger.family``: E, ETF),
    longest group first."""
    by_key: dict[str, list[int]] = {}
    for i, c in enumerate(checks):
        by_key.setdefault(family(c.id), []).append(i)
    order = sorted(by_key, key=lambda k: (-GROUP_SECONDS.get(k, 0.0), -len(by_key[k]), k))
    return [by_key[k] for k in order]


def _timed(check: Check) -> tuple[Row, float]:
    t0 = time.perf_counter()
    with thread_limits(threads=1):
        row = run_check(check)
    return row, time.perf_counter() - t0


def _worker(tasks, rows) -> None:
    """A worker process: run groups of check IDs from ``tasks`` until None, sending
    ("row", id, row, seconds) after each check, or ("error", message) if a group fails
    outside the checks themselves (``run_check`` turns a check's exception into a row).
    Ctrl-C is the parent's to handle: the worker ignores SIGINT and is terminated."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..papers import all_checks

    by_id = {c.id: c for c in all_checks()}
    while (ids := tasks.get()) is not None:
        try:
            for check_id in ids:
                row, seconds = _timed(by_id[check_id])
                rows.put(("row", check_id, row, seconds))
        except Exception as err:  # noqa: BLE001 - reported to the parent, which raises
            rows.put(("error", f"{type(err).__name__}: {err}"))
            return


def run_rows(checks: Sequence[Check], jobs: int,
             on_row: Callable[[Row, float], None] = lambda row, seconds: None,
             ) -> tuple[list[Row], dict[str, float]]:
    """Run ``checks``; ``on_row(row, seconds)`` is called as each completes (in completion
    order). Returns the rows in the order of ``checks`` and the seconds of each, by ID.

    ``jobs`` <= 1, or a single check: in this process. Otherwise worker processes, which
    look the checks up by ID in ``lastlayer.models.papers.all_checks()``: checks that are not in the
    registry (tests) must run with jobs=1. On any exception here (Ctrl-C included) the
    workers are terminated before it propagates."""
    results: dict[str, tuple[Row, float]] = {}
    if jobs <= 1 or len(checks) <= 1:
        for check in checks:
            row, seconds = _timed(check)
            results[check.id] = (row, seconds)
            on_row(row, seconds)
    else:
        context = multiprocessing.get_context("spawn")
        tasks, rows = context.Queue(), context.Queue()
        plan = groups(checks)
        workers = [context.Process(target=_worker, args=(tasks, rows), daemon=True)
                   for _ in range(min(jobs, len(plan)))]
        for group in plan:
            tasks.put([checks[i].id for i in group])
        for _ in workers:
            tasks.put(None)
        for w in workers:
            w.start()
        try:
            while len(results) < len(checks):
                try:
                    message = rows.get(timeout=0.5)
                except queue.Empty:
                    dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(f"a verify worker process died (exit code {dead[0]})")
                    continue
                if message[0] == "error":
                    raise RuntimeError(f"a verify worker failed: {message[1]}")
                _, check_id, row, seconds = message
                results[check_id] = (row, seconds)
                on_row(row, seconds)
        finally:
            for w in workers:
                if w.is_alive():
                    w.terminate()
                w.join()
    ordered = [results[c.id] for c in checks]
    return [r for r, _ in ordered], {c.id: s for c, (_, s) in zip(checks, ordered)}
