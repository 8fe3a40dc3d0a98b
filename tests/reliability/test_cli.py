"""The command line under bad input, interrupts and pipes, run as a user runs it: the
installed ``lastlayer`` script in a subprocess.

Every bad flag or path: exit 2, exactly one line on stderr naming the flag, no traceback,
nothing written, and (for paths) before any work: shown structurally, the work functions
replaced by ones that fail the test if entered. Ctrl-C / SIGTERM: a clean stop with the
checkpoint written and no temporary file left; each signal is sent only after the command
printed that it is working (never after a sleep).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lastlayer.models.cli as cli
import lastlayer.models.cli.verify as verify_cmd
from lastlayer.models.papers import all_checks
from lastlayer.engine.training.checkpoint import load_checkpoint

SCRIPT = str(Path(sys.executable).parent / "lastlayer")


def lastlayer(*args, cwd=None, timeout=120):
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def assert_usage_error(result, *fragments):
    """Exit 2, one line on stderr containing every fragment, no traceback, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stderr, result.stdout)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""


# ---- flags ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragments", [
    (["--epochs", "0"], ["--epochs", "expected a number in (0, inf)", "'0'"]),
    (["--epochs", "-1"], ["--epochs", "'-1'"]),
    (["--epochs", "inf"], ["--epochs", "expected a finite number, got 'inf'"]),
    (["--epochs", "nan"], ["--epochs", "expected a finite number, got 'nan'"]),
    (["--epochs", "ten"], ["--epochs", "expected a number, got 'ten'"]),
    (["--iterations", "0"], ["--iterations", "expected an integer >= 1, got '0'"]),
    (["--iterations", "2.5"], ["--iterations", "expected an integer, got '2.5'"]),
    (["--hidden", "12,,4"], ["--hidden", "no empty entry", "'12,,4'"]),
    (["--hidden", "12,x"], ["--hidden", "comma-separated widths"]),
    (["--hidden", "0"], ["--hidden", "widths must be >= 1"]),
    (["--lr", "inf"], ["--lr", "finite"]),
    (["--lr", "0"], ["--lr", "expected a number in (0, inf)"]),
    (["--lr", "-0.1"], ["--lr"]),
    (["--weight-decay", "inf"], ["--weight-decay", "finite"]),
    (["--weight-decay", "-1"], ["--weight-decay", "expected a number in [0, inf)"]),
    (["--dropout", "1"], ["--dropout", "expected a number in [0, 1)"]),
    (["--dropout", "nan"], ["--dropout", "finite"]),
    (["--seed", "-1"], ["--seed", "expected an integer >= 0, got '-1'"]),
    (["--seed", "1.5"], ["--seed", "expected an integer"]),
    (["--split-seed", "-2"], ["--split-seed"]),
    (["--batch-size", "0"], ["--batch-size", "expected an integer >= 1"]),
    (["--save-every", "0", "--save", "x.h5"], ["--save-every", "expected an integer >= 1"]),
    (["--save-every", "5"], ["--save-every needs --save"]),
    (["--data", "cifar10"], ["--data", "invalid choice"]),
    (["--hidden", "100000000", "--iterations", "1"], ["--hidden 100000000", "needs about", "TB",
                                                       "memory available"]),
])
def test_bad_train_flags(args, fragments, tmp_path):
    result = lastlayer("train", "--quiet", *args, cwd=tmp_path)
    assert_usage_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("args, fragments", [
    (["--only", ""], ["--only", "non-empty ID prefix"]),
    (["--only", "Z9"], ["selects no check; IDs start with C, CAL, E, ETF, G, H, LA, M, NC, P"]),
    (["--jobs", "0"], ["--jobs", "expected an integer >= 1"]),
    (["--json", "."], ["--json .", "is a directory"]),
])
def test_bad_verify_flags(args, fragments):
    assert_usage_error(lastlayer("verify", *args), *fragments)


@pytest.mark.parametrize("args, fragments", [
    (["pof", "--seeds", "0"], ["--seeds", "expected an integer >= 1"]),
    (["pof", "--quick", "--out", "__FILE__"], ["--out", "exists and is not a directory"]),
    (["pof", "--quick", "--out", "__FILE__/sub"], ["--out", "is not a directory"]),
    (["nothing"], ["invalid choice"]),
    (["pof", "--workers", "0"], ["--workers", "expected an integer >= 1"]),
    (["pof", "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"],
     ["--scheduler", "not allowed with argument --workers"]),
    (["pof", "--scheduler", "tcp://127.0.0.1:99999", "--out", "__FILE__/sub"],
     ["--scheduler", "port 99999 out of range"]),
])
def test_bad_reproduce_flags(args, fragments, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args = [a.replace("__FILE__", str(a_file)) for a in args]
    assert_usage_error(lastlayer("reproduce", *args), *fragments)


# ---- output paths: checked before any work -----------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Replace every command's work by a function that fails the test if it is entered."""
    import lastlayer.models.papers as papers
    import lastlayer.models.cli.train as train_run

    def entered(*args, **kwargs):
        raise AssertionError("the work was entered before the bad path was refused")

    monkeypatch.setattr(train_run, "run", entered)
    monkeypatch.setattr(verify_cmd, "run_rows", entered)
    monkeypatch.setattr(papers.Paper, "reproduce", entered)


@pytest.mark.parametrize("command", [
    ["train", "--epochs", "1000", "--save", "{dir}"],
    ["train", "--epochs", "1000", "--save", "{missing}/ckpt.h5"],
    ["train", "--epochs", "1000", "--save", "{file}/ckpt.h5"],
    ["train", "--epochs", "1000", "--json", "{dir}"],
    ["train", "--epochs", "1000", "--save", "{dir}/same", "--json", "{dir}/same"],
    ["train", "--resume", "{missing}/ckpt.h5"],
    ["train", "--resume", "{dir}"],
    ["verify", "--json", "{missing}/rows.json"],
    ["verify", "--json", "{file}/rows.json"],
    ["reproduce", "pof", "--out", "{file}"],
    ["reproduce", "entame", "--out", "{file}/deeper/still"],
])
def test_bad_output_paths_fail_before_any_work(command, tmp_path, no_work, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    paths = {"dir": str(tmp_path), "missing": str(tmp_path / "missing"), "file": str(a_file)}
    args = [a.format(**paths) for a in command]
    code = cli.main(args)
    captured = capsys.readouterr()
    flag = args[args.index(next(a for a in args if str(tmp_path) in a)) - 1]
    assert code == 2 and captured.out == "", (code, captured)
    assert len(captured.err.strip().splitlines()) == 1 and flag in captured.err, captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_bad_path_through_the_installed_script_is_one_line_and_exit_2(tmp_path):
    assert_usage_error(lastlayer("train", "--save", str(tmp_path)), "--save", "is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_an_unwritable_directory_is_refused(tmp_path):  # pragma: no cover - not as root
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_usage_error(lastlayer("train", "--save", str(locked / "c.h5")), "--save", "not writable")


def test_an_oserror_is_one_line_never_a_traceback(monkeypatch, capsys):
    def refuse(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(verify_cmd, "atomic_write_text", refuse)
    code = cli.main(["verify", "--only", "G-Flatten", "--quiet", "--json", "rows.json"])
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == "lastlayer verify: rows.json: Permission denied"


# ---- interrupts ----------------------------------------------------------------------------------
def _start_training(tmp_path, *extra):
    """A long training run in a pipe: it prints a progress line once it is training."""
    return subprocess.Popen([SCRIPT, "train", "--data", "digits", "--hidden", "32",
                             "--iterations", "1000000", "--save", str(tmp_path / "c.h5"),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until_training(proc):
    """Block until the run's first progress line: its signal handlers are in place and it
    has trained (however slow the machine)."""
    line = proc.stdout.readline()
    assert "iteration" in line, (line, proc.communicate())


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "Ctrl-C (SIGINT)"),
                                               (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_stops_training_cleanly_and_the_run_resumes_exactly(tmp_path, signum, code, name):
    proc = _start_training(tmp_path)
    _wait_until_training(proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert f"stopped by {name} at iteration" in lines[0]
    assert f"continue with: lastlayer train --resume {tmp_path / 'c.h5'} --iterations 1000000" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]  # no temporary file
    stopped = load_checkpoint(tmp_path / "c.h5").train_state.iteration
    assert 0 < stopped < 1_000_000

    # resuming for 40 more iterations equals a run that never stopped
    target = str(stopped + 40)
    common = ["--quiet", "--iterations", target]
    assert lastlayer("train", "--resume", str(tmp_path / "c.h5"), "--save", str(tmp_path / "r.h5"),
                     "--json", str(tmp_path / "r.json"), *common).returncode == 0
    assert lastlayer("train", "--data", "digits", "--hidden", "32", "--save", str(tmp_path / "u.h5"),
                     "--json", str(tmp_path / "u.json"), *common).returncode == 0
    r, u = (load_checkpoint(tmp_path / f).train_state for f in ("r.h5", "u.h5"))
    for a, b in zip(r.params, u.params):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    results = [json.loads((tmp_path / f).read_text())["result"] for f in ("r.json", "u.json")]
    assert json.dumps(results[0], sort_keys=True) == json.dumps(results[1], sort_keys=True)


def test_sigterm_while_saving_every_iteration_leaves_a_valid_checkpoint_and_no_temporary(tmp_path):
    proc = _start_training(tmp_path, "--save-every", "1")
    _wait_until_training(proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]
    state = load_checkpoint(tmp_path / "c.h5").train_state
    assert f"at iteration {state.iteration} of" in err


def test_save_every_writes_checkpoints_that_resume_to_the_same_run(tmp_path):
    """--save-every splits the run into pieces: the result is that of one piece."""
    common = ["train", "--data", "toy", "--hidden", "8", "--iterations", "95", "--quiet"]
    assert cli.main(common + ["--save", str(tmp_path / "a.h5"), "--save-every", "20"]) == 0
    assert cli.main(common + ["--save", str(tmp_path / "b.h5")]) == 0
    a, b = (load_checkpoint(tmp_path / f).train_state for f in ("a.h5", "b.h5"))
    assert a.iteration == b.iteration == 95 and a.history == b.history
    for x, y in zip(a.params, b.params):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def _small_pipe() -> tuple[int, int, int]:
    """(read end, write end, capacity in bytes) of a pipe shrunk to one page where the
    platform allows it (Linux: F_SETPIPE_SZ), so that a writer blocks after a few KB."""
    read, write = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
        return read, write, fcntl.fcntl(write, fcntl.F_GETPIPE_SZ)
    return read, write, 65536  # the usual default elsewhere


def _read_line(fd: int) -> str:
    """One line from a raw file descriptor, a byte at a time: nothing beyond it is read."""
    line = bytearray()
    while not line.endswith(b"\n") and (byte := os.read(fd, 1)):
        line += byte
    return line.decode()


def test_ctrl_c_during_verify_stops_at_once_with_one_line(tmp_path):
    """Ctrl-C while the ledger runs. Structurally "while it runs", however slow or busy the
    machine: the test reads one row, then nothing, from a pipe of one page, and the rows
    still to come are many pages long, so verify is blocked on its output or still
    measuring when the signal comes; it can never have finished. The child starts with
    SIGINT at its default, as under a terminal: a suite run in a shell's background job
    inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    read, write, capacity = _small_pipe()
    rows = len(all_checks())
    assert (rows - 1) * 100 > capacity, (rows, capacity)  # row_line's fixed columns: 99 + newline
    proc = subprocess.Popen([SCRIPT, "verify", "--jobs", "2"], stdout=write,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(write)
    try:
        first = _read_line(read)  # a row: the ledger is running
        assert " PASS " in first or " DIFFERS" in first, (first, proc.stderr.read())
        proc.send_signal(signal.SIGINT)
        while os.read(read, 65536):  # the rest of its output, up to its exit (EOF)
            pass
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(read)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "lastlayer verify: interrupted; nothing partial was written"


# ---- verify in a pipe ------------------------------------------------------------------------------
def test_verify_in_a_pipe_prints_one_line_per_row_as_it_completes():
    proc = subprocess.Popen([SCRIPT, "verify", "--only", "G-Dense", "G-ReLU", "H1", "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # arrives before the run ends
    # the rest through the same buffered reader: communicate() reads the raw pipe and would
    # lose lines that readline() had already buffered (as happened on a loaded machine)
    rest, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 0, err
    lines = [first] + rest.splitlines()
    rows = [line for line in lines if line.split() and line.split()[0] in ("G-Dense", "G-ReLU", "H1")]
    assert len(rows) == 3 and all(" PASS " in r for r in rows)
    assert "┃" not in rest  # no table after streamed rows
    assert "3 checks: 3 passed, 0 failed, 0 differ from the paper" in rest


def test_the_table_fits_a_100_column_terminal_one_line_per_row():
    """86 rows took 445 lines at 100 columns; now one line each (plus header and caption)."""
    from rich.console import Console

    from lastlayer.models.ledger import PASS, Row

    rows = [Row(f"X{i}", "a long description " * 8, 1e-12 * i, 0.0, 1e-10, PASS) for i in range(86)]
    console = Console(width=100, record=True)
    with console.capture() as captured:
        console.print(verify_cmd.table(rows, False, 100))
    lines = captured.get().splitlines()
    assert len(lines) <= 86 + 6 and max(len(line) for line in lines) <= 100
    with console.capture() as captured:
        console.print(verify_cmd.table(rows, True, 100))
    assert captured.get().count("description") == 86 * 8 + 1  # --wide: every word, and the header
