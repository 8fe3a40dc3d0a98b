"""`lastlayer head fit / eval` through the installed script: an end-to-end fit on files,
the head file, and bad input (exit 2, one line, no output file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.linear_model import Ridge

SCRIPT = str(Path(sys.executable).parent / "lastlayer")
N, D = 400, 6


def lastlayer(*args, cwd):
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=180, cwd=cwd)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("head")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, D))
    y = x @ rng.standard_normal((D, 2)) + rng.standard_normal((N, 2))
    labels = (x[:, :2] @ rng.standard_normal((2, 3))).argmax(axis=1)
    with h5py.File(root / "f.h5", "w") as f:
        f["x"], f["y"], f["labels"], f["short"] = x, y, labels, labels[:-1]
        f["real_labels"] = labels.astype(float)
    bad = x.copy()
    bad[250, 1] = np.inf
    np.save(root / "bad.npy", bad)
    return root


def test_fit_and_eval_ridge_head(folder):
    result = lastlayer("head", "fit", "f.h5:x", "--targets", "f.h5:y", "--loss", "squared",
                       "--lam-grid", "1e-5:1:10", "--cv", "loo", "--bias", "--chunk-rows", "64",
                       "--out", "ridge.h5", "--json", "ridge.json", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "chosen by LOO" in result.stdout and "KKT residual" in result.stdout
    with h5py.File(folder / "ridge.h5") as f:
        lam = float(f.attrs["lam"])
        W, b = f["W"][()], f["b"][()]
        assert f.attrs["loss"] == "squared" and f["cv_scores"].shape == (10,)
        assert f.attrs["kkt_residual"] < 1e-12
    with h5py.File(folder / "f.h5") as f:
        x, y = f["x"][()], f["y"][()]
    ref = Ridge(alpha=N * lam).fit(x, y)
    assert np.abs(W - ref.coef_).max() < 1e-10 and np.abs(b - ref.intercept_).max() < 1e-10
    assert (folder / "ridge.cv.png").stat().st_size > 0
    summary = json.loads((folder / "ridge.json").read_text())
    assert summary["result"]["attrs"]["lam"] == lam and "peak_rss_bytes" in summary["timings"]
    ev = lastlayer("head", "eval", "ridge.h5", "f.h5:x", "--targets", "f.h5:y", cwd=folder)
    assert ev.returncode == 0 and "rmse" in ev.stdout


def test_fit_and_eval_softmax_head_on_two_workers(folder):
    result = lastlayer("head", "fit", "f.h5:x", "--labels", "f.h5:labels", "--loss", "ce",
                       "--lam", "1e-3", "--bias", "--workers", "2", "--chunk-rows", "100",
                       "--out", "soft.h5", cwd=folder)
    assert result.returncode == 0, result.stderr
    ev = lastlayer("head", "eval", "soft.h5", "f.h5:x", "--labels", "f.h5:labels", cwd=folder)
    assert ev.returncode == 0 and "accuracy" in ev.stdout


@pytest.mark.parametrize("args, fragment", [
    (["f.h5:x", "--targets", "f.h5:short"], "--targets: 399 rows, but FEATURES has 400"),
    (["bad.npy", "--targets", "f.h5:y"], "FEATURES bad.npy: 1 NaN/Inf entry in row 250 (in the chunk of rows 200-299)"),
    (["f.h5:x", "--labels", "f.h5:real_labels", "--loss", "ce"], "--labels: expected integer class labels"),
    (["f.h5:missing", "--targets", "f.h5:y"], "FEATURES: 'f.h5:missing': no array 'missing' in 'f.h5'"),
    (["f.h5:x", "--targets", "f.h5:y", "--scheduler", "tcp://127.0.0.1:9"],
     "cannot connect to the scheduler at 'tcp://127.0.0.1:9'"),
    (["f.h5:x", "--labels", "f.h5:labels"], "--loss squared needs --targets"),
    (["f.h5:x", "--targets", "f.h5:y", "--cv", "5"], "--cv needs --lam-grid"),
    (["f.h5:x", "--targets", "f.h5:y", "--out", "."], "--out .: is a directory"),
    (["f.h5:x", "--targets", "f.h5:y", "--lam", "1.7e308"], "--lam: expected N lam <= 1e+150 (N = 400 rows"),
    (["f.h5:x", "--labels", "f.h5:labels", "--loss", "ce", "--lam-grid", "1e-3:1:3", "--cv", "401"],
     "--cv: 401 folds need at least 401 rows"),
    (["f.h5:x", "--targets", "f.h5:y", "--scheduler", "bogus"], "--scheduler: expected a Dask scheduler address"),
    (["f.h5:x", "--targets", "f.h5:y", "--out", "f.h5"], "--out f.h5: would overwrite the input FEATURES"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(folder, args, fragment):
    defaults = {"--loss": "squared", "--lam": "0.01", "--out": "out.h5", "--chunk-rows": "100"}
    for flag, value in defaults.items():
        if flag not in args and not (flag == "--lam" and "--lam-grid" in args):
            args = args + [flag, value]
    result = lastlayer("head", "fit", *args, cwd=folder)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert fragment in lines[0], lines[0]
    assert not (folder / "out.h5").exists()


def test_an_unconverged_fit_says_so_in_one_line_and_in_the_head(folder):
    result = lastlayer("head", "fit", "f.h5:x", "--labels", "f.h5:labels", "--loss", "ce", "--lam", "1e-3",
                       "--tol", "1e-300", "--out", "slow.h5", "--quiet", cwd=folder)
    assert result.returncode == 0, result.stderr
    warning, = result.stderr.strip().splitlines()
    assert warning.startswith("lastlayer head fit: warning: ExactSoftmaxHead: the solve at lam = 0.001")
    assert "NOT converged to --tol 1e-300" in result.stdout
    with h5py.File(folder / "slow.h5") as f:
        assert not f.attrs["converged"]
