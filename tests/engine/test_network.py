"""Network: composition, the whole-network gradient check, split, masks, state, errors."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.engine import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    Network,
    ReLU,
    Tanh,
    softmax_cross_entropy,
)
from lastlayer.engine.gradcheck.cases import NETWORK_TOL, network_case


def mlp():
    return Network([Dense(6, 5), Tanh(), Dense(5, 4), ReLU(), Dense(4, 3)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_whole_network_gradient(seed):
    """Conv2D -> BatchNorm -> ReLU -> MaxPool2D -> Flatten -> Dense -> Dropout(train) -> Dense
    -> cross-entropy, w.r.t. the input and all parameters."""
    errors = network_case(seed)
    assert max(errors.values()) < NETWORK_TOL, errors


def test_forward_and_backward_are_the_layers_chained():
    rng = np.random.default_rng(0)
    net = mlp()
    params = net.init(rng)
    x, dy = rng.standard_normal((7, 6)), rng.standard_normal((7, 3))
    y, caches = net.forward(params, x)
    h, layer_caches = x, []
    for layer, p in zip(net, params):
        h, c = layer.forward(p, h)
        layer_caches.append(c)
    np.testing.assert_array_equal(y, h)
    dx, grads = net.backward(params, caches, dy)
    g = dy
    for i in reversed(range(len(net))):
        g, layer_grads = net[i].backward(params[i], layer_caches[i], g)
        for k in layer_grads:
            np.testing.assert_array_equal(grads[i][k], layer_grads[k])
    np.testing.assert_array_equal(dx, g)


def test_split_gives_extractor_and_head_that_compose_to_the_network():
    rng = np.random.default_rng(1)
    net = mlp()
    params = net.init(rng)
    x = rng.standard_normal((4, 6))
    features_net, head = net.split(-1)
    assert len(features_net) == 4 and len(head) == 1 and head[0] is net[-1]
    phi, _ = features_net.forward(params[:-1], x)
    y_split, _ = head.forward(params[-1:], phi)
    np.testing.assert_array_equal(y_split, net.forward(params, x)[0])
    assert [len(n) for n in net.split(0)] == [0, 5]
    with pytest.raises(IndexError, match=r"k: expected an index in \[-5, 5\], got 6"):
        net.split(6)


def test_output_shape_and_num_params():
    net = Network([Conv2D(1, 4, 3, padding=1), MaxPool2D(2), Flatten(), Dense(64, 10)])
    assert net.output_shape((5, 1, 8, 8)) == (5, 10)
    params = net.init(np.random.default_rng(0))
    assert net.num_params(params) == 4 * 9 + 4 + 64 * 10 + 10
    with pytest.raises(ValueError, match=r"layer 3: Dense\(64 -> 10\): expected input of shape "
                                         r"\(N, 64\), got \(5, 36\)"):
        net.output_shape((5, 1, 6, 6))


def test_masks_freeze_layers_and_tensors():
    rng = np.random.default_rng(2)
    net = mlp()
    params = net.init(rng)
    x, dy = rng.standard_normal((3, 6)), rng.standard_normal((3, 3))
    _, caches = net.forward(params, x)
    full_dx, full = net.backward(params, caches, dy)

    # post-training: only the last layer trains
    mask = net.trainable_mask(params, frozen_layers=range(len(net) - 1))
    assert net.num_params(params, mask) == 4 * 3 + 3
    dx, grads = net.backward(params, caches, dy, mask=mask, input_grad=False)
    assert dx is None
    assert grads[:-1] == [{}, {}, {}, {}]
    np.testing.assert_array_equal(grads[-1]["W"], full[-1]["W"])

    # one tensor frozen: it is left out, everything else is unchanged
    mask = net.trainable_mask(params, frozen_tensors=[(2, "b")])
    dx, grads = net.backward(params, caches, dy, mask=mask)
    assert set(grads[2]) == {"W"}
    np.testing.assert_array_equal(dx, full_dx)
    np.testing.assert_array_equal(grads[0]["W"], full[0]["W"])


def test_mask_errors():
    net = mlp()
    params = net.init(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"layer 1 \(Tanh\) has no parameter 'W'"):
        net.trainable_mask(params, frozen_tensors=[(1, "W")])
    with pytest.raises(IndexError, match="frozen_layers: layer index 9 out of range for 5 layers"):
        net.trainable_mask(params, frozen_layers=[9])
    mask = net.trainable_mask(params)
    mask[0] = {"W": True}
    _, caches = net.forward(params, np.zeros((1, 6)))
    with pytest.raises(ValueError, match=r"mask at layer 0 \(Dense\(6 -> 5\)\) names \['W'\], "
                                         r"but params there hold \['W', 'b'\]"):
        net.backward(params, caches, np.zeros((1, 3)), mask=mask)


def test_state_flows_explicitly_through_batchnorm():
    rng = np.random.default_rng(3)
    net = Network([Dense(4, 3), BatchNorm(3), ReLU(), Dense(3, 2)])
    params, state = net.init(rng), net.init_state()
    x = rng.standard_normal((16, 4))
    y_train, caches = net.forward(params, x, train=True, state=state)
    new_state = net.update_state(state, caches)
    assert new_state[0] == {} and not np.array_equal(new_state[1]["mean"], state[1]["mean"])
    np.testing.assert_array_equal(state[1]["mean"], 0)  # input state untouched
    with pytest.raises(ValueError, match="layer 1: BatchNorm.*running statistics"):
        net.forward(params, x, train=False)
    y_eval, _ = net.forward(params, x, train=False, state=new_state)
    assert y_eval.shape == y_train.shape


def test_dropout_in_a_network_is_reproducible_from_the_seed():
    net = Network([Dense(5, 8), Dropout(0.5), Dense(8, 2)])
    params = net.init(np.random.default_rng(0))
    x = np.ones((3, 5))
    a, _ = net.forward(params, x, train=True, rng=np.random.default_rng(9))
    b, _ = net.forward(params, x, train=True, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)


def test_network_errors_name_the_layer():
    net = mlp()
    params = net.init(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"params: expected a list of 5 dicts \(one per layer\), got "
                                         r"list of length 4"):
        net.forward(params[:4], np.zeros((1, 6)))
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a Layer, got ufunc"):
        Network([Dense(2, 2), np.tanh])
    with pytest.raises(TypeError, match="layer 0: Dense.*input dtype float32"):
        net.forward(params, np.zeros((1, 6), np.float32))


def test_network_trains_on_a_separable_problem():
    """End to end: plain gradient descent with the hand-written gradients fits a linearly
    separable problem (a sanity check that the pieces compose into learning)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 2))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    net = Network([Dense(2, 16), ReLU(), Dense(16, 2)])
    params = net.init(rng)
    for _ in range(300):
        logits, caches = net.forward(params, x, train=True)
        loss, d = softmax_cross_entropy(logits, y)
        _, grads = net.backward(params, caches, d)
        params = [{k: p[k] - 0.5 * g[k] for k in p} for p, g in zip(params, grads)]
    logits, _ = net.forward(params, x)
    assert np.mean(logits.argmax(axis=1) == y) == 1.0
    assert loss < 0.1
