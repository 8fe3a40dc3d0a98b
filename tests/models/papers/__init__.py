"""Tests of the paper packages, one module per registered paper (models/papers)."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from lastlayer.models.experiment import (
    MIN_SEEDS, UNDEFINED_CONVENTION, no_interval, single_threaded_blas,
)
from lastlayer.models.ledger import DIFFERS, PASS, Check, run_check


def assert_row(check: Check, differs_from_paper: set[str]) -> None:
    """Run one ledger row; it must PASS, or say DIFFERS-FROM-PAPER if its ID is listed."""
    row = run_check(check)
    expected = DIFFERS if check.id in differs_from_paper else PASS
    assert row.status == expected, row


# ---- statistics over seeds in a reproduction's report and results.h5 --------------------------
# Our intervals are "mean ± half-width" and "CI [lo, hi]"; the paper's own numbers, quoted in
# the reports as "3.22±0.14", have no spaces and are not ours.
INTERVAL = re.compile(r"\d ± \d|CI \[")
P_VALUE = re.compile(r"\bp = |t-test p|Wilcoxon p|p-value")
NAN = re.compile(r"\bnan\b", re.IGNORECASE)


def assert_seed_statistics(out: Path, seeds: int, compared: bool) -> None:
    """The report and results.h5 of a run over ``seeds`` seeds follow lastlayer.models.experiment's
    convention: below 3 seeds no interval, no p-value and no "nan", and the reason said;
    from 3 on, intervals (and, where the paper compares methods paired by seed, confidence
    intervals of the difference and p-values). In results.h5 every dataset holding NaN says
    why, and so does every group of an undefined statistic."""
    report = (out / "report.md").read_text()

    def around(match) -> str:
        return f"{seeds} seeds: {report[max(0, match.start() - 60):match.end() + 30]!r}"

    assert not NAN.search(report), around(NAN.search(report))
    if seeds < MIN_SEEDS:
        assert not INTERVAL.search(report), around(INTERVAL.search(report))
        assert not P_VALUE.search(report), around(P_VALUE.search(report))
        assert no_interval(seeds) in report, f"{seeds} seeds: the report does not say why"
    else:
        assert re.search(r"\d ± \d", report)
        assert "no interval or test" not in report
        if compared:
            assert "95 % CI [" in report and P_VALUE.search(report)
    with h5py.File(out / "results.h5") as f:
        assert f.attrs["undefined_values"] == UNDEFINED_CONVENTION
        assert int(f.attrs["seeds"]) == seeds
        found = []

        def visit(name, node):
            if isinstance(node, h5py.Dataset) and node.dtype.kind == "f":
                if np.isnan(node[()]).any():
                    assert node.attrs.get("nan"), f"{name} holds NaN and does not say why"
            if isinstance(node, h5py.Group) and "n" in node.attrs:  # a paired comparison
                found.append(name)
                assert int(node.attrs["n"]) == seeds
                if seeds < MIN_SEEDS:
                    assert sorted(node) == ["mean"], name
                    assert node.attrs["undefined"] == no_interval(seeds)
                elif "undefined" not in node.attrs:
                    assert sorted(node) == ["ci_high", "ci_low", "mean", "t_p", "wilcoxon_p"]

        f.visititems(visit)
        assert bool(found) == compared


def assert_statistics_at_1_2_3_seeds(reproduce, tmp_path: Path, monkeypatch, settings,
                                     compared: bool) -> None:
    """Run ``reproduce.run(..., seeds=n)`` for n = 1, 2, 3 with ``settings(n)`` (tiny
    settings honouring n) and check each report and results.h5 (``assert_seed_statistics``).
    The figures are left out (each paper's smoke run draws them); BLAS runs on one thread
    (as three of the papers pin it themselves: on small matrices more threads only thrash)."""
    monkeypatch.setattr(reproduce, "_figures", lambda *args: None)
    monkeypatch.setattr(reproduce.Settings, "make",
                        classmethod(lambda cls, quick, seeds: settings(seeds)))
    for n in (1, 2, 3):
        with single_threaded_blas():
            out = reproduce.run(tmp_path / f"seeds{n}", quick=True, seeds=n, quiet=True)
        assert_seed_statistics(out, n, compared)
