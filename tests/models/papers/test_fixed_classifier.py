"""Fixed classifier (Hoffer, Hubara & Soudry 2018): ledger rows H1-H7, rows shown able to
fail, the head geometry, and the reproduction (smoke)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from lastlayer.models.ledger import FAIL
from lastlayer.models.papers import paper
from lastlayer.models.papers.fixed_classifier import claims, method, protocol, reproduce

from . import assert_row, assert_statistics_at_1_2_3_seeds

ROWS = paper("fixed-classifier").checks()
# H4-truncated: truncated Hadamard rows are orthogonal only when 2^ceil(log2 C) divides N;
# H7-train: every head fits digits' training set, so a fixed head's higher training error
# does not show at this scale
DIFFERS_FROM_PAPER = {"H4-truncated", "H7-train"}


@pytest.mark.parametrize("check", ROWS, ids=[c.id for c in ROWS])
def test_ledger_row(check):
    assert_row(check, DIFFERS_FROM_PAPER)


# ---- beyond the status: the values the rows must show ------------------------------------------
def test_H2_rounding_errors_are_measured_not_zero():
    """0 < measured <= 1: an error of exactly 0 would mean the reference was the kernel."""
    for check in (claims.h2_rounding, claims.h2_inverse):
        assert 0 < check().measured <= 1


def test_H4_truncated_deviation_is_the_predicted_one():
    out = claims.h4_truncated()
    assert out.measured == out.expected > 0.2  # DenseNet-169: 3/13


@pytest.mark.parametrize("d_in, n_classes", [(96, 10), (100, 10), (64, 10), (342, 100), (5, 3),
                                             (960, 1000), (7, 1)])
def test_H4_predicted_deviation_matches_the_measured_gram(d_in, n_classes):
    measured = method.gram_deviation(method.hadamard_head_q(d_in, n_classes))
    assert measured == method.predicted_gram_deviation(d_in, n_classes)
    power = 1 << max(n_classes - 1, 0).bit_length()  # 2^ceil(log2 C)
    assert (measured == 0) == (d_in % power == 0)  # orthogonal iff 2^ceil(log2 C) divides N


def test_H4_truncated_row_fails_when_the_prediction_is_wrong(monkeypatch):
    monkeypatch.setattr(method, "predicted_gram_deviation", lambda d_in, n_classes: 0.0)
    assert claims.h4_truncated().status == FAIL


def test_H6_bytes_row_sees_a_q_kept_on_the_layer(monkeypatch):
    """The storage check can fail: a layer that caches Q on itself is caught."""
    real = claims.HadamardHead.forward

    def caching_forward(self, params, x, *args, **kwargs):
        object.__setattr__(self, "_q_cache", self._dense_q(x))
        return real(self, params, x, *args, **kwargs)

    monkeypatch.setattr(claims.HadamardHead, "forward", caching_forward)
    out = claims.h6_bytes()
    assert out.status == FAIL and out.measured == 1000 * 2048 * 8


def test_H7_train_row_says_differs_exactly_when_no_excess_is_measured():
    """The training-error gap is reported, not required: PASS iff a fixed head's training
    error exceeds the learned head's (the runs are cached: shared with test_ledger_row)."""
    train = claims.h7_train()
    assert math.isfinite(train.measured)
    assert (train.status == "PASS") == (train.measured > 0)


# ---- the reproduction (smoke) -----------------------------------------------------------------
# the image section, tiny: CNN 2-4, 16 features, 20 iterations on 200 / 100 MNIST images
TINY_IMAGES = dict(image_iterations=20, image_evaluations=2, image_channels=(2, 4),
                   image_features=16, image_train=200, image_test=100)


def test_reproduce_fixed_classifier_smoke(tmp_path, monkeypatch):
    small = reproduce.Settings(seeds=1, iterations=20, evaluations=2, **TINY_IMAGES)
    monkeypatch.setattr(reproduce.Settings, "make", classmethod(lambda cls, quick, seeds: small))
    monkeypatch.setattr(protocol, "PAPER_CONFIGS", (("ResNet-56", "CIFAR-10", 64, 10),
                                                    ("small", "toy", 12, 5)))
    out = reproduce.run(tmp_path / "fc", quick=True, quiet=True)
    for name in ("results.h5", "report.md", "fig_alpha.png", "fig_error_curves.png",
                 "fig_alpha_sweep.png", "fig_mnist_heads.png"):
        assert (out / name).stat().st_size > 0
    with h5py.File(out / "results.h5") as f:
        assert f.attrs["experiment"] == "fixed-classifier"
        assert f["digits/learned/test_error"].shape == (1, 2)
        assert int(f["digits/learned/head_params"][0]) == 650
        assert int(f["toy/hadamard/head_params"][0]) == 11
        assert int(f["toy/alpha=0.1/head_params"][0]) == 10
        assert f["digits/orthogonal/alpha"].shape == (1, 20)  # monitored every iteration
        assert "alpha" not in f["digits/alpha=1"]
        np.testing.assert_array_equal(f["geometry/predicted"][:], [0.0, 1 / 3])
        images = f["mnist_cnn"]
        assert images["learned/test_error"].shape == (1, 2)
        np.testing.assert_array_equal(images["hadamard/iteration"][0], [10, 20])
        # parameter counts equal the formulas: body = conv 1->2 and 2->4 (3x3) + Dense 100->16
        body = (1 * 2 * 9 + 2) + (2 * 4 * 9 + 4) + (4 * 5 * 5 * 16 + 16)
        assert int(images["learned/head_params"][0]) == 10 * 16 + 10  # C N + C
        assert int(images["orthogonal/head_params"][0]) == int(images["hadamard/head_params"][0]) == 11
        for head in method.HEADS:
            assert int(images[f"{head}/net_params"][0]) == body + int(images[f"{head}/head_params"][0])
        assert sorted(images["paired/hadamard"]) == ["test_error", "train_error"]
        assert images["paired/orthogonal/test_error"].attrs["n"] == 1
    report = (out / "report.md").read_text()
    assert "Table 1 analogue" in report and "fixed Hadamard" in report
    assert "cannot be loaded offline" in report
    assert "Their Table 1 on real images" in report and "93.03" in report
    assert "fig_mnist_heads.png" in report


@pytest.mark.parametrize("variant", method.HEADS)
def test_image_run_keeps_a_fixed_head_matrix_fixed(variant):
    """The matrix a trained fixed head applies (read back through its forward pass) is the
    one it started with, to float64 rounding; the learned head's W does move. Counts too."""
    data = protocol.image_data(200, 100)
    r = protocol.train_image_variant(data, variant, 0, 20, 1, (2, 4), 16)
    if variant == "learned":
        assert r["matrix_change"] > 1e-3 and int(r["head_params"]) == 170
    else:
        assert r["matrix_change"] <= 1e-12, r["matrix_change"]
        assert int(r["head_params"]) == 11 and np.isfinite(r["alpha"])
    assert r["test_error"].shape == (1,) and 0 <= r["train_error"] <= 100


def test_head_matrix_reads_back_the_hadamard_rows_and_the_orthogonal_state():
    rng = np.random.default_rng(0)
    layer = method.head("hadamard", 8, 5, 0)
    params = {"alpha": np.array([2.5]), "b": rng.standard_normal(5)}
    np.testing.assert_allclose(protocol.head_matrix(layer, params, {}),
                               method.hadamard_head_q(8, 5), atol=1e-15)
    layer = method.head("orthogonal", 8, 5, 3)
    state = layer.init_state()
    np.testing.assert_allclose(protocol.head_matrix(layer, params, state), state["Q"], atol=1e-15)


def test_train_variant_refuses_an_evaluation_count_that_does_not_divide():
    with pytest.raises(ValueError, match="evaluations: expected a divisor of iterations = 10, got 3"):
        protocol.train_variant(None, "learned", 0, 10, 3)
    with pytest.raises(ValueError, match="variant: expected one of learned, orthogonal"):
        method.head("big", 4, 2, 0)


def test_reproduce_fixed_classifier_statistics_follow_the_number_of_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "PAPER_CONFIGS", (("small", "toy", 12, 5),))
    assert_statistics_at_1_2_3_seeds(
        reproduce, tmp_path, monkeypatch, compared=True,  # the image section's paired tests
        settings=lambda n: reproduce.Settings(seeds=n, iterations=10, evaluations=2,
                                              **TINY_IMAGES))
