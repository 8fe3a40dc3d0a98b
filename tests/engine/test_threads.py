"""Thread counts chosen by problem size (lastlayer.engine.threads), overrides respected."""

from __future__ import annotations

import numba
import pytest
from threadpoolctl import threadpool_info

from lastlayer.engine import threads
from lastlayer.engine.threads import SECOND_THREAD_FLOPS, thread_limits, threads_for


def blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


@pytest.fixture
def clean_env(monkeypatch):
    for name in (threads.ENV, "NUMBA_NUM_THREADS", *threads.BLAS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)


def test_one_thread_below_the_threshold_and_more_only_for_large_calls(clean_env):
    assert threads_for(0) == 1 and threads_for(SECOND_THREAD_FLOPS * 0.99) == 1
    assert threads_for(2 * SECOND_THREAD_FLOPS) == 2 and threads_for(1e15) == 2  # at most the cores


def test_the_environment_override_wins_and_a_bad_one_is_named(clean_env, monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")
    assert threads_for(0) == 3
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(ValueError, match="LASTLAYER_THREADS: expected an integer >= 1, got 'two'"):
        threads_for(0)


def test_thread_limits_sets_blas_and_numba_and_restores_them(clean_env):
    before_blas, before_numba = blas_threads(), numba.get_num_threads()
    with thread_limits(0) as n:
        assert n == 1 and blas_threads() == {1} and numba.get_num_threads() == 1
    assert blas_threads() == before_blas and numba.get_num_threads() == before_numba


def test_a_users_blas_setting_stands_unless_the_count_is_exact(clean_env, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    before = blas_threads()
    with thread_limits(0):
        assert blas_threads() == before  # the user's choice
    with thread_limits(threads=1):  # the ledger's and the experiments' pinned count
        assert blas_threads() == {1}


def test_a_small_product_runs_at_one_blas_thread_and_a_large_one_as_set(clean_env, monkeypatch):
    """blas_for: below SECOND_THREAD_FLOPS one BLAS thread (no idle OpenBLAS threads left
    spinning after it), above it the count the block runs with; Dense asks per product."""
    import numpy as np

    from lastlayer.engine import Dense
    from lastlayer.engine.layers import dense

    with thread_limits(threads=2):
        with threads.blas_for(SECOND_THREAD_FLOPS / 2):
            assert blas_threads() == {1}
        assert blas_threads() == {2}
        with threads.blas_for(SECOND_THREAD_FLOPS):
            assert blas_threads() == {2}
        seen = []
        original = dense.blas_for

        def recording(flops, xp):
            seen.append(flops)
            return original(flops, xp)

        monkeypatch.setattr(dense, "blas_for", recording)
        layer = Dense(30, 20)
        params = layer.init(np.random.default_rng(0))
        y, cache = layer.forward(params, np.ones((8, 30)))
        layer.backward(params, cache, np.ones_like(y))
        assert seen == [2.0 * 8 * 30 * 20] * 2
