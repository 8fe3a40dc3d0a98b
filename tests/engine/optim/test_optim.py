"""Optimizers: known minimisers, exact first updates, weight decay, masks, schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lastlayer.engine import optim
from lastlayer.engine.gradcheck import numerical_gradient, relative_error


def run(opt, grad_fn, w0, steps):
    params = [{"w": np.array(w0, dtype=np.float64)}]
    state = opt.init(params)
    for _ in range(steps):
        updates, state = opt.update(grad_fn(params), state, params)
        params = optim.apply_updates(params, updates)
    return params[0]["w"]


# ---- known minimisers ---------------------------------------------------------------
def quadratic():
    """f(w) = 1/2 (w - w*)^T A (w - w*), A with eigenvalues 1..10, minimiser w*."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    a = q @ np.diag(np.linspace(1, 10, 5)) @ q.T
    w_star = rng.standard_normal(5)
    return (lambda p: [{"w": a @ (p[0]["w"] - w_star)}]), w_star


def rosenbrock_grad(p):
    """f(x, y) = (1 - x)^2 + 100 (y - x^2)^2, minimiser (1, 1)."""
    x, y = p[0]["w"]
    return [{"w": np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])}]


# (optimizer, steps) with the documented hyper-parameters for each problem
QUADRATIC = {
    "sgd": (optim.sgd(0.1), 300),
    "momentum": (optim.momentum(0.05), 300),
    "nesterov": (optim.nesterov(0.05), 300),
    "sgd_amom": (optim.sgd_amom(0.1), 500),
    "adam": (optim.adam(0.05), 1000),
    "rmsprop": (optim.rmsprop(optim.ExponentialDecay(0.01, rate=0.1, steps=500)), 2000),
    "adagrad": (optim.adagrad(0.5), 1000),
}
ROSENBROCK = {  # from (-1.2, 1), the classic start
    "sgd": (optim.sgd(1e-3), 40_000),
    "momentum": (optim.momentum(1e-4), 40_000),
    "nesterov": (optim.nesterov(1e-4), 40_000),
    "sgd_amom": (optim.sgd_amom(1e-3), 40_000),
    "adam": (optim.adam(1e-2), 10_000),
    # normalised steps never shrink on their own: the rate must decay
    "rmsprop": (optim.rmsprop(optim.StepDecay(1e-3, boundaries=(10_000, 15_000))), 20_000),
    "adagrad": (optim.adagrad(0.5), 20_000),
}


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_reaches_the_minimiser_of_a_convex_quadratic(name):
    grad, w_star = quadratic()
    opt, steps = QUADRATIC[name]
    assert np.abs(run(opt, grad, np.zeros(5), steps) - w_star).max() < 1e-3


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_reaches_the_minimiser_of_rosenbrock(name):
    opt, steps = ROSENBROCK[name]
    assert np.abs(run(opt, rosenbrock_grad, [-1.2, 1.0], steps) - 1.0).max() < 1e-3


def test_a_test_table_row_for_every_optimizer():
    assert set(QUADRATIC) == set(ROSENBROCK) == set(optim.OPTIMIZERS)


# ---- exact first updates ------------------------------------------------------------
GRADS = [0.5, -1.5, 2.0]  # the first three gradients, for a scalar parameter


def first_updates(opt, grads=GRADS):
    params = [{"w": np.array([0.3])}]
    state = opt.init(params)
    out = []
    for g in grads:
        updates, state = opt.update([{"w": np.array([g])}], state, params)
        params = optim.apply_updates(params, updates)
        out.append(float(updates[0]["w"][0]))
    return out


def test_adam_first_three_updates_equal_a_hand_computation():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    m = v = 0.0
    expected = []
    for t, g in enumerate(GRADS, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g * g)
        expected.append(-lr * ((m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)))
    assert first_updates(optim.adam(lr, b1, b2, eps)) == expected  # exactly, bit for bit
    # and the textbook facts: the first step is -lr sign(g) up to eps, whatever |g|
    assert expected[0] == pytest.approx(-lr, rel=1e-7)


def test_sgd_amom_first_three_updates_equal_a_hand_computation():
    """The Layca code's m <- 0.9 m - 0.1 g; w <- w + lr m (an EMA of the gradient, no bias
    correction), written as m <- beta m + (1 - beta) g, update -lr m. (In floating point
    1 - 0.9 is 0.09999999999999998, not 0.1: the hand computation uses the same
    expression, so the equality is exact.)"""
    lr, beta = 0.2, 0.9
    m, expected = 0.0, []
    for g in GRADS:
        m = beta * m + (1 - beta) * g
        expected.append(-lr * m)
    got = first_updates(optim.sgd_amom(lr, beta))
    assert got == expected  # bit for bit
    # the Layca code's literal 0.1 agrees to rounding
    m1 = -0.1 * 0.5
    m2 = 0.9 * m1 - 0.1 * -1.5
    m3 = 0.9 * m2 - 0.1 * 2.0
    np.testing.assert_allclose(got, [lr * m1, lr * m2, lr * m3], rtol=1e-15, atol=0)


def test_momentum_and_nesterov_first_updates():
    lr, beta = 0.1, 0.9
    v1, v2 = 0.5, 0.9 * 0.5 - 1.5
    np.testing.assert_allclose(first_updates(optim.momentum(lr, beta), GRADS[:2]), [-lr * v1, -lr * v2],
                               rtol=1e-15)
    np.testing.assert_allclose(first_updates(optim.nesterov(lr, beta), GRADS[:2]),
                               [-lr * (0.5 + beta * v1), -lr * (-1.5 + beta * v2)], rtol=1e-15)


def test_rmsprop_and_adagrad_first_updates():
    v1 = (1 - 0.9) * (0.5 * 0.5)
    assert first_updates(optim.rmsprop(0.01), GRADS[:1]) == [-0.01 * (0.5 / (math.sqrt(v1) + 1e-7))]
    assert first_updates(optim.adagrad(0.1), GRADS[:1]) == [-0.1 * (0.5 / (math.sqrt(0.25) + 1e-7))]


# ---- weight decay, masks, chain --------------------------------------------------------
def test_weight_decay_is_the_gradient_of_lambda_squared_norm():
    lam = 0.3
    w = np.random.default_rng(0).standard_normal((3, 4))
    params = [{"W": w}]
    decayed, _ = optim.add_weight_decay(lam).update([{"W": np.zeros_like(w)}], optim.EmptyState(), params)
    numeric = numerical_gradient(lambda: lam * float(np.sum(w * w)), w)
    assert relative_error(decayed[0]["W"], numeric) < 1e-9
    np.testing.assert_array_equal(decayed[0]["W"], 2 * lam * w)


def test_weight_decay_mask_selects_tensors_explicitly():
    params = [{"W": np.ones(2), "b": np.ones(2)}]
    grads = [{"W": np.zeros(2), "b": np.zeros(2)}]
    mask = [{"W": True, "b": False}]
    out, _ = optim.add_weight_decay(0.5, mask).update(grads, optim.EmptyState(), params)
    np.testing.assert_array_equal(out[0]["W"], [1.0, 1.0])
    np.testing.assert_array_equal(out[0]["b"], [0.0, 0.0])
    # a mask must name every tensor of the gradients
    with pytest.raises(ValueError, match=r"^mask at \[0\] names \['W'\], but the gradients "
                                         r"there hold \['W', 'b'\]"):
        optim.add_weight_decay(0.5, [{"W": True}]).update(grads, optim.EmptyState(), params)
    with pytest.raises(ValueError, match=r"^multipliers: expected a list of 1 entries"):
        optim.scale_per_tensor({"W": 1.0}).update(grads, optim.EmptyState(), params)


def test_frozen_tensors_get_no_update_and_keep_their_state():
    opt = optim.adam(0.1)
    params = [{"W": np.ones(3), "b": np.ones(2)}]
    state = opt.init(params)
    updates, state = opt.update([{"W": np.ones(3), "b": np.ones(2)}], state, params)
    params = optim.apply_updates(params, updates)
    b_before, mu_b_before = params[0]["b"].copy(), state[0].mu[0]["b"].copy()
    updates, state = opt.update([{"W": np.ones(3)}], state, params)  # b frozen: no gradient
    new = optim.apply_updates(params, updates)
    assert "b" not in updates[0]
    np.testing.assert_array_equal(new[0]["b"], b_before)
    np.testing.assert_array_equal(state[0].mu[0]["b"], mu_b_before)
    assert state[0].count == 2


def test_masked_applies_a_rule_to_some_tensors_and_passes_the_rest_through():
    params = [{"W": np.ones(2), "b": np.ones(2)}]
    mask = [{"W": True, "b": False}]
    opt = optim.chain(optim.masked(optim.scale_by_adam(), mask), optim.scale_by_learning_rate(0.1))
    state = opt.init(params)
    updates, _ = opt.update([{"W": np.array([4.0, -4.0]), "b": np.array([4.0, -4.0])}], state, params)
    np.testing.assert_allclose(updates[0]["W"], [-0.1, 0.1], rtol=1e-7)  # Adam: ~ -lr sign(g)
    np.testing.assert_array_equal(updates[0]["b"], [-0.4, 0.4])  # plain SGD


def test_per_tensor_learning_rate_multipliers():
    opt = optim.chain(optim.scale_per_tensor([{"W": 1.0}, {"W": 0.1}]), optim.scale_by_learning_rate(2.0))
    params = [{"W": np.ones(1)}, {"W": np.ones(1)}]
    updates, _ = opt.update([{"W": np.ones(1)}, {"W": np.ones(1)}], opt.init(params), params)
    assert updates[0]["W"][0] == -2.0 and updates[1]["W"][0] == pytest.approx(-0.2, rel=1e-15)


def test_float32_parameters_stay_float32():
    params = [{"W": np.ones((2, 2), np.float32)}]
    for name, make in optim.OPTIMIZERS.items():
        opt = make(0.1, weight_decay=0.01)
        updates, state = opt.update([{"W": np.ones((2, 2), np.float32)}], opt.init(params), params)
        assert updates[0]["W"].dtype == np.float32, name
        assert optim.apply_updates(params, updates)[0]["W"].dtype == np.float32


def test_state_is_never_mutated():
    opt = optim.momentum(0.1)
    params = [{"W": np.ones(2)}]
    state = opt.init(params)
    opt.update([{"W": np.ones(2)}], state, params)
    np.testing.assert_array_equal(state[0].velocity[0]["W"], 0.0)


# ---- schedules ------------------------------------------------------------------------
def test_schedules():
    s = optim.StepDecay(1.0, boundaries=(10, 20), factor=0.5)
    assert [s(0), s(9), s(10), s(19), s(20), s(1000)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    e = optim.ExponentialDecay(2.0, rate=0.5, steps=10)
    assert e(0) == 2.0 and e(10) == 1.0 and e(5) == pytest.approx(2.0 * 0.5**0.5)
    assert optim.ExponentialDecay(2.0, 0.5, 10, staircase=True)(15) == 1.0
    opt = optim.sgd(optim.StepDecay(1.0, boundaries=(1,)))
    assert first_updates(opt, [1.0, 1.0]) == [-1.0, -0.1]


@pytest.mark.parametrize("make, message", [
    (lambda: optim.momentum(0.1, beta=1.0), r"beta: expected a decay rate in \[0, 1\), got 1.0"),
    (lambda: optim.adam(0.1, eps=0), "eps: expected > 0, got 0"),
    (lambda: optim.sgd(-1.0), "lr: expected > 0, got -1.0"),
    (lambda: optim.sgd(0.1, weight_decay=-1), "weight_decay: expected >= 0, got -1"),
    (lambda: optim.StepDecay(0.1, boundaries=(5, 2)), "boundaries: expected increasing counts"),
])
def test_bad_hyper_parameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()
