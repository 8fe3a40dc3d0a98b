"""The Dask runner's local cluster: its workers' environment, and this process's."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("distributed")

from lastlayer.engine.solvers.streaming.runners import DaskRunner  # noqa: E402

WATCHED = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")


def _environment() -> dict:
    return {k: os.environ.get(k) for k in WATCHED}


def test_local_workers_keep_glibc_trimming_and_this_process_keeps_its_environment():
    """Dask's nanny would start the workers with MALLOC_TRIM_THRESHOLD_=65536 (2.4x slower
    allocation-heavy tasks: runners._worker_environment) and write its variables into this
    process's os.environ."""
    before = _environment()
    with DaskRunner(workers=1) as runner:
        seen = runner.client.run(_environment)
        profiling = runner.client.run(_profiling)
    assert _environment() == before
    (worker,) = seen.values()
    assert worker["MALLOC_TRIM_THRESHOLD_"] is None
    assert worker["OMP_NUM_THREADS"] == "1"  # the nanny's other settings stay
    assert list(profiling.values()) == [False]  # no sampling of the tasks' stacks


def test_a_trim_threshold_left_in_this_process_by_another_cluster_is_kept_from_the_workers(monkeypatch):
    """A LocalCluster started elsewhere in this process (as other tests do) leaves the nanny's
    MALLOC_TRIM_THRESHOLD_ in os.environ; our workers must not inherit it, and it is put back."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with DaskRunner(workers=1) as runner:
        seen = runner.client.run(_environment)
    (worker,) = seen.values()
    assert worker["MALLOC_TRIM_THRESHOLD_"] is None
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"


def _profiling() -> bool:
    import dask

    return dask.config.get("distributed.worker.profile.enabled")
