"""Shared benchmark helpers: interleaved timing and a report printed after the run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest

REPORT: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Benchmarks run in this one process: the test suite's worker processes (``-n`` in
    pyproject.toml's addopts) would time two benchmarks against each other, and their
    report (``pytest_terminal_summary`` below) would stay in the workers. Runs before
    pytest-xdist's own ``pytest_configure``, which then starts no worker."""
    if getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0
        config.option.dist = "no"
        config.option.tx = []


def interleaved_times(functions: dict[str, Callable[[], object]], rounds: int = 30,
                      warmup: int = 3) -> dict[str, dict[str, float]]:
    """Time each function ``rounds`` times, alternating between them so that drift in the
    machine's speed (turbo, other load) affects all alike. Returns min and median seconds."""
    for _ in range(warmup):
        for f in functions.values():
            f()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, f in functions.items():
            t0 = time.perf_counter()
            f()
            samples[name].append(time.perf_counter() - t0)
    return {name: {"min": min(s), "median": statistics.median(s)} for name, s in samples.items()}


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("lastlayer benchmark report")
        for line in REPORT:
            terminalreporter.write_line(line)
