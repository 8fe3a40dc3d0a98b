"""The training loop: exact resume, non-finite losses, masks, history."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lastlayer.engine import BatchNorm, Dense, Dropout, Network, ReLU
from lastlayer.engine import optim
from lastlayer.engine.training.data import simulated_regression, toy_classification
from lastlayer.engine.training import NonFiniteLossError, evaluate, init_train_state, train


@pytest.fixture(scope="module")
def toy():
    return toy_classification(n_train=200, n_test=100, n_classes=3, dim=6, seed=1)


def small_net():
    return Network([Dense(6, 16), BatchNorm(16), ReLU(), Dropout(0.3), Dense(16, 3)])


def assert_same_state(a, b):
    for pa, pb in zip(a.params + a.net_state, b.params + b.net_state):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])
    assert a.iteration == b.iteration and a.history == b.history


@pytest.mark.parametrize("mode", ["epoch", "stream"])
def test_resumed_training_is_bit_identical(toy, mode):
    net, opt = small_net(), optim.adam(1e-2)
    kwargs = dict(batch_size=24, mode=mode, quiet=True, eval_every=5)
    straight = train(net, opt, toy, init_train_state(net, opt, 3), iterations=37, **kwargs)
    first = train(net, opt, toy, init_train_state(net, opt, 3), iterations=13, **kwargs)
    resumed = train(net, opt, toy, first, iterations=37, **kwargs)
    assert_same_state(straight, resumed)
    assert straight.opt_state[1].count == 37


def test_training_learns_and_records_history(toy):
    net, opt = small_net(), optim.momentum(0.05)
    ts = train(net, opt, toy, init_train_state(net, opt, 0), iterations=90, batch_size=20,
               quiet=True)
    h = ts.history_arrays()
    assert len(h["batch_loss"]) == 90 and list(h["eval_iteration"]) == [10 * k for k in range(1, 10)]
    assert h["test_accuracy"][-1] > 0.9 and h["train_loss"][-1] < h["train_loss"][0]
    m = evaluate(net, ts.params, ts.net_state, toy.x_test, toy.y_test, "classification")
    assert m["accuracy"] == h["test_accuracy"][-1]


@pytest.fixture(scope="module")
def regression():
    return simulated_regression(n=300, n_train=200, seed=0)


def test_a_nan_loss_stops_training_naming_the_iteration(regression):
    # least squares with a step 1e50 times too large: |w| grows ~1e51-fold per step
    net, opt = Network([Dense(10, 1)]), optim.sgd(1e50)
    ts = init_train_state(net, opt, 0)
    with pytest.raises(NonFiniteLossError, match=r"iteration \d+: the loss is not finite") as exc:
        train(net, opt, regression, ts, iterations=50, batch_size=20, quiet=True)
    assert 0 < exc.value.iteration < 50


def test_skip_continues_past_non_finite_steps(regression):
    net, opt = Network([Dense(10, 1)]), optim.sgd(1e50)
    ts = train(net, opt, regression, init_train_state(net, opt, 0), iterations=30, batch_size=20,
               quiet=True, on_nonfinite="skip")
    skipped = ts.history["skipped"]
    assert ts.iteration == 30 and skipped
    assert all(math.isnan(ts.history["batch_loss"][t]) for t in skipped)
    assert all(np.isfinite(p).all() for layer in ts.params for p in layer.values())


def test_a_mask_trains_only_the_last_layer(toy):
    net, opt = small_net(), optim.sgd(0.1)
    ts0 = init_train_state(net, opt, 0)
    mask = net.trainable_mask(ts0.params, frozen_layers=range(len(net) - 1))
    ts = train(net, opt, toy, ts0, iterations=10, batch_size=20, quiet=True, mask=mask)
    np.testing.assert_array_equal(ts.params[0]["W"], ts0.params[0]["W"])
    np.testing.assert_array_equal(ts.params[1]["gamma"], ts0.params[1]["gamma"])
    assert not np.array_equal(ts.params[4]["W"], ts0.params[4]["W"])


def test_float32_training(toy):
    net, opt = Network([Dense(6, 8), ReLU(), Dense(8, 3)]), optim.adam(1e-2)
    ts = train(net, opt, toy, init_train_state(net, opt, 0, np.float32), iterations=30,
               batch_size=20, quiet=True)
    assert ts.params[0]["W"].dtype == np.float32


def test_bad_arguments(toy):
    net, opt = Network([Dense(6, 3)]), optim.sgd(0.1)
    ts = init_train_state(net, opt, 0)
    with pytest.raises(ValueError, match="on_nonfinite: expected 'raise' or 'skip'"):
        train(net, opt, toy, ts, iterations=1, on_nonfinite="ignore", quiet=True)
    ts = train(net, opt, toy, ts, iterations=5, quiet=True)
    with pytest.raises(ValueError, match="already at iteration 5, asked to train until 3"):
        train(net, opt, toy, ts, iterations=3, quiet=True)
