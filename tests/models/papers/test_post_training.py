"""Post-training (Moreau & Audiffren 2017): the procedure, ledger rows M1-M7, and the
reproduction (smoke)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lastlayer.engine import Dense, Dropout, Network, ReLU, optim
from lastlayer.engine.solvers import objective, ridge_gradient
from lastlayer.engine.training import Dataset, init_train_state, train
from lastlayer.engine.training.data import digits, simulated_regression
from lastlayer.models.papers import paper
from lastlayer.models.papers.post_training import protocol, reproduce
from lastlayer.models.papers.post_training.method import features, optimal_last_layer, post_train

from . import assert_row, assert_statistics_at_1_2_3_seeds


@pytest.fixture(scope="module")
def trained_classifier():
    data = digits(seed=0)
    net = Network([Dense(64, 32), ReLU(), Dropout(0.5), Dense(32, 10)])
    opt = optim.sgd(0.05)
    ts = train(net, opt, data, init_train_state(net, opt, 0), iterations=100, batch_size=64,
               quiet=True)
    return net, ts, data


def test_features_are_computed_in_inference_mode(trained_classifier):
    net, ts, data = trained_classifier
    phi = features(net, ts.params, ts.net_state, data.x_train)
    again = features(net, ts.params, ts.net_state, data.x_train)
    np.testing.assert_array_equal(phi, again)  # no dropout noise
    h = np.maximum(data.x_train @ ts.params[0]["W"].T + ts.params[0]["b"], 0)
    np.testing.assert_allclose(phi, h, rtol=1e-13, atol=1e-13)  # Dropout is the identity


def test_post_training_changes_only_the_last_layer(trained_classifier):
    net, ts, data = trained_classifier
    new, hist = post_train(net, ts.params, ts.net_state, data, lam=1e-2, steps=20,
                           base=optim.sgd(0.05), batch_size=64)
    for a, b in zip(new[:-1], ts.params[:-1]):
        for k in a:
            assert a[k] is b[k]
    assert not np.array_equal(new[-1]["W"], ts.params[-1]["W"])
    assert len(hist["batch_loss"]) == 20


def test_optimal_last_layer_for_cross_entropy_is_a_kkt_point(trained_classifier):
    net, ts, data = trained_classifier
    best = optimal_last_layer(net, ts.params, ts.net_state, data, lam=1e-2)
    phi = features(net, ts.params, ts.net_state, data.x_train)
    obj = objective(best[-1]["W"], best[-1]["b"], phi, data.y_train, 1e-2, "ce")
    assert np.linalg.norm(np.concatenate([obj.grad_W.ravel(), obj.grad_b])) < 1e-8


def test_post_training_needs_a_dense_last_layer():
    net = Network([Dense(3, 3), ReLU()])
    data = Dataset("x", np.zeros((4, 3)), np.zeros(4, int), np.zeros((2, 3)), np.zeros(2, int),
                   "classification", 3)
    with pytest.raises(ValueError, match="post-training needs a Dense last layer, got ReLU"):
        optimal_last_layer(net, net.init(np.random.default_rng(0)), net.init_state(), data, lam=0.1)


# ---- every row, once ---------------------------------------------------------------------------
ROWS = paper("post-training").checks()
DIFFERS_FROM_PAPER = {"M2-eq8"}  # their eq. 8 needs N lam under their own mean-loss objective


@pytest.mark.parametrize("check", ROWS, ids=[c.id for c in ROWS])
def test_ledger_row(check):
    assert_row(check, DIFFERS_FROM_PAPER)


def test_M4_the_regression_closed_form_is_what_post_training_approaches():
    data = simulated_regression("code", n=2000, n_train=1500, seed=3)
    net = protocol.regression_net(10)
    opt = optim.sgd(protocol.LR, weight_decay=protocol.LAM)
    ts = train(net, opt, data, init_train_state(net, opt, 3), iterations=100, batch_size=50,
               mode="stream", quiet=True)
    best = optimal_last_layer(net, ts.params, ts.net_state, data, lam=protocol.LAM)
    phi = features(net, ts.params, ts.net_state, data.x_train)
    assert np.abs(ridge_gradient(best[-1]["W"], phi, data.y_train, protocol.LAM)).max() < 1e-12
    step = protocol.gd_step_size(phi, protocol.LAM)
    curve = protocol.convergence_to_closed_form(net, ts.params, ts.net_state, data,
                                                lam=protocol.LAM, steps=300, base=optim.sgd(step),
                                                batch_size=1500, every=50)
    assert np.all(np.diff(curve.distance) < 0)


# ---- the reproduction (smoke) -----------------------------------------------------------------
def test_reproduce_post_training_smoke(tmp_path, monkeypatch):
    small = reproduce.Settings(seeds=1, stops=(50,), curve_every=50, curve_end=150, m4_steps=50,
                               cnn=False, image_stops=(20, 40), image_post=10)
    monkeypatch.setattr(reproduce.Settings, "make", classmethod(lambda cls, quick, seeds: small))
    out = reproduce.run(tmp_path / "pt", quick=True, quiet=True)
    for name in ("results.h5", "report.md", "fig_error_curve.png", "fig_m4_distance.png",
                 "fig_mnist_distance.png"):
        assert (out / name).stat().st_size > 0
    with h5py.File(out / "results.h5") as f:
        assert f["table2/Simulated (code recipe)/250"].shape == (1, 3)
        assert f["table1/mlp/50"].shape == (1, 4)
        assert f.attrs["experiment"] == "post-training"
        for q in ("20", "40"):
            assert f[f"images/{q}/error"].shape == (1, 5)
            assert f[f"images/{q}/distance"].shape == (1, 10)
            J = f[f"images/{q}/objective"][()]  # J of (a) as trained, (c) post-trained, (d) exact
            assert J.shape == (1, 3) and J[0, 2] <= J[0, 1] < J[0, 0], J  # (d) is the minimiser
            assert sorted(f[f"images/{q}/paired"]) == ["optimum_minus_trained", "post_minus_classic"]
    report = (out / "report.md").read_text()
    assert "Table 2" in report and "| 1.185 | 1.117 | 1.075 |" in report and "paper: + post-training" in report
    assert "cannot be loaded offline" in report
    assert "## Images: MNIST CNN" in report and "| 1000 | 10.7 (1) | 9.2 (1.1) | 1.5 |" in report
    assert "the exact optimum is lowest at every stopping point" in report


def test_mnist_exact_last_layers_are_the_minimisers_of_their_objectives():
    """(d) and (e) of the image section at a tiny scale: the CE optimum's objective is below
    every post-training SGD iterate's and the trained head's, and the post-trained head moves toward the CE optimum."""
    from lastlayer.engine.training.data import mnist
    from lastlayer.models.papers.post_training import images

    run = images.image_run(mnist(), 0, (30,), 20)
    J = run["objective"][0]
    assert J[2] <= J[1] < J[0]
    assert run["distance"][0, -1] < run["distance"][0, 0]
    assert run["error"].shape == (1, 5) and np.all((run["error"] >= 0) & (run["error"] <= 100))


def test_reproduce_post_training_statistics_follow_the_number_of_seeds(tmp_path, monkeypatch):
    assert_statistics_at_1_2_3_seeds(  # compared: the image section's paired tests
        reproduce, tmp_path, monkeypatch, compared=True,
        settings=lambda n: reproduce.Settings(seeds=n, stops=(50,), curve_every=50, curve_end=100,
                                              m4_steps=20, cnn=False, image_stops=(20,),
                                              image_post=10))
