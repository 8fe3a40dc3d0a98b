"""`lastlayer train`: the acceptance run, determinism, resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lastlayer.models.cli as cli
from lastlayer.engine.training.checkpoint import load_checkpoint

DIGITS = ["train", "--data", "digits", "--hidden", "128,128", "--epochs", "30", "--seed", "0",
          "--quiet"]


def run_json(args, path):
    """Exit code and the "result" block of --json (timings are apart)."""
    code = cli.main(args + ["--json", str(path)])
    return code, json.loads(path.read_text())["result"] if code == 0 else None


def test_digits_reaches_95_percent_and_is_deterministic(tmp_path, capsys):
    code, a = run_json(DIGITS, tmp_path / "a.json")
    assert code == 0
    assert a["final"]["test"]["accuracy"] >= 0.95
    assert a["iterations"] == 30 * 22  # ceil(1348 / 64) batches per epoch
    out = capsys.readouterr().out
    assert "test" in out and "accuracy" in out
    _, b = run_json(DIGITS, tmp_path / "b.json")
    assert a == b  # every number identical
    text = [json.dumps(json.loads(p.read_text())["result"], sort_keys=True, indent=1)
            for p in (tmp_path / "a.json", tmp_path / "b.json")]
    assert text[0] == text[1]


def test_resume_through_the_command_line_is_exact(tmp_path):
    base = ["train", "--data", "toy", "--hidden", "16", "--dropout", "0.2", "--optimizer",
            "momentum", "--batch-size", "50", "--quiet"]
    assert cli.main(base + ["--iterations", "30", "--save", str(tmp_path / "a.h5")]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "a.h5"), "--iterations", "70", "--quiet",
                     "--save", str(tmp_path / "b.h5")]) == 0
    assert cli.main(base + ["--iterations", "70", "--save", str(tmp_path / "c.h5")]) == 0
    b = load_checkpoint(tmp_path / "b.h5").train_state
    c = load_checkpoint(tmp_path / "c.h5").train_state
    assert b.iteration == c.iteration == 70 and b.history == c.history
    for x, y in zip(b.params, c.params):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_resume_refuses_different_settings(tmp_path, capsys):
    assert cli.main(["train", "--data", "toy", "--iterations", "5", "--quiet", "--save",
                     str(tmp_path / "a.h5")]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "a.h5"), "--lr", "0.5", "--quiet"]) == 2
    assert "--lr 0.5 differs from the checkpoint's 0.001 (the adam default)" in capsys.readouterr().err
    (tmp_path / "bad.h5").write_text("junk")
    assert cli.main(["train", "--resume", str(tmp_path / "bad.h5"), "--quiet"]) == 2
    assert "not a readable HDF5 file" in capsys.readouterr().err


@pytest.mark.parametrize("data", ["diabetes", "simreg-code", "simreg-paper", "digits-images"])
def test_other_datasets_run(data, tmp_path, capsys):
    code, res = run_json(["train", "--data", data, "--iterations", "20", "--quiet"],
                         tmp_path / "r.json")
    assert code == 0
    metric = "accuracy" if data == "digits-images" else "rmse"
    assert np.isfinite(res["final"]["test"][metric])
    if data == "diabetes":
        assert "rmse (original units)" in capsys.readouterr().out


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--hidden", "12,x"])
    assert exc.value.code == 2
    assert "expected comma-separated widths" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--epochs", "3", "--iterations", "5"])
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--iterations", "5", "--quiet", "--dropout", "1.5"])
    assert exc.value.code == 2
    assert "argument --dropout: expected a number in [0, 1), got '1.5'" in capsys.readouterr().err
