"""Nothing is lost: no output of any command names an input or another output, every
output (side files included) is checked before any work, and a results folder is written
whole, records what wrote it, and is replaced only by another run of the same experiment.

Each command runs in-process (``lastlayer.models.cli.main``) with its work replaced by a
function that fails the test when entered, so "refused before any work" is shown
structurally."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

import lastlayer.models.cli as cli
import lastlayer.models.papers as papers
import lastlayer.models.cli.reproduce as reproduce_cmd
from lastlayer.engine.solvers import estimators


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def assert_refused(result, *fragments):
    code, out, err = result
    assert code == 2 and len(err.splitlines()) == 1, (code, err)
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4))
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["x"], f["y"], f["labels"] = x, x @ rng.standard_normal(4), (x[:, 0] > 0).astype(np.int64)
    np.save(tmp_path / "x.npy", x)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_fit(monkeypatch):
    def entered(*args, **kwargs):
        raise AssertionError("the fit was entered before the bad path was refused")

    for cls in (estimators.ExactRidgeHead, estimators.ExactSoftmaxHead):
        monkeypatch.setattr(cls, "fit", entered)
    monkeypatch.setattr(estimators, "evaluate_head", entered)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("args, fragments", [
    (["fit", "g.h5:x", "--targets", "g.h5:y", "--out", "g.h5"], ["--out g.h5", "would overwrite the input FEATURES"]),
    (["fit", "x.npy", "--targets", "g.h5:y", "--out", "x.npy"], ["--out x.npy", "input FEATURES"]),
    (["fit", "g.h5:x", "--targets", "g.h5:y", "--out", "h.h5", "--json", "h.h5"], ["--out and --json name the same file"]),
    (["fit", "x.npy", "--targets", "g.h5:y", "--out", "h.h5", "--json", "g.h5"], ["--json g.h5", "input --targets"]),
    (["fit", "x.npy", "--targets", "g.h5:y", "--out", "h.h5", "--json", "h.cv.png", "--lam-grid", "1e-3:1:3"],
     ["--json", "name the same file"]),
    (["fit", "x.npy", "--targets", "g.h5:y", "--out", "sub/h.h5"], ["--out sub/h.h5", "does not exist"]),
])
def test_head_fit_never_writes_over_an_input_or_another_output(folder, no_fit, capsys, args, fragments):
    before = _snapshot(folder)
    args = ["head", *args, "--loss", "squared"] + ([] if "--lam-grid" in args else ["--lam", "0.1"])
    assert_refused(run(capsys, *args), *fragments)
    assert _snapshot(folder) == before  # every input intact, nothing written


def test_head_fit_checks_its_cv_figure_path_before_the_fit(folder, no_fit, capsys):
    (folder / "h.cv.png").mkdir()  # where the CV curve would go
    assert_refused(run(capsys, "head", "fit", "x.npy", "--targets", "g.h5:y", "--loss", "squared",
                       "--lam-grid", "1e-3:1:3", "--out", "h.h5"), "h.cv.png", "is a directory")
    assert not (folder / "h.h5").exists()


@pytest.mark.parametrize("json_name, fragment", [("head.h5", "input HEAD"), ("g.h5", "input FEATURES")])
def test_head_eval_never_writes_over_its_inputs(folder, capsys, monkeypatch, json_name, fragment):
    assert run(capsys, "head", "fit", "g.h5:x", "--targets", "g.h5:y", "--loss", "squared",
               "--lam", "0.1", "--out", "head.h5", "--quiet")[0] == 0
    before = _snapshot(folder)
    monkeypatch.setattr(estimators, "evaluate_head", lambda *a, **k: pytest.fail("evaluated"))
    assert_refused(run(capsys, "head", "eval", "head.h5", "g.h5:x", "--targets", "g.h5:y",
                       "--json", json_name), f"--json {json_name}", fragment)
    assert _snapshot(folder) == before


def test_train_json_may_not_name_the_checkpoint_it_resumes(folder, capsys, monkeypatch):
    assert run(capsys, "train", "--data", "toy", "--hidden", "4", "--iterations", "3", "--quiet",
               "--save", "c.h5")[0] == 0
    assert_refused(run(capsys, "train", "--resume", "c.h5", "--iterations", "5", "--json", "c.h5"),
                   "--json c.h5", "input --resume")
    # continuing a run in place is the one pair allowed: --resume C --save C
    assert run(capsys, "train", "--resume", "c.h5", "--iterations", "5", "--quiet", "--save", "c.h5")[0] == 0


# ---- reproduce: one folder, written whole ---------------------------------------------------------
def fake_reproduce(figures, fail_after=None):
    """A stand-in for a paper's run: results.h5, report.md and the named figures."""
    def reproduce(self, out, *, quick=False, seeds=None, quiet=False, execution=None):
        with h5py.File(out / "results.h5", "w") as f:
            f.attrs["seeds"] = seeds or 2
        (out / "report.md").write_text(f"# {self.name}\n")
        for name in figures:
            (out / name).write_bytes(b"png")
        if fail_after is not None:
            raise fail_after
        return out

    return reproduce


def test_a_second_run_replaces_the_first_whole_and_says_so(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs" / "pof"
    monkeypatch.setattr(papers.Paper, "reproduce", fake_reproduce(["first.png"]))
    assert run(capsys, "reproduce", "pof", "--out", out)[0] == 0
    manifest = json.loads((out / reproduce_cmd.MANIFEST).read_text())
    assert manifest["experiment"] == "pof" and manifest["files"] == ["first.png", "report.md", "results.h5"]
    monkeypatch.setattr(papers.Paper, "reproduce", fake_reproduce(["second.png"]))
    code, stdout, _ = run(capsys, "reproduce", "pof", "--out", out, "--seeds", 3)
    assert code == 0 and "replacing the earlier pof run" in stdout
    assert sorted(p.name for p in out.iterdir()) == [reproduce_cmd.MANIFEST, "report.md", "results.h5",
                                                     "second.png"]  # no figure of the first run
    assert sorted(p.name for p in out.parent.iterdir()) == ["pof"]  # no partial or old folder


def test_another_experiment_or_a_foreign_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(papers.Paper, "reproduce", fake_reproduce(["a.png"]))
    assert run(capsys, "reproduce", "pof", "--out", out)[0] == 0
    monkeypatch.setattr(papers.Paper, "reproduce", lambda *a, **k: pytest.fail("work entered"))
    assert_refused(run(capsys, "reproduce", "entame", "--out", out), "holds a `lastlayer reproduce pof` run")
    (out / "notes.txt").write_text("mine")
    assert_refused(run(capsys, "reproduce", "pof", "--out", out), "'notes.txt' was not written")
    assert (out / "notes.txt").read_text() == "mine"


def test_a_folder_of_other_files_and_a_directory_in_the_way_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(papers.Paper, "reproduce", lambda *a, **k: pytest.fail("work entered"))
    out = tmp_path / "out"
    (out / "results.h5").mkdir(parents=True)  # once found only after the whole run
    assert_refused(run(capsys, "reproduce", "layca", "--out", out), "did not write")
    shutil.rmtree(out)
    monkeypatch.chdir(tmp_path)
    assert_refused(run(capsys, "reproduce", "layca", "--out", "."), "current directory")


@pytest.mark.parametrize("error, code", [(KeyboardInterrupt(), 130), (RuntimeError("boom"), None)])
def test_an_interrupted_or_failed_run_leaves_the_earlier_folder_as_it_was(tmp_path, capsys, monkeypatch,
                                                                          error, code):
    out = tmp_path / "pof"
    monkeypatch.setattr(papers.Paper, "reproduce", fake_reproduce(["first.png"]))
    assert run(capsys, "reproduce", "pof", "--out", out)[0] == 0
    before = _snapshot(out)
    monkeypatch.setattr(papers.Paper, "reproduce", fake_reproduce(["second.png"], fail_after=error))
    if code is None:
        with pytest.raises(RuntimeError):
            cli.main(["reproduce", "pof", "--out", str(out)])
    else:
        assert run(capsys, "reproduce", "pof", "--out", out)[0] == code
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pof"]  # the partial folder is gone


# ---- a second hostile pass ---------------------------------------------------------------------
def test_an_output_through_a_symbolic_link_replaces_its_target_and_keeps_the_link(folder, capsys):
    (folder / "store").mkdir()
    (folder / "store" / "head.h5").write_bytes(b"")
    (folder / "hl.h5").symlink_to(folder / "store" / "head.h5")
    assert run(capsys, "head", "fit", "x.npy", "--targets", "g.h5:y", "--loss", "squared",
               "--lam", "0.1", "--out", "hl.h5", "--quiet")[0] == 0
    assert (folder / "hl.h5").is_symlink()
    with h5py.File(folder / "store" / "head.h5") as f:
        assert f["W"].shape == (1, 4)


def test_reproduce_into_a_symbolic_link_replaces_the_run_it_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(papers.Paper, "reproduce", fake_reproduce(["first.png"]))
    assert run(capsys, "reproduce", "pof", "--out", tmp_path / "real")[0] == 0
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.setattr(papers.Paper, "reproduce", fake_reproduce(["second.png"]))
    assert run(capsys, "reproduce", "pof", "--out", tmp_path / "link")[0] == 0
    assert (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == [
        reproduce_cmd.MANIFEST, "report.md", "results.h5", "second.png"]


def test_an_empty_out_is_refused_and_an_interrupted_run_leaves_no_new_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(papers.Paper, "reproduce", lambda *a, **k: pytest.fail("work entered"))
    assert_refused(run(capsys, "reproduce", "pof", "--out", ""), "--out: expected a path, got ''")
    monkeypatch.setattr(papers.Paper, "reproduce", fake_reproduce([], fail_after=KeyboardInterrupt()))
    assert run(capsys, "reproduce", "pof", "--out", "new/deeper/run")[0] == 130
    assert list(tmp_path.iterdir()) == []  # neither the run nor the parents made for it


def test_a_refit_without_cv_removes_the_earlier_cv_curve_and_says_so(folder, capsys):
    common = ["head", "fit", "x.npy", "--targets", "g.h5:y", "--loss", "squared", "--out", "st.h5", "--quiet"]
    assert run(capsys, *common, "--lam-grid", "1e-4:1:4", "--cv", "3")[0] == 0
    assert (folder / "st.cv.png").is_file()
    code, out, _ = run(capsys, *common, "--lam", "5")
    assert code == 0 and "removed st.cv.png, the CV curve of an earlier fit" in out.replace("\n", " ")
    assert not (folder / "st.cv.png").exists()


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_a_bad_thread_override_is_one_line_for_every_command(folder, capsys, monkeypatch, value):
    monkeypatch.setenv("LASTLAYER_THREADS", value)
    monkeypatch.setattr(papers.Paper, "reproduce", lambda *a, **k: pytest.fail("work entered"))
    for args in (["train", "--data", "toy", "--iterations", "2", "--quiet"], ["reproduce", "pof"],
                 ["verify", "--only", "G-Dense"]):
        assert_refused(run(capsys, *args), f"LASTLAYER_THREADS: expected an integer >= 1, got '{value}'")


def test_a_damaged_npz_is_one_line_naming_the_file(folder, capsys):
    np.savez(folder / "d.npz", x=np.ones((50, 3)))
    (folder / "td.npz").write_bytes((folder / "d.npz").read_bytes()[:300])
    assert_refused(run(capsys, "head", "fit", "td.npz:x", "--targets", "g.h5:y", "--loss", "squared",
                       "--lam", "1", "--out", "o.h5"), "FEATURES: 'td.npz:x': cannot read it (BadZipFile")


def test_estimator_messages_name_the_command_lines_arguments(folder, capsys):
    np.save(folder / "one.npy", np.zeros(60, dtype=np.int64))
    assert_refused(run(capsys, "head", "fit", "x.npy", "--labels", "one.npy", "--loss", "ce", "--lam", "1",
                       "--out", "o.h5"), "--labels one.npy: expected at least 2 classes")
