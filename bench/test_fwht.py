"""Fast Walsh-Hadamard transform: the Numba kernel against the same-run memory floor, the
dense product X @ H (BLAS), the NumPy reference and, if installed, the ``pyfwht`` package.

For every n in {2^6, ..., 2^20}, float32 and float64, and X of 64 MiB (out of cache) and
1 MiB (in cache): the result is checked against the NumPy reference first, then timed.
The floor is one parallel in-place read+write pass over the same X (``x *= s`` with a
runtime s), measured in the same run: no in-place transform can beat it. Reported: ms,
GB/s of X (bytes of X / time), and the ratio to the floor. Targets (issue 5): <= 1.5x the
floor for n <= 2^16, <= 2.5x at 2^20 (64 MiB), and >= 50x faster than BLAS at n = 4096.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from numba import njit, prange

from kernels.fwht_cpu import fwht_inplace
from kernels.fwht_reference import fwht_reference
from kernels.hadamard import dense_hadamard

from .conftest import REPORT, interleaved_times

LOG2_NS = (6, 8, 10, 12, 14, 16, 20)
SIZES_MIB = (64, 1)
DENSE_MAX_LOG2 = 12  # H itself is 64 MiB in float32 at 2^12; larger ones are not built


@njit(parallel=True, cache=True)
def _floor_pass(flat, s):
    for i in prange(flat.size):
        flat[i] *= s


def _check(x2d):
    sample = x2d[:2].copy()
    expected = fwht_reference(sample)
    fwht_inplace(sample)
    err = np.abs(sample - expected).max() / max(np.abs(expected).max(), 1e-30)
    assert err <= (1e-6 if x2d.dtype == np.float32 else 1e-13) * np.log2(x2d.shape[1]), err


@pytest.mark.parametrize("mib", SIZES_MIB, ids=lambda m: f"{m}MiB")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("log2n", LOG2_NS, ids=lambda k: f"n=2^{k}")
def test_fwht_speed(benchmark, log2n, dtype, mib):
    n = 1 << log2n
    total = mib * 2**20 // np.dtype(dtype).itemsize
    if total < n:
        pytest.skip(f"{mib} MiB holds less than one row of 2^{log2n}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((total // n, n)).astype(dtype)
    _check(x)
    one = dtype(1.0)
    flat = x.reshape(-1)
    funcs = {"floor": lambda: _floor_pass(flat, one), "fwht": lambda: fwht_inplace(x)}
    rounds = 15 if mib == 64 else 200
    t = interleaved_times(funcs, rounds=rounds)
    benchmark.pedantic(lambda: fwht_inplace(x), rounds=5 if mib == 64 else 50, warmup_rounds=1)

    info = {"fwht_ms": 1e3 * t["fwht"]["min"], "floor_ms": 1e3 * t["floor"]["min"],
            "ratio_to_floor": t["fwht"]["min"] / t["floor"]["min"],
            "GBps_of_X": x.nbytes / t["fwht"]["min"] / 1e9}
    extra = ""
    if mib == 64 and log2n <= DENSE_MAX_LOG2:  # BLAS: X @ H, H symmetric
        h = dense_hadamard(n, dtype)
        dense = interleaved_times({"dense": lambda: x @ h}, rounds=2 if log2n >= 12 else 5, warmup=1)
        info["dense_blas_ms"] = 1e3 * dense["dense"]["min"]
        info["speedup_over_blas"] = dense["dense"]["min"] / t["fwht"]["min"]
        extra += f", {info['speedup_over_blas']:.0f}x faster than BLAS X @ H"
    if mib == 1:
        ref = interleaved_times({"numpy": lambda: fwht_reference(x)}, rounds=10, warmup=1)
        info["numpy_reference_ms"] = 1e3 * ref["numpy"]["min"]
        extra += f", {ref['numpy']['min'] / t['fwht']['min']:.0f}x faster than the NumPy reference"
    if importlib.util.find_spec("pyfwht") is not None:  # optional third-party kernel
        import pyfwht  # pragma: no cover

        other = interleaved_times({"pyfwht": lambda: pyfwht.fwht(x)}, rounds=5, warmup=1)
        info["pyfwht_ms"] = 1e3 * other["pyfwht"]["min"]
        extra += f", pyfwht {info['pyfwht_ms']:.2f} ms"
    benchmark.extra_info.update(info)
    target = 2.5 if log2n == 20 else 1.5
    REPORT.append(
        f"fwht n=2^{log2n:<2} {np.dtype(dtype).name} {mib:>2} MiB: {info['fwht_ms']:7.2f} ms "
        f"{info['GBps_of_X']:6.1f} GB/s, floor {info['floor_ms']:6.2f} ms -> "
        f"{info['ratio_to_floor']:5.2f}x floor" + (f" (target <= {target}x)" if mib == 64 else "")
        + extra)
