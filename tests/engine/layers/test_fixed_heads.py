"""Fixed classifier heads: gradients, the two Hadamard paths, storage, options, errors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.linalg

from lastlayer.engine import Dense, HadamardHead, Network, OrthogonalHead, ReLU, optim
from lastlayer.engine.training.architecture import build, describe
from lastlayer.engine.training.data import toy_classification
from lastlayer.engine.gradcheck import check_layer
from lastlayer.engine.layers import fixed_heads
from lastlayer.engine.training import init_train_state, train

GRAD_TOL = 1e-7


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def random_params(layer, rng):
    """b ~ N(0, 1); alpha ~ U(0.5, 2), away from 0 so that rounding noise does not dominate."""
    params = {"b": rng.standard_normal(layer.n_classes)}
    if layer.learn_alpha:
        params["alpha"] = rng.uniform(0.5, 2.0, 1)
    return params


def reference_logits(x, q, alpha, b, eps=1e-8):
    """alpha * x_hat Q^T + b written out with an explicit matrix."""
    x_hat = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
    return alpha * x_hat @ q.T + b


# ---- gradients ------------------------------------------------------------------------
GRAD_CASES = [
    # (d_in, n_classes, batch): N < n, N = n, C > N, C = 1, batch 1
    (6, 3, 4), (8, 8, 1), (16, 5, 3), (3, 5, 2), (7, 1, 3), (1, 1, 2), (33, 4, 1),
]


@pytest.mark.parametrize("method", ["fwht", "dense"])
@pytest.mark.parametrize("d_in, n_classes, batch", GRAD_CASES)
def test_hadamard_head_gradient(d_in, n_classes, batch, method, rng):
    layer = HadamardHead(d_in, n_classes, method=method, allow_duplicate_rows=True)
    errors = check_layer(layer, random_params(layer, rng), rng.standard_normal((batch, d_in)))
    assert max(errors.values()) < GRAD_TOL, errors


@pytest.mark.parametrize("d_in, n_classes, batch", [(6, 3, 4), (4, 4, 1), (9, 1, 2), (12, 5, 3)])
def test_orthogonal_head_gradient(d_in, n_classes, batch, rng):
    layer = OrthogonalHead(d_in, n_classes, seed=3)
    errors = check_layer(layer, random_params(layer, rng), rng.standard_normal((batch, d_in)),
                         state=layer.init_state())
    assert max(errors.values()) < GRAD_TOL, errors


@pytest.mark.parametrize("layer", [HadamardHead(5, 3, alpha_init=2.5, learn_alpha=False),
                                   OrthogonalHead(5, 3, alpha_init=2.5, learn_alpha=False)],
                         ids=["hadamard", "orthogonal"])
def test_gradient_with_fixed_alpha_and_tiny_rows(layer, rng):
    x = 1e-3 * rng.standard_normal((3, 5))
    errors = check_layer(layer, random_params(layer, rng), x, state=layer.init_state())
    assert set(errors) == {"x", "b"}
    assert max(errors.values()) < GRAD_TOL, errors


# ---- the forward pass against explicit matrices ---------------------------------------------
@pytest.mark.parametrize("d_in, n_classes", [(5, 3), (8, 8), (3, 10), (100, 10)])
def test_hadamard_head_is_the_truncated_sylvester_matrix(d_in, n_classes, rng):
    layer = HadamardHead(d_in, n_classes, allow_duplicate_rows=True)
    n = 2 ** math.ceil(math.log2(max(d_in, n_classes)))
    assert layer.n == n
    params = random_params(layer, rng)
    x = rng.standard_normal((4, d_in))
    q = scipy.linalg.hadamard(n)[:n_classes, :d_in]
    np.testing.assert_allclose(layer.forward(params, x)[0],
                               reference_logits(x, q, params["alpha"], params["b"]),
                               rtol=1e-13, atol=1e-13)


def test_orthogonal_head_uses_the_state_q(rng):
    layer = OrthogonalHead(7, 3, seed=5)
    state = layer.init_state()
    params = random_params(layer, rng)
    x = rng.standard_normal((4, 7))
    np.testing.assert_allclose(layer.forward(params, x, state=state)[0],
                               reference_logits(x, state["Q"], params["alpha"], params["b"]),
                               rtol=1e-13, atol=1e-13)


# ---- the two Hadamard paths --------------------------------------------------------------
@pytest.mark.parametrize("d_in, n_classes", [(64, 10), (100, 10), (342, 100), (3, 10), (1, 1),
                                             (1024, 1000)])
def test_fwht_path_equals_dense_path(d_in, n_classes, rng):
    fast, dense = (HadamardHead(d_in, n_classes, method=m, allow_duplicate_rows=True)
                   for m in ("fwht", "dense"))
    params = random_params(fast, rng)
    x = rng.standard_normal((5, d_in))
    dy = rng.standard_normal((5, n_classes))
    (y_f, c_f), (y_d, c_d) = fast.forward(params, x), dense.forward(params, x)
    (dx_f, g_f), (dx_d, g_d) = fast.backward(params, c_f, dy), dense.backward(params, c_d, dy)

    def rel(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    assert rel(y_f, y_d) < 1e-12
    assert rel(dx_f, dx_d) < 1e-12
    assert rel(g_f["alpha"], g_d["alpha"]) < 1e-12
    np.testing.assert_array_equal(g_f["b"], g_d["b"])


def test_auto_picks_the_cheaper_operation_count():
    # dense when C N <= 3 n (the measured crossover)
    assert HadamardHead(64, 3).resolved_method == "dense"  # 192 <= 192
    assert HadamardHead(64, 4).resolved_method == "fwht"  # 256 > 192
    assert HadamardHead(48, 4).resolved_method == "dense"  # 192 <= 3 * 64: padding costs the transform
    assert HadamardHead(2048, 1000).resolved_method == "fwht"
    assert HadamardHead(16384, 8).resolved_method == "fwht"  # the old operation count said dense
    assert HadamardHead(64, 10, method="dense").resolved_method == "dense"


def test_dense_path_generates_q_at_every_call_and_fwht_path_never(monkeypatch, rng):
    calls = []
    real = fixed_heads.hadamard_rows
    monkeypatch.setattr(fixed_heads, "hadamard_rows", lambda *a, **k: calls.append(a) or real(*a, **k))
    for method, expected in (("fwht", 0), ("dense", 4)):
        calls.clear()
        layer = HadamardHead(6, 3, method=method)
        params = layer.init(rng)
        for _ in range(2):
            y, cache = layer.forward(params, rng.standard_normal((2, 6)))
            layer.backward(params, cache, np.ones_like(y))
        assert len(calls) == expected


# ---- storage: the Hadamard head holds no C x N array -----------------------------------------
def test_hadamard_head_holds_no_q(rng):
    layer = HadamardHead(256, 100)
    for f in dataclasses.fields(layer):
        assert isinstance(getattr(layer, f.name), (int, float, str, bool, type(None))), f.name
    params, state = layer.init(rng), layer.init_state()
    assert {k: v.shape for k, v in params.items()} == {"alpha": (1,), "b": (100,)}
    assert state == {}
    before = dict(vars(layer))
    for method in ("fwht", "dense"):
        head = dataclasses.replace(layer, method=method)
        y, cache = head.forward(params, rng.standard_normal((3, 256)), state=state)
        head.backward(params, cache, np.ones_like(y))
        assert cache.q is None
        assert all(np.shape(a) != (100, 256) for a in cache.normalized + (cache.z,))
    assert vars(layer) == before  # nothing cached on the layer


@pytest.mark.parametrize("learn_alpha, expected", [(True, 11), (False, 10)])
def test_trainable_parameter_count_is_c_plus_one(learn_alpha, expected, rng):
    for layer in (HadamardHead(64, 10, learn_alpha=learn_alpha),
                  OrthogonalHead(64, 10, learn_alpha=learn_alpha)):
        assert Network([layer]).num_params([layer.init(rng)]) == expected
    assert Network([Dense(64, 10)]).num_params([Dense(64, 10).init(rng)]) == 650


# ---- initialisation and options -------------------------------------------------------------
def test_initial_values_follow_their_code(rng):
    h = HadamardHead(64, 16).init(rng)
    assert h["alpha"][0] == 0.25  # 1 / sqrt(16)
    assert np.abs(h["b"]).max() <= 0.25 and np.abs(h["b"]).min() > 0
    o = OrthogonalHead(64, 16).init(rng)
    assert o["alpha"][0] == 10.0 and not o["b"].any()
    assert HadamardHead(64, 16, alpha_init=3.0).init(rng)["alpha"][0] == 3.0


def test_fixed_alpha_is_a_hyper_parameter(rng):
    layer = HadamardHead(6, 3, alpha_init=4.0, learn_alpha=False)
    params = layer.init(rng)
    assert set(params) == {"b"}
    x = rng.standard_normal((2, 6))
    y, cache = layer.forward(params, x)
    learned = HadamardHead(6, 3)
    y_learned, _ = learned.forward({"alpha": np.array([4.0]), "b": params["b"]}, x)
    np.testing.assert_allclose(y, y_learned, rtol=1e-15)
    assert set(layer.backward(params, cache, np.ones_like(y))[1]) == {"b"}


def test_orthogonal_state_is_deterministic_orthonormal_and_constant():
    layer = OrthogonalHead(20, 6, seed=7)
    q = layer.init_state()["Q"]
    assert q.shape == (6, 20)
    np.testing.assert_allclose(q @ q.T, np.eye(6), atol=1e-14)
    np.testing.assert_array_equal(q, OrthogonalHead(20, 6, seed=7).init_state()["Q"])
    assert not np.allclose(q, OrthogonalHead(20, 6, seed=8).init_state()["Q"])
    np.testing.assert_array_equal(layer.init_state(np.float32)["Q"], q.astype(np.float32))
    assert layer.stateful
    state = layer.init_state()
    assert layer.update_state(state, None) is state


@pytest.mark.parametrize("layer", [HadamardHead(6, 3), HadamardHead(6, 3, method="dense"),
                                   OrthogonalHead(6, 3)], ids=["fwht", "dense", "orthogonal"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(layer, dtype, rng):
    params = layer.init(rng, dtype)
    x = rng.standard_normal((4, 6)).astype(dtype)
    y, cache = layer.forward(params, x, state=layer.init_state(dtype))
    assert y.dtype == dtype and y.shape == (4, 3) == layer.output_shape((4, 6))
    dx, grads = layer.backward(params, cache, np.ones_like(y))
    assert dx.dtype == dtype and dx.shape == x.shape
    assert all(grads[k].dtype == dtype and grads[k].shape == params[k].shape for k in params)


def test_a_zero_row_gives_the_bias_and_a_finite_gradient(rng):
    layer = HadamardHead(4, 2)
    params = layer.init(rng)
    x = np.zeros((1, 4))
    y, cache = layer.forward(params, x)
    np.testing.assert_array_equal(y[0], params["b"])
    assert np.isfinite(layer.backward(params, cache, np.ones_like(y))[0]).all()


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, match", [
    (lambda: HadamardHead(0, 3), ValueError, "d_in: expected an integer >= 1, got 0"),
    (lambda: HadamardHead(4, 2.0), TypeError, "n_classes: expected an integer"),
    (lambda: HadamardHead(4, 2, method="fast"), ValueError,
     "method: expected one of auto, fwht, dense, got 'fast'"),
    (lambda: HadamardHead(4, 2, eps=0.0), ValueError, "eps: expected > 0"),
    (lambda: HadamardHead(4, 2, alpha_init=0.0), ValueError, "alpha_init: expected a finite number > 0"),
    (lambda: OrthogonalHead(4, 2, alpha_init=float("nan")), ValueError, "alpha_init"),
    (lambda: OrthogonalHead(4, 2, learn_alpha="yes"), TypeError, "learn_alpha: expected a bool"),
    (lambda: OrthogonalHead(4, 2, seed=-1), ValueError, "seed: expected an integer >= 0"),
    (lambda: OrthogonalHead(3, 5), ValueError, r"needs C <= N = d_in = 3, got n_classes = 5"),
    (lambda: HadamardHead(3, 5), ValueError, r"n_classes: expected at most 2\^ceil\(log2 d_in\) = 4 "
     r"for d_in = 3, got 5: .* so 1 class would have the same row of Q .* allow_duplicate_rows=True"),
    (lambda: HadamardHead(2, 1000), ValueError, r"998 classes would have the same row"),
    (lambda: HadamardHead(3, 4, allow_duplicate_rows=1), TypeError, "allow_duplicate_rows: expected a bool"),
])
def test_bad_hyper_parameters_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_inputs_name_layer_expected_and_received(rng):
    layer = HadamardHead(6, 3)
    params = layer.init(rng)
    with pytest.raises(ValueError, match=r"HadamardHead\(6 -> 3\): expected input of shape "
                                         r"\(N, 6\), got \(2, 5\)"):
        layer.forward(params, np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 6\), got \(2, 6, 1\)"):
        layer.forward(params, np.zeros((2, 6, 1)))
    with pytest.raises(TypeError, match="input dtype float32 does not match parameter"):
        layer.forward(params, np.zeros((2, 6), np.float32))
    with pytest.raises(TypeError, match="expected dtype float32 or float64, got int64"):
        layer.forward(params, np.zeros((2, 6), np.int64))
    with pytest.raises(ValueError, match=r"expected parameters \['alpha', 'b'\], got \['b'\]"):
        layer.forward({"b": params["b"]}, np.zeros((2, 6)))
    y, cache = layer.forward(params, np.ones((2, 6)))
    with pytest.raises(ValueError, match=r"backward expected dy of shape \(2, 3\)"):
        layer.backward(params, cache, np.ones((2, 4)))


def test_orthogonal_head_needs_its_state(rng):
    layer = OrthogonalHead(6, 3)
    params = layer.init(rng)
    x = np.ones((2, 6))
    with pytest.raises(ValueError, match=r"Q lives in the layer state; pass state=layer.init_state"):
        layer.forward(params, x)
    with pytest.raises(ValueError, match=r"state\['Q'\] must have shape \(3, 6\) and the input's "
                                         r"dtype float64, got shape \(3, 6\) and dtype float32"):
        layer.forward(params, x, state=layer.init_state(np.float32))


# ---- integration: description, training -------------------------------------------------------
def test_heads_round_trip_through_the_architecture_description():
    net = Network([Dense(8, 8), ReLU(), HadamardHead(8, 3, alpha_init=2.0, learn_alpha=False,
                                                     method="dense"),
                   OrthogonalHead(3, 2, seed=4, eps=1e-6)])
    assert build(json.loads(json.dumps(describe(net)))).layers == net.layers


def test_training_reads_the_state_and_never_changes_q():
    data = toy_classification(n_train=200, n_test=100, n_classes=3, dim=5, seed=1)
    net = Network([Dense(5, 16), ReLU(), OrthogonalHead(16, 3, seed=2)])
    opt = optim.sgd(0.1)
    ts0 = init_train_state(net, opt, seed=0)
    ts = train(net, opt, data, ts0, iterations=60, batch_size=32, quiet=True)
    assert ts.net_state[-1]["Q"] is ts0.net_state[-1]["Q"]
    assert ts.params[-1]["alpha"][0] != 10.0  # alpha is trained
    assert ts.history["test_accuracy"][-1] > 0.5
