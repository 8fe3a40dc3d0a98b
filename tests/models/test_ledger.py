"""The ledger: every G- row passes, and the machinery reports failures honestly."""

from __future__ import annotations

import json
import math

import pytest

from models.checks import all_checks
from models.ledger import (
    DIFFERS, FAIL, PASS, Check, Outcome, Row, at_most, run_check, select, write_json,
)

CHECKS = all_checks()
# rows where the paper's own equation is wrong and the ledger must say so
DIFFERS_FROM_PAPER = {"M2-eq8", "H4-truncated", "H7-train", "C7-without"}


@pytest.mark.parametrize("check", CHECKS, ids=[c.id for c in CHECKS])
def test_ledger_row_passes(check):
    row = run_check(check)
    assert row.status == (DIFFERS if check.id in DIFFERS_FROM_PAPER else PASS), row


def test_ids_are_unique_and_every_layer_and_loss_has_a_row():
    ids = [c.id for c in CHECKS]
    assert len(ids) == len(set(ids))
    for name in ("Dense", "ReLU", "Tanh", "Sigmoid", "Conv2D", "MaxPool2D", "Flatten",
                 "BatchNorm", "Dropout", "L2Normalize", "SoftmaxCE", "SquaredError", "Network"):
        assert f"G-{name}" in ids


def test_at_most_fails_on_nan_and_on_excess():
    assert at_most(1e-9, 1e-7).status == PASS
    assert at_most(2e-7, 1e-7).status == FAIL
    assert at_most(math.nan, 1e-7).status == FAIL


def test_a_crashing_check_is_a_fail_row_saying_why():
    def boom():
        raise ZeroDivisionError("no")

    row = run_check(Check("X-1", "explodes", boom))
    assert row.status == FAIL and "ZeroDivisionError: no" in row.measured


def test_select_by_prefix():
    checks = [Check("G-Dense", "", lambda: None), Check("G-Conv2D", "", lambda: None),
              Check("M1", "", lambda: None)]
    assert [c.id for c in select(checks, ["G-C", "M"])] == ["G-Conv2D", "M1"]
    assert len(select(checks, None)) == 3


def test_json_rows_have_the_documented_fields(tmp_path):
    rows = [Row("A", "a", 1e-9, 0.0, 1e-7, PASS), Row("B", "b", math.nan, 0.0, 1e-7, FAIL)]
    write_json(rows, tmp_path / "rows.json")
    data = json.loads((tmp_path / "rows.json").read_text())
    assert data[0] == {"id": "A", "description": "a", "measured": 1e-9, "expected": 0.0,
                       "tolerance": 1e-7, "status": "PASS"}
    assert data[1]["measured"] == "nan"


def test_rows_only_take_known_statuses():
    with pytest.raises(ValueError, match="status: expected one of"):
        Row("A", "a", 0, 0, 0, "OK")
    assert Outcome(1, 1, 0, PASS).status == PASS
