"""`lastlayer head fit --laplace` and `head eval` with calibration, in process
(lastlayer.models.cli.main): the laplace/ group holds the posterior the fit had (rebuilt bit
for bit, its stored factors equal to the precision and covariance), eval reports the Laplace
predictive next to the MAP's, and every bad combination of flags is one line naming the
flag, exit 2, before any read and with nothing written."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from lastlayer.engine.solvers import estimators
from lastlayer.engine.solvers.diagnostics.calibration import brier, ece
from lastlayer.engine.solvers.laplace.posterior import LastLayerLaplace
from lastlayer.engine.solvers.laplace.structures import engine_order
from lastlayer.engine.solvers.streaming.sources import ArraySource
from lastlayer.models.cli import main
from lastlayer.models.cli.head.eval import read_head

N, D = 300, 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("laplace")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, D)) + 0.3
    y = x @ rng.standard_normal((D, 2)) + 1.0 + 0.5 * rng.standard_normal((N, 2))
    labels = (x[:, :3] @ rng.standard_normal((3, 3)) + rng.gumbel(size=(N, 3))).argmax(axis=1)
    with h5py.File(root / "f.h5", "w") as f:
        f["train/x"], f["train/y"], f["train/labels"] = x[:200], y[:200], labels[:200]
        f["test/x"], f["test/y"], f["test/labels"] = x[200:], y[200:], labels[200:]
    return root


def run(folder, monkeypatch, capsys, *args):
    monkeypatch.chdir(folder)
    code = main(["head", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def arrays(folder, part):
    with h5py.File(folder / "f.h5") as f:
        return f[f"{part}/x"][()], f[f"{part}/y"][()], f[f"{part}/labels"][()]


CE = ["fit", "f.h5:train/x", "--labels", "f.h5:train/labels", "--loss", "ce", "--lam", "1e-2",
      "--bias", "--chunk-rows", "64", "--quiet"]
SQ = ["fit", "f.h5:train/x", "--targets", "f.h5:train/y", "--loss", "squared", "--lam", "1e-2",
      "--bias", "--chunk-rows", "64", "--quiet"]


def test_fit_writes_the_posterior_and_eval_reports_its_predictive(folder, monkeypatch, capsys):
    code, out, err = run(folder, monkeypatch, capsys, *CE, "--laplace", "--out", "ce.h5",
                         "--json", "ce.json")
    assert code == 0, err
    assert "Laplace log evidence" in out and "maximum of the evidence" in out
    x, _, labels = arrays(folder, "train")
    with h5py.File(folder / "ce.h5") as f:
        W, b, g = f["W"][()], f["b"][()], f["laplace"]
        assert g.attrs["structure"] == "full" and g.attrs["prior"] == "evidence"
        assert g.attrs["tau_w_map"] == 2 * 200 * 1e-2 and g.attrs["evidence_converged"]
        tau_w, tau_b = g.attrs["tau_w"], g.attrs["tau_b"]
        chol, order, evidence = g["precision_cholesky"][()], g["order"][()], g.attrs["log_evidence"]
    ref = LastLayerLaplace(W, b, x, labels, loss="ce", tau_w=tau_w, tau_b=tau_b)
    opt = LastLayerLaplace(W, b, x, labels, loss="ce", tau_w=4.0, tau_b=4.0).optimize_prior()
    assert (tau_w, tau_b) == pytest.approx((opt.tau_w, opt.tau_b), rel=1e-12)
    assert evidence == pytest.approx(ref.log_evidence(), rel=1e-13)
    perm = engine_order(3, D, True)
    assert np.array_equal(order, perm)
    precision = ref.precision()[np.ix_(perm, perm)]  # class-major, as stored
    assert np.abs(chol @ chol.T - precision).max() <= 1e-12 * np.abs(precision).max()
    la = read_head(str(folder / "ce.h5"))["laplace"]  # rebuilt from the file: the same posterior
    xt, _, lt = arrays(folder, "test")
    assert np.array_equal(la.predict_proba(xt), ref.predict_proba(xt))
    assert la.log_evidence() == evidence and la.mode_residual == ref.mode_residual

    code, out, err = run(folder, monkeypatch, capsys, "eval", "ce.h5", "f.h5:test/x", "--labels",
                         "f.h5:test/labels", "--json", "ev.json")
    assert code == 0, err
    assert "Laplace: probit (full)" in out and "ece (15 bins)" in out and "brier" in out
    m = json.loads((folder / "ev.json").read_text())["result"]["metrics"]
    p = ref.predict_proba(xt)
    assert m["laplace"]["nll"] == pytest.approx(ref.predictive_nll(xt, lt), rel=1e-13)
    assert abs(m["laplace"]["ece"] - ece(p, lt).ece) < 1e-14
    assert m["laplace"]["brier"] == pytest.approx(brier(p, lt), rel=1e-13)
    z = xt @ W.T + b
    e = np.exp(z - z.max(axis=1, keepdims=True))
    assert abs(m["ece"] - ece(e / e.sum(axis=1, keepdims=True), lt).ece) < 1e-14
    summary = json.loads((folder / "ce.json").read_text())["result"]
    assert summary["laplace"]["tau_b"] == tau_b and "laplace" in summary["train"]


def test_squared_loss_gets_the_exact_kron_posterior(folder, monkeypatch, capsys):
    code, out, err = run(folder, monkeypatch, capsys, *SQ, "--laplace", "--laplace-prior", "fixed",
                         "--laplace-tau-b", "0", "--out", "sq.h5")
    assert code == 0, err
    assert "n/a (tau_b = 0: a flat bias prior)" in out
    x, y, _ = arrays(folder, "train")
    with h5py.File(folder / "sq.h5") as f:
        g = f["laplace"]
        assert g.attrs["structure"] == "kron" and "log_evidence" not in g.attrs
        gram, cov = g["gram"][()], g["weight_covariance"][()]
    xt = np.hstack([x, np.ones((200, 1))])
    assert np.abs(gram - xt.T @ xt).max() <= 1e-12 * np.abs(gram).max()
    k = 2 * xt.T @ xt + np.diag([4.0] * D + [0.0])  # tau_w = 2 N lam = 4, tau_b = 0
    assert np.abs(cov @ k - np.eye(D + 1)).max() < 1e-10
    code, out, err = run(folder, monkeypatch, capsys, "eval", "sq.h5", "f.h5:test/x", "--targets",
                         "f.h5:test/y", "--json", "sq.json")
    assert code == 0, err
    assert "Laplace: N(z, Sigma_z + I/2) (kron)" in out and "rmse" in out
    head = read_head(str(folder / "sq.h5"))
    xe, ye, _ = arrays(folder, "test")
    m = json.loads((folder / "sq.json").read_text())["result"]["metrics"]
    assert m["laplace"]["nll"] == pytest.approx(head["laplace"].predictive_nll(xe, ye), rel=1e-13)


def test_kfac_factors_give_the_covariance(folder, monkeypatch, capsys):
    code, _, err = run(folder, monkeypatch, capsys, *CE, "--laplace", "--laplace-structure", "kfac",
                       "--out", "kfac.h5")
    assert code == 0, err
    with h5py.File(folder / "kfac.h5") as f:
        g = f["laplace"]
        qa, v, w, order = g["eigvecs_a"][()], g["eigvecs_g"][()], g["weights"][()], g["order"][()]
    la = read_head(str(folder / "kfac.h5"))["laplace"]
    basis = np.kron(qa, v)
    sigma = (basis * w.ravel()) @ basis.T  # class-major
    ref = la.covariance()[np.ix_(order, order)]
    assert la.structure == "kfac" and np.abs(sigma - ref).max() <= 1e-12 * np.abs(ref).max()


def test_without_laplace_the_head_file_is_as_before(folder, monkeypatch, capsys):
    code, out, err = run(folder, monkeypatch, capsys, *CE, "--out", "plain.h5")
    assert code == 0, err
    with h5py.File(folder / "plain.h5") as f:
        assert sorted(f) == ["W", "b", "classes"]
    assert "Laplace" not in out and "train ece" in out
    code, out, err = run(folder, monkeypatch, capsys, "eval", "plain.h5", "f.h5:test/x",
                         "--labels", "f.h5:test/labels")
    assert code == 0 and "Laplace" not in out and "exact head: softmax" in out


@pytest.mark.parametrize("args, fragment", [
    (CE + ["--laplace-prior", "fixed"], "--laplace-prior needs --laplace"),
    (CE + ["--laplace-structure", "full"], "--laplace-structure needs --laplace"),
    (CE + ["--laplace", "--laplace-structure", "kron"],
     "--laplace-structure: 'kron' is exact only for the squared loss"),
    (CE + ["--laplace", "--laplace-prior", "fixed"],
     "--laplace-tau-b: --laplace-prior 'fixed' with a bias needs the bias's prior precision"),
    (CE + ["--laplace", "--laplace-prior", "fixed", "--laplace-tau-b", "0"],
     "--laplace-tau-b: expected > 0 for ce"),
    (CE + ["--laplace", "--laplace-tau-b", "1"],
     "--laplace-tau-b: only with --laplace-prior 'fixed'"),
    ([a for a in SQ if a != "--bias"]
     + ["--laplace", "--laplace-prior", "fixed", "--laplace-tau-b", "1"],
     "--laplace-tau-b: the head has no bias (no --bias): expected None, got 1.0"),
    (SQ + ["--laplace", "--laplace-structure", "kfac", "--laplace-prior", "fixed",
           "--laplace-tau-b", "0"],
     "--laplace-tau-b: expected > 0 with --laplace-structure 'kfac'"),
    ([a if a != "1e-2" else "0" for a in SQ] + ["--laplace"], "--lam: --laplace needs lam > 0"),
    (SQ + ["--laplace", "--laplace-prior", "cv"], "argument --laplace-prior: invalid choice: 'cv'"),
    (SQ + ["--laplace", "--laplace-tau-b", "-1"],
     "argument --laplace-tau-b: expected a number in [0, inf)"),
])
def test_bad_laplace_flags_exit_2_before_any_read(folder, monkeypatch, capsys, args, fragment):
    reads = []
    monkeypatch.setattr(ArraySource, "read", lambda self, a, b: reads.append((a, b)))
    try:
        code, out, err = run(folder, monkeypatch, capsys, *args, "--out", "bad.h5")
    except SystemExit as stop:  # argparse's own errors
        code, err = stop.code, capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert reads == [] and not (folder / "bad.h5").exists()


def test_the_memory_limit_names_the_flag(folder, monkeypatch, capsys):
    monkeypatch.setattr(estimators.checks, "LAPLACE_FEATURES_MAX", 200 * D * 8 - 1)
    code, _, err = run(folder, monkeypatch, capsys, *SQ, "--laplace", "--out", "big.h5")
    assert code == 2 and err.startswith("lastlayer head fit: --laplace: the posterior needs the "
                                        "training features in memory as float64, 200 x 4 = 6,400 "
                                        "bytes, above LAPLACE_FEATURES_MAX = 6,399 bytes"), err
    monkeypatch.undo()
    monkeypatch.setattr(estimators.checks, "FULL_MAX", 2 * (D + 1) - 1)
    code, _, err = run(folder, monkeypatch, capsys, *SQ, "--laplace", "--laplace-structure", "full",
                       "--out", "big.h5")
    assert code == 2 and "--laplace-structure: 'full' needs a dense 10 x 10 precision" in err
    assert not (folder / "big.h5").exists()
