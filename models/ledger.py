"""The claims ledger: named numerical checks, run and reported one row each.

A ``Check`` knows its ID and description before it runs (so ``--only`` can select
without running anything); running it gives a ``Row``: what was measured, the value the
mathematics predicts, the tolerance and a status:

* PASS  — measured agrees with the prediction within the tolerance;
* FAIL  — it does not (``lastlayer verify`` then exits 1);
* DIFFERS-FROM-PAPER — the correct derivation is confirmed, and the paper's own equation
  gives a different value (the row says which).
"""

from __future__ import annotations

import math
import re
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

PASS = "PASS"
FAIL = "FAIL"
DIFFERS = "DIFFERS-FROM-PAPER"
STATUSES = (PASS, FAIL, DIFFERS)

Value = float | int | str | None


@dataclass(frozen=True)
class Row:
    """One line of the ledger (field names are those of the ``--json`` output)."""

    id: str
    description: str
    measured: Value
    expected: Value
    tolerance: Value
    status: str

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")


@dataclass(frozen=True)
class Outcome:
    """What a check's function returns; the ledger adds the ID and description."""

    measured: Value
    expected: Value
    tolerance: Value
    status: str


def at_most(measured: float, tolerance: float, expected: float = 0.0) -> Outcome:
    """Outcome of an error measurement that must not exceed ``tolerance`` (NaN fails)."""
    ok = math.isfinite(measured) and measured <= tolerance
    return Outcome(measured, expected, tolerance, PASS if ok else FAIL)


@dataclass(frozen=True)
class Check:
    id: str
    description: str
    run: Callable[[], Outcome]


def run_check(check: Check) -> Row:
    """Run one check; an exception becomes a FAIL row that says what was raised."""
    try:
        out = check.run()
    except Exception as err:  # a crashing check is a failing check, reported, not fatal
        where = traceback.extract_tb(err.__traceback__)[-1]
        msg = f"error: {type(err).__name__}: {err} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
        return Row(check.id, check.description, msg, None, None, FAIL)
    return Row(check.id, check.description, out.measured, out.expected, out.tolerance, out.status)


def family(check_id: str) -> str:
    """The letters an ID starts with: its paper's or topic's prefix ("E" of E12, "ETF" of
    ETF2, "G" of G-Dense)."""
    match = re.match(r"[A-Za-z]+", check_id)
    return match.group(0) if match else check_id


def select(checks: Iterable[Check], prefixes: Iterable[str] | None) -> list[Check]:
    """The checks whose ID starts with any of ``prefixes`` (all of them if None). A prefix
    of letters only names a whole family: E selects E1 .. E12 but not ETF1 (``family``)."""
    checks = list(checks)
    if not prefixes:
        return checks

    def chosen(check_id: str) -> bool:
        return any(family(check_id) == p if p.isalpha() else check_id.startswith(p)
                   for p in prefixes)

    prefixes = tuple(prefixes)
    return [c for c in checks if chosen(c.id)]


def json_value(v: Value) -> Value:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN / Infinity; keep them readable
    return v


def row_dict(row: Row) -> dict:
    """A row as the ``--json`` output holds it (non-finite numbers as strings)."""
    return {k: json_value(v) for k, v in asdict(row).items()}


def format_value(v: Value) -> str:
    """Numbers as they are best read in a table: 3 significant digits, scientific when tiny."""
    if v is None:
        return "-"
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    return f"{v:.2e}"
