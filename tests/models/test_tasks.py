"""Experiments as tasks (lastlayer.models.tasks): the same bits serially, on a local Dask
cluster, with a worker killed mid-run and on a separately started cluster; dependencies,
the journal of finished tasks and --resume."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from lastlayer.models import progress
from lastlayer.models.cli import main
from lastlayer.models.tasks import Execution, ResumeError, Tasks, TaskError

pytest.importorskip("distributed")

IGNORED_ATTRIBUTES = {"date"}  # provenance: when the file was written


def contents(path: Path) -> dict:
    """Every group and dataset of an HDF5 file: dtype, shape, bytes and attributes (the
    write date aside)."""
    out = {}

    def attributes(obj):
        return {k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()
                if k not in IGNORED_ATTRIBUTES}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            value = np.asarray(obj[()])
            out[name] = (obj.dtype.str, obj.shape, value.tobytes(), attributes(obj))
        else:
            out[name] = attributes(obj)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        out["/"] = attributes(f)
    return out


def assert_same_results(a: Path, b: Path) -> None:
    ca, cb = contents(a), contents(b)
    assert sorted(ca) == sorted(cb)
    differing = [k for k in ca if ca[k] != cb[k]]
    assert not differing, f"{len(differing)} entries differ, e.g. {differing[:3]}"


# ---- the runner itself (serial: this process) -------------------------------------------
def add(a, b):
    return a + b


def test_tasks_run_after_the_tasks_they_need_and_results_are_read_by_handle():
    tasks = Tasks()
    x = tasks.submit("x", add, 1, 2)
    y = tasks.submit("y", add, x, 10)
    z = tasks.submit("z", add, a=y, b=tasks.share(100))
    with pytest.raises(RuntimeError, match="not run yet"):
        z.result()
    tasks.run()
    assert (x.result(), y.result(), z.result()) == (3, 13, 113)
    assert tasks.ran == 3


def test_the_closing_line_says_how_busy_the_workers_were():
    tasks = Tasks()
    done = [tasks.submit(f"t{i}", add, i, i) for i in range(3)]
    tasks.durations = {"t0": 10.0, "t1": 30.0, "t2": 20.0}
    assert tasks.summary(done, 40.0, 2) == ("run: 3 tasks in 40 s on 2 workers, busy 75 % of "
                                            "the time; the longest, 't1', took 30 s")
    assert "in this process, busy 150 %" in tasks.summary(done, 40.0, 1)


def test_the_longest_chains_of_costs_start_first():
    from lastlayer.models.tasks import _bottom_levels

    tasks = Tasks()
    body = tasks.submit("pre-training", add, 1, 1, cost=10)
    heads = [tasks.submit(f"head {i}", add, body, i, cost=3) for i in range(2)]
    small = tasks.submit("small", add, 0, 0)
    levels = _bottom_levels(tasks.handles)
    assert [levels[id(h)] for h in (body, *heads, small)] == [13.0, 3.0, 3.0, 1.0]
    with pytest.raises(ValueError, match="cost: expected a finite number > 0"):
        tasks.submit("free", add, 0, 0, cost=0)


def test_labels_are_unique_and_handles_belong_to_their_run():
    tasks, other = Tasks(), Tasks()
    tasks.submit("x", add, 1, 2)
    with pytest.raises(ValueError, match="got 'x' twice"):
        tasks.submit("x", add, 1, 2)
    with pytest.raises(ValueError, match="not a task of this run"):
        other.submit("y", add, tasks.handles[0], 1)


CALLS: list[str] = []


def counted(label, value):
    CALLS.append(label)
    return {"value": np.arange(value, dtype=np.float64), "label": label}


def three(journal: Path, resume: bool, identity=None, quiet=True):
    tasks = Tasks(Execution(journal=journal, resume=resume), identity=identity or {"run": 1},
                  quiet=quiet)
    handles = [tasks.submit(f"t{i}", counted, f"t{i}", i) for i in range(3)]
    return tasks, handles


def test_a_resumed_run_runs_only_the_unfinished_tasks_and_equals_one_that_never_stopped(tmp_path):
    journal = tmp_path / "journal"
    CALLS.clear()
    tasks, handles = three(journal, False)
    tasks.run()
    whole = [h.result() for h in handles]
    (journal / task_file("t1")).unlink()  # as if the run had stopped before t1 finished
    CALLS.clear()
    tasks, handles = three(journal, True)
    tasks.run()
    assert CALLS == ["t1"]
    for a, b in zip(whole, (h.result() for h in handles)):
        assert a["label"] == b["label"] and a["value"].tobytes() == b["value"].tobytes()
    CALLS.clear()
    tasks, _ = three(journal, False)  # without --resume: everything again
    tasks.run()
    assert CALLS == ["t0", "t1", "t2"]


def task_file(label: str) -> str:
    from lastlayer.models.journal import Journal

    return Journal.name(label)


def test_a_damaged_task_file_is_reported_and_its_task_run_again(tmp_path, capsys):
    journal = tmp_path / "journal"
    three(journal, False)[0].run()
    damaged = journal / task_file("t2")
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the pickled result
    damaged.write_bytes(bytes(data))
    CALLS.clear()
    tasks, handles = three(journal, True, quiet=False)
    tasks.run()
    assert CALLS == ["t2"]
    out = capsys.readouterr().out
    assert "1 damaged task file(s)" in out and "resuming: 2 of 3 tasks read back" in out
    assert handles[2].result()["value"].tolist() == [0.0, 1.0]


def test_resume_refuses_a_journal_of_other_settings(tmp_path):
    journal = tmp_path / "journal"
    three(journal, False, identity={"seeds": 3})[0].run()
    with pytest.raises(ResumeError, match="seeds: 3 then, 5 now"):
        three(journal, True, identity={"seeds": 5})[0].run()


# ---- on Dask ---------------------------------------------------------------------------
def die(label):
    os._exit(3)  # the worker process dies with the task


def test_a_task_whose_worker_dies_twice_stops_the_run():
    """... and the quieted Dask log is put back to the caller's level."""
    log = logging.getLogger("distributed")
    before = log.level
    tasks = Tasks(Execution(workers=2))
    tasks.submit("fatal", die, "fatal")
    with pytest.raises(TaskError, match="'fatal' was lost twice: a worker process"):
        tasks.run()
    assert log.level == before


def total(data, offset=0.0):
    return float(data.sum()) + offset


def after_the_first_task(monkeypatch, kill) -> list[int]:
    """Once the first task is done (the signal: progress advances), ``kill(client)`` once;
    returns the list its killed pids go into."""
    from distributed import default_client

    killed: list[int] = []
    advance = progress.Steps.advance

    def advance_then_kill(self, description):
        advance(self, description)
        if not killed:
            killed.extend(kill(default_client()))

    monkeypatch.setattr(progress.Steps, "advance", advance_then_kill)
    return killed


def test_a_shared_data_set_lost_with_every_worker_is_sent_again(monkeypatch):
    """After the first task is done (the signal: progress advances), every worker is killed:
    the data set scattered to them is gone with them. The task that needs it next starts
    only now (it waits for the first), so it is lost once and run again with the data set
    scattered anew, on the workers the nannies restarted."""
    def kill_all(client) -> list[int]:
        old = set(client.scheduler_info()["workers"])
        pids = list(client.run(os.getpid).values())
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60  # a bound, not a wait: the loop ends on the signal
        while old & set(client.scheduler_info()["workers"]):  # asked anew each time
            assert time.monotonic() < deadline, "the scheduler never removed the dead workers"
            time.sleep(0.05)  # leave the cores to the scheduler and the nannies
        return pids

    killed = after_the_first_task(monkeypatch, kill_all)
    data = np.arange(100_000, dtype=np.float64)
    tasks = Tasks(Execution(workers=2))
    shared = tasks.share(data)
    first = tasks.submit("first", total, shared)
    second = tasks.submit("second", total, shared, first)
    tasks.run()
    assert len(killed) == 2
    assert (first.result(), second.result()) == (data.sum(), 2 * data.sum())


def compare(out: Path, *flags: str) -> Path:
    """`lastlayer compare` on a small task set: digits, 1 seed, quick budgets (11 tasks)."""
    assert main(["compare", "--quick", "--tasks", "digits", "--seeds", "1", "--quiet",
                 "--out", str(out), *flags]) == 0
    return out / "results.h5"


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    return compare(tmp_path_factory.mktemp("serial") / "run", "--workers", "1")


def test_two_local_workers_give_the_same_file_as_one(serial, tmp_path):
    assert_same_results(serial, compare(tmp_path / "run", "--workers", "2"))


def test_a_worker_killed_mid_run_is_replaced_and_the_file_is_the_same(serial, tmp_path,
                                                                      monkeypatch):
    """After the first task is done (the signal: progress advances), one worker that is
    running a task is killed (SIGKILL); its task is retried once elsewhere."""

    def kill_a_busy_one(client) -> list[int]:
        busy = [w for w, keys in client.processing().items() if keys]
        assert busy, "no worker was running a task when the first one finished"
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        return [pid]

    killed = after_the_first_task(monkeypatch, kill_a_busy_one)
    assert_same_results(serial, compare(tmp_path / "run", "--workers", "2"))
    assert len(killed) == 1


def _started(command: list[str], signal_line: str) -> tuple[subprocess.Popen, str]:
    """Start a process and read its stderr up to the line announcing it is ready."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True)
    for line in process.stderr:
        if signal_line in line:  # the rest of its log is read and dropped: no full pipe
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, line
    raise AssertionError(f"{command[2]} stopped before saying {signal_line!r}")


def test_an_existing_cluster_gives_the_same_file(serial, tmp_path):
    """`dask scheduler` and two `dask worker` processes started here, --scheduler ADDRESS."""
    processes = []
    try:
        scheduler, line = _started([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                    "--host", "127.0.0.1", "--port", "0",
                                    "--dashboard-address", ":0"], "Scheduler at:")
        processes.append(scheduler)
        address = line.split("Scheduler at:")[1].strip()
        for _ in range(2):
            worker, _ = _started([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                  "--nthreads", "1", "--no-nanny", "--dashboard-address", ":0"],
                                 "Registered to:")
            processes.append(worker)
        assert_same_results(serial, compare(tmp_path / "run", "--scheduler", address))
    finally:
        for p in reversed(processes):  # the workers first, while their scheduler answers
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_ctrl_c_writes_nothing_partial_and_resume_runs_only_the_rest(serial, tmp_path):
    """SIGINT to the command's whole process group, as Ctrl-C at a terminal sends it, once
    the first task is done (the signal: its progress line): exit 130, one message and no
    worker's traceback, no --out, the finished tasks kept; --resume reads them back and
    gives the same file."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lastlayer", "compare", "--quick", "--tasks", "digits",
               "--seeds", "1", "--out", str(out)]
    process = subprocess.Popen(command + ["--workers", "2"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in process.stdout:
        if "the first took" in line:
            os.killpg(process.pid, signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "interrupted; nothing partial was written" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 2, stderr
    assert not out.exists() and not list(tmp_path.glob(".run.partial-*"))
    journal = tmp_path / ".run.tasks"
    kept = len(list(journal.glob("*.task")))
    assert kept >= 1 and f"kept in {journal}/" in stderr
    resumed = subprocess.run(command + ["--workers", "1", "--resume"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {kept} of 11 tasks read back" in resumed.stdout
    assert_same_results(serial, out / "results.h5")
    assert not journal.exists()  # removed once the folder is written
