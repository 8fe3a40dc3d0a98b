"""GPU benchmarks (CuPy arrays, Numba-CUDA kernels), run by ``bench/gpu.sh``; skipped
without a CUDA GPU and CuPy.

* ``fwht`` on 256 MiB of rows, n in {2^6, 2^10, 2^12, 2^16, 2^20}, float32 and float64,
  against the device's memory floor (one in-place read+write pass ``x *= s`` over the same
  array, measured in the same run) and against the dense CuPy product X @ H (n <= 2^12);
* the fused Layca update of the 50 ResNet-34-like tensors (``layca_update_many``) against
  the unfused CuPy steps (``layca_reference`` on CuPy arrays) and the five-pass floor (a
  dot product reading w and s, then an axpy reading both and writing w, over one buffer).

Correctness first (against the CPU kernels), then CUDA-event timing: the best of the rounds,
each round's kernels run back to back on the current stream.
"""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.kernels.fwht import fwht
from lastlayer.kernels.hadamard import dense_hadamard
from lastlayer.kernels.layca import layca_update_many
from lastlayer.kernels.layca_reference import layca_reference
from tests.kernels.cuda_env import skip_without_gpu

from .conftest import REPORT
from .test_layca import RHO, _resnet34_shapes

pytestmark = [pytest.mark.gpu, skip_without_gpu]

LOG2_NS = (6, 10, 12, 16, 20)
MIB = 256


def _best_ms(function, rounds: int = 20, warmup: int = 3) -> float:
    """Best time of ``function`` over ``rounds``, measured with CUDA events (ms)."""
    import cupy

    for _ in range(warmup):
        function()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    best = float("inf")
    for _ in range(rounds):
        start.record()
        function()
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop))
    return best


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("log2n", LOG2_NS, ids=lambda k: f"n=2^{k}")
def test_gpu_fwht(log2n, dtype):
    import cupy

    n = 1 << log2n
    rows = MIB * 2**20 // np.dtype(dtype).itemsize // n
    host = np.random.default_rng(0).choice(np.array([-1.0, 1.0], dtype=dtype), size=(rows, n))
    x = cupy.asarray(host)
    np.testing.assert_array_equal(cupy.asnumpy(fwht(x[:4])), fwht(host[:4]))  # exact: +-1
    one = dtype(1.0)
    floor = _best_ms(lambda: x.__imul__(one))
    ours = _best_ms(lambda: fwht(x, out=x))
    line = (f"gpu fwht n=2^{log2n:<2} {np.dtype(dtype).name} {MIB} MiB: {ours:7.3f} ms "
            f"({x.nbytes / ours / 1e6:6.0f} GB/s), floor {floor:7.3f} ms ({2 * x.nbytes / floor / 1e6:6.0f} "
            f"GB/s read+write) -> {ours / floor:4.2f}x floor")
    if log2n <= 12:
        h = cupy.asarray(dense_hadamard(n, dtype))
        dense = _best_ms(lambda: x @ h, rounds=5, warmup=1)
        line += f"; dense X @ H {dense:8.3f} ms -> {dense / ours:5.1f}x slower"
    REPORT.append(line)


def test_gpu_layca_resnet34():
    import cupy

    rng = np.random.default_rng(1)
    shapes = _resnet34_shapes()
    host_ws = [rng.standard_normal(sh, dtype=np.float32) for sh in shapes]
    host_ss = [rng.standard_normal(sh, dtype=np.float32) for sh in shapes]
    rhos = list(RHO * 0.9 ** np.arange(len(shapes)))
    r0s = [float(np.linalg.norm(w.astype(np.float64))) for w in host_ws]
    ws = [cupy.asarray(w) for w in host_ws]
    ss = [cupy.asarray(s) for s in host_ss]
    expected = [w.copy() for w in host_ws]
    layca_update_many(expected, host_ss, rhos, r0s)
    check = [w.copy() for w in ws]
    layca_update_many(check, ss, rhos, r0s)
    for got, want in zip(check, expected):
        assert np.abs(cupy.asnumpy(got) - want).max() <= 1.2e-7 * np.abs(want).max()

    total = sum(w.size for w in host_ws)
    w_flat = cupy.asarray(rng.standard_normal(total, dtype=np.float32))
    s_flat = cupy.asarray(rng.standard_normal(total, dtype=np.float32))
    axpy = cupy.ElementwiseKernel("T s, T a", "T w", "w += a * s", "lastlayer_floor_axpy")
    zero = np.float32(0.0)

    def floor():
        cupy.dot(w_flat, s_flat)  # pass 1: read w and s
        axpy(s_flat, zero, w_flat)  # pass 2: read both, write w (in place, no temporary)

    fused = _best_ms(lambda: layca_update_many(ws, ss, rhos, r0s))

    def unfused_steps():
        return [layca_reference(w, s, r, n) for w, s, r, n in zip(ws, ss, rhos, r0s)]

    unfused = _best_ms(unfused_steps, rounds=5, warmup=1)
    floor_ms = _best_ms(floor)
    REPORT.append(f"gpu layca 50 ResNet-34 tensors ({total / 1e6:.1f} M) float32: fused {fused:7.3f} ms, "
                  f"floor {floor_ms:7.3f} ms -> {fused / floor_ms:4.2f}x floor; unfused CuPy "
                  f"{unfused:7.3f} ms -> fused {unfused / fused:4.1f}x faster")
