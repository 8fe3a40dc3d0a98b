"""lastlayer.engine.solvers.exact.eigen: exact classifier-space curvature and layer
Hessian-vector products."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.engine import Dense, Network, Tanh, softmax_cross_entropy
from lastlayer.engine.solvers import (
    fit_softmax_regression, hessian, hvp, layer_hvp, layer_top_eigenpair, rayleigh_quotient,
    top_eigenpairs,
)
from lastlayer.engine.solvers.exact.eigen import pack, unpack


@pytest.fixture(scope="module")
def head_650():
    """A 650-parameter head (64 features x 10 classes + bias) at the optimum of J."""
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((400, 64))
    y = rng.integers(0, 10, 400)
    sol = fit_softmax_regression(phi, y, 1e-2, n_classes=10, method="newton-cg")
    return sol.W, sol.b, phi, y


def test_lanczos_equals_dense_to_1e_8_on_a_650_parameter_head(head_650):
    W, b, phi, y = head_650
    assert W.size + b.size == 650
    dense = top_eigenpairs(W, b, phi, y, 1e-2, "ce", k=3, method="dense")
    lanczos = top_eigenpairs(W, b, phi, y, 1e-2, "ce", k=3, method="lanczos")
    np.testing.assert_allclose(lanczos.values, dense.values, rtol=1e-8)
    assert np.all(np.diff(dense.values) <= 0)
    overlap = np.abs(np.sum(lanczos.vectors * dense.vectors, axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-8)
    # the vectors are eigenvectors of the exact Hessian
    h = hessian(W, b, phi, y, 1e-2, "ce")
    np.testing.assert_allclose(h @ dense.vectors, dense.vectors * dense.values, atol=1e-12)


def test_lanczos_is_reproducible(head_650):
    W, b, phi, y = head_650
    a = top_eigenpairs(W, b, phi, y, 0.0, "ce", k=2)
    c = top_eigenpairs(W, b, phi, y, 0.0, "ce", k=2)
    np.testing.assert_array_equal(a.values, c.values)


def test_rayleigh_quotient_of_an_eigenvector_is_its_eigenvalue(head_650):
    W, b, phi, y = head_650
    pairs = top_eigenpairs(W, b, phi, y, 1e-2, "ce", k=1, method="dense")
    q = rayleigh_quotient(W, b, phi, y, 3.0 * pairs.vectors[:, 0], 1e-2)
    assert q == pytest.approx(pairs.values[0], rel=1e-12)


def test_pack_and_unpack_are_inverse():
    W, b = np.arange(6.0).reshape(2, 3), np.array([7.0, 8.0])
    W2, b2 = unpack(pack(W, b), (2, 3), True)
    np.testing.assert_array_equal(W2, W)
    np.testing.assert_array_equal(b2, b)


def small_net():
    rng = np.random.default_rng(1)
    net = Network([Dense(12, 9), Tanh(), Dense(9, 4)])
    params = net.init(rng)
    x, y = rng.standard_normal((50, 12)), rng.integers(0, 4, 50)
    return net, params, x, y


def test_layer_hvp_of_the_last_layer_matches_the_exact_hessian():
    net, params, x, y = small_net()
    feats = net[:2].forward(params[:2], x)[0]
    rng = np.random.default_rng(2)
    for _ in range(3):
        v = {"W": rng.standard_normal((4, 9)), "b": rng.standard_normal(4)}
        got = layer_hvp(net, params, net.init_state(), x, y, softmax_cross_entropy, 2, v)
        hv_w, hv_b = hvp(params[2]["W"], params[2]["b"], feats, y, 0.0, v["W"], v["b"])
        scale = max(np.abs(hv_w).max(), np.abs(hv_b).max())
        assert np.abs(got["W"] - hv_w).max() / scale < 1e-8
        assert np.abs(got["b"] - hv_b).max() / scale < 1e-8


def test_layer_top_eigenpair_of_the_last_layer_matches_the_dense_eigenvalue():
    net, params, x, y = small_net()
    feats = net[:2].forward(params[:2], x)[0]
    value, vector = layer_top_eigenpair(net, params, net.init_state(), x, y,
                                        softmax_cross_entropy, -1)
    dense = top_eigenpairs(params[2]["W"], params[2]["b"], feats, y, 0.0, "ce", k=1,
                           method="dense")
    assert value == pytest.approx(dense.values[0], rel=1e-7)
    assert np.sqrt(sum((v ** 2).sum() for v in vector.values())) == pytest.approx(1.0, rel=1e-12)


def test_layer_hvp_of_a_hidden_layer_is_symmetric():
    """<u, H v> = <v, H u> for the first layer's block (a Hessian is symmetric)."""
    net, params, x, y = small_net()
    rng = np.random.default_rng(3)
    u = {"W": rng.standard_normal((9, 12)), "b": rng.standard_normal(9)}
    v = {"W": rng.standard_normal((9, 12)), "b": rng.standard_normal(9)}
    hv = layer_hvp(net, params, net.init_state(), x, y, softmax_cross_entropy, 0, v)
    hu = layer_hvp(net, params, net.init_state(), x, y, softmax_cross_entropy, 0, u)
    a = sum((u[k] * hv[k]).sum() for k in u)
    c = sum((v[k] * hu[k]).sum() for k in v)
    assert a == pytest.approx(c, rel=1e-7)


def test_bad_arguments_name_them(head_650):
    W, b, phi, y = head_650
    net, params, x, yy = small_net()
    with pytest.raises(ValueError, match="method: expected 'dense' or 'lanczos'"):
        top_eigenpairs(W, b, phi, y, method="power")
    with pytest.raises(ValueError, match="k: expected at most 649"):
        top_eigenpairs(W, b, phi, y, k=650)
    with pytest.raises(ValueError, match=r"layer: expected an index in \[-3, 3\), got 7"):
        layer_hvp(net, params, net.init_state(), x, yy, softmax_cross_entropy, 7, {})
    with pytest.raises(ValueError, match=r"layer: layer 1 \(Tanh\) has no parameters"):
        layer_hvp(net, params, net.init_state(), x, yy, softmax_cross_entropy, 1, {})
