"""Progress of a reproduction (lastlayer.models.progress.Steps): an estimate of the whole run once
the first step is done, lines in a pipe, nothing when quiet."""

from __future__ import annotations

from lastlayer.models import progress
from lastlayer.models.progress import Steps, duration


def test_the_first_step_gives_an_estimate_and_a_pipe_gets_lines(capsys, monkeypatch):
    clock = iter(range(0, 1000, 2))  # every reading of the clock 2 s later: no real time
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    with Steps(20, False, "demo") as steps:  # pytest's capture: not a terminal
        for i in range(20):
            with steps.step(f"unit {i}"):
                pass
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("demo: 20 tasks; the first took 2.0 s: at that rate the run needs about "
                        "40 s (a rough guide: tasks differ in cost; the time left is updated as it goes)")
    assert lines[1].startswith("demo: 2/20 tasks (unit 1), ") and lines[-1].startswith("demo: 20/20")
    assert len(lines) == 11  # the estimate and one line per 10 %


def test_the_estimate_divides_by_the_workers(capsys, monkeypatch):
    clock = iter(range(0, 1000, 2))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    with Steps(20, False, "demo", workers=4) as steps:
        for i in range(20):
            steps.advance(f"unit {i}")  # done elsewhere: no block around it
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("demo: 20 tasks on 4 workers; the first took 2.0 s: at that rate "
                               "the run needs about 10 s")
    assert len(lines) == 11


def test_quiet_prints_nothing(capsys):
    with Steps(3, True, "demo") as steps:
        for i in range(3):
            with steps.step("x"):
                pass
    assert capsys.readouterr().out == ""


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (42, 380, 3 * 3600 + 300, 3 * 86400)] == \
        ["42 s", "6 min 20 s", "3 h 05 min", "3.0 days"]
