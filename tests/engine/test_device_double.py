"""The device path without a device: every layer, the losses, a network and a whole CNN
training run on ``tests/engine/fake_cupy.py``'s CuPy double, compared bit for bit with NumPy.

The double is registered as the ``cupy`` module for each test (the ``cp`` fixture), so
``lastlayer.engine.backend.array_module`` sends its arrays down the engine's device path. It refuses
what CuPy refuses (implicit conversion to NumPy, NumPy operands), so a NumPy-only call in
that path (``np.zeros`` where ``xp.zeros`` is meant, a host mask multiplied into a device
array) is a TypeError here. The same NumPy operations run underneath, in the same order,
so every result must equal the plain NumPy run exactly (float64 throughout).

CUDA kernels (``kernels``) are out of the double's reach: ``lastlayer.kernels.fwht`` routes a CuPy
array to ``lastlayer.kernels.fwht_cuda.fwht``, which the fixture replaces by a double that checks
its arguments are device arrays, records the call and runs the CPU transform on the
wrapped arrays. Layca's fused CUDA step is not run (no Layca optimizer here).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lastlayer.engine.layers
from lastlayer.engine import losses
from lastlayer.engine.backend import array_module, to_device
from lastlayer.engine.gradcheck.cases import LAYER_CASES
from lastlayer.engine.layers import (BatchNorm, Conv2D, Dense, Dropout, Flatten, HadamardHead, Layer,
                           MaxPool2D, OrthogonalHead, ReLU)
from lastlayer.engine.network import Network
from lastlayer.engine.optim import adam, kernel_layer_index, kernel_mask, momentum, rotation_monitor
from lastlayer.engine.optim.layca import layca
from lastlayer.engine.optim.transforms import scale_by_momentum
from lastlayer.engine.training import init_train_state, sam_gradient, train
from lastlayer.engine.training.data import digits

from . import fake_cupy
from .fake_cupy import FakeDeviceArray, device_leaves, host_leaves


@pytest.fixture
def cp(monkeypatch):
    """The double as ``sys.modules["cupy"]``, with ``lastlayer.kernels.fwht_cuda.fwht`` replaced by a
    stand-in that checks its arguments (``cp.fwht_calls`` records each call)."""
    module = fake_cupy.install(monkeypatch)
    from lastlayer.kernels import fwht_cuda
    from lastlayer.kernels.fwht_cpu import fwht_inplace

    calls = []

    def fwht_double(x, scale=None, out=None):
        assert type(x) is FakeDeviceArray, type(x)
        assert out is None or type(out) is FakeDeviceArray, type(out)
        calls.append((tuple(x.shape), scale, out is x))
        n = x.shape[-1]
        if out is None:
            work = np.array(x._a, order="C", copy=True)
            fwht_inplace(work.reshape(-1, n), scale)
            return FakeDeviceArray(work)
        assert out._a.flags.c_contiguous, "the engine passes contiguous buffers"
        if out is not x:
            np.copyto(out._a, x._a)
        fwht_inplace(out._a.reshape(-1, n), scale)
        return out

    monkeypatch.setattr(fwht_cuda, "fwht", fwht_double)
    module.fwht_calls = calls
    return module


def assert_identical(host, device, what="result"):
    """``device`` (a nest of FakeDeviceArrays) holds exactly the arrays of ``host``."""
    if isinstance(host, dict):
        assert isinstance(device, dict) and set(device) == set(host), what
        for k in host:
            assert_identical(host[k], device[k], f"{what}[{k!r}]")
    elif isinstance(host, (list, tuple)):
        assert type(device) is type(host) and len(device) == len(host), what
        for i, (h, d) in enumerate(zip(host, device)):
            assert_identical(h, d, f"{what}[{i}]")
    elif isinstance(host, (np.ndarray, np.generic)):
        assert type(device) is FakeDeviceArray, f"{what}: {type(device).__name__} on the device path"
        np.testing.assert_array_equal(device.get(), host, err_msg=what, strict=True)
    else:  # Python numbers, None, shapes
        assert type(device) is type(host) and device == host, f"{what}: {device!r} != {host!r}"


# ---- the double itself: it can fail ------------------------------------------------------
def test_the_double_refuses_what_cupy_refuses(cp):
    a, h = cp.asarray(np.arange(6.0).reshape(2, 3)), np.ones((2, 3))
    for implicit in (np.asarray, np.ascontiguousarray, lambda v: np.zeros(3) + v.sum(),
                     lambda v: np.exp(v) + h, lambda v: np.array(v)):
        with pytest.raises(TypeError):
            implicit(a)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    for mixed in (lambda: a + h, lambda: h + a, lambda: h @ a.T, lambda: a * np.float64(2) + h,
                  lambda: np.add(a, h), lambda: cp.where(h > 0, a, a),
                  lambda: cp.concatenate([a, h]), lambda: a + np.array(1.0)):
        with pytest.raises(TypeError, match="numpy.ndarray met a device array"):
            mixed()
    with pytest.raises(TypeError):
        a += h
    with pytest.raises(TypeError):  # stricter than CuPy: no silent copies through indexing
        a[np.array([0, 1])]
    with pytest.raises(TypeError):
        a[0] = np.zeros(3)
    with pytest.raises(TypeError):  # a NumPy function CuPy does not have
        np.trapezoid(a)
    with pytest.raises(AttributeError):  # a name the double does not list
        cp.histogram  # noqa: B018


def test_the_double_allows_what_cupy_allows(cp):
    a = cp.asarray(np.arange(6.0).reshape(2, 3))
    b = a.copy()
    b += a[0]  # in place, device operands
    b *= np.float64(2)  # NumPy scalars are fine
    assert type(b) is FakeDeviceArray and b.get().tolist() == [[0, 4, 8], [6, 10, 14]]
    s = a.sum()
    assert type(s) is FakeDeviceArray and s.shape == () and float(s) == 15.0 and s.item() == 15.0
    assert type(a[1, 2]) is FakeDeviceArray and int(a[1, 2]) == 5 and bool(a[0, 1])
    assert type(np.isfinite(a)) is FakeDeviceArray  # NumPy's protocols dispatch, as in CuPy
    assert type(np.zeros_like(a)) is FakeDeviceArray
    assert isinstance(cp.asnumpy(a), np.ndarray) and isinstance(a.get(), np.ndarray)
    assert array_module(a, None) is cp and cp.get_array_module(a) is cp
    with pytest.raises(TypeError, match="NumPy and CuPy mixed"):
        array_module(a, np.ones(1))


def test_to_device_moves_optimizer_states_and_keeps_counts(cp):
    """NamedTuple states (Adam's) keep their type; non-array leaves (the step count) stay."""
    params = [{"W": np.ones((2, 2))}, {}]
    state = adam(1e-3).init(params)
    moved = to_device(state, cp)
    assert type(moved) is type(state) and device_leaves(moved) and not host_leaves(moved)
    back = to_device(moved, np)
    assert type(back) is type(state) and not device_leaves(back)
    assert_identical(state, moved)


# ---- every layer --------------------------------------------------------------------------
HEAD_CASES = [  # (name, layer, x shape, make_x, train, random_state) like LAYER_CASES
    ("HadamardHead fwht, 12 -> 5", HadamardHead(12, 5, method="fwht"), (4, 12)),
    ("HadamardHead dense, 6 -> 3, fixed alpha", HadamardHead(6, 3, method="dense",
                                                            learn_alpha=False), (3, 6)),
    ("OrthogonalHead 7 -> 4", OrthogonalHead(7, 4, seed=2), (3, 7)),
]
CASES = [(f"{c.row}: {c.name}", c.layer, c.x_shape, c.make_x, c.train, c.random_state)
         for c in LAYER_CASES]
CASES += [(name, layer, shape, lambda rng, s: rng.standard_normal(s), True, False)
          for name, layer, shape in HEAD_CASES]


def test_every_layer_class_has_a_case():
    classes = {getattr(lastlayer.engine.layers, n) for n in lastlayer.engine.layers.__all__}
    layers = {c for c in classes if isinstance(c, type) and issubclass(c, Layer) and c is not Layer}
    assert layers == {type(case[1]) for case in CASES}


def _layer_inputs(layer, x_shape, make_x, random_state, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(v.shape) for k, v in layer.init(rng).items()}
    state = layer.init_state()
    if random_state:
        state = {"mean": rng.standard_normal(layer.num_features),
                 "var": rng.uniform(0.5, 2.0, layer.num_features)}
    x = make_x(rng, x_shape)
    dy = rng.standard_normal(layer.output_shape(x_shape))
    return params, state, x, dy


def _run_layer(layer, params, state, x, dy, train_mode):
    rng = np.random.default_rng(7)  # dropout masks: the same host generator for both runs
    y, cache = layer.forward(params, x, train_mode, state=state, rng=rng)
    dx, grads = layer.backward(params, cache, dy)
    new_state = layer.update_state(state, cache) if train_mode else state
    return (y, dx, grads, new_state), cache


@pytest.mark.parametrize("name, layer, x_shape, make_x, train_mode, random_state", CASES,
                         ids=[c[0] for c in CASES])
def test_layer_forward_and_backward_on_the_device(cp, name, layer, x_shape, make_x, train_mode,
                                                   random_state):
    params, state, x, dy = _layer_inputs(layer, x_shape, make_x, random_state)
    host, _ = _run_layer(layer, params, state, x, dy, train_mode)
    device, cache = _run_layer(layer, to_device(params, cp), to_device(state, cp),
                               cp.asarray(x), cp.asarray(dy), train_mode)
    assert_identical(host, device)
    assert not host_leaves(cache), f"host arrays in the cache: {host_leaves(cache)}"
    if isinstance(layer, HadamardHead) and layer.resolved_method == "fwht":
        assert len(cp.fwht_calls) == 2 and all(in_place for *_, in_place in cp.fwht_calls)


# ---- losses -------------------------------------------------------------------------------
def _loss_inputs():
    rng = np.random.default_rng(3)
    logits = 4 * rng.standard_normal((6, 4))
    return logits, {"labels": rng.integers(0, 4, 6), "probabilities": rng.dirichlet(np.ones(4), 6),
                    "real": rng.standard_normal((6, 4))}


@pytest.mark.parametrize("loss, targets", [
    ("softmax_cross_entropy", "labels"), ("softmax_cross_entropy", "probabilities"),
    ("squared_error", "real"), ("squared_error", "labels")])
def test_losses_on_the_device(cp, loss, targets):
    logits, t = _loss_inputs()
    fn = getattr(losses, loss)
    value, grad = fn(logits, t[targets])
    value_d, grad_d = fn(cp.asarray(logits), cp.asarray(t[targets]))
    assert type(value_d) is FakeDeviceArray and value_d.shape == ()  # no synchronisation
    assert float(value_d) == value
    assert_identical(grad, grad_d)


def test_loss_helpers_on_the_device(cp):
    logits, t = _loss_inputs()
    for fn in (losses.softmax, losses.log_softmax):
        assert_identical(fn(logits), fn(cp.asarray(logits)))
    assert_identical(losses.one_hot(t["labels"], 4, np.float64),
                     losses.one_hot(cp.asarray(t["labels"]), 4, np.float64))
    host = losses.error_energy(logits, t["labels"])
    device = losses.error_energy(cp.asarray(logits), cp.asarray(t["labels"]))
    assert_identical(host.per_class, device.per_class)
    assert host._replace(per_class=None) == device._replace(per_class=None)


def test_targets_on_the_host_are_refused(cp):
    logits, t = _loss_inputs()
    with pytest.raises(TypeError, match="NumPy and CuPy mixed"):
        losses.softmax_cross_entropy(cp.asarray(logits), t["labels"])


# ---- a network, and a whole CNN training run ----------------------------------------------
def cnn() -> Network:
    """Conv2D -> BatchNorm -> ReLU -> MaxPool2D -> Flatten -> Dense -> Dropout -> Dense,
    for the 8x8 digits."""
    return Network([Conv2D(1, 4, 3, padding=1), BatchNorm(4), ReLU(), MaxPool2D(2), Flatten(),
                    Dense(4 * 4 * 4, 16), Dropout(0.25), Dense(16, 10)])


def test_network_forward_and_backward_with_a_mask_on_the_device(cp):
    net = cnn()
    rng = np.random.default_rng(5)
    params, state = net.init(rng), net.init_state()
    x, labels = rng.standard_normal((6, 1, 8, 8)), rng.integers(0, 10, 6)
    mask = net.trainable_mask(params, frozen_layers=range(3))

    def run(params, state, x, labels):
        out, caches = net.forward(params, x, train=True, state=state,
                                  rng=np.random.default_rng(1))
        value, dout = losses.softmax_cross_entropy(out, labels)
        dx, grads = net.backward(params, caches, dout, mask=mask, input_grad=False)
        return float(value), out, dx, grads, net.update_state(state, caches)

    host = run(params, state, x, labels)
    device = run(to_device(params, cp), to_device(state, cp), cp.asarray(x), cp.asarray(labels))
    assert_identical(host, device)


def _optimizer(kind: str, net: Network, params: list):
    """(optimizer, extra train() arguments) of one training case."""
    if kind == "momentum":
        return momentum(0.05), {}
    if kind == "sam-adam":
        return adam(1e-2), {"step": sam_gradient(0.05)}
    mask = kernel_mask(net, params)  # "layca-unfused": the xp reference step, and a monitor
    index = kernel_layer_index(mask)
    opt = layca(scale_by_momentum(), 0.1, mask=mask, layer_index=index, others="base",
                fused=False)
    return opt, {"monitor": rotation_monitor(params, mask, index), "monitor_every": 2}


@pytest.mark.parametrize("kind", ["momentum", "sam-adam", "layca-unfused"])
def test_cnn_training_on_the_device_is_bit_identical(cp, kind):
    """lastlayer.engine.training.train on device parameters: the (host) dataset follows them to the
    device, and the run gives exactly the parameters, statistics, optimizer state and
    history of the NumPy run."""
    data = digits(images=True)
    net = cnn()
    initial = net.init(np.random.default_rng(0))  # only for the mask and the monitor
    opt, extra = _optimizer(kind, net, initial)
    kwargs = dict(iterations=4, batch_size=32, eval_every=2, quiet=True)
    ts0 = init_train_state(net, opt, seed=3)
    host = train(net, opt, data, ts0, **kwargs, **extra)
    params = to_device(ts0.params, cp)
    moved = dataclasses.replace(ts0, params=params, net_state=to_device(ts0.net_state, cp),
                                opt_state=opt.init(params))  # the state built on the device
    if kind != "momentum":
        assert_identical(ts0.opt_state, moved.opt_state, "opt.init on the device")
    else:  # or moved there
        moved = dataclasses.replace(moved, opt_state=to_device(ts0.opt_state, cp))
    _, extra = _optimizer(kind, net, to_device(initial, cp))
    device = train(net, opt, data, moved, **kwargs, **extra)
    assert device.iteration == host.iteration == 4
    assert_identical(host.params, device.params, "params")
    assert_identical(host.net_state, device.net_state, "net_state")
    assert_identical(host.opt_state, device.opt_state, "opt_state")
    assert device.history == host.history
    floats = [v for values in device.history.values() for v in values]
    assert all(type(v) in (float, int) for v in floats), "history holds device arrays"
    arrays = device.history_arrays()  # what checkpoints save: host arrays
    assert all(np.array_equal(arrays[k], v) for k, v in host.history_arrays().items())
