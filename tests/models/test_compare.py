"""lastlayer compare: Holm's correction, the tasks' splits, the heads read back as affine maps,
and a whole (tiny) study through the command line, twice: the same numbers."""

from __future__ import annotations

import dataclasses
import os
import stat

import h5py
import numpy as np
import pytest

from lastlayer.engine.training.data import digits
from lastlayer.models.cli import main
from lastlayer.models.compare import evaluate, report, strategies, study


def test_holm_matches_the_step_down_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005, 3 x 0.01, 2 x 0.03, max(., 1 x 0.04)
    got = report.holm([0.01, 0.04, None, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, None, 0.06, 0.02], abs=1e-15)
    assert got[2] is None
    assert report.holm([0.6, 0.5]) == [1.0, 1.0]


def test_validation_and_transfer_splits_are_disjoint_and_relabelled():
    data = strategies.prepared(digits(seed=0))
    rest, x_val, y_val = strategies.split_validation(data)
    assert len(rest.x_train) + len(x_val) == len(data.x_train)
    rows = {r.tobytes() for r in rest.x_train}
    assert not any(r.tobytes() in rows for r in x_val)  # no validation row is trained on
    source, target = strategies.source_target(rest)
    assert set(np.unique(source.y_train)) == set(range(5)) == set(np.unique(target.y_train))
    assert np.bincount(target.y_train).tolist() == [strategies.TARGET_PER_CLASS] * 5
    assert np.all(rest.y_test[rest.y_test >= 5] - 5 == target.y_test)


@pytest.mark.parametrize("head", ["dense", "hadamard", "etf"])
def test_every_head_is_read_back_as_the_affine_map_the_network_applies(head):
    data = strategies.prepared(digits(seed=0))
    net = strategies.network(data, head)
    params = net.init(np.random.default_rng(3))
    for p in params[-1].values():  # a head away from its initial values
        p += np.random.default_rng(4).standard_normal(p.shape) * 0.1
    trained = strategies.Trained(net, params, net.init_state(), data, 0)
    phi, W, b = evaluate.linear_head(trained, data.x_test)
    logits = net.forward(params, data.x_test, state=net.init_state())[0]
    assert np.abs(phi @ W.T + b - logits).max() <= 1e-12 * np.abs(logits).max()


def test_a_wrong_read_back_is_refused(monkeypatch):
    data = strategies.prepared(digits(seed=0))
    net = strategies.network(data, "hadamard")
    params = net.init(np.random.default_rng(0))
    trained = strategies.Trained(net, params, net.init_state(), data, 0)
    monkeypatch.setattr(evaluate, "L2Normalize", lambda eps: type(
        "Identity", (), {"forward": staticmethod(lambda p, x: (x, None))}))  # forget x_hat
    with pytest.raises(AssertionError, match="differs from the network's logits"):
        evaluate.linear_head(trained, data.x_test)


TINY = strategies.Budget(iterations=24, post=4, transfer_steps=6)


def test_a_tiny_study_writes_table_figure_and_results_and_repeats_exactly(tmp_path, monkeypatch):
    """Three seeds, then seed 0 alone: seed k's numbers do not depend on how many seeds run
    (every draw comes from streams keyed by the seed), so they must agree bit for bit."""
    monkeypatch.setitem(study.QUICK_BUDGETS, "digits", TINY)
    grid = np.logspace(-2, 7, 4)  # the validation grid's resolution is not under test here
    monkeypatch.setattr(evaluate, "VAL_TAUS", grid)
    monkeypatch.setattr(report, "VAL_TAUS", grid)
    out, alone = tmp_path / "a", tmp_path / "b"
    # --workers 1: in this process, where the patches above act (a worker process imports
    # the modules afresh; tests/models/test_tasks.py runs compare on workers)
    assert main(["compare", "--quick", "--tasks", "digits", "--quiet", "--workers", "1",
                 "--out", str(out)]) == 0
    assert main(["compare", "--quick", "--tasks", "digits", "--seeds", "1", "--quiet",
                 "--workers", "1", "--out", str(alone)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "fig_compare.png", "lastlayer-run.json", "report.md", "results.h5"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask  # not mkdtemp's 0700
    text = (out / "report.md").read_text()
    for label in strategies.LABELS.values():
        assert label in text
    assert "Holm p" in text and "nan" not in text
    with h5py.File(out / "results.h5") as f, h5py.File(alone / "results.h5") as g:
        assert f.attrs["experiment"] == "compare"
        assert "percentage points" in f["digits"].attrs["error"]  # the file says its units
        err = f["digits/strategies/learned/plain/error"][()]
        assert err.shape == (study.QUICK_SEEDS,) and np.all(np.isfinite(err))
        for table, names in (("strategies", strategies.STRATEGIES),
                             ("transfer", strategies.TRANSFER)):
            for name in names:
                for v in evaluate.VARIANTS:
                    for m in evaluate.METRICS:
                        key = f"digits/{table}/{name}/{v}/{m}"
                        assert f[key][0] == g[key][0], key
        assert "holm_p" in f["digits/strategies_paired/etf+ts/error"]
        assert f["digits/updates/pof"][()] == TINY.iterations + TINY.post


def test_compare_flags_are_checked_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["compare", "--tasks", "digits,cifar", "--out", str(tmp_path / "x")])
    assert stop.value.code == 2 and "--tasks" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "mine.txt").write_text("a user's file")
    assert main(["compare", "--quick", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "mine.txt").read_text() == "a user's file"


def test_settings_refuse_unknown_tasks():
    with pytest.raises(ValueError, match="tasks: expected some of"):
        study.settings_for(True, tasks=("cifar",))
    assert dataclasses.asdict(study.settings_for(False))["tasks"] == study.TASKS
