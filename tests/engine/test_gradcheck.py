"""The gradient checker itself: it must catch wrong gradients, not only pass right ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from lastlayer.engine import Dense, Network, ReLU, Tanh, softmax_cross_entropy
from lastlayer.engine.gradcheck import (
    check_layer,
    check_loss,
    check_network,
    numerical_gradient,
    relative_error,
)


@dataclass(frozen=True)
class TanhWithWrongBackward(Tanh):
    """tanh whose backward forgets the square: dy (1 - y) instead of dy (1 - y^2)."""

    def backward(self, params, cache, dy):
        return dy * (1 - cache.y), {}


@dataclass(frozen=True)
class DenseWithTransposedBiasBug(Dense):
    """Dense whose bias gradient is the mean instead of the sum over the batch."""

    def backward(self, params, cache, dy):
        dx, grads = super().backward(params, cache, dy)
        grads["b"] = dy.mean(axis=0)
        return dx, grads


def test_numerical_gradient_of_a_known_function():
    x = np.array([0.3, -1.2, 2.0])
    g = numerical_gradient(lambda: float(np.sum(np.sin(x) * x)), x)
    # rounding error ~ u |f| / h = 1e-16 / 2e-6 absolute, relative to the gradient's scale
    assert relative_error(g, np.cos(x) * x + np.sin(x)) < 1e-9
    np.testing.assert_array_equal(x, [0.3, -1.2, 2.0])  # restored exactly


def test_a_wrong_backward_is_caught():
    rng = np.random.default_rng(0)
    errors = check_layer(TanhWithWrongBackward(), {}, rng.standard_normal((3, 4)))
    assert errors["x"] > 1e-2


def test_a_wrong_parameter_gradient_is_caught_in_a_network():
    rng = np.random.default_rng(0)
    net = Network([DenseWithTransposedBiasBug(3, 4), ReLU(), Dense(4, 2)])
    errors = check_network(net, net.init(rng), rng.standard_normal((5, 3)),
                           softmax_cross_entropy, rng.integers(0, 2, 5))
    assert errors["0.b"] > 1e-2
    assert errors["0.W"] < 1e-7 and errors["x"] < 1e-7


def test_a_wrong_loss_gradient_is_caught():
    def half_gradient_mse(pred, t):
        r = pred - t
        return float((r * r).sum() / len(r)), r / len(r)  # missing the factor 2

    rng = np.random.default_rng(0)
    assert check_loss(half_gradient_mse, rng.standard_normal((4, 2)),
                      rng.standard_normal((4, 2))) > 0.4


def test_relative_error_measure():
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 2.2)
    assert relative_error([1e-3], [2e-3], scale=10.0) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="differ in shape"):
        relative_error(np.zeros(2), np.zeros(3))


def test_checks_refuse_float32():
    with pytest.raises(TypeError, match="gradient checks run in float64, got dtype float32"):
        check_layer(Tanh(), {}, np.zeros((2, 2), np.float32))
