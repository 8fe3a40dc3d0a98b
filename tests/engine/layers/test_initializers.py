"""Initialisers: moments, bounds, fans, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lastlayer.engine.layers.initializers import (
    Constant,
    GlorotNormal,
    GlorotUniform,
    HeNormal,
    HeUniform,
    TruncatedNormal,
    fans,
)

N = 400_000  # samples: the standard error of a variance estimate is ~ var sqrt(2 / N) = 0.2 %


@pytest.mark.parametrize("init, variance", [
    (HeNormal(), 2 / 50),
    (HeUniform(), 2 / 50),
    (GlorotNormal(), 2 / (50 + 8)),
    (GlorotUniform(), 2 / (50 + 8)),
])
def test_variance_follows_the_fans(init, variance):
    w = init(np.random.default_rng(0), (N,), fan_in=50, fan_out=8)
    assert abs(w.mean()) < 5 * math.sqrt(variance / N)
    se = variance * math.sqrt(2 / N) * 1.5  # a uniform's variance estimate is less noisy
    assert abs(w.var() - variance) < 5 * se


def test_uniform_initialisers_respect_their_limits():
    w = HeUniform()(np.random.default_rng(0), (N,), fan_in=6, fan_out=1)
    assert np.abs(w).max() <= 1.0  # sqrt(6 / 6)
    w = GlorotUniform()(np.random.default_rng(0), (N,), fan_in=3, fan_out=3)
    assert np.abs(w).max() <= 1.0 and np.abs(w).max() > 0.99


def test_truncated_normal_is_the_truncated_distribution():
    init = TruncatedNormal(std=0.1, mean=0.5, cutoff=2.0)
    w = init(np.random.default_rng(1), (N,))
    assert w.min() >= 0.3 and w.max() <= 0.7
    # Kolmogorov-Smirnov against scipy's truncated normal: p-value not tiny
    assert stats.kstest(w, stats.truncnorm(-2, 2, loc=0.5, scale=0.1).cdf).pvalue > 1e-4


def test_constant_dtype_and_reproducibility():
    np.testing.assert_array_equal(Constant(0.1)(None, (2, 3), dtype=np.float32),
                                  np.full((2, 3), 0.1, np.float32))
    a = HeNormal()(np.random.default_rng(3), (4, 4), 4, 4)
    b = HeNormal()(np.random.default_rng(3), (4, 4), 4, 4)
    np.testing.assert_array_equal(a, b)


def test_fans_of_dense_and_conv_kernels():
    assert fans((10, 64)) == (64, 10)
    assert fans((16, 3, 5, 5)) == (75, 400)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fans((3,))


def test_bad_arguments():
    with pytest.raises(ValueError, match="std: expected > 0, got -1"):
        TruncatedNormal(std=-1)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64, got int32"):
        Constant(1.0)(None, (2,), dtype=np.int32)
