"""Fast Walsh-Hadamard transform: the Numba kernel against the same-run memory floor, the
compiled SIMD C implementation ``fht-cpu`` (optional: ``pip install -e '.[bench]'``), the
dense product X @ H (BLAS) and the NumPy reference.

For n in {2^6, 2^10, 2^12, 2^16, 2^20}, float32 and float64, X of 64 MiB (out of cache) and
1 MiB (in cache), all threads (``numba.get_num_threads()``, the same count for fht-cpu):

* correctness first: our result and fht-cpu's on the first rows against the NumPy
  reference (float64 to 1e-13, float32 to 1e-6, times log2 n); +-1 inputs bit-exact;
* then timed, interleaved (``conftest.interleaved_times``: the functions alternate, so that
  drift in the machine's speed hits all alike), best of the rounds.

The floor is one parallel in-place read+write pass over the same X (``x *= s`` with a
runtime s): no in-place transform can beat it. Reported: ms, GB/s of X, the ratio to the
floor, the ratio to fht-cpu, and the load average (the machine is shared: other processes
slow the parallel kernels and the floor unevenly). Targets (issue 12): <= 1.1x fht-cpu at
every n and dtype; <= 1.5x the floor for n <= 2^12 (64 MiB).
"""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest
from numba import njit, prange

from lastlayer.kernels.fwht_cpu import fwht_inplace
from lastlayer.kernels.fwht_reference import fwht_reference
from lastlayer.kernels.hadamard import dense_hadamard

from .conftest import REPORT, interleaved_times

try:  # the best outside implementation, if installed (the `bench` extra)
    import fht_cpu
except ImportError:  # pragma: no cover - reported in the benchmark report
    fht_cpu = None

LOG2_NS = (6, 10, 12, 16, 20)
SIZES_MIB = (64, 1)
DENSE_MAX_LOG2 = 12  # H itself is 64 MiB in float32 at 2^12; larger ones are not built
FLOOR_TARGET_MAX_LOG2 = 12
FHT_TARGET = 1.1
FLOOR_TARGET = 1.5


@njit(parallel=True, cache=True)
def _floor_pass(flat, s):
    for i in prange(flat.size):
        flat[i] *= s


def _fht_cpu(x: np.ndarray, threads: int) -> None:
    """fht-cpu's row transform, in place, unnormalised like ours."""
    (fht_cpu.fht_2d_f32_rows if x.dtype == np.float32 else fht_cpu.fht_2d_f64_rows)(x, threads)


def _check(x2d: np.ndarray, threads: int) -> None:
    """Ours (and fht-cpu's) against the reference on the first rows, and +-1 bit-exact."""
    sample = x2d[:2].copy()
    expected = fwht_reference(sample)
    tolerance = (1e-6 if x2d.dtype == np.float32 else 1e-13) * np.log2(x2d.shape[1])
    candidates = {"fwht": lambda a: fwht_inplace(a)}
    if fht_cpu is not None:
        candidates["fht-cpu"] = lambda a: _fht_cpu(a, threads)
    for name, transform in candidates.items():
        got = sample.copy()
        transform(got)
        err = np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30)
        assert err <= tolerance, (name, err)
    signs = np.sign(sample) + (sample == 0)
    exact = signs.copy()
    fwht_inplace(exact)
    np.testing.assert_array_equal(exact, fwht_reference(signs))


@pytest.mark.parametrize("mib", SIZES_MIB, ids=lambda m: f"{m}MiB")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("log2n", LOG2_NS, ids=lambda k: f"n=2^{k}")
def test_fwht_speed(benchmark, log2n, dtype, mib):
    n = 1 << log2n
    total = mib * 2**20 // np.dtype(dtype).itemsize
    if total < n:
        pytest.skip(f"{mib} MiB holds less than one row of 2^{log2n}")
    threads = numba.get_num_threads()
    x = np.random.default_rng(0).standard_normal((total // n, n)).astype(dtype)
    _check(x, threads)
    one = dtype(1.0)
    flat = x.reshape(-1)
    funcs = {"floor": lambda: _floor_pass(flat, one), "fwht": lambda: fwht_inplace(x)}
    if fht_cpu is not None:
        funcs["fht_cpu"] = lambda: _fht_cpu(x, threads)
    rounds = 25 if mib == 64 else 200
    t = interleaved_times(funcs, rounds=rounds)
    benchmark.pedantic(lambda: fwht_inplace(x), rounds=5 if mib == 64 else 50, warmup_rounds=1)

    best = {name: v["min"] for name, v in t.items()}
    info = {"fwht_ms": 1e3 * best["fwht"], "floor_ms": 1e3 * best["floor"],
            "ratio_to_floor": best["fwht"] / best["floor"], "GBps_of_X": x.nbytes / best["fwht"] / 1e9,
            "threads": threads, "load": os.getloadavg()[0]}
    targets = []
    if mib == 64 and log2n <= FLOOR_TARGET_MAX_LOG2:
        targets.append(f"floor <= {FLOOR_TARGET}x")
    if fht_cpu is not None:
        info["fht_cpu_ms"] = 1e3 * best["fht_cpu"]
        info["ratio_to_fht_cpu"] = best["fwht"] / best["fht_cpu"]
        versus = (f"fht-cpu {info['fht_cpu_ms']:7.2f} ms -> {info['ratio_to_fht_cpu']:4.2f}x fht-cpu")
        if mib == 64:
            targets.append(f"fht-cpu <= {FHT_TARGET}x")
    else:
        versus = "fht-cpu not installed (pip install -e '.[bench]')"
    extra = ""
    if mib == 64 and log2n <= DENSE_MAX_LOG2:  # BLAS: X @ H, H symmetric
        h = dense_hadamard(n, dtype)
        dense = interleaved_times({"dense": lambda: x @ h}, rounds=2 if log2n >= 12 else 5, warmup=1)
        info["dense_blas_ms"] = 1e3 * dense["dense"]["min"]
        info["speedup_over_blas"] = dense["dense"]["min"] / best["fwht"]
        extra += f", {info['speedup_over_blas']:.0f}x faster than BLAS X @ H"
    if mib == 1:
        ref = interleaved_times({"numpy": lambda: fwht_reference(x)}, rounds=10, warmup=1)
        info["numpy_reference_ms"] = 1e3 * ref["numpy"]["min"]
        extra += f", {ref['numpy']['min'] / best['fwht']:.0f}x faster than the NumPy reference"
    benchmark.extra_info.update(info)
    REPORT.append(
        f"fwht n=2^{log2n:<2} {np.dtype(dtype).name} {mib:>2} MiB: {info['fwht_ms']:7.2f} ms "
        f"{info['GBps_of_X']:6.1f} GB/s | floor {info['floor_ms']:6.2f} ms -> "
        f"{info['ratio_to_floor']:4.2f}x floor | {versus}"
        + (f" (targets {', '.join(targets)})" if targets else "") + extra
        + f" [{threads} threads, load {info['load']:.1f}]")
