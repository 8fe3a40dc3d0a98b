"""Layers: gradients against central differences, outputs against independent closed
forms and naive loops, dtype handling and error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal

from lastlayer.engine import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    L2Normalize,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from lastlayer.engine.gradcheck.cases import LAYER_CASES, LAYER_TOL
from tests import naive


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---- gradients (every case of every G- ledger row, reported separately) ------------
@pytest.mark.parametrize("case", LAYER_CASES, ids=[f"{c.row}: {c.name}" for c in LAYER_CASES])
def test_layer_gradient(case):
    errors = case.run(seed=3)
    assert max(errors.values()) < LAYER_TOL, errors


# ---- Dense ----------------------------------------------------------------------
def test_dense_matches_explicit_products(rng):
    layer = Dense(6, 4)
    params = {"W": rng.standard_normal((4, 6)), "b": rng.standard_normal(4)}
    x, dy = rng.standard_normal((5, 6)), rng.standard_normal((5, 4))
    y, cache = layer.forward(params, x)
    expected = np.array([[sum(params["W"][o, k] * x[n, k] for k in range(6)) + params["b"][o]
                          for o in range(4)] for n in range(5)])
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-14)
    dx, grads = layer.backward(params, cache, dy)
    # dW = sum over samples of the outer products dy_n x_n^T; dx_n = W^T dy_n
    np.testing.assert_allclose(grads["W"], sum(np.outer(dy[n], x[n]) for n in range(5)),
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(grads["b"], dy.sum(axis=0), rtol=1e-14)
    np.testing.assert_allclose(dx, np.stack([params["W"].T @ dy[n] for n in range(5)]),
                               rtol=1e-13, atol=1e-14)


def test_dense_without_bias_has_only_a_kernel(rng):
    layer = Dense(3, 2, bias=False)
    params = layer.init(rng)
    assert set(params) == {"W"}
    x = rng.standard_normal((2, 3))
    np.testing.assert_array_equal(layer.forward(params, x)[0], x @ params["W"].T)


# ---- activations ------------------------------------------------------------------
def test_activations_match_numpy(rng):
    x = rng.standard_normal((4, 7)) * 3
    np.testing.assert_array_equal(ReLU().forward({}, x)[0], np.maximum(x, 0))
    np.testing.assert_array_equal(Tanh().forward({}, x)[0], np.tanh(x))
    np.testing.assert_allclose(Sigmoid().forward({}, x)[0], 1 / (1 + np.exp(-x)), rtol=1e-15)


def test_relu_subgradient_at_zero_is_zero():
    x = np.array([[-1.0, 0.0, 2.0]])
    y, cache = ReLU().forward({}, x)
    dx, _ = ReLU().backward({}, cache, np.ones_like(x))
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 1.0]])


def test_sigmoid_is_stable_and_keeps_relative_precision_in_the_tails():
    x = np.array([[-1000.0, -700.0, -30.0, 0.0, 30.0, 1000.0]])
    y, cache = Sigmoid().forward({}, x)  # RuntimeWarnings are errors in this suite
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[0, 1:3], np.exp([-700.0, -30.0]), rtol=1e-13)  # tiny, yet exact
    assert y[0, 0] == 0.0 and y[0, 3] == 0.5 and y[0, 5] == 1.0
    dx, _ = Sigmoid().backward({}, cache, np.ones_like(x))
    assert np.all(np.isfinite(dx))


# ---- Conv2D ------------------------------------------------------------------------
CONV_CONFIGS = [  # (c_in, c_out, kernel, stride, padding, x shape)
    (3, 4, (3, 3), (1, 1), (0, 0), (2, 3, 7, 6)),
    (2, 3, (3, 3), (2, 2), (1, 1), (1, 2, 5, 7)),
    (1, 2, (2, 3), (2, 1), (0, 1), (2, 1, 8, 5)),
    (2, 2, (5, 5), (2, 2), (2, 2), (1, 2, 9, 9)),
    (1, 1, (1, 1), (3, 3), (0, 0), (1, 1, 7, 7)),
]


@pytest.mark.parametrize("c_in, c_out, kernel, stride, padding, shape", CONV_CONFIGS)
def test_conv2d_forward_matches_naive_loops(rng, c_in, c_out, kernel, stride, padding, shape):
    layer = Conv2D(c_in, c_out, kernel, stride=stride, padding=padding)
    params = {k: rng.standard_normal(v.shape) for k, v in layer.init(rng).items()}
    x = rng.standard_normal(shape)
    y, _ = layer.forward(params, x)
    assert y.shape == layer.output_shape(shape)
    np.testing.assert_allclose(y, naive.conv2d(x, params["W"], params["b"], stride, padding),
                               rtol=1e-12, atol=1e-13)


def test_conv2d_equals_scipy_correlate(rng):
    """A third, independent implementation: scipy's 2-D cross-correlation."""
    layer = Conv2D(2, 1, 3, padding=1, bias=False)
    params = {"W": rng.standard_normal((1, 2, 3, 3))}
    x = rng.standard_normal((1, 2, 6, 5))
    expected = sum(scipy.signal.correlate2d(x[0, c], params["W"][0, c], mode="same")
                   for c in range(2))
    np.testing.assert_allclose(layer.forward(params, x)[0][0, 0], expected, rtol=1e-12,
                               atol=1e-13)


@pytest.mark.parametrize("c_in, c_out, kernel, stride, padding, shape", CONV_CONFIGS)
def test_conv2d_backward_is_the_adjoint_of_forward(rng, c_in, c_out, kernel, stride, padding,
                                                   shape):
    """Convolution is linear in x and in W, so <dy, conv(x)> = <dx, x> = <dW, W> exactly
    (up to rounding) when the bias is zero: backward must be the transpose of forward."""
    layer = Conv2D(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
    params = {"W": rng.standard_normal((c_out, c_in, *kernel))}
    x = rng.standard_normal(shape)
    y, cache = layer.forward(params, x)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(params, cache, dy)
    inner = float(np.sum(dy * y))
    assert math.isclose(float(np.sum(dx * x)), inner, rel_tol=1e-12)
    assert math.isclose(float(np.sum(grads["W"] * params["W"])), inner, rel_tol=1e-12)


def test_conv2d_output_size_formula():
    assert Conv2D(1, 1, 3, stride=2, padding=1).output_shape((5, 1, 28, 27)) == (5, 1, 14, 14)
    assert Conv2D(1, 1, (1, 4), stride=(1, 3)).output_shape((1, 1, 2, 10)) == (1, 1, 2, 3)


# ---- MaxPool2D ---------------------------------------------------------------------
@pytest.mark.parametrize("pool, stride, shape", [
    ((2, 2), (2, 2), (2, 3, 7, 5)),
    ((3, 3), (2, 2), (1, 2, 7, 7)),
    ((2, 3), (1, 2), (2, 1, 6, 7)),
])
def test_maxpool_matches_naive_and_routes_gradient_to_the_max(rng, pool, stride, shape):
    layer = MaxPool2D(pool, stride=stride)
    x = rng.standard_normal(shape)
    y, cache = layer.forward({}, x)
    y_ref, where = naive.maxpool2d(x, pool, stride)
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape)
    dx, _ = layer.backward({}, cache, dy)
    dx_ref = np.zeros_like(x)
    for idx in np.ndindex(y.shape):
        n, c = idx[0], idx[1]
        dx_ref[n, c, where[idx][0], where[idx][1]] += dy[idx]
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-15, atol=0)


def test_maxpool_tie_goes_to_the_first_element():
    x = np.ones((1, 1, 2, 2))
    y, cache = MaxPool2D(2).forward({}, x)
    dx, _ = MaxPool2D(2).backward({}, cache, np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 0.0], [0.0, 0.0]])


# ---- BatchNorm ---------------------------------------------------------------------
@pytest.mark.parametrize("shape, axes", [((16, 5), (0,)), ((3, 4, 5, 6), (0, 2, 3))])
def test_batchnorm_training_output_is_standardised_per_channel(rng, shape, axes):
    layer = BatchNorm(shape[1], eps=1e-5)
    x = 3.0 + 2.0 * rng.standard_normal(shape)
    y, cache = layer.forward(layer.init(rng), x, train=True)  # gamma = 1, beta = 0
    var = x.var(axis=axes)
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-15)
    # the variance of x_hat is var / (var + eps) exactly, not 1
    np.testing.assert_allclose(y.var(axis=axes), var / (var + 1e-5), rtol=1e-13)


def test_batchnorm_running_statistics(rng):
    layer = BatchNorm(3, momentum=0.25)
    x = rng.standard_normal((8, 3, 2, 2))
    state = layer.init_state()
    _, cache = layer.forward(layer.init(rng), x, train=True, state=state)
    new = layer.update_state(state, cache)
    m = 8 * 2 * 2
    np.testing.assert_allclose(new["mean"], 0.25 * x.mean(axis=(0, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(new["var"], 0.75 + 0.25 * x.var(axis=(0, 2, 3)) * m / (m - 1),
                               rtol=1e-14)
    np.testing.assert_array_equal(state["mean"], 0)  # the old state is untouched


def test_batchnorm_inference_uses_running_statistics(rng):
    layer = BatchNorm(4, eps=1e-3)
    params = {"gamma": rng.standard_normal(4), "beta": rng.standard_normal(4)}
    state = {"mean": rng.standard_normal(4), "var": rng.uniform(0.5, 2, 4)}
    x = rng.standard_normal((1, 4))  # batch 1 is fine at inference
    y, _ = layer.forward(params, x, train=False, state=state)
    expected = params["gamma"] * (x - state["mean"]) / np.sqrt(state["var"] + 1e-3) + params["beta"]
    np.testing.assert_allclose(y, expected, rtol=1e-14)


def test_batchnorm_errors(rng):
    layer = BatchNorm(3)
    params = layer.init(rng)
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        layer.forward(params, rng.standard_normal((1, 3)), train=True)
    with pytest.raises(ValueError, match="running statistics"):
        layer.forward(params, rng.standard_normal((2, 3)), train=False)
    with pytest.raises(ValueError, match=r"BatchNorm\(3\): expected input of shape \(N, 3\) or "
                                         r"\(N, 3, H, W\), got \(2, 4\)"):
        layer.forward(params, rng.standard_normal((2, 4)), train=True)


# ---- Dropout -----------------------------------------------------------------------
def test_dropout_is_the_identity_at_inference(rng):
    x = rng.standard_normal((5, 6))
    y, cache = Dropout(0.5).forward({}, x, train=False)
    assert y is x
    dy = rng.standard_normal((5, 6))
    assert Dropout(0.5).backward({}, cache, dy)[0] is dy


def test_dropout_mask_statistics_and_reproducibility():
    p, n = 0.3, 200_000
    x = np.ones((n, 1))
    y, _ = Dropout(p).forward({}, x, train=True, rng=np.random.default_rng(7))
    values = set(np.unique(y))
    assert values == {0.0, 1 / (1 - p)}
    kept = float(np.mean(y > 0))
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(kept - (1 - p)) < 5 * sigma  # fraction kept is 1 - p
    assert abs(float(y.mean()) - 1.0) < 5 * sigma / (1 - p)  # inverted: E[y] = x
    y2, _ = Dropout(p).forward({}, x, train=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(y, y2)


def test_dropout_training_needs_an_rng(rng):
    with pytest.raises(ValueError, match="pass rng"):
        Dropout(0.5).forward({}, rng.standard_normal((2, 2)), train=True)
    with pytest.raises(ValueError, match=r"p: expected a drop probability in \[0, 1\), got 1"):
        Dropout(1.0)


# ---- L2Normalize / Flatten --------------------------------------------------------
def test_l2normalize_rows_have_unit_norm_and_zero_rows_stay_finite(rng):
    layer = L2Normalize(eps=1e-8)
    x = rng.standard_normal((4, 6)) * 5
    x[2] = 0.0
    y, cache = layer.forward({}, x)
    norms = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), norms / (norms + 1e-8), rtol=1e-14)
    np.testing.assert_array_equal(y[2], 0.0)
    dy = rng.standard_normal((4, 6))
    dx, _ = layer.backward({}, cache, dy)
    np.testing.assert_allclose(dx[2], dy[2] / 1e-8, rtol=1e-15)  # d(x / eps) at x = 0
    # away from zero the gradient is orthogonal to x: scaling x does not change y
    np.testing.assert_allclose(np.sum(dx[[0, 1, 3]] * x[[0, 1, 3]], axis=1), 0,
                               atol=1e-7 * float(np.abs(dy).max()))


def test_flatten_is_a_row_major_reshape(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y, cache = Flatten().forward({}, x)
    np.testing.assert_array_equal(y, x.reshape(2, 60))
    assert np.shares_memory(y, x)
    np.testing.assert_array_equal(Flatten().backward({}, cache, y)[0], x)


# ---- dtypes, initialisation, bad input ---------------------------------------------
ALL_LAYERS = [
    (Dense(4, 3), (2, 4)), (ReLU(), (2, 4)), (Tanh(), (2, 4)), (Sigmoid(), (2, 4)),
    (Conv2D(2, 3, 3, padding=1), (2, 2, 5, 5)), (MaxPool2D(2), (2, 2, 5, 5)),
    (Flatten(), (2, 2, 3)), (BatchNorm(4), (3, 4)), (Dropout(0.5), (2, 4)),
    (L2Normalize(), (2, 4)),
]


@pytest.mark.parametrize("layer, shape", ALL_LAYERS, ids=[str(type(l).__name__) for l, _ in ALL_LAYERS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backward_keep_the_dtype(layer, shape, dtype):
    rng = np.random.default_rng(0)
    params = layer.init(rng, dtype)
    assert all(p.dtype == dtype for p in params.values())
    x = rng.standard_normal(shape).astype(dtype)
    y, cache = layer.forward(params, x, train=True, state=layer.init_state(dtype), rng=rng)
    assert y.dtype == dtype and y.shape == layer.output_shape(shape)
    dx, grads = layer.backward(params, cache, np.ones_like(y))
    assert dx.dtype == dtype and dx.shape == x.shape
    assert all(grads[k].dtype == dtype and grads[k].shape == params[k].shape for k in params)


def test_float32_init_is_the_rounded_float64_init():
    layer = Conv2D(3, 4, 3)
    p64 = layer.init(np.random.default_rng(5), np.float64)
    p32 = layer.init(np.random.default_rng(5), np.float32)
    np.testing.assert_array_equal(p32["W"], p64["W"].astype(np.float32))


@pytest.mark.parametrize("layer, bad_shape, expected", [
    (Dense(64, 10), (32, 63), r"Dense\(64 -> 10\): expected input of shape \(N, 64\), got \(32, 63\)"),
    (Dense(4, 2), (3, 2, 2), r"expected input of shape \(N, 4\), got \(3, 2, 2\)"),
    (Conv2D(3, 8, 5), (2, 3, 4, 9), r"Conv2D\(3 -> 8, 5x5.*\): expected input of shape "
                                    r"\(N, 3, H, W\) with H \+ 0 >= 5 and W \+ 0 >= 5, got \(2, 3, 4, 9\)"),
    (Conv2D(3, 8, 3), (2, 1, 8, 8), r"expected input of shape \(N, 3, H, W\).*got \(2, 1, 8, 8\)"),
    (MaxPool2D(3), (1, 1, 2, 5), r"MaxPool2D\(3x3.*\): expected input of shape \(N, C, H, W\) "
                                 r"with H >= 3 and W >= 3, got \(1, 1, 2, 5\)"),
    (L2Normalize(), (2, 3, 4), r"expected input of shape \(N, d\), got \(2, 3, 4\)"),
])
def test_a_shape_that_does_not_fit_names_layer_expected_and_received(layer, bad_shape, expected):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=expected):
        layer.forward(layer.init(rng), np.zeros(bad_shape), train=True, state=layer.init_state(),
                      rng=rng)


def test_nothing_is_cast_silently():
    layer = Dense(3, 2)
    params = layer.init(np.random.default_rng(0), np.float64)
    with pytest.raises(TypeError, match="input dtype float32 does not match parameter 'W' dtype float64"):
        layer.forward(params, np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="expected dtype float32 or float64, got int64"):
        ReLU().forward({}, np.zeros((1, 3), np.int64))
    with pytest.raises(TypeError, match="expected a float32 or float64 array, got list"):
        ReLU().forward({}, [[1.0, 2.0]])
    with pytest.raises(TypeError, match="expected float32 or float64, got float16"):
        layer.init(np.random.default_rng(0), np.float16)


def test_wrong_parameters_and_upstream_gradients_are_reported():
    layer = Dense(3, 2)
    rng = np.random.default_rng(0)
    params = layer.init(rng)
    with pytest.raises(ValueError, match=r"parameter 'W' must have shape \(2, 3\), got \(3, 2\)"):
        layer.forward({"W": params["W"].T.copy(), "b": params["b"]}, np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"expected parameters \['W', 'b'\], got \['W'\]"):
        layer.forward({"W": params["W"]}, np.zeros((1, 3)))
    _, cache = layer.forward(params, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"backward expected dy of shape \(4, 2\) and dtype float64, "
                                         r"got shape \(4, 3\)"):
        layer.backward(params, cache, np.zeros((4, 3)))


@pytest.mark.parametrize("make, message", [
    (lambda: Dense(0, 3), "d_in: expected an integer >= 1, got 0"),
    (lambda: Dense(2.5, 3), "d_in: expected an integer, got float 2.5"),
    (lambda: Conv2D(1, 1, 3, stride=0), "stride: expected an integer >= 1, got 0"),
    (lambda: Conv2D(1, 1, (3, 3, 3)), "kernel_size: expected an int or a pair of ints"),
    (lambda: BatchNorm(3, momentum=1.5), r"momentum: expected a value in \[0, 1\], got 1.5"),
    (lambda: L2Normalize(eps=0), "eps: expected > 0"),
])
def test_bad_hyper_parameters_are_rejected_at_construction(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()
