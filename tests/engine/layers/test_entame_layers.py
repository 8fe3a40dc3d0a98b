"""ENTAME's engine pieces: ZNormalize, MaxEntropy, He fan-out, error_energy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lastlayer.engine import BatchNorm, Dense, HeNormal, MaxEntropy, Network, ZNormalize
from lastlayer.engine.losses import error_energy, softmax
from lastlayer.engine.training.architecture import build, describe


def test_znormalize_training_output_is_bit_identical_to_batchnorm_with_unit_scale():
    rng = np.random.default_rng(0)
    for shape in ((5, 4), (64, 128), (2, 3)):
        x = 3.0 * rng.standard_normal(shape) + 1.5
        bn = BatchNorm(shape[1])
        params = {"gamma": np.ones(shape[1]), "beta": np.zeros(shape[1])}
        y_bn, _ = bn.forward(params, x, train=True)
        y_z, _ = ZNormalize(shape[1]).forward({}, x, train=True)
        assert np.array_equal(y_z, y_bn)  # bit for bit (gamma * x_hat + beta with 1 and 0)


def test_znormalize_uses_biased_statistics_and_the_last_batch_at_inference():
    rng = np.random.default_rng(1)
    layer = ZNormalize(3)
    x = rng.standard_normal((8, 3)) * [1.0, 5.0, 0.1] + [0.0, 2.0, -1.0]
    y, cache = layer.forward({}, x, train=True)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(y.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-5), rtol=1e-13)
    state = layer.update_state(layer.init_state(), cache)
    np.testing.assert_array_equal(state["mean"], x.mean(axis=0))
    np.testing.assert_allclose(state["var"], x.var(axis=0), rtol=1e-15)  # biased
    x2 = rng.standard_normal((4, 3))
    got, _ = layer.forward({}, x2, train=False, state=state)
    np.testing.assert_allclose(got, (x2 - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-5),
                               rtol=1e-14)


def test_znormalize_running_statistics_follow_batchnorm():
    rng = np.random.default_rng(2)
    z, bn = ZNormalize(3, statistics="running"), BatchNorm(3)
    sz, sb = z.init_state(), bn.init_state()
    params = {"gamma": np.ones(3), "beta": np.zeros(3)}
    for _ in range(5):
        x = rng.standard_normal((6, 3))
        sz = z.update_state(sz, z.forward({}, x, train=True)[1])
        sb = bn.update_state(sb, bn.forward(params, x, train=True)[1])
    for k in ("mean", "var"):
        np.testing.assert_array_equal(sz[k], sb[k])


@pytest.mark.parametrize("call, message", [
    (lambda: ZNormalize(3).forward({}, np.ones((1, 3)), train=True),
     r"training needs at least 2 values per channel"),
    (lambda: ZNormalize(3, statistics="ema"), r"statistics: expected 'last' or 'running'"),
    (lambda: ZNormalize(3, eps=0.0), r"eps: expected > 0"),
    (lambda: ZNormalize(3).forward({}, np.ones((2, 3))), r"inference uses the state's statistics"),
    (lambda: ZNormalize(3).forward({}, np.ones((2, 4)), train=True), r"expected input of shape \(N, 3\)"),
])
def test_znormalize_bad_input_names_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_max_entropy_sample_variance_within_4_standard_errors():
    rng = np.random.default_rng(3)
    n = 1000 * 1000
    for init, c in ((MaxEntropy(phi_w=1e-12), 1000), (MaxEntropy(gamma=1e-4, lam=30.0), 1000)):
        w = init(rng, (1000, 1000), fan_in=1000, fan_out=c)
        phi = init.variance(c)
        se = phi * math.sqrt(2 / (n - 1))  # of the sample variance of a normal
        assert abs(w.var(ddof=1) - phi) <= 4 * se, (w.var(ddof=1), phi, se)
        assert abs(w.mean()) <= 4 * math.sqrt(phi / n)
    assert MaxEntropy(gamma=1e-4, lam=30.0).variance(1000) == pytest.approx((1e-4 * 30 / 1000) ** 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(gamma=0.0, lam=1.0), r"gamma: expected a finite number > 0, got 0.0"),
    (dict(gamma=1e-4, lam=-2.0), r"lam: expected a finite number > 0, got -2.0"),
    (dict(phi_w=-1e-12), r"phi_w: expected a finite number >= 0, got -1e-12"),
    (dict(gamma=1e-4), r"gamma, lam: give both"),
    (dict(phi_w=1e-12, lam=1.0), r"phi_w: give phi_w, or gamma and lam, not both"),
])
def test_max_entropy_bad_arguments_name_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaxEntropy(**kwargs)


def test_max_entropy_needs_two_classes():
    with pytest.raises(ValueError, match=r"C: a classifier needs at least 2 classes .*got 1"):
        Dense(4, 1, weight_init=MaxEntropy()).init(np.random.default_rng(0))


def test_max_entropy_head_gives_uniform_predictions_and_round_trips_as_data():
    rng = np.random.default_rng(4)
    net = Network([Dense(16, 10, weight_init=MaxEntropy())])
    params = net.init(rng)
    logits, _ = net.forward(params, rng.standard_normal((32, 16)))
    np.testing.assert_allclose(softmax(logits), 0.1, atol=1e-4)
    again = build(describe(net))
    assert again[0].weight_init == MaxEntropy(phi_w=1e-12)


def test_he_normal_fan_out_mode():
    rng = np.random.default_rng(5)
    w = HeNormal(mode="fan_out")(rng, (10, 4000), fan_in=4000, fan_out=10)
    assert w.var() == pytest.approx(2 / 10, rel=0.02)
    assert HeNormal().mode == "fan_in"
    with pytest.raises(ValueError, match="mode: expected 'fan_in' or 'fan_out'"):
        HeNormal(mode="avg")


def test_error_energy_components_and_bounds():
    rng = np.random.default_rng(6)
    for c in (2, 10, 1000):
        for scale in (1e-8, 1.0, 1e3):
            e = error_energy(scale * rng.standard_normal((20, c)), rng.integers(0, c, 20))
            assert 1 / c - 1e-15 <= e.estimates <= 1 + 1e-15 and 0 <= e.phi <= 2
            assert e.labels == 1.0
            assert e.phi == pytest.approx(e.estimates + e.labels - 2 * e.cross, rel=1e-14)
            assert e.per_class.shape == (c,) and e.noise_share == pytest.approx(e.estimates / e.phi)
    uniform = error_energy(np.zeros((8, 4)), np.arange(8) % 4)
    assert uniform.estimates == pytest.approx(0.25) and uniform.noise_share == pytest.approx(1 / 3)
