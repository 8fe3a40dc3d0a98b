"""Tests of the paper packages, one module per registered paper (models/papers)."""

from __future__ import annotations

from models.ledger import DIFFERS, PASS, Check, run_check


def assert_row(check: Check, differs_from_paper: set[str]) -> None:
    """Run one ledger row; it must PASS, or say DIFFERS-FROM-PAPER if its ID is listed."""
    row = run_check(check)
    expected = DIFFERS if check.id in differs_from_paper else PASS
    assert row.status == expected, row
