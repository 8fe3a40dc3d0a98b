"""Layca (Carbonnelle & De Vleeschouwer, Algorithm 1): claims C1-C4 exactly, masks, other
tensors, checkpoint resume, errors, monitoring helpers and the fused kernels."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from engine import BatchNorm, Conv2D, Dense, Flatten, Network, ReLU
from engine import checkpoint as C
from engine import layca as L
from engine import optim as O
from engine.data import toy_classification
from engine.losses import softmax_cross_entropy
from engine.training import init_train_state, train


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
    mask = L.kernel_mask(net, params)
    return mask, L.kernel_layer_index(mask)


def step(opt, state, grads, params):
    updates, state = opt.update(grads, state, params)
    return O.apply_updates(params, updates), state, updates


# ---- C1: norms are preserved ---------------------------------------------------------------
@pytest.mark.parametrize("base", [O.identity(), O.scale_by_adam()], ids=["sgd", "adam"])
def test_C1_norms_stay_equal_to_the_initial_norms_over_1000_steps(base):
    """Random steps of wildly varying scale (1e-3 .. 1e3) and a large rate: after every one
    of 1000 steps each kernel's norm equals its initial norm to 1e-12 relative."""
    rng = np.random.default_rng(1)
    params = [{"W": rng.standard_normal((5, 7))}, {"W": rng.standard_normal((4, 3, 3, 3))}]
    mask = [{"W": True}, {"W": True}]
    opt = L.layca(base, 0.7, -0.3, mask=mask, layer_index=L.kernel_layer_index(mask))
    state = opt.init(params)
    norms0 = [np.linalg.norm(p["W"]) for p in params]
    worst = 0.0
    for _ in range(1000):
        grads = [{"W": 10.0 ** rng.uniform(-3, 3) * rng.standard_normal(p["W"].shape)}
                 for p in params]
        params, state, _ = step(opt, state, grads, params)
        worst = max(worst, *(abs(np.linalg.norm(p["W"]) / n0 - 1) for p, n0 in zip(params, norms0)))
    assert worst < 1e-12
    assert state.count == 1000 and state.zero_steps == [{"W": 0}, {"W": 0}]


def test_C1_norms_preserved_while_training_a_network():
    data = toy_classification(n_train=64, n_test=16, dim=6, seed=0)
    net = mlp()
    params = net.init(np.random.default_rng(0))
    mask, index = kernels_of(net, params)
    opt = L.layca_sgd_amom(0.05, mask=mask, layer_index=index)
    ts = init_train_state(net, opt, seed=3)
    ts = train(net, opt, data, ts, iterations=300, batch_size=16, quiet=True)
    for p, p0 in zip(ts.params, init_train_state(net, opt, seed=3).params):
        for name in p:
            assert abs(np.linalg.norm(p[name]) / np.linalg.norm(p0[name]) - 1) < 1e-12


# ---- C2: one step rotates by exactly arctan(rho_l) --------------------------------------------
@pytest.mark.parametrize("loss_scale", [1e-6, 1.0, 1e6])
@pytest.mark.parametrize("base", [O.identity(), O.scale_by_momentum(0.9)],
                         ids=["sgd", "momentum"])
def test_C2_the_angle_of_every_step_is_arctan_rho_l_whatever_the_loss_scale(loss_scale, base):
    net = mlp()
    params = net.init(np.random.default_rng(2))
    mask, index = kernels_of(net, params)
    rho, alpha = 0.2, -0.6
    opt = L.layca(base, rho, alpha, mask=mask, layer_index=index)
    expected = np.arctan(rho * L.rate_multipliers(alpha, 3))  # layers 0, 2, 4 of the net
    state = opt.init(params)
    for t in range(20):
        x, y = batch(t)
        new, state, _ = step(opt, state, gradients(net, params, x, y, loss_scale), params)
        angles = [L.rotation_angle(params[i]["W"], new[i]["W"]) for i in (0, 2, 4)]
        np.testing.assert_allclose(angles, expected, rtol=1e-10, atol=0)
        params = new


def test_C2_the_step_does_not_depend_on_the_gradient_scale():
    """Scaling the loss by 1e-6 or 1e6 gives the same new weights (to rounding)."""
    net = mlp()
    params = net.init(np.random.default_rng(3))
    mask, index = kernels_of(net, params)
    x, y = batch(0)
    results = []
    for scale in (1e-6, 1.0, 1e6):
        opt = L.layca_sgd(0.1, mask=mask, layer_index=index)
        new, _, _ = step(opt, opt.init(params), gradients(net, params, x, y, scale), params)
        results.append(new)
    for other in (results[0], results[2]):
        for a, b in zip(other, results[1]):
            for k in a:
                np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-14)


# ---- C3: layer-wise multipliers ---------------------------------------------------------------
def test_C3_multipliers_follow_the_formula():
    # L = 3, alpha = 0.5: (1/2)^(5 (2 - i) / 2); alpha = -0.5: (1/2)^(5 i / 2)
    np.testing.assert_allclose(L.rate_multipliers(0.5, 3), [0.5**5, 0.5**2.5, 1.0], rtol=1e-15)
    np.testing.assert_allclose(L.rate_multipliers(-0.5, 3), [1.0, 0.5**2.5, 0.5**5], rtol=1e-15)
    for alpha in (-0.8, -0.4, 0.4, 0.8):
        got = L.rate_multipliers(alpha, 11)
        i = np.arange(11)
        want = (1 - alpha) ** (5 * (10 - i) / 10) if alpha > 0 else (1 + alpha) ** (5 * i / 10)
        np.testing.assert_allclose(got, want, rtol=1e-15)
        assert np.all(np.diff(got) > 0) == (alpha > 0)  # alpha > 0 favours the last layers


def test_C3_edge_cases():
    np.testing.assert_array_equal(L.rate_multipliers(0.0, 7), np.ones(7))
    np.testing.assert_array_equal(L.rate_multipliers(1.0, 4), [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(L.rate_multipliers(-1.0, 4), [1.0, 0.0, 0.0, 0.0])
    for alpha in (-1.0, -0.3, 0.0, 0.3, 1.0):
        np.testing.assert_array_equal(L.rate_multipliers(alpha, 1), [1.0])


def test_C3_the_transform_uses_the_multipliers_and_a_schedule():
    """alpha = 1: only the last layer moves; a schedule's rate at update t is used."""
    net = mlp()
    params = net.init(np.random.default_rng(4))
    mask, index = kernels_of(net, params)
    schedule = O.StepDecay(0.3, boundaries=(1,), factor=0.1)
    opt = L.layca_sgd(schedule, 1.0, mask=mask, layer_index=index)
    state = opt.init(params)
    x, y = batch(0)
    for rho in (0.3, 0.03):
        new, state, updates = step(opt, state, gradients(net, params, x, y), params)
        assert not updates[0]["W"].any() and not updates[2]["W"].any()
        assert L.rotation_angle(params[4]["W"], new[4]["W"]) == pytest.approx(math.atan(rho),
                                                                              rel=1e-12)
        params = new


def test_per_tensor_multipliers_give_sgd_the_same_layer_wise_rates():
    net = Network([Dense(6, 8), ReLU(), Dense(8, 3)])
    params = net.init(np.random.default_rng(0))
    _, index = kernels_of(net, params)
    tree = L.per_tensor_multipliers(0.5, index, params)
    assert tree == [{"W": 0.5**5, "b": 1.0}, {}, {"W": 1.0, "b": 1.0}]


# ---- C4: degenerate steps ----------------------------------------------------------------------
def test_C4_zero_nan_and_inf_steps_never_corrupt_the_weights_and_are_counted():
    rng = np.random.default_rng(5)
    params = [{"W": rng.standard_normal((4, 5))}, {"W": rng.standard_normal((3, 4))}]
    mask = [{"W": True}, {"W": True}]
    opt = L.layca_sgd(0.5, mask=mask, layer_index=L.kernel_layer_index(mask))
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


def test_C4_nonfinite_entries_count_as_zero():
    rng = np.random.default_rng(6)
    w, s = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    dirty = s.copy()
    dirty[0, :3] = [np.nan, np.inf, -np.inf]
    clean = s.copy()
    clean[0, :3] = 0.0
    got, info = L.layca_step(w, dirty, 0.1, 2.0)
    want, _ = L.layca_step(w, clean, 0.1, 2.0)
    np.testing.assert_array_equal(got, want)
    assert info == L.LaycaStepInfo(nonfinite=3, zero_step=False)
    assert np.linalg.norm(got) == pytest.approx(2.0, rel=1e-15)


def test_C4_extreme_finite_steps_do_not_overflow():
    rng = np.random.default_rng(7)
    w, s = rng.standard_normal(50), rng.standard_normal(50)
    reference, _ = L.layca_step(w, s, 0.1, 1.0)
    # s.w and ||s||^2 would under/overflow without the rescaling (eps = 0: no zero-step test)
    for scale in (1e-250, 1e250):
        got, info = L.layca_step(w, scale * s, 0.1, 1.0, eps=0.0)
        assert not info.zero_step
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-14)


def test_layca_step_matches_a_direct_transcription_of_algorithm_1():
    rng = np.random.default_rng(8)
    w, s = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    v, u = w.ravel(), s.ravel()
    u = u - (u @ v) / (v @ v) * v
    u = u * np.linalg.norm(v) / np.linalg.norm(u)
    new = v - 0.25 * u
    new = new * 1.5 / np.linalg.norm(new)
    got, _ = L.layca_step(w, s, 0.25, 1.5)
    assert got.shape == w.shape
    np.testing.assert_allclose(got.ravel(), new, rtol=1e-14, atol=1e-15)


# ---- masks and the other tensors ----------------------------------------------------------------
def cnn() -> Network:
    return Network([Conv2D(1, 2, 3), BatchNorm(2), ReLU(), Flatten(), Dense(2 * 4 * 4, 3)])


def test_kernel_mask_selects_kernels_by_layer_type():
    net = cnn()
    params = net.init(np.random.default_rng(0))
    mask = L.kernel_mask(net, params)
    assert mask == [{"W": True, "b": False}, {"gamma": False, "beta": False}, {}, {},
                    {"W": True, "b": False}]
    assert L.kernel_layer_index(mask) == [{"W": 0}, {}, {}, {}, {"W": 1}]


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
    opt = L.layca_adam(mask=mask, layer_index=index)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    assert [sorted(u) for u in updates] == [["W"], [], [], [], ["W"]]
    assert [sorted(m) for m in state.base.mu] == [["W"], [], [], [], ["W"]]  # base sees kernels only


def test_other_tensors_updated_by_the_base_rule():
    net, params, grads = conv_problem()
    mask, index = kernels_of(net, params)
    rho = 0.05
    opt = L.layca(O.scale_by_momentum(0.9), rho, mask=mask, layer_index=index, others="base")
    state = opt.init(params)
    for _ in range(2):
        updates, state = opt.update(grads, state, params)
    velocity = 1.9 * grads[1]["gamma"]  # v = g, then 0.9 g + g
    np.testing.assert_allclose(updates[1]["gamma"], -rho * velocity, rtol=1e-15)
    np.testing.assert_allclose(updates[4]["b"], -rho * 1.9 * grads[4]["b"], rtol=1e-15)
    assert L.rotation_angle(params[0]["W"], params[0]["W"] + updates[0]["W"]) == \
        pytest.approx(math.atan(rho), rel=1e-12)


def test_an_explicit_mask_can_choose_any_tensors():
    """Layca on the first kernel only; a gradient that omits a tensor leaves it alone."""
    net, params, grads = conv_problem()
    mask = [{"W": True, "b": False}, {"gamma": False, "beta": False}, {}, {},
            {"W": False, "b": False}]
    opt = L.layca_sgd(0.1, mask=mask, layer_index=L.kernel_layer_index(mask))
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    assert [sorted(u) for u in updates] == [["W"], [], [], [], []]
    updates, state = opt.update([{}, {}, {}, {}, {"W": grads[4]["W"]}], state, params)
    assert updates == [{}, {}, {}, {}, {}] and state.count == 2


def test_float32_stays_float32_and_the_state_is_never_mutated():
    rng = np.random.default_rng(11)
    params = [{"W": rng.standard_normal((4, 4)).astype(np.float32)}]
    mask = [{"W": True}]
    opt = L.layca_sgd_amom(0.1, mask=mask, layer_index=[{"W": 0}])
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
    opt = L.layca_adam(O.StepDecay(0.05, boundaries=(20,)), -0.4, mask=mask, layer_index=index,
                       others="base")
    kw = dict(batch_size=32, quiet=True)
    straight = train(net, opt, data, init_train_state(net, opt, 4), iterations=30, **kw)
    first = train(net, opt, data, init_train_state(net, opt, 4), iterations=13, **kw)
    C.save_checkpoint(tmp_path / "ck.h5", net, first)
    restored = C.load_checkpoint(tmp_path / "ck.h5", net=net, opt=opt).train_state
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
    opt = L.layca_sgd(mask=mask, layer_index=L.kernel_layer_index(mask))
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
        L.layca_sgd(**args)


def test_a_mask_of_another_structure_is_an_error():
    opt = L.layca_sgd(mask=[{"W": True}], layer_index=[{"W": 0}])
    with pytest.raises(ValueError, match=r"mask: layer 0 has parameters \['W', 'b'\], the mask names \['W'\]"):
        opt.init([{"W": np.ones(2), "b": np.ones(2)}])


# ---- monitoring ---------------------------------------------------------------------------------------
def test_rotation_angle_and_layer_rotation_on_known_rotations():
    a = np.array([1.0, 0.0, 0.0])
    for theta in (1e-9, 1e-4, 0.3, 3.0):
        b = 5.0 * np.array([math.cos(theta), math.sin(theta), 0.0])
        assert L.rotation_angle(a, b) == pytest.approx(theta, rel=1e-14)
        rot = L.layer_rotation([{"W": b}], [{"W": a}], [{"W": True}])
        assert rot[0] == pytest.approx(2 * math.sin(theta / 2) ** 2, rel=1e-14)  # 1 - cos


def test_rotation_monitor_records_every_kernel_layer_during_training():
    data = toy_classification(n_train=64, n_test=16, dim=6, seed=0)
    net = mlp()
    mask, index = kernels_of(net, net.init(np.random.default_rng(0)))
    opt = L.layca_sgd(0.05, mask=mask, layer_index=index)
    ts = init_train_state(net, opt, seed=0)
    monitor = L.rotation_monitor(ts.params, mask, index)
    ts = train(net, opt, data, ts, iterations=8, batch_size=16, quiet=True, monitor=monitor,
               monitor_every=4)
    assert ts.history["monitor_iteration"] == [4, 8]
    for k in range(3):
        values = ts.history[f"rotation_{k}"]
        assert len(values) == 2 and 0 < values[0] < values[1] < 1


# ---- the fused kernels ----------------------------------------------------------------------------------
def test_fused_equals_unfused():
    pytest.importorskip("kernels.layca", reason="kernels.layca (the fused Layca kernels) is not "
                        "available in this checkout")
    rng = np.random.default_rng(12)
    params = [{"W": rng.standard_normal((16, 9))}, {"W": rng.standard_normal((4, 3, 3, 3))},
              {"W": rng.standard_normal((3, 16))}]
    mask = [{"W": True}] * 3
    index = L.kernel_layer_index(mask)
    fused = L.layca_adam(0.1, -0.4, mask=mask, layer_index=index, fused=True)
    plain = L.layca_adam(0.1, -0.4, mask=mask, layer_index=index)
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


def test_fused_without_the_kernels_warns_and_uses_the_reference(monkeypatch):
    import kernels

    monkeypatch.setitem(sys.modules, "kernels.layca", None)  # makes the import fail
    monkeypatch.delattr(kernels, "layca", raising=False)  # set once kernels.layca was imported
    mask = [{"W": True}]
    with pytest.warns(UserWarning, match="kernels.layca cannot be imported"):
        opt = L.layca_sgd(0.1, mask=mask, layer_index=[{"W": 0}], fused=True)
    params = [{"W": np.ones((2, 3))}]
    updates, _ = opt.update([{"W": np.arange(6.0).reshape(2, 3)}], opt.init(params), params)
    want, _ = L.layca_step(params[0]["W"], np.arange(6.0).reshape(2, 3), 0.1, math.sqrt(6))
    np.testing.assert_array_equal(updates[0]["W"], want - params[0]["W"])
