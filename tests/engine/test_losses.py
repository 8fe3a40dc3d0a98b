"""Losses: gradients, closed-form values, stability at extreme logits, target forms, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lastlayer.engine.losses import (
    log_softmax, one_hot, softmax, softmax_cross_entropy, squared_error,
)
from lastlayer.engine.gradcheck.cases import LAYER_TOL, LOSS_CASES
from tests import naive


@pytest.mark.parametrize("case", LOSS_CASES, ids=[f"{c.row}: {c.name}" for c in LOSS_CASES])
def test_loss_gradient(case):
    assert case.run(seed=5) < LAYER_TOL


def test_cross_entropy_of_uniform_logits_is_log_c():
    for c in (2, 10, 1000):
        loss, dlogits = softmax_cross_entropy(np.full((3, c), 4.2), np.array([0, 1, c - 1]))
        assert math.isclose(loss, math.log(c), rel_tol=1e-15)
        # sum_c p_c = 1 up to C roundings: |sum of a gradient row| <= C u / N
        np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=c * np.finfo(float).eps / 3)
        np.testing.assert_allclose(dlogits[0], (np.full(c, 1 / c) - np.eye(c)[0]) / 3, rtol=1e-14)


def test_cross_entropy_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((7, 5)) * 3, rng.integers(0, 5, 7)
    assert math.isclose(softmax_cross_entropy(z, y)[0], naive.softmax_cross_entropy(z, y),
                        rel_tol=1e-14)


def test_cross_entropy_is_exact_for_logits_of_magnitude_1e4():
    z = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4], [-1e4, 1e4, 1e4 - 1.0]])
    loss, d = softmax_cross_entropy(z, np.array([0, 1, 2]))
    # sample 0: -log p = log(1 + e^-1e4 + e^-2e4) = 0 in float64; sample 1: 1e4 exactly;
    # sample 2: log(1 + e) - (-1) ... = log(e^1 + 1) relative to the top logit
    expected = (0.0 + 1e4 + math.log1p(math.e)) / 3
    assert math.isclose(loss, expected, rel_tol=1e-15)
    assert np.all(np.isfinite(d))
    np.testing.assert_allclose(d[0], [0, 0, 0], atol=1e-300)
    np.testing.assert_allclose(d[1] * 3, [1, -1, 0], atol=1e-15)


def test_one_hot_and_label_targets_agree():
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    t = one_hot(y, 4, np.float64)
    for loss in (softmax_cross_entropy, squared_error):
        a, da = loss(z, y)
        b, db = loss(z, t)
        assert math.isclose(a, b, rel_tol=1e-15)
        np.testing.assert_allclose(da, db, rtol=1e-15, atol=1e-17)


def test_squared_error_convention_is_mean_over_samples_of_summed_error():
    pred = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]])
    y = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    loss, d = squared_error(pred, y)
    assert loss == (1 + 4 + 0 + 4 + 4 + 0) / 3
    np.testing.assert_array_equal(d, 2 * (pred - y) / 3)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
                  elements=st.floats(-1e4, 1e4)))
def test_cross_entropy_properties(z):
    """For any finite logits: loss >= 0, gradient rows sum to 0, softmax rows sum to 1."""
    y = np.arange(z.shape[0]) % z.shape[1]
    loss, d = softmax_cross_entropy(z, y)
    assert math.isfinite(loss) and loss >= 0
    np.testing.assert_allclose(d.sum(axis=1), 0, atol=1e-15)
    np.testing.assert_allclose(softmax(z).sum(axis=1), 1, rtol=1e-14)
    assert np.all(log_softmax(z) <= 0)


def test_float32_losses_stay_float32():
    z = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    for loss in (softmax_cross_entropy, squared_error):
        _, d = loss(z, np.array([0, 1, 2, 0]))
        assert d.dtype == np.float32


@pytest.mark.parametrize("loss", [softmax_cross_entropy, squared_error])
def test_bad_targets_are_rejected(loss):
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got values in \[0, 4\]"):
        loss(z, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got values in \[-1, 1\]"):
        loss(z, np.array([0, 1, -1]))
    with pytest.raises(ValueError, match=r"integer labels must have shape \(3,\), got \(2,\)"):
        loss(z, np.array([0, 1]))
    with pytest.raises(ValueError, match="class labels need an integer dtype"):
        loss(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"real targets must have the prediction's shape \(3, 4\), "
                                         r"got \(3, 5\)"):
        loss(z, np.zeros((3, 5)))
    with pytest.raises(TypeError, match="dtype float32 does not match the prediction's dtype float64"):
        loss(z, np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="targets: expected an array"):
        loss(z, [0, 1, 2])


@pytest.mark.parametrize("loss", [softmax_cross_entropy, squared_error])
def test_nan_and_inf_inputs_are_rejected(loss):
    z = np.zeros((3, 4))
    z[1, 2] = np.nan
    with pytest.raises(ValueError, match="expected finite values, got 1 NaN/Inf of 12 entries"):
        loss(z, np.array([0, 1, 2]))
    t = np.zeros((3, 4))
    t[0, 0] = np.inf
    with pytest.raises(ValueError, match="targets: expected finite values"):
        loss(np.zeros((3, 4)), t)
    with pytest.raises(ValueError, match=r"expected shape \(N, C\) with N >= 1, got \(0, 4\)"):
        loss(np.zeros((0, 4)), np.zeros(0, dtype=int))


def test_cross_entropy_rejects_negative_targets():
    with pytest.raises(ValueError, match="non-negative"):
        softmax_cross_entropy(np.zeros((1, 2)), np.array([[1.5, -0.5]]))
