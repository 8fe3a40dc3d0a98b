"""The ledger's machinery, the registry of papers, and the engine's gradient rows (G-*).

Each paper's rows run once, in its own test module (tests/models/papers/test_<paper>.py);
the G rows wrap the cases of lastlayer.engine.gradcheck.cases, which tests/engine runs case by case,
so here one cheap G row checks the wrapping and the rest only their registration."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

from lastlayer.engine.gradcheck import cases
from lastlayer.models import gradients
from lastlayer.models.beyond import TOPICS, Topic
from lastlayer.models.ledger import (
    DIFFERS, FAIL, PASS, Check, Outcome, Row, at_most, row_dict, run_check, select,
)
from lastlayer.models.papers import PAPERS, Paper, all_checks, paper

TESTS = Path(__file__).resolve().parent


def test_ids_are_unique_and_every_layer_and_loss_has_a_row():
    ids = [c.id for c in all_checks()]
    assert len(ids) == len(set(ids))
    for name in ("Dense", "ReLU", "Tanh", "Sigmoid", "Conv2D", "MaxPool2D", "Flatten",
                 "BatchNorm", "Dropout", "L2Normalize", "SoftmaxCE", "SquaredError", "Network"):
        assert f"G-{name}" in ids


def test_the_g_rows_wrap_the_engine_cases_one_row_per_group():
    rows = gradients.checks()
    assert [r.id for r in rows] == list(cases.case_groups()) + ["G-Network"]
    flatten = run_check(next(r for r in rows if r.id == "G-Flatten"))
    assert flatten.status == PASS and 0 <= flatten.measured <= cases.LAYER_TOL
    assert "(3, 2, 4, 5)" in flatten.description  # the case names are listed


def test_the_ledger_is_the_g_rows_then_every_paper_then_every_topic_in_registry_order():
    ids = [c.id for c in all_checks()]
    expected = [c.id for c in gradients.checks()]
    for p in PAPERS:
        expected += [c.id for c in p.checks()]
    for t in TOPICS:
        expected += [c.id for c in t.checks()]
    assert ids == expected and len(set(ids)) == len(ids)


def test_topic_prefixes_are_distinct_from_the_papers_and_rows_keep_to_theirs(monkeypatch):
    prefixes = [p.prefix for p in PAPERS] + [t.prefix for t in TOPICS] + ["G"]
    assert len(set(prefixes)) == len(prefixes)
    stray = Topic("LA", "nc_claims", "t", "s")  # the NC module's rows under the LA prefix
    with pytest.raises(ValueError, match=r"are not the topic's prefix 'LA' followed by"):
        stray.checks()


def test_registry_entries_are_distinct_and_each_has_its_package_and_tests():
    prefixes = [p.prefix for p in PAPERS]
    assert len(set(prefixes)) == len(prefixes) and "G" not in prefixes
    assert len({p.name for p in PAPERS}) == len(PAPERS)
    for p in PAPERS:
        for module in ("method", "protocol", "claims", "reproduce"):
            importlib.import_module(f"{p.package}.{module}")
        assert callable(importlib.import_module(f"{p.package}.reproduce").run)
        test_module = TESTS / "papers" / f"test_{p.name.replace('-', '_')}.py"
        assert test_module.exists(), f"{p.name}: no {test_module.relative_to(TESTS.parent)}"


def test_a_paper_whose_rows_leave_its_prefix_is_refused(monkeypatch):
    stray = Paper("C", "layca", "t", "a")
    module = importlib.import_module(f"{stray.package}.claims")
    monkeypatch.setattr(module, "checks", lambda: [Check("M9", "not Layca's", lambda: None)])
    with pytest.raises(ValueError, match=r"IDs \['M9'\] do not start with the paper's prefix 'C'"):
        stray.checks()


def test_paper_lookup_names_the_choices():
    assert paper("layca").prefix == "C"
    with pytest.raises(ValueError, match="paper: expected one of post-training, fixed-classifier"):
        paper("resnet")


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
    family = [Check("E1", "", None), Check("E12", "", None), Check("ETF2", "", None)]
    assert [c.id for c in select(family, ["E"])] == ["E1", "E12"]  # letters: a whole family
    assert [c.id for c in select(family, ["ETF"])] == ["ETF2"]
    assert [c.id for c in select(family, ["E1"])] == ["E1", "E12"]  # with a digit: a prefix


def test_json_rows_have_the_documented_fields():
    rows = [Row("A", "a", 1e-9, 0.0, 1e-7, PASS), Row("B", "b", math.nan, 0.0, 1e-7, FAIL)]
    data = json.loads(json.dumps([row_dict(r) for r in rows], allow_nan=False))
    assert data[0] == {"id": "A", "description": "a", "measured": 1e-9, "expected": 0.0,
                       "tolerance": 1e-7, "status": "PASS"}
    assert data[1]["measured"] == "nan"


def test_rows_only_take_known_statuses():
    with pytest.raises(ValueError, match="status: expected one of"):
        Row("A", "a", 0, 0, 0, "OK")
    assert Outcome(1, 1, 0, PASS).status == PASS
    assert DIFFERS == "DIFFERS-FROM-PAPER"
