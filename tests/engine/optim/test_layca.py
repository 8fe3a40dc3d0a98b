"""The Layca transform (lastlayer.engine.optim.layca): what it adds to the one-tensor step (kernels,
tested there) and beyond the ledger's rows C1-C4 (tests/models/papers/test_layca.py): the
training loop, gradient scale, edge multipliers, schedules, per-tensor counters, masks,
other tensors, checkpoint resume, errors, monitoring helpers and the fused path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lastlayer.engine import BatchNorm, Conv2D, Dense, Flatten, Network, ReLU
from lastlayer.engine import optim
from lastlayer.engine.optim import layca
from lastlayer.engine.training import checkpoint
from lastlayer.engine.training.data import toy_classification
from lastlayer.engine.losses import softmax_cross_entropy
from lastlayer.engine.training import init_train_state, train


def mlp(bias: bool = False) -> Network:
    return Network([Dense(6, 8, bias=bias), ReLU(), Dense(8, 8, bias=bias), ReLU(),
                    Dense(8, 3, bias=bias)])


def batch(seed: int = 0, n: int = 16):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.integers(0, 3, n)


def gradients(net, params, x, y, loss_scale: float = 1.0):
    """Gradients of loss_scale * CE(net(x), y)."""
    out, caches = net.forward(params, x, train=True)
    _, dy = softmax_cross_entropy(out, y)
    return net.backward(params, caches, loss_scale * dy)[1]


def kernels_of(net, params):
    mask = layca.kernel_mask(net, params)
    return mask, layca.kernel_layer_index(mask)


def step(opt, state, grads, params):
    updates, state = opt.update(grads, state, params)
    return optim.apply_updates(params, updates), state, updates


# ---- properties of the transform beyond the ledger's rows C1-C4 (tests/models/papers) ----------
def test_norms_are_preserved_inside_the_training_loop():
    data = toy_classification(n_train=64, n_test=16, dim=6, seed=0)
    net = mlp()
    params = net.init(np.random.default_rng(0))
    mask, index = kernels_of(net, params)
    opt = layca.layca_sgd_amom(0.05, mask=mask, layer_index=index)
    ts = init_train_state(net, opt, seed=3)
    ts = train(net, opt, data, ts, iterations=300, batch_size=16, quiet=True)
    for p, p0 in zip(ts.params, init_train_state(net, opt, seed=3).params):
        for name in p:
            assert abs(np.linalg.norm(p[name]) / np.linalg.norm(p0[name]) - 1) < 1e-12


def test_the_new_weights_do_not_depend_on_the_gradient_scale():
    """Scaling the loss by 1e-6 or 1e6 gives the same new weights (to rounding)."""
    net = mlp()
    params = net.init(np.random.default_rng(3))
    mask, index = kernels_of(net, params)
    x, y = batch(0)
    results = []
    for scale in (1e-6, 1.0, 1e6):
        opt = layca.layca_sgd(0.1, mask=mask, layer_index=index)
        new, _, _ = step(opt, opt.init(params), gradients(net, params, x, y, scale), params)
        results.append(new)
    for other in (results[0], results[2]):
        for a, b in zip(other, results[1]):
            for k in a:
                np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-14)


def test_multipliers_at_the_edges_are_exact():
    np.testing.assert_array_equal(layca.rate_multipliers(0.0, 7), np.ones(7))
    np.testing.assert_array_equal(layca.rate_multipliers(1.0, 4), [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(layca.rate_multipliers(-1.0, 4), [1.0, 0.0, 0.0, 0.0])
    for alpha in (-1.0, -0.3, 0.0, 0.3, 1.0):
        np.testing.assert_array_equal(layca.rate_multipliers(alpha, 1), [1.0])


def test_the_transform_uses_the_multipliers_and_a_schedule():
    """alpha = 1: only the last layer moves; a schedule's rate at update t is used."""
    net = mlp()
    params = net.init(np.random.default_rng(4))
    mask, index = kernels_of(net, params)
    schedule = optim.StepDecay(0.3, boundaries=(1,), factor=0.1)
    opt = layca.layca_sgd(schedule, 1.0, mask=mask, layer_index=index)
    state = opt.init(params)
    x, y = batch(0)
    for rho in (0.3, 0.03):
        new, state, updates = step(opt, state, gradients(net, params, x, y), params)
        assert not updates[0]["W"].any() and not updates[2]["W"].any()
        angle = layca.rotation_angle(params[4]["W"], new[4]["W"])
        assert angle == pytest.approx(math.atan(rho), rel=1e-12)
        params = new


def test_per_tensor_multipliers_give_sgd_the_same_layer_wise_rates():
    net = Network([Dense(6, 8), ReLU(), Dense(8, 3)])
    params = net.init(np.random.default_rng(0))
    _, index = kernels_of(net, params)
    tree = layca.per_tensor_multipliers(0.5, index, params)
    assert tree == [{"W": 0.5**5, "b": 1.0}, {}, {"W": 1.0, "b": 1.0}]


# ---- degenerate steps, counted per tensor -------------------------------------------------------
def test_degenerate_steps_leave_their_layer_alone_and_are_counted_per_tensor():
    rng = np.random.default_rng(5)
    params = [{"W": rng.standard_normal((4, 5))}, {"W": rng.standard_normal((3, 4))}]
    mask = [{"W": True}, {"W": True}]
    opt = layca.layca_sgd(0.5, mask=mask, layer_index=layca.kernel_layer_index(mask))
    state = opt.init(params)
    g = rng.standard_normal((3, 4))
    bad = [
        ([{"W": np.zeros((4, 5))}, {"W": g}], (0, 0), (1, 0)),  # zero step
        ([{"W": np.full((4, 5), np.nan)}, {"W": g}], (20, 0), (1, 0)),  # all NaN -> zero step
        ([{"W": np.full((4, 5), np.inf)}, {"W": g}], (20, 0), (1, 0)),  # all Inf -> zero step
        ([{"W": np.full((4, 5), 1e-9)}, {"W": g}], (0, 0), (1, 0)),  # ||s|| <= eps
        ([{"W": params[0]["W"] * 3.0}, {"W": g}], (0, 0), (1, 0)),  # parallel to w: projects to 0
    ]
    for grads, nonfinite, zero in bad:
        before = state
        new, state, updates = step(opt, state, grads, params)
        assert np.all(np.isfinite(new[0]["W"])) and np.all(np.isfinite(new[1]["W"]))
        np.testing.assert_array_equal(new[0]["W"], params[0]["W"])  # zero step: no change at all
        assert not updates[0]["W"].any()
        assert state.nonfinite[0]["W"] - before.nonfinite[0]["W"] == nonfinite[0]
        assert state.zero_steps[0]["W"] - before.zero_steps[0]["W"] == zero[0]
        assert state.zero_steps[1]["W"] == before.zero_steps[1]["W"]  # layer 1 stepped
        params = new


# ---- masks and the other tensors ----------------------------------------------------------------
def cnn() -> Network:
    return Network([Conv2D(1, 2, 3), BatchNorm(2), ReLU(), Flatten(), Dense(2 * 4 * 4, 3)])


def test_kernel_mask_selects_kernels_by_layer_type():
    net = cnn()
    params = net.init(np.random.default_rng(0))
    mask = layca.kernel_mask(net, params)
    assert mask == [{"W": True, "b": False}, {"gamma": False, "beta": False}, {}, {},
                    {"W": True, "b": False}]
    assert layca.kernel_layer_index(mask) == [{"W": 0}, {}, {}, {}, {"W": 1}]


def conv_problem():
    net = cnn()
    params = net.init(np.random.default_rng(9))
    for p in params:  # non-zero biases / shifts so that "frozen" is visible
        for name in ("b", "beta"):
            if name in p:
                p[name] = p[name] + 0.1
    x = np.random.default_rng(10).standard_normal((5, 1, 6, 6))
    y = np.array([0, 1, 2, 0, 1])
    out, caches = net.forward(params, x, train=True)
    grads = net.backward(params, caches, softmax_cross_entropy(out, y)[1])[1]
    return net, params, grads


def test_other_tensors_frozen_by_default():
    net, params, grads = conv_problem()
    mask, index = kernels_of(net, params)
    opt = layca.layca_adam(mask=mask, layer_index=index)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    assert [sorted(u) for u in updates] == [["W"], [], [], [], ["W"]]
    assert [sorted(m) for m in state.base.mu] == [["W"], [], [], [], ["W"]]  # base sees kernels only


def test_other_tensors_updated_by_the_base_rule():
    net, params, grads = conv_problem()
    mask, index = kernels_of(net, params)
    rho = 0.05
    opt = layca.layca(optim.scale_by_momentum(0.9), rho, mask=mask, layer_index=index, others="base")
    state = opt.init(params)
    for _ in range(2):
        updates, state = opt.update(grads, state, params)
    velocity = 1.9 * grads[1]["gamma"]  # v = g, then 0.9 g + g
    np.testing.assert_allclose(updates[1]["gamma"], -rho * velocity, rtol=1e-15)
    np.testing.assert_allclose(updates[4]["b"], -rho * 1.9 * grads[4]["b"], rtol=1e-15)
    assert layca.rotation_angle(params[0]["W"], params[0]["W"] + updates[0]["W"]) == \
        pytest.approx(math.atan(rho), rel=1e-12)


def test_an_explicit_mask_can_choose_any_tensors():
    """Layca on the first kernel only; a gradient that omits a tensor leaves it alone."""
    net, params, grads = conv_problem()
    mask = [{"W": True, "b": False}, {"gamma": False, "beta": False}, {}, {},
            {"W": False, "b": False}]
    opt = layca.layca_sgd(0.1, mask=mask, layer_index=layca.kernel_layer_index(mask))
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    assert [sorted(u) for u in updates] == [["W"], [], [], [], []]
    updates, state = opt.update([{}, {}, {}, {}, {"W": grads[4]["W"]}], state, params)
    assert updates == [{}, {}, {}, {}, {}] and state.count == 2


def test_float32_stays_float32_and_the_state_is_never_mutated():
    rng = np.random.default_rng(11)
    params = [{"W": rng.standard_normal((4, 4)).astype(np.float32)}]
    mask = [{"W": True}]
    opt = layca.layca_sgd_amom(0.1, mask=mask, layer_index=[{"W": 0}])
    state = opt.init(params)
    grads = [{"W": rng.standard_normal((4, 4)).astype(np.float32)}]
    new, new_state, updates = step(opt, state, grads, params)
    assert updates[0]["W"].dtype == np.float32 and new[0]["W"].dtype == np.float32
    assert abs(np.linalg.norm(new[0]["W"].astype(np.float64)) / state.initial_norm[0]["W"] - 1) < 1e-6
    assert state.count == 0 and not state.base.ema[0]["W"].any()
    assert new_state.count == 1


# ---- checkpoints -----------------------------------------------------------------------------------
def test_train_save_load_resume_is_bit_identical(tmp_path):
    data = toy_classification(n_train=96, n_test=32, dim=6, seed=1)
    net = Network([Dense(6, 8), ReLU(), Dense(8, 8), ReLU(), Dense(8, 3)])
    params = net.init(np.random.default_rng(0))
    mask, index = kernels_of(net, params)
    opt = layca.layca_adam(optim.StepDecay(0.05, boundaries=(20,)), -0.4, mask=mask,
                           layer_index=index, others="base")
    kw = dict(batch_size=32, quiet=True)
    straight = train(net, opt, data, init_train_state(net, opt, 4), iterations=30, **kw)
    first = train(net, opt, data, init_train_state(net, opt, 4), iterations=13, **kw)
    checkpoint.save_checkpoint(tmp_path / "ck.h5", net, first)
    restored = checkpoint.load_checkpoint(tmp_path / "ck.h5", net=net, opt=opt).train_state
    assert restored.opt_state.initial_norm == first.opt_state.initial_norm
    resumed = train(net, opt, data, restored, iterations=30, **kw)
    for a, b in zip(resumed.params, straight.params):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert resumed.opt_state.count == straight.opt_state.count == 30
    assert resumed.opt_state.zero_steps == straight.opt_state.zero_steps


# ---- errors -----------------------------------------------------------------------------------------
def test_a_zero_kernel_is_an_error_naming_it():
    params = [{"W": np.ones((2, 2))}, {"W": np.zeros((2, 2)), "b": np.ones(2)}]
    mask = [{"W": True}, {"W": True, "b": False}]
    opt = layca.layca_sgd(mask=mask, layer_index=layca.kernel_layer_index(mask))
    with pytest.raises(ValueError, match=r"layer 1 parameter 'W' has norm 0.0"):
        opt.init(params)


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=1.5), r"alpha: expected a value in \[-1, 1\], got 1.5"),
    (dict(alpha=-1.01), r"alpha: expected a value in \[-1, 1\], got -1.01"),
    (dict(alpha=math.nan), r"alpha: expected a value in \[-1, 1\], got nan"),
    (dict(others="sgd"), "others: expected 'frozen' or 'base', got 'sgd'"),
    (dict(layer_index=[{"W": 0}, {}]), r"layer_index: layer 1 indexes \[\], but the mask selects \['W'\]"),
    (dict(layer_index=[{"W": 0}, {"W": 2}]), r"indices must be 0 .. L-1 with none missing, got \[0, 2\]"),
    (dict(mask=[{"W": False}, {"W": False}], layer_index=[{}, {}]), "selects no tensor"),
    (dict(lr=0.0), "lr: expected > 0, got 0.0"),
])
def test_bad_arguments(kwargs, message):
    args = dict(mask=[{"W": True}, {"W": True}], layer_index=[{"W": 0}, {"W": 1}])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        layca.layca_sgd(**args)


def test_a_mask_of_another_structure_is_an_error():
    opt = layca.layca_sgd(mask=[{"W": True}], layer_index=[{"W": 0}])
    with pytest.raises(ValueError, match=r"mask at \[0\] names \['W'\], but params there hold \['W', 'b'\]"):
        opt.init([{"W": np.ones(2), "b": np.ones(2)}])


# ---- monitoring ---------------------------------------------------------------------------------------
def test_rotation_angle_and_layer_rotation_on_known_rotations():
    a = np.array([1.0, 0.0, 0.0])
    for theta in (1e-9, 1e-4, 0.3, 3.0):
        b = 5.0 * np.array([math.cos(theta), math.sin(theta), 0.0])
        assert layca.rotation_angle(a, b) == pytest.approx(theta, rel=1e-14)
        rot = layca.layer_rotation([{"W": b}], [{"W": a}], [{"W": True}])
        assert rot[0] == pytest.approx(2 * math.sin(theta / 2) ** 2, rel=1e-14)  # 1 - cos


def test_rotation_monitor_records_every_kernel_layer_during_training():
    data = toy_classification(n_train=64, n_test=16, dim=6, seed=0)
    net = mlp()
    mask, index = kernels_of(net, net.init(np.random.default_rng(0)))
    opt = layca.layca_sgd(0.05, mask=mask, layer_index=index)
    ts = init_train_state(net, opt, seed=0)
    monitor = layca.rotation_monitor(ts.params, mask, index)
    ts = train(net, opt, data, ts, iterations=8, batch_size=16, quiet=True, monitor=monitor,
               monitor_every=4)
    assert ts.history["monitor_iteration"] == [4, 8]
    for k in range(3):
        values = ts.history[f"rotation_{k}"]
        assert len(values) == 2 and 0 < values[0] < values[1] < 1


# ---- the fused kernels ----------------------------------------------------------------------------------
def test_fused_equals_unfused():
    rng = np.random.default_rng(12)
    params = [{"W": rng.standard_normal((16, 9))}, {"W": rng.standard_normal((4, 3, 3, 3))},
              {"W": rng.standard_normal((3, 16))}]
    mask = [{"W": True}] * 3
    index = layca.kernel_layer_index(mask)
    fused = layca.layca_adam(0.1, -0.4, mask=mask, layer_index=index, fused=True)
    plain = layca.layca_adam(0.1, -0.4, mask=mask, layer_index=index, fused=False)
    sf, sp = fused.init(params), plain.init(params)
    pf = pp = params
    for t in range(5):
        grads = [{"W": rng.standard_normal(p["W"].shape)} for p in params]
        if t == 2:
            grads[0]["W"][0, 0] = np.nan
            grads[2]["W"][:] = 0.0
        pf, sf, _ = step(fused, sf, grads, pf)
        pp, sp, _ = step(plain, sp, grads, pp)
        for a, b in zip(pf, pp):
            np.testing.assert_allclose(a["W"], b["W"], rtol=0, atol=1e-13)
    assert sf.nonfinite == sp.nonfinite and sf.zero_steps == sp.zero_steps


def test_in_place_step_equals_the_functional_update():
    """update_in_place (the loop's path) writes what update returns, up to the one rounding
    of w + (w_new - w); frozen-by-mask tensors with others="base" get -rho d in both."""
    rng = np.random.default_rng(13)
    params = [{"W": rng.standard_normal((16, 9)), "b": rng.standard_normal(16)},
              {"W": rng.standard_normal((3, 16)), "b": rng.standard_normal(3)}]
    mask = [{"W": True, "b": False}] * 2
    index = layca.kernel_layer_index(mask)
    opt = layca.layca_sgd_amom(0.2, 0.3, mask=mask, layer_index=index, others="base")
    assert layca.layca_sgd(mask=mask, layer_index=index, fused=False).update_in_place is None
    state = opt.init(params)
    grads = [{k: rng.standard_normal(v.shape) for k, v in p.items()} for p in params]
    functional, state_f, _ = step(opt, state, grads, params)
    live = [{k: v.copy() for k, v in p.items()} for p in params]
    state_i = opt.update_in_place(grads, state, live)
    for a, b in zip(live, functional):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=4e-16 * np.abs(b[k]).max())
    assert state_i.count == state_f.count == 1
    np.testing.assert_array_equal(state_i.base.ema[0]["W"], state_f.base.ema[0]["W"])


@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_training_loop_in_place_fused_matches_unfused_reference(rule):
    """300 iterations of the training loop in float64: the default (fused, in place) and the
    unfused reference applied functionally end within 1e-12 of each other, and the loop
    never writes into the TrainState it was given."""
    data = toy_classification(n_train=64, n_test=16, dim=6, seed=1)
    net = mlp(bias=True)
    params = net.init(np.random.default_rng(1))
    mask, index = kernels_of(net, params)
    make = layca.LAYCA_OPTIMIZERS[rule]
    fused = make(0.05, 0.5, mask=mask, layer_index=index, others="base")
    unfused = make(0.05, 0.5, mask=mask, layer_index=index, others="base", fused=False)
    start = init_train_state(net, fused, seed=4)
    before = [{k: v.copy() for k, v in p.items()} for p in start.params]
    end_f = train(net, fused, data, start, iterations=300, batch_size=16, quiet=True)
    end_u = train(net, unfused, data, init_train_state(net, unfused, seed=4), iterations=300,
                  batch_size=16, quiet=True)
    for p, q, b in zip(end_f.params, end_u.params, start.params):
        for k in p:
            np.testing.assert_allclose(p[k], q[k], rtol=0, atol=1e-12 * np.abs(q[k]).max())
            assert not np.shares_memory(p[k], b[k])
    for p, b in zip(start.params, before):
        for k in p:
            np.testing.assert_array_equal(p[k], b[k])
    assert end_f.history["batch_loss"][-1] < end_f.history["batch_loss"][0]


def test_fused_path_takes_the_reference_for_a_step_that_overflows_float64():
    """Finite gradient entries of 1e200: s.s overflows, the kernel refuses (nothing written)
    and the engine does the step with the reference, which rescales s first."""
    rng = np.random.default_rng(14)
    params = [{"W": rng.standard_normal((5, 4))}]
    mask = [{"W": True}]
    index = layca.kernel_layer_index(mask)
    grads = [{"W": 1e200 * rng.standard_normal((5, 4))}]
    fused = layca.layca_sgd(0.1, mask=mask, layer_index=index)
    plain = layca.layca_sgd(0.1, mask=mask, layer_index=index, fused=False)
    live = [{"W": params[0]["W"].copy()}]
    fused.update_in_place(grads, fused.init(params), live)
    expected, _, _ = step(plain, plain.init(params), grads, params)
    np.testing.assert_allclose(live[0]["W"], expected[0]["W"], rtol=0, atol=1e-15)
    assert abs(np.linalg.norm(live[0]["W"]) / np.linalg.norm(params[0]["W"]) - 1) < 1e-15
