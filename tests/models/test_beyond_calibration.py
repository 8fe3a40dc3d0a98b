"""Ledger rows CAL1-CAL6 (models/beyond/calibration_claims.py): every row PASSes, and each
FAILs when a deliberate bug is monkeypatched into the code under it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lastlayer.engine.solvers.diagnostics import calibration as cal
from lastlayer.engine.solvers.diagnostics import temperature as ts
from lastlayer.models.beyond import calibration_claims as claims
from lastlayer.models.ledger import FAIL, run_check

from .papers import assert_row

ROWS = claims.checks()
ROW = {c.id: c for c in ROWS}


@pytest.mark.parametrize("check", ROWS, ids=[c.id for c in ROWS])
def test_ledger_row(check):
    assert_row(check, set())


def test_the_rows_are_the_topic_and_draw_from_the_beyond_data_stream():
    assert [c.id for c in ROWS] == [
        "CAL1-slope", "CAL1-neighbours", "CAL1-newton", "CAL1-derivatives", "CAL2",
        "CAL3-constant", "CAL3-hand", "CAL3-ties", "CAL4-known", "CAL4-direct", "CAL5", "CAL6"]


def fails(*ids):
    for i in ids:
        row = run_check(ROW[i])
        assert row.status == FAIL, row


# ---- the mutations ---------------------------------------------------------------------
def test_T_for_beta_fails_CAL1_CAL2_CAL5_CAL6(monkeypatch):
    monkeypatch.setattr(ts, "_temperature", lambda gamma, sigma: gamma / sigma)
    fails("CAL1-slope", "CAL1-neighbours", "CAL2", "CAL5", "CAL6")


def test_a_missing_sign_in_the_newton_step_fails_CAL1_newton(monkeypatch):
    # the safeguard still finds the minimiser, by bisection: ~50 evaluations instead of ~8
    monkeypatch.setattr(ts, "_newton_step",
                        lambda x, g1, g2: x + g1 / g2 if g2 > 0 else math.nan)
    row = run_check(ROW["CAL1-newton"])
    assert row.status == FAIL and row.measured > 40, row
    assert run_check(ROW["CAL1-slope"]).status != FAIL


def test_stopping_newton_early_fails_CAL1_slope(monkeypatch):
    def loose(x, g1, g2):  # accepts a point once the step is below 1e-6 x
        step = g1 / g2 if g2 > 0 else math.nan
        return x if abs(step) < 1e-6 * x else x - step

    monkeypatch.setattr(ts, "_newton_step", loose)
    fails("CAL1-slope")


def test_an_uncentred_variance_fails_CAL1_derivatives(monkeypatch):
    exact = ts._profile

    def second_moment(u, y, gamma):  # f'' as E_p[u^2] instead of Var_p[u]
        value, slope, _ = exact(u, y, gamma)
        e = np.exp(gamma * u)
        return value, slope, float(((e / e.sum(axis=1, keepdims=True)) * u * u).sum(1).mean())

    monkeypatch.setattr(ts, "_profile", second_moment)
    fails("CAL1-derivatives")


def test_left_closed_width_bins_fail_CAL3_hand(monkeypatch):
    # [lo, hi) bins (1.0 still in the last): the confidence 0.9 = 9/10 moves up a bin
    monkeypatch.setattr(cal, "_width_bins", lambda conf, m: np.searchsorted(
        np.arange(1, m) / m, conf, side="right"))
    row = run_check(ROW["CAL3-hand"])
    assert row.status == FAIL and row.measured == pytest.approx(11 / 30 - 1 / 3, rel=1e-12)


def test_splitting_ties_in_equal_mass_bins_fails_CAL3_ties_and_constant(monkeypatch):
    def split(sorted_conf, m):
        n = len(sorted_conf)
        return [0, *sorted({k * n // m for k in range(1, m)} - {0, n}), n]

    monkeypatch.setattr(cal, "_mass_boundaries", split)
    fails("CAL3-ties", "CAL3-constant")


def test_the_label_probability_as_confidence_fails_CAL3(monkeypatch):
    monkeypatch.setattr(cal, "_predictions", lambda p, y: (p[np.arange(len(y)), y],
                                                           p.argmax(axis=1) == y))
    fails("CAL3-constant", "CAL3-hand", "CAL3-ties")


def test_brier_without_the_sum_over_classes_fails_CAL4(monkeypatch):
    exact = cal._brier_rows
    monkeypatch.setattr(cal, "_brier_rows", lambda p, y: exact(p, y) / p.shape[1])
    fails("CAL4-known", "CAL4-direct")


def test_log_sum_exp_without_the_shift_fails_CAL4_known(monkeypatch):
    def unshifted(z):
        with np.errstate(over="ignore", invalid="ignore"):
            return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    monkeypatch.setattr(cal, "log_softmax", unshifted)
    fails("CAL4-known")


def test_vector_scaling_instead_of_a_temperature_fails_CAL5(monkeypatch):
    # one temperature per class (Guo et al.'s vector scaling) can change the argmax
    exact = ts.apply_temperature
    monkeypatch.setattr(ts, "apply_temperature",
                        lambda z, T: exact(z, T) / np.linspace(0.5, 1.5, z.shape[1]))
    row = run_check(ROW["CAL5"])
    assert row.status == FAIL and row.measured > 100, row
