"""Fixed classifier (Hoffer, Hubara & Soudry 2018): ledger rows H1-H7, rows shown able to
fail, the head geometry, and the reproduction (smoke)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from models.ledger import FAIL
from models.papers import paper
from models.papers.fixed_classifier import claims, method, protocol, reproduce

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
def test_reproduce_fixed_classifier_smoke(tmp_path, monkeypatch):
    small = reproduce.Settings(seeds=1, iterations=20, evaluations=2)
    monkeypatch.setattr(reproduce.Settings, "make", classmethod(lambda cls, quick, seeds: small))
    monkeypatch.setattr(protocol, "PAPER_CONFIGS", (("ResNet-56", "CIFAR-10", 64, 10),
                                                    ("small", "toy", 12, 5)))
    out = reproduce.run(tmp_path / "fc", quick=True, quiet=True)
    for name in ("results.h5", "report.md", "fig_alpha.png", "fig_error_curves.png",
                 "fig_alpha_sweep.png"):
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
    report = (out / "report.md").read_text()
    assert "Table 1 analogue" in report and "fixed Hadamard" in report
    assert "cannot be loaded offline" in report


def test_train_variant_refuses_an_evaluation_count_that_does_not_divide():
    with pytest.raises(ValueError, match="evaluations: expected a divisor of iterations = 10, got 3"):
        protocol.train_variant(None, "learned", 0, 10, 3)
    with pytest.raises(ValueError, match="variant: expected one of learned, orthogonal"):
        method.head("big", 4, 2, 0)


def test_reproduce_fixed_classifier_statistics_follow_the_number_of_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "PAPER_CONFIGS", (("small", "toy", 12, 5),))
    assert_statistics_at_1_2_3_seeds(
        reproduce, tmp_path, monkeypatch, compared=False,
        settings=lambda n: reproduce.Settings(seeds=n, iterations=10, evaluations=2))
