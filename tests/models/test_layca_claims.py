"""Layca and layer rotation (Carbonnelle & De Vleeschouwer): ledger rows C1-C7 and the
reproduction (smoke)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from models.checks import layca as C
from models.ledger import DIFFERS, FAIL, PASS, run_check
from models.reproduce import layca as R


@pytest.fixture(autouse=True)
def fresh_experiment_caches():
    """C5-C7 memoise their runs (two rows share each); a test must not see another's."""
    for cached in (C._toy, C._rotation, C._adaptive):
        cached.cache_clear()
    yield
    for cached in (C._toy, C._rotation, C._adaptive):
        cached.cache_clear()


# ---- C1-C4: exact -----------------------------------------------------------------------------
def test_C1_norms_are_preserved():
    out = C.c1_norms()
    assert out.status == PASS and out.measured < 1e-12


def test_C2_step_angle_is_arctan_rho_at_any_loss_scale():
    out = C.c2_angle()
    assert out.status == PASS and out.measured < 1e-10


def test_C3_layer_wise_multipliers():
    assert C.c3_multipliers().status == PASS


def test_C4_degenerate_steps():
    assert C.c4_degenerate() == C.Outcome(0, 0, 0, PASS)


# ---- C5-C7: experiments at the ledger's settings ---------------------------------------------------
def test_C5_the_trained_layer_matters_and_the_first_layers_generalise_best():
    spread, trend = C.c5_spread(), C.c5_trend()
    assert spread.status == PASS and trend.status == PASS
    test, fit = C._toy()
    assert fit.min() == 1.0  # every run fitted its 100 training digits
    assert test.shape == (C.CHECK_SEEDS, len(C.TOY_LAYERS))


def test_C5_a_run_that_does_not_fit_its_training_set_fails_the_row(monkeypatch):
    monkeypatch.setattr(C, "_toy", lambda: (np.array([[0.8, 0.6], [0.82, 0.62]]),
                                            np.array([[1.0, 0.95], [1.0, 1.0]])))
    assert C.c5_spread().status == FAIL and C.c5_trend().status == FAIL


def test_C6_layca_rotates_layers_uniformly_and_sgd_does_not():
    layca, sgd = C.c6_layca(), C.c6_sgd()
    assert layca.status == PASS and sgd.status == PASS
    assert sgd.measured < layca.measured


def test_C7_with_layca_adaptive_methods_match_their_equivalents():
    out = C.c7_with_layca()
    assert out.status == PASS and out.measured <= C.GAP_TOLERANCE
    # their premise, adaptive methods worse without Layca, does not show on digits: every
    # adaptive method is within the tolerance of its equivalent (or better)
    without = C.c7_without_layca()
    assert without.status == DIFFERS and without.measured > -C.GAP_TOLERANCE


def test_rows_are_registered_with_descriptions():
    rows = C.checks()
    assert [c.id for c in rows] == ["C1", "C2", "C3", "C4", "C5", "C5-trend", "C6", "C6-sgd",
                                    "C7", "C7-without"]
    row = run_check(rows[3])
    assert row.status == PASS and "zero / NaN / Inf" in row.description


# ---- helpers of the reproduction -----------------------------------------------------------------
def test_uniformity_is_on_angles_and_pair_gaps_are_adaptive_minus_equivalent():
    deviation = 1 - np.cos(np.array([0.1, 0.2]))
    assert R.uniformity(deviation) == pytest.approx(0.5, rel=1e-12)
    acc = {m: np.array([0.9]) for m in R.METHODS}
    acc["adam"] = np.array([0.88])
    gaps = R.pair_gaps(acc)
    assert gaps[("adam", "sgd_amom")] == pytest.approx(-0.02) and gaps[("rmsprop", "sgd")] == 0.0


def test_toy_data_and_network_have_identical_hidden_layers():
    data = R.toy_data(0)
    assert data.x_train.shape == (100, 256) and data.x_test.shape == (1697, 256)
    assert np.bincount(data.y_train).tolist() == [10] * 10
    net = R.toy_net()
    assert [str(layer) for layer in net[0:20:2]] == ["Dense(256 -> 256)"] * 10


# ---- the reproduction (smoke) -------------------------------------------------------------------------
def test_reproduce_layca_smoke(tmp_path, monkeypatch):
    tiny = R.Settings(seeds=1, toy_cap=25, iterations=40, evaluations=2, curve_points=2)
    monkeypatch.setattr(R.Settings, "make", classmethod(lambda cls, quick, seeds: tiny))
    monkeypatch.setattr(R, "TOY_UPSAMPLE", 1)  # 64 inputs and 64 units: 16 times cheaper
    monkeypatch.setattr(R, "TOY_WIDTH", 64)
    out = R.run(tmp_path / "layca", quick=True, quiet=True)
    for name in ("results.h5", "report.md", "fig1a_single_layer.png", "fig2_alpha_sweep.png",
                 "fig3_angle_deviation.png", "fig4_adaptive.png"):
        assert (out / name).stat().st_size > 0
    with h5py.File(out / "results.h5") as f:
        assert f["toy/test_accuracy"].shape == (1, R.TOY_HIDDEN)
        assert f["alpha_sweep/layca/test_accuracy"].shape == (1, len(R.ALPHAS))
        assert f["angle_deviation/layca/deviation"].shape == (2, R.MLP_DEPTH)
        assert f["adaptive/layca/adam/test_curve"].shape == (1, 2)
        assert f.attrs["experiment"] == "layca"
    report = (out / "report.md").read_text()
    assert "Section 3" in report and "Section 6.2" in report and "angle min / max" in report
