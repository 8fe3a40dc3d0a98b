"""Layca and layer rotation (Carbonnelle & De Vleeschouwer): ledger rows C1-C7, rows shown
able to fail, the protocol's helpers and the reproduction (smoke)."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from lastlayer.models.ledger import FAIL
from lastlayer.models.papers import paper
from lastlayer.engine.training.data import mnist
from lastlayer.models.papers.layca import claims, images, method, protocol, reproduce

from . import assert_row, assert_statistics_at_1_2_3_seeds


# ---- every row, once ---------------------------------------------------------------------------
ROWS = paper("layca").checks()
DIFFERS_FROM_PAPER = {"C7-without"}  # on digits the adaptive methods are not worse without Layca


@pytest.mark.parametrize("check", ROWS, ids=[c.id for c in ROWS])
def test_ledger_row(check):
    assert_row(check, DIFFERS_FROM_PAPER)


# ---- rows that must be able to fail -------------------------------------------------------------
def test_C5_a_run_that_does_not_fit_its_training_set_fails_the_row(monkeypatch):
    monkeypatch.setattr(claims, "_toy", lambda: (np.array([[0.8, 0.6], [0.82, 0.62]]),
                                                 np.array([[1.0, 0.95], [1.0, 1.0]])))
    assert claims.c5_spread().status == FAIL and claims.c5_trend().status == FAIL


def test_rows_are_registered_with_descriptions():
    rows = claims.checks()
    assert [c.id for c in rows] == ["C1", "C2", "C3", "C4", "C5", "C5-trend", "C6", "C6-sgd",
                                    "C7", "C7-without"]
    assert "zero / NaN / Inf" in rows[3].description


# ---- helpers of the reproduction -----------------------------------------------------------------
def test_uniformity_is_on_angles_and_pair_gaps_are_adaptive_minus_equivalent():
    deviation = 1 - np.cos(np.array([0.1, 0.2]))
    assert method.uniformity(deviation) == pytest.approx(0.5, rel=1e-12)
    acc = {m: np.array([0.9]) for m in method.METHODS}
    acc["adam"] = np.array([0.88])
    gaps = protocol.pair_gaps(acc)
    assert gaps[("adam", "sgd_amom")] == pytest.approx(-0.02) and gaps[("rmsprop", "sgd")] == 0.0


def test_toy_data_and_network_have_identical_hidden_layers():
    data = protocol.toy_data(0)
    assert data.x_train.shape == (100, 256) and data.x_test.shape == (1697, 256)
    assert np.bincount(data.y_train).tolist() == [10] * 10
    net = protocol.toy_net()
    assert [str(layer) for layer in net[0:20:2]] == ["Dense(256 -> 256)"] * 10


# ---- the reproduction (smoke) -------------------------------------------------------------------------
def test_reproduce_layca_smoke(tmp_path, monkeypatch):
    tiny = reproduce.Settings(seeds=1, toy_cap=25, iterations=40, evaluations=2, curve_points=2,
                              **TINY_IMAGES)
    monkeypatch.setattr(reproduce.Settings, "make", classmethod(lambda cls, quick, seeds: tiny))
    monkeypatch.setattr(protocol, "TOY_UPSAMPLE", 1)  # 64 inputs and 64 units: 16 times cheaper
    monkeypatch.setattr(protocol, "TOY_WIDTH", 64)
    out = reproduce.run(tmp_path / "layca", quick=True, quiet=True)
    for name in ("results.h5", "report.md", "fig1a_single_layer.png", "fig2_alpha_sweep.png",
                 "fig3_angle_deviation.png", "fig4_adaptive.png", "fig_images_angle_deviation.png",
                 "fig_images_accuracy.png"):
        assert (out / name).stat().st_size > 0
    with h5py.File(out / "results.h5") as f:
        assert f["toy/test_accuracy"].shape == (1, protocol.TOY_HIDDEN)
        assert f["alpha_sweep/layca/test_accuracy"].shape == (1, len(protocol.ALPHAS))
        assert f["angle_deviation/layca/deviation"].shape == (2, protocol.MLP_DEPTH)
        assert f["adaptive/layca/adam/test_curve"].shape == (1, 2)
        assert f.attrs["experiment"] == "layca"
        L = images.n_kernel_layers()
        assert f["images/layca/test_accuracy"].shape == (1, 2)
        assert f["images/sgd/final_rotation"].shape == (1, 2, L)
        assert f["images/layca/rotation"].shape == (1, 2, 2, L)
        assert f["images/spearman/angle"].shape == (1,)
        assert sorted(f["images/paired/alpha0"]) == ["mean"]
        # Layca's kernels stay on their initial sphere: the stored final rotation must be the
        # angle deviation of the last curve point (monitored at the last update)
        np.testing.assert_allclose(f["images/layca/rotation"][0, :, -1],
                                   f["images/layca/final_rotation"][0], rtol=1e-6)
    report = (out / "report.md").read_text()
    assert "Section 3" in report and "Section 6.2" in report and "angle min / max" in report
    assert "Image experiment: a CNN on real MNIST digits" in report and "Spearman" in report


def test_reproduce_layca_statistics_follow_the_number_of_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "TOY_UPSAMPLE", 1)
    monkeypatch.setattr(protocol, "TOY_WIDTH", 64)
    assert_statistics_at_1_2_3_seeds(
        reproduce, tmp_path, monkeypatch, compared=True,  # the image section's paired tests
        settings=lambda n: reproduce.Settings(seeds=n, toy_cap=25, iterations=20, evaluations=2,
                                              curve_points=2, **TINY_IMAGES))


# ---- the image experiment (CNN on MNIST) ----------------------------------------------------------
TINY_IMAGES = {"image_alphas": (-0.5, 0.0), "image_iterations": 4, "image_curve_points": 2}


def test_image_cnn_is_bias_free_with_four_kernel_layers_and_layca_rotates_each_layer_by_its_rate():
    net = images.network()
    params = net.init(np.random.default_rng(0), np.float32)
    kernels = [p["W"] for p in params if "W" in p]
    assert all(set(p) <= {"W"} for p in params)  # no biases (their Section 4.1)
    assert [w.size for w in kernels] == [8 * 9, 16 * 8 * 9, 400 * 64, 64 * 10]
    assert images.n_kernel_layers() == 4
    data = mnist()
    small = dataclasses.replace(data, x_test=data.x_test[:50], y_test=data.y_test[:50])
    r = images.run("layca", -0.5, small, seed=0, iterations=4, curve_points=4)
    assert r["rotation"].shape == (4, 4) and r["rotation_iteration"].tolist() == [1, 2, 3, 4]
    # Algorithm 1: the first step rotates kernel layer l by exactly arctan(rho_l), rho_l =
    # 3^-3 (1 + alpha)^(5 l / 3) (Section 5.1), whatever its gradient's scale
    rho = 3.0**-3 * 0.5 ** (5 * np.arange(4) / 3)
    np.testing.assert_allclose(images.angles(r["rotation"][0]), np.degrees(np.arctan(rho)),
                               rtol=1e-3)
    sgd = images.run("sgd", -0.5, small, seed=0, iterations=4, curve_points=4)
    assert sgd["zero_steps"] == 0
    assert not np.allclose(images.angles(sgd["rotation"][0]), np.degrees(np.arctan(rho)),
                           rtol=0.1)


def test_spearman_per_seed_ranks_over_settings():
    acc = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.5, 0.5, 0.5]])
    rot = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    rho = images.spearman_per_seed(acc, rot)
    assert rho[:2].tolist() == [1.0, -1.0] and np.isnan(rho[2])
