"""The fixed simplex-ETF head: gradients, the ETF it applies (both methods, d = C - 1), the
matrix-free path against explicit matrices, P in the state, "auto", dtypes and errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg

from lastlayer.engine import Dense, Network, ReLU, optim
from lastlayer.engine.gradcheck import check_layer
from lastlayer.engine.layers import SimplexETFHead, etf_head
from lastlayer.engine.streams import stream
from lastlayer.engine.training import init_train_state, train
from lastlayer.engine.training.data import toy_classification

GRAD_TOL = 1e-7  # as every layer's gradient check (lastlayer.engine.gradcheck.cases.LAYER_TOL)
# The same sums of at most d + C products in another order, d <= 2^14: their rounding errors
# grow like sqrt(d) u ~ 1e-14 relative (measured: <= 2.3e-15 over 5 seeds); dscale, a sum with
# cancellations, is measured against the sum of its terms' magnitudes.
REL_TOL = 1e-12


@pytest.fixture
def rng():
    return np.random.default_rng(2021)


def random_params(layer, rng):
    """scale ~ U(0.5, 2) (away from 0, so that rounding noise does not dominate), b ~ N(0, 1)."""
    params = {}
    if layer.learn_scale:
        params["scale"] = rng.uniform(0.5, 2.0, 1)
    if layer.bias:
        params["b"] = rng.standard_normal(layer.n_classes)
    return params


def sylvester_columns(d: int, cols) -> np.ndarray:
    """Columns ``cols`` of the Sylvester-Hadamard matrix H_d by its closed form
    H[i, j] = (-1)^(popcount(i & j)) (d x len(cols); scipy's hadamard(d) would build all d^2
    entries: 2 GB at d = 16384)."""
    i, j = np.arange(d)[:, None], np.asarray(list(cols))[None, :]
    parity = np.zeros((d, j.shape[1]), dtype=np.int64)
    for bit in range(max(1, int(d - 1).bit_length())):
        parity ^= (i >> bit) & (j >> bit) & 1
    return 1.0 - 2.0 * parity


def test_the_closed_form_columns_are_scipys_hadamard():
    np.testing.assert_array_equal(sylvester_columns(64, range(64)), scipy.linalg.hadamard(64))


def explicit_w(layer, state):
    """W (C, d) from the definition, sqrt(C/(C-1)) (I - 1 1^T/C) P^T, with an explicit P:
    scipy's Hadamard matrix (columns 1 .. C, / sqrt(d)) or the state's."""
    c = layer.n_classes
    if layer.resolved_method == "hadamard":
        p = sylvester_columns(layer.d_in, range(1, c + 1)) / math.sqrt(layer.d_in)
    else:
        p = state["P"]
    return math.sqrt(c / (c - 1)) * (np.eye(c) - 1 / c) @ p.T


def w_from_forward(layer, state):
    """W read back through the forward pass: the logits of the rows of I_d with s = 1, b = 0."""
    plain = dataclasses.replace(layer, learn_scale=False, scale_init=1.0, bias=False)
    wt, _ = plain.forward({}, np.eye(layer.d_in), state=state)
    return wt.T


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---- gradients -----------------------------------------------------------------------------
GRAD_CASES = [  # (d_in, n_classes, method, learn_scale, bias, batch)
    (8, 5, "hadamard", True, True, 3), (8, 5, "hadamard", False, False, 1),
    (16, 3, "hadamard", True, False, 2), (4, 2, "hadamard", False, True, 1),
    (7, 4, "orthogonal", True, True, 1), (6, 3, "orthogonal", False, False, 4),
    (9, 10, "orthogonal", True, True, 2), (1, 2, "orthogonal", True, True, 3),
    (33, 4, "auto", True, True, 1),
]


@pytest.mark.parametrize("d_in, n_classes, method, learn_scale, bias, batch", GRAD_CASES)
def test_gradient(d_in, n_classes, method, learn_scale, bias, batch, rng):
    layer = SimplexETFHead(d_in, n_classes, method=method, learn_scale=learn_scale, bias=bias,
                           scale_init=1.5, seed=4)
    errors = check_layer(layer, random_params(layer, rng), rng.standard_normal((batch, d_in)),
                         state=layer.init_state())
    assert set(errors) == {"x"} | set(layer.param_shapes())
    assert max(errors.values()) < GRAD_TOL, errors


# ---- the forward and backward passes against the definition --------------------------------
SHAPES = [(8, 5, "hadamard"), (64, 10, "hadamard"), (1024, 100, "hadamard"),
          (16384, 10, "hadamard"), (9, 10, "orthogonal"), (10, 10, "orthogonal"),
          (64, 10, "orthogonal"), (1, 2, "orthogonal")]


@pytest.mark.parametrize("d_in, n_classes, method", SHAPES)
def test_forward_and_backward_are_the_explicit_products(d_in, n_classes, method, rng):
    layer = SimplexETFHead(d_in, n_classes, method=method, learn_scale=True, bias=True, seed=3)
    state = layer.init_state()
    params = random_params(layer, rng)
    x, dy = rng.standard_normal((5, d_in)), rng.standard_normal((5, n_classes))
    y, cache = layer.forward(params, x, state=state)
    dx, grads = layer.backward(params, cache, dy)
    w, s = explicit_w(layer, state), params["scale"][0]
    assert rel(y, s * x @ w.T + params["b"]) < REL_TOL
    assert rel(dx, s * dy @ w) < REL_TOL
    terms = dy * (x @ w.T)
    assert abs(grads["scale"][0] - terms.sum()) / np.abs(terms).sum() < REL_TOL
    np.testing.assert_array_equal(grads["b"], dy.sum(axis=0))


@pytest.mark.parametrize("d_in, n_classes, method", [s for s in SHAPES if s[0] <= 1024])
def test_the_head_applies_a_simplex_etf(d_in, n_classes, method):
    layer = SimplexETFHead(d_in, n_classes, method=method, seed=1)
    w = w_from_forward(layer, layer.init_state())  # (C, d)
    c = n_classes
    # W W^T = C/(C-1) (I - 1 1^T/C): unit norms, cosines -1/(C-1); the columns sum to zero
    np.testing.assert_allclose(w @ w.T, c / (c - 1) * (np.eye(c) - 1 / c), rtol=0, atol=1e-14)
    np.testing.assert_allclose(w.sum(axis=0), 0, rtol=0, atol=1e-14)
    assert w.shape == (c, d_in)


def test_forward_and_backward_apply_the_same_w(rng):
    for layer in (SimplexETFHead(32, 6), SimplexETFHead(12, 6)):
        state = layer.init_state()
        _, cache = layer.forward({}, np.zeros((6, layer.d_in)), state=state)
        w_back, _ = layer.backward({}, cache, np.eye(6))  # s dy W with dy = I: W
        assert rel(w_back, w_from_forward(layer, state)) < 1e-15


def test_features_are_not_normalised(rng):
    layer = SimplexETFHead(16, 5)
    x = rng.standard_normal((3, 16))
    np.testing.assert_allclose(layer.forward({}, 1e3 * x)[0], 1e3 * layer.forward({}, x)[0],
                               rtol=1e-14, atol=0)


def test_the_hadamard_head_ignores_a_common_shift_of_the_features(rng):
    """Column 0 of H_d (all ones) is skipped: W 1_d = 0, so x + t 1 gives the logits of x."""
    layer = SimplexETFHead(64, 10, method="hadamard")
    x = rng.standard_normal((4, 64))
    y, _ = layer.forward({}, x)
    y_shift, _ = layer.forward({}, x + 5.0)
    np.testing.assert_allclose(y_shift, y, rtol=0, atol=1e-13)


# ---- P: the Hadamard columns, the orthogonal state ------------------------------------------
def test_hadamard_p_is_columns_1_to_c_and_never_stored(rng):
    layer = SimplexETFHead(256, 100, method="hadamard")
    assert layer.init_state() == {} and not layer.stateful
    for f in dataclasses.fields(layer):
        assert isinstance(getattr(layer, f.name), (int, float, str, bool)), f.name
    y, cache = layer.forward({}, rng.standard_normal((3, 256)))
    dx, _ = layer.backward({}, cache, np.ones_like(y))
    assert cache.p is None and cache.u.shape == (3, 100)
    # x P read back with the centring undone: P = H_256[:, 1:101] / 16
    z = layer._project(np.eye(256), None)
    np.testing.assert_array_equal(z, scipy.linalg.hadamard(256)[:, 1:101] / 16)


def test_orthogonal_p_is_orthonormal_deterministic_and_from_the_etf_stream():
    layer = SimplexETFHead(20, 6, method="orthogonal", seed=7)
    p = layer.init_state()["P"]
    assert p.shape == (20, 6) and layer.stateful
    np.testing.assert_allclose(p.T @ p, np.eye(6), rtol=0, atol=1e-15)
    q, r = np.linalg.qr(stream(7, "etf").standard_normal((20, 6)))
    np.testing.assert_array_equal(np.abs(p), np.abs(q))  # the QR of the stream's Gaussian
    assert (np.diag(p.T @ stream(7, "etf").standard_normal((20, 6))) > 0).all()  # diag R > 0
    np.testing.assert_array_equal(p, SimplexETFHead(20, 6, method="orthogonal", seed=7)
                                  .init_state()["P"])
    assert not np.allclose(p, SimplexETFHead(20, 6, method="orthogonal", seed=8)
                           .init_state()["P"])
    np.testing.assert_array_equal(layer.init_state(np.float32)["P"], p.astype(np.float32))
    state = layer.init_state()
    assert layer.update_state(state, None) is state


def test_with_c_minus_1_features_p_is_a_partial_isometry():
    """d = C - 1: P = Q V^T, P^T P = I - 1 1^T/C (no d x C matrix has P^T P = I)."""
    c = 10
    p = SimplexETFHead(c - 1, c).init_state()["P"]
    assert p.shape == (c - 1, c)
    np.testing.assert_allclose(p.T @ p, np.eye(c) - 1 / c, rtol=0, atol=1e-15)
    np.testing.assert_allclose(p @ p.T, np.eye(c - 1), rtol=0, atol=1e-15)


@pytest.mark.parametrize("c", [2, 3, 10])
def test_helmert_basis(c):
    v = etf_head.helmert_basis(c)
    assert v.shape == (c, c - 1)
    np.testing.assert_allclose(v.T @ v, np.eye(c - 1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(v.sum(axis=0), 0, rtol=0, atol=1e-15)


def test_auto_picks_hadamard_where_possible_and_cheaper():
    assert SimplexETFHead(64, 10).resolved_method == "hadamard"
    assert SimplexETFHead(64, 4).resolved_method == "hadamard"
    assert SimplexETFHead(64, 3).resolved_method == "orthogonal"  # C d <= 3 d: the product
    assert SimplexETFHead(65, 10).resolved_method == "orthogonal"  # not a power of two
    assert SimplexETFHead(16, 16).resolved_method == "orthogonal"  # columns 1 .. 16 need d > 16
    assert SimplexETFHead(16, 15).resolved_method == "hadamard"
    assert SimplexETFHead(9, 10).resolved_method == "orthogonal"  # d = C - 1
    assert SimplexETFHead(64, 10, method="orthogonal").resolved_method == "orthogonal"
    assert SimplexETFHead(16, 3, method="hadamard").resolved_method == "hadamard"
    assert str(SimplexETFHead(64, 10)) == "SimplexETFHead(64 -> 10, hadamard)"


# ---- parameters, scale and bias ------------------------------------------------------------
def test_parameters_by_default_none(rng):
    layer = SimplexETFHead(16, 5)
    assert layer.param_shapes() == {} and layer.init(rng) == {}
    assert Network([layer]).num_params([layer.init(rng)]) == 0
    full = SimplexETFHead(16, 5, learn_scale=True, scale_init=2.5, bias=True)
    params = full.init(rng)
    assert {k: v.shape for k, v in params.items()} == {"scale": (1,), "b": (5,)}
    assert params["scale"][0] == 2.5 and not params["b"].any()


def test_a_fixed_scale_is_a_hyper_parameter(rng):
    x = rng.standard_normal((3, 16))
    y1, _ = SimplexETFHead(16, 5).forward({}, x)
    y3, cache = SimplexETFHead(16, 5, scale_init=3.0).forward({}, x)
    np.testing.assert_allclose(y3, 3 * y1, rtol=1e-15, atol=0)
    learned = SimplexETFHead(16, 5, learn_scale=True)
    np.testing.assert_array_equal(learned.forward({"scale": np.array([3.0])}, x)[0], y3)
    assert SimplexETFHead(16, 5, scale_init=3.0).backward({}, cache, np.ones_like(y3))[1] == {}


@pytest.mark.parametrize("method", ["hadamard", "orthogonal"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(method, dtype, rng):
    layer = SimplexETFHead(16, 5, method=method, learn_scale=True, bias=True)
    params = layer.init(rng, dtype)
    x = rng.standard_normal((4, 16)).astype(dtype)
    y, cache = layer.forward(params, x, state=layer.init_state(dtype))
    assert y.dtype == dtype and y.shape == (4, 5) == layer.output_shape((4, 16))
    dx, grads = layer.backward(params, cache, np.ones_like(y))
    assert dx.dtype == dtype and dx.shape == x.shape
    assert all(grads[k].dtype == dtype and grads[k].shape == params[k].shape for k in params)


def test_a_numpy_scale_init_does_not_cast_float32_logits(rng):
    layer = SimplexETFHead(16, 5, scale_init=np.float64(2.0))
    x = rng.standard_normal((2, 16)).astype(np.float32)
    y, cache = layer.forward({}, x)
    assert y.dtype == np.float32 and layer.backward({}, cache, y)[0].dtype == np.float32


def test_an_empty_batch_gives_empty_logits():
    for layer in (SimplexETFHead(8, 3, method="hadamard"), SimplexETFHead(8, 3)):
        y, cache = layer.forward({}, np.zeros((0, 8)), state=layer.init_state())
        assert y.shape == (0, 3)
        assert layer.backward({}, cache, y)[0].shape == (0, 8)


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, match", [
    (lambda: SimplexETFHead(0, 3), ValueError, "d_in: expected an integer >= 1, got 0"),
    (lambda: SimplexETFHead(4, 1), ValueError, "n_classes: expected an integer >= 2, got 1"),
    (lambda: SimplexETFHead(4, 2.0), TypeError, "n_classes: expected an integer"),
    (lambda: SimplexETFHead(8, 10), ValueError,
     r"d_in: a simplex ETF of n_classes = 10 vectors spans 9 dimensions; expected d_in >= 9, "
     r"got 8"),
    (lambda: SimplexETFHead(8, 3, method="fast"), ValueError,
     "method: expected one of auto, hadamard, orthogonal, got 'fast'"),
    (lambda: SimplexETFHead(12, 3, method="hadamard"), ValueError,
     r"method: 'hadamard' needs d_in a power of two with n_classes < d_in .* got d_in = 12, "
     r"n_classes = 3"),
    (lambda: SimplexETFHead(8, 8, method="hadamard"), ValueError, "got d_in = 8, n_classes = 8"),
    (lambda: SimplexETFHead(8, 3, learn_scale=1), TypeError, "learn_scale: expected a bool"),
    (lambda: SimplexETFHead(8, 3, bias="no"), TypeError, "bias: expected a bool"),
    (lambda: SimplexETFHead(8, 3, scale_init=0.0), ValueError,
     "scale_init: expected a finite number > 0, got 0.0"),
    (lambda: SimplexETFHead(8, 3, scale_init=float("inf")), ValueError, "scale_init"),
    (lambda: SimplexETFHead(8, 3, scale_init="1"), TypeError, "scale_init: expected a real number"),
    (lambda: SimplexETFHead(8, 3, seed=-1), ValueError, "seed: expected an integer >= 0"),
    (lambda: SimplexETFHead(8, 3, "hadamard"), TypeError, "positional"),
])
def test_bad_hyper_parameters_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_inputs_name_layer_expected_and_received(rng):
    layer = SimplexETFHead(16, 5, learn_scale=True, bias=True)
    params = layer.init(rng)
    with pytest.raises(ValueError, match=r"SimplexETFHead\(16 -> 5, hadamard\): expected input "
                                         r"of shape \(N, 16\), got \(2, 15\)"):
        layer.forward(params, np.zeros((2, 15)))
    with pytest.raises(TypeError, match="input dtype float32 does not match parameter"):
        layer.forward(params, np.zeros((2, 16), np.float32))
    with pytest.raises(TypeError, match="expected dtype float32 or float64, got int64"):
        layer.forward(params, np.zeros((2, 16), np.int64))
    with pytest.raises(ValueError, match=r"expected parameters \['b', 'scale'\], got \['b'\]"):
        layer.forward({"b": params["b"]}, np.zeros((2, 16)))
    y, cache = layer.forward(params, np.ones((2, 16)))
    with pytest.raises(ValueError, match=r"backward expected dy of shape \(2, 5\)"):
        layer.backward(params, cache, np.ones((2, 4)))


def test_the_orthogonal_head_needs_its_state_in_the_input_dtype():
    layer = SimplexETFHead(6, 3, method="orthogonal")
    x = np.ones((2, 6))
    with pytest.raises(ValueError, match=r"P lives in the layer state; pass state=layer.init_st"):
        layer.forward({}, x)
    with pytest.raises(TypeError, match=r"input dtype float64 does not match state\['P'\] dtype "
                                        r"float32"):
        layer.forward({}, x, state=layer.init_state(np.float32))
    with pytest.raises(ValueError, match=r"state\['P'\] must have shape \(6, 3\), got \(3, 6\)"):
        layer.forward({}, x, state={"P": np.zeros((3, 6))})


# ---- integration: training reads the state and never changes P -----------------------------
def test_training_reads_the_state_and_never_changes_p():
    data = toy_classification(n_train=200, n_test=100, n_classes=3, dim=5, seed=1)
    net = Network([Dense(5, 16), ReLU(), SimplexETFHead(16, 3, learn_scale=True, bias=True,
                                                        seed=2)])
    assert net[-1].resolved_method == "orthogonal"
    opt = optim.sgd(0.1)
    ts0 = init_train_state(net, opt, seed=0)
    ts = train(net, opt, data, ts0, iterations=60, batch_size=32, quiet=True)
    assert ts.net_state[-1]["P"] is ts0.net_state[-1]["P"]
    assert ts.params[-1]["scale"][0] != 1.0  # the scale is trained
    assert ts.history["test_accuracy"][-1] > 0.5


def test_numpy_integers_are_taken_as_ints():
    head = SimplexETFHead(np.int64(16), np.int32(4))
    assert type(head.d_in) is int and type(head.n_classes) is int
    assert head.resolved_method == "hadamard"  # the FWHT path needs int.bit_length
    y, _ = head.forward({}, np.ones((2, 16)))
    assert y.shape == (2, 4)
