"""ENTAME (Varno et al. 2019): ledger rows E1-E6 (each shown able to fail), the method's
pieces, and the reproduction (smoke, deterministic)."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from lastlayer.models.ledger import DIFFERS, FAIL, PASS
from lastlayer.models.papers import paper
from lastlayer.models.papers.entame import claims, images, method, protocol, reproduce

from . import assert_row, assert_statistics_at_1_2_3_seeds

ROWS = paper("entame").checks()
# E4-adam: Adam's first step is ~lr per parameter whatever the error's size: no stall;
# E5-*: eqs. 22, 26, 27 as printed do not follow from eq. 21 (docs/claims.md)
DIFFERS_FROM_PAPER = {"E4-adam", "E5-eq22", "E5-eq26", "E5-eq27"}


@pytest.mark.parametrize("check", ROWS, ids=[c.id for c in ROWS])
def test_ledger_row(check):
    assert_row(check, DIFFERS_FROM_PAPER)


# ---- every row can fail: one deliberate mutation each ----------------------------------------------
@pytest.fixture
def fresh(monkeypatch):
    """Clear the cached E6 runs before and after a mutation (a mutated result must not leak)."""
    cached = claims.early_accuracy  # the original: the test may patch the name
    cached.cache_clear()
    yield monkeypatch
    cached.cache_clear()


def test_E1_fails_when_the_identity_breaks(fresh):
    real = claims.error_energy
    fresh.setattr(claims, "error_energy", lambda z, y: real(z, y)._replace(
        phi=real(z, y).phi * (1 + 1e-9)))
    assert claims.e1_bounds().status == FAIL


def test_E2_fails_when_the_loss_is_off(fresh):
    real = claims.softmax_cross_entropy
    fresh.setattr(claims, "softmax_cross_entropy", lambda z, y: (real(z, y)[0] + 1e-3, real(z, y)[1]))
    assert claims.e2_initial_loss().status == FAIL


def test_E3_eq24_rows_fail_with_a_wrong_formula(fresh):
    fresh.setattr(claims, "_eq24", lambda x_bar, y, c: (
        -np.eye(c)[y].T @ x_bar / len(y), -np.eye(c)[y].mean(axis=0)))  # the 1/C term dropped
    assert claims.e3_eq24().status == FAIL
    assert claims.e3_eq24_mei().status == FAIL


def test_E3_eq25_rows_fail_when_the_step_is_not_gamma(fresh):
    real = protocol.optimizer
    fresh.setattr(protocol, "optimizer", lambda name, lr: real(name, 2 * lr))
    assert claims.e3_eq25().status == FAIL
    assert claims.e3_eq25_mei().status == FAIL


def test_E4_stall_fails_when_the_heads_are_not_phi_w(fresh):
    real = claims._heads
    fresh.setattr(claims, "_heads", lambda phi_w, draws, c, k: real(4 * phi_w, draws, c, k))
    assert claims.e4_stall().status == FAIL


def test_E4_release_fails_when_eq8_is_not_linear_in_W(fresh):
    real = claims._gradient
    fresh.setattr(claims, "_gradient", lambda x_bar, y, W: (*real(x_bar, y, W)[:2],
                                                            real(x_bar, y, W)[2] * np.abs(W).max() * 1e3))
    assert claims.e4_release().status == FAIL


def test_E4_sgd_fails_and_E4_adam_passes_when_their_numbers_change(fresh):
    fresh.setattr(protocol, "PHI_W", 1e-6)  # the prediction no longer matches the heads drawn
    assert claims.e4_sgd().status == FAIL
    fresh.setattr(claims, "_body_change", lambda recipe, opt: 1e-4 if recipe == "mei" else 1.0)
    assert claims.e4_adam().status == PASS


def test_E5_rows_fail_or_pass_when_their_inputs_change(fresh):
    real_heads = claims._heads
    fresh.setattr(claims, "_heads", lambda phi_w, draws, c, k: [1.2 * w for w in
                                                                 real_heads(phi_w, draws, c, k)])
    assert claims.e5_eq22().status == FAIL
    real = protocol.optimizer
    fresh.setattr(protocol, "optimizer", lambda name, lr: real(name, 1.5 * lr))
    assert claims.e5_eq26().status == FAIL
    measured, paper_, derived, (low, high) = claims._eq26_rows()
    fresh.setattr(claims, "_eq26_rows", lambda: (np.full_like(measured, (low + high) / 2),
                                                 paper_, derived, (low, high)))
    assert claims.e5_eq27().status == PASS


def test_E6_differs_without_a_gain_and_fails_on_a_broken_protocol(fresh):
    acc = claims.early_accuracy()
    fresh.setattr(claims, "early_accuracy", lambda: {**acc, "mei": acc["base"] + 1e-3 *
                                                     np.sin(np.arange(len(acc["base"])))})
    assert claims.e6_mei().status == DIFFERS
    t, body = claims._body()
    broken = dataclasses.replace(body, source_accuracy=0.5)
    fresh.setattr(claims, "_body", lambda: (t, broken))
    assert claims.e6_mei_fn().status == FAIL


# ---- the method ------------------------------------------------------------------------------------
def test_transplant_keeps_the_body_and_draws_a_max_entropy_head():
    t, body = claims._body()
    net, params, state = method.transplant(body.net, body.params, body.state, 5,
                                           method.RECIPES["mei+fn"], 3)
    assert [type(layer).__name__ for layer in net][-2:] == ["ZNormalize", "Dense"]
    assert all(params[i] is body.params[i] for i in range(len(body.net)))
    assert params[-1]["W"].std() < 1e-5 and not params[-1]["b"].any()
    with pytest.raises(ValueError, match="C: a classifier needs at least 2 classes, got 1"):
        method.transplant(body.net, body.params, body.state, 1, method.RECIPES["mei"], 0)


def test_fine_tune_counts_warm_up_steps_and_trains_every_layer():
    t, body = claims._body()
    r = protocol.run(body, t.target, "base+wu", "sgd", 0, 3)
    assert r["warmup"] == 1 and len(r["accuracy"]) == 3
    net, params, state = method.transplant(body.net, body.params, body.state, 5,
                                           method.RECIPES["mei+fn"], 0)
    ts, warm = method.fine_tune(net, params, state, t.target, method.RECIPES["mei+fn"],
                                protocol.optimizer("adam", 1e-4), 2, seed=0)
    assert warm == 0 and ts.iteration == 2
    assert not np.array_equal(ts.params[0]["W"], params[0]["W"])  # the body trains too


def test_tasks_have_disjoint_classes_and_a_mirror():
    t = protocol.task("digits-5to9")
    assert set(np.unique(t.source.y_train)) == set(range(5)) == set(np.unique(t.target.y_train))
    m = protocol.task("digits-mirror")
    np.testing.assert_array_equal(m.target.x_train.reshape(-1, 8, 8)[:, :, ::-1].reshape(-1, 64),
                                  m.source.x_train)
    with pytest.raises(ValueError, match="task: expected one of digits-5to9, digits-mirror"):
        protocol.task("cifar")


# ---- the reproduction ------------------------------------------------------------------------------
def test_reproduce_entame_smoke_and_determinism(tmp_path, tiny_images):
    monkeypatch = tiny_images
    monkeypatch.setattr(reproduce.Settings, "make",
                        classmethod(lambda cls, quick, seeds: cls(2, 1, 1, 2, **TINY_IMAGES)))
    monkeypatch.setattr(protocol, "TASKS", ("digits-5to9",))
    monkeypatch.setattr(protocol, "PRE_ITERATIONS", 50)
    monkeypatch.setattr(reproduce, "LRS", (1e-4, 1e-2))
    monkeypatch.setattr(reproduce, "PHI_WS", (0.0, 1e-12))
    a = reproduce.run(tmp_path / "a", quick=True, quiet=True)
    b = reproduce.run(tmp_path / "b", quick=True, quiet=True)
    for name in ("results.h5", "report.md", "fig_accuracy_steps.png", "fig_feature_variance.png",
                 "fig_sweeps.png", "fig_images.png"):
        assert (a / name).stat().st_size > 0
    with h5py.File(a / "results.h5") as fa, h5py.File(b / "results.h5") as fb:
        names = []
        fa.visit(names.append)
        assert "digits-5to9/runs/adam/mei+fn/first" in names
        assert fa["mnist/mei+fn/accuracy"].shape == (2, 10)
        assert fa["mnist/probe/variance"].shape == (2, 11)
        assert int(fa["mnist/probe/warmup"][()]) == method.PROBE_STEPS
        assert sorted(fa["mnist/paired"]) == ["mei", "mei+fn", "probe", "variance_jump"]
        for n in names:
            if isinstance(fa[n], h5py.Dataset):
                np.testing.assert_array_equal(fa[n][()], fb[n][()], err_msg=n)
    report = (a / "report.md").read_text()
    assert "Table 3 analogue" in report and "10.86±2.97" in report
    assert "## Images: a CNN body on MNIST" in report and "VGG16 35.29±2.40" in report


def test_reproduce_entame_statistics_follow_the_number_of_seeds(tmp_path, tiny_images):
    monkeypatch = tiny_images
    monkeypatch.setattr(protocol, "TASKS", ("digits-5to9",))
    monkeypatch.setattr(protocol, "PRE_ITERATIONS", 50)
    monkeypatch.setattr(reproduce, "LRS", (1e-4,))
    monkeypatch.setattr(reproduce, "PHI_WS", (0.0,))
    assert_statistics_at_1_2_3_seeds(reproduce, tmp_path, monkeypatch,
                                     lambda n: reproduce.Settings(n, 1, 1, n, **TINY_IMAGES),
                                     compared=True)


# ---- the image experiment (CNN body on MNIST) -------------------------------------------------------
FULL_TASK = images.task


def tiny_task() -> protocol.Task:
    """The image task cut to 160 / 50 images per side: with batch 16, 10 steps an epoch."""
    t = FULL_TASK()

    def cut(d):
        return dataclasses.replace(d, x_train=d.x_train[:160], y_train=d.y_train[:160],
                                   x_test=d.x_test[:50], y_test=d.y_test[:50])

    return protocol.Task(t.name, cut(t.source), cut(t.target))


@pytest.fixture
def tiny_images(monkeypatch):
    monkeypatch.setattr(images, "task", tiny_task)
    monkeypatch.setattr(images, "BATCH", 16)
    return monkeypatch


TINY_IMAGES = {"image_epochs": 2, "image_curve": 10, "image_pretrain": 3}


def test_image_task_is_mnist_digits_0_4_then_5_9_in_float32():
    t = images.task()
    assert t.source.x_train.shape == (2000, 1, 28, 28) and t.target.x_test.shape == (500, 1, 28, 28)
    assert t.source.x_train.dtype == np.float32
    assert set(np.unique(t.source.y_test)) == set(range(5)) == set(np.unique(t.target.y_train))
    assert t.target.n_classes == 5


def test_image_run_splits_its_budget_without_changing_it(tiny_images):
    """The curve phase and the rest of the budget are one run: the final accuracy equals
    that of one unsplit fine-tuning; the variance before step 1 is the body's own."""
    t = images.task()
    body = images.pretrain(t, 0, 3)
    assert [type(layer).__name__ for layer in body.net][-2:] == ["Dense", "ReLU"]
    r = images.run(body, t.target, "mei+fn", 0, epochs=2, curve_steps=10)
    assert r["accuracy"].shape == (10,) and r["variance"].shape == (11,)
    assert r["first"] == pytest.approx(r["accuracy"].mean(), rel=1e-12)
    recipe = method.RECIPES["mei+fn"]
    net, params, state = method.transplant(body.net, body.params, body.state, 5, recipe, 0,
                                           input_shape=(1, 28, 28))
    assert params[-1]["W"].dtype == np.float32 and params[-1]["W"].std() < 1e-5
    ts, _ = method.fine_tune(net, params, state, t.target, recipe,
                             protocol.optimizer("adam", protocol.LR), 20, seed=0,
                             batch_size=16, eval_every=20)
    assert r["final"] == ts.history["test_accuracy"][-1]
    phi = body.net.forward(body.params, t.target.x_test, train=False, state=body.state)[0]
    assert r["variance"][0] == pytest.approx(float(phi.astype(np.float64).var(axis=0).mean()),
                                             rel=1e-12)
    with pytest.raises(ValueError, match=r"curve_steps: expected 10 <= curve_steps <= 20"):
        images.run(body, t.target, "base", 0, epochs=2, curve_steps=21)


def test_image_pretraining_below_the_source_accuracy_is_a_broken_protocol(tiny_images):
    tiny_images.setattr(images, "PRE_ITERATIONS", 2)
    with pytest.raises(RuntimeError, match="the pre-training is broken"):
        images.pretrain(images.task(), 0, 2)
