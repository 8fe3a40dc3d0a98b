"""`lastlayer train --arch cnn`, `lastlayer features` and the exact head fitted on them: the
post-training paper's method end to end from the command line."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import lastlayer.models.cli as cli
from lastlayer.engine.solvers import fit_softmax_regression
from lastlayer.engine.training import evaluate, load, load_checkpoint
from lastlayer.engine.training.data import Dataset
from lastlayer.engine.training.networks import cnn, conv_geometry
from lastlayer.models.cli.features import CHUNK

CNN = ["train", "--data", "digits-images", "--arch", "cnn", "--channels", "4", "--hidden", "16",
       "--iterations", "200", "--seed", "1", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small CNN trained on digits images, and its features."""
    root = tmp_path_factory.mktemp("cnn")
    assert cli.main(CNN + ["--save", str(root / "ck.h5")]) == 0
    assert cli.main(["features", str(root / "ck.h5"), "--out", str(root / "f.h5"), "--quiet"]) == 0
    return root


def test_the_features_are_the_body_of_the_checkpoint(run):
    ck = load_checkpoint(run / "ck.h5")
    data = load("digits-images")
    body, ts = ck.net[:-1], ck.train_state
    assert [type(layer).__name__ for layer in ck.net][:3] == ["Conv2D", "ReLU", "MaxPool2D"]
    with h5py.File(run / "f.h5") as f:
        assert f.attrs["format"] == "lastlayer-features" and f.attrs["data"] == "digits-images"
        assert int(f.attrs["iteration"]) == 200
        assert json.loads(f.attrs["head"])[0]["type"] == "Dense"
        for part, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
            # the body's forward pass, CHUNK rows at a time (BLAS rounds by the block shape)
            phi = np.concatenate([body.forward(ts.params[:-1], x[i:i + CHUNK], train=False,
                                               state=ts.net_state[:-1])[0]
                                  for i in range(0, len(x), CHUNK)])
            np.testing.assert_array_equal(f[f"{part}/features"][()], phi)  # (N, 16)
            np.testing.assert_array_equal(f[f"{part}/labels"][()], y)
            own = evaluate(ck.net, ts.params, ts.net_state, x, y, "classification")
            assert f[part].attrs["network_accuracy"] == own["accuracy"]
            assert f[part].attrs["network_loss"] == pytest.approx(own["loss"], rel=1e-12)


def test_head_fit_on_the_features_is_the_exact_optimum_and_eval_shows_both_heads(run, capsys):
    f = str(run / "f.h5")
    assert cli.main(["head", "fit", f"{f}:train/features", "--labels", f"{f}:train/labels",
                     "--loss", "ce", "--lam", "1e-3", "--bias", "--out", str(run / "head.h5"),
                     "--quiet"]) == 0
    with h5py.File(f) as src, h5py.File(run / "head.h5") as head:
        phi, labels = src["train/features"][()], src["train/labels"][()]
        W = head["W"][()]
        assert float(head.attrs["kkt_residual"]) < 1e-8
    sol = fit_softmax_regression(phi, labels, 1e-3, fit_bias=True, tol=1e-12)
    assert sol.kkt_residual < 1e-10
    assert np.abs(W - sol.W).max() < 1e-8
    capsys.readouterr()
    assert cli.main(["head", "eval", str(run / "head.h5"), f"{f}:test/features", "--labels",
                     f"{f}:test/labels", "--json", str(run / "eval.json")]) == 0
    out = capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())["result"]
    with h5py.File(f) as src:
        assert result["network"]["accuracy"] == src["test"].attrs["network_accuracy"]
    own = [line for line in out.splitlines() if "the network's own last layer" in line]
    assert len(own) == 1 and f"{result['network']['accuracy']:.6g}" in own[0]  # its table row


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "digits", "--arch", "cnn", "--iterations", "1"],
     "--arch cnn --data digits: arch cnn: expected image inputs (N, C, H, W)"),
    (["train", "--data", "digits-images", "--arch", "cnn", "--iterations", "1"],
     "--arch cnn --data digits-images: channels: 2 convolution blocks need a larger input"),
    (["train", "--data", "digits", "--channels", "8", "--iterations", "1"],
     "--channels: sets the convolution widths of --arch cnn; this run is --arch mlp"),
    (["train", "--data", "mnist", "--split-seed", "1", "--iterations", "1"],
     "split seed: mnist has a fixed train/test split"),
    (["train", "--data", "digits-images", "--arch", "cnn", "--channels", "", "--iterations", "1"],
     "channels: expected one or more widths >= 1"),
])
def test_bad_cnn_settings_are_refused_before_any_work(argv, message, capsys, monkeypatch):
    import lastlayer.models.cli.train as train_run

    monkeypatch.setattr(train_run, "run", lambda *a, **k: pytest.fail("training started"))
    assert cli.main(argv + ["--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_features_refuses_what_it_cannot_do_before_any_work(run, tmp_path, capsys, monkeypatch):
    import lastlayer.models.cli.features as features_cmd

    monkeypatch.setattr(features_cmd, "_features", lambda *a, **k: pytest.fail("work started"))
    ck = str(run / "ck.h5")
    cases = [
        (["features", ck, "--out", ck], "--out"),  # would overwrite the checkpoint
        (["features", ck, "--data", "mnist", "--out", str(tmp_path / "m.h5")],
         "--data mnist: inputs (1, 28, 28) do not fit the network"),
        (["features", ck, "--data", "diabetes", "--out", str(tmp_path / "d.h5")],
         "--data diabetes: inputs (10,) do not fit the network"),
        (["features", str(run / "f.h5"), "--out", str(tmp_path / "x.h5")],
         "not a lastlayer checkpoint"),
        (["features", str(tmp_path / "none.h5"), "--out", str(tmp_path / "y.h5")], "no such file"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not list(tmp_path.iterdir())


def test_mnist1d_gets_one_dimensional_convolutions():
    geometry = conv_geometry((1, 1, 40), (8, 16))
    assert [b["kernel"] for b in geometry] == [(1, 5), (1, 5)]
    assert [b["output"] for b in geometry] == [(8, 1, 20), (16, 1, 10)]
    x = np.zeros((3, 1, 1, 40))
    data = Dataset("one-row", x, np.zeros(3, np.int64), x, np.zeros(3, np.int64), "classification",
                   n_classes=10)
    net = cnn(data, (8, 16), (32,))
    assert net.output_shape((3, 1, 1, 40)) == (3, 10)
    assert net[-1].d_in == 32  # the last layer, fed by 32 penultimate features
