"""The Numba-CUDA Layca passes (kernels/layca_cuda.py), through the public
lastlayer.kernels.layca API, against the NumPy reference and the CPU kernels.

Without a GPU these run on Numba's CUDA simulator (tests/conftest.py sets
NUMBA_ENABLE_CUDASIM=1 before Numba is imported) on Numba device arrays: sizes stay tiny and
the tunables are patched small so that the multi-block reductions and the grid-stride loops
run. Tests marked ``gpu`` need a real device and CuPy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import cuda

from lastlayer.kernels import config, device
from lastlayer.kernels.layca import LaycaInfo, layca_update, layca_update_many
from lastlayer.kernels.layca_reference import layca_reference

from .cuda_env import skip_without_gpu

TOL = {np.float64: 1e-12, np.float32: 1e-6}

# (LAYCA_CUDA_THREADS, LAYCA_CUDA_MAX_BLOCKS), and what they exercise for n <= 40:
TUNABLES = {
    # one block with idle threads (n <= 16), three for n = 40 (the defaults, 256 threads,
    # cost the simulator a Python thread each: they run in the gpu tests)
    "16x8": (16, 8),
    # 4 threads, at most 3 blocks: several blocks per tensor (n >= 5), grid-stride loops with
    # several elements per thread (n = 40), a final reduction over 2 or 3 partial rows
    "4x3": (4, 3),
    # a single thread: the tree reduction has no levels
    "1x1": (1, 1),
}


@pytest.fixture(params=list(TUNABLES), ids=list(TUNABLES))
def tunables(request, monkeypatch):
    threads, max_blocks = TUNABLES[request.param]
    monkeypatch.setattr(config, "LAYCA_CUDA_THREADS", threads)
    monkeypatch.setattr(config, "LAYCA_CUDA_MAX_BLOCKS", max_blocks)


def _pair(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


def _max_rel(x, y) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.abs(x - y).max() / np.abs(y).max())


def _on_device(w, s, rho, r0):
    """layca_update on device copies of w and s: (the updated w on the host, its info)."""
    d = cuda.to_device(w)
    info = layca_update(d, cuda.to_device(s), rho, r0)
    return d.copy_to_host(), info


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 7), (40,)], ids=str)
def test_matches_reference_and_cpu(tunables, shape, dtype):
    rng = np.random.default_rng(shape[0])
    w, s = _pair(rng, shape, dtype)
    s.flat[-1] = np.inf  # counted and ignored
    got, info = _on_device(w, s, 0.37, 3.0)
    expected, expected_info = layca_reference(w, s, 0.37, 3.0)
    assert got.dtype == dtype and got.shape == shape
    assert _max_rel(got, expected) <= TOL[dtype]
    assert (info.zero_step, info.nonfinite) == (expected_info.zero_step, 1)
    cpu = w.copy()
    cpu_info = layca_update(cpu, s, 0.37, 3.0)
    assert _max_rel(got, cpu) <= {np.float64: 1e-14, np.float32: 1.2e-7}[dtype]
    assert info.norm == pytest.approx(cpu_info.norm, rel=1e-13)


def test_many_equals_one_by_one(tunables):
    rng = np.random.default_rng(1)
    specs = [((7,), np.float32), ((2, 9), np.float64), ((30,), np.float32)]
    ws, ss = zip(*[_pair(rng, sh, dt) for sh, dt in specs])
    rhos, r0s = [0.1, 0.5, 2.0], [1.0, 2.0, 0.5]
    devices = [cuda.to_device(w) for w in ws]
    infos = layca_update_many(devices, [cuda.to_device(s) for s in ss], rhos, r0s)
    for t in range(len(ws)):
        single, info = _on_device(ws[t], ss[t], rhos[t], r0s[t])
        assert infos[t] == info  # the same launches, the same order of additions
        np.testing.assert_array_equal(devices[t].copy_to_host(), single)


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_C1_C2_norm_kept_and_angle_arctan_rho(tunables, scale):
    rng = np.random.default_rng(2)
    w, s = _pair(rng, (6, 5), np.float64)
    got, info = _on_device(w, scale * (s + 0.5 * w), 0.8, 2.0)
    assert not info.zero_step
    assert abs(np.linalg.norm(got) - 2.0) <= 2e-12 and abs(info.norm - 2.0) <= 2e-12
    u, v = w.ravel() / np.linalg.norm(w), got.ravel() / np.linalg.norm(got)
    assert abs(math.atan2(np.linalg.norm(v - (u @ v) * u), u @ v) - math.atan(0.8)) <= 1e-10


def test_C4_degenerate_steps(tunables):
    w = np.random.default_rng(3).standard_normal(11)
    r0 = float(np.linalg.norm(w))
    for s in (np.zeros(11), np.full(11, np.nan), -2.0 * w):
        got, info = _on_device(w, s, 0.5, r0)
        assert info == LaycaInfo(info.norm, True, int(np.isnan(s).sum()))
        np.testing.assert_allclose(got, w, rtol=4e-16, atol=0)


def test_cancellation_fallback(monkeypatch):
    """The residual pass: forced on every tensor (ratio 1), and where it is needed."""
    monkeypatch.setattr(config, "LAYCA_CUDA_THREADS", 4)
    monkeypatch.setattr(config, "LAYCA_CUDA_MAX_BLOCKS", 3)
    rng = np.random.default_rng(4)
    w = rng.standard_normal(40)
    u = rng.standard_normal(40)
    u -= (u @ w) / (w @ w) * w
    nearly_parallel = w + 1e-6 * np.linalg.norm(w) * u / np.linalg.norm(u)  # sin(theta) ~ 1e-6
    got, _ = _on_device(w, nearly_parallel, 0.5, 1.0)
    assert _max_rel(got, layca_reference(w, nearly_parallel, 0.5, 1.0)[0]) <= 1e-9
    monkeypatch.setattr(config, "LAYCA_CANCELLATION_RATIO", 1.0)
    s = rng.standard_normal(40)
    got, _ = _on_device(w, s, 0.5, 1.0)
    assert _max_rel(got, layca_reference(w, s, 0.5, 1.0)[0]) <= 1e-12


def test_errors_modify_nothing(monkeypatch):
    monkeypatch.setattr(config, "LAYCA_CUDA_THREADS", 4)
    w = np.arange(1.0, 6.0)
    d = cuda.to_device(w)
    with pytest.raises(ValueError, match=r"ws\[1\]: w.w = 0.0"):
        layca_update_many([d, cuda.to_device(np.zeros(3))], [cuda.to_device(w), cuda.to_device(np.ones(3))],
                          [0.1, 0.1], [1.0, 1.0])
    np.testing.assert_array_equal(d.copy_to_host(), w)


def test_rejects_bad_arrays_and_mixtures():
    d = cuda.to_device(np.ones((4, 6)))
    with pytest.raises(ValueError, match=r"^w: expected a C-contiguous Numba device array"):
        layca_update(d[:, ::2], cuda.to_device(np.ones((4, 3))), 0.1, 1.0)
    with pytest.raises(ValueError, match=r"^ss\[0\]: expected a C-contiguous Numba device array"):
        layca_update_many([cuda.to_device(np.ones((4, 3)))], [d[:, ::2]], [0.1], [1.0])
    with pytest.raises(TypeError, match=r"^s: expected a device \(CuPy or Numba\) array like w, got ndarray"):
        layca_update(d, np.ones((4, 6)), 0.1, 1.0)
    with pytest.raises(TypeError, match=r"^ws\[1\]: expected a NumPy array like ws\[0\]"):
        layca_update_many([np.ones(3), d], [np.ones(3), d], [0.1, 0.1], [1.0, 1.0])
    with pytest.raises(TypeError, match=r"^s: expected dtype float64 \(w's dtype\), got float32"):
        layca_update(d, cuda.to_device(np.ones((4, 6), dtype=np.float32)), 0.1, 1.0)


@pytest.mark.parametrize("threads, max_blocks, match", [
    (6, 4, "power of two"), (4, 0, "power of two"), (4096, 4, "shared memory")])
def test_rejects_bad_tunables(monkeypatch, threads, max_blocks, match):
    monkeypatch.setattr(config, "LAYCA_CUDA_THREADS", threads)
    monkeypatch.setattr(config, "LAYCA_CUDA_MAX_BLOCKS", max_blocks)
    with pytest.raises(ValueError, match=match):
        layca_update(cuda.to_device(np.ones(3)), cuda.to_device(np.arange(3.0)), 0.1, 1.0)


def test_without_a_device_the_error_says_so(monkeypatch):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    device.require_cuda.cache_clear()  # forget an earlier successful check
    try:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            layca_update(cuda.to_device(np.ones(3)), cuda.to_device(np.arange(3.0)), 0.1, 1.0)
    finally:
        device.require_cuda.cache_clear()


# ---- on a real GPU, with CuPy arrays ----


@pytest.mark.gpu
@skip_without_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_matches_cpu_at_default_tunables(dtype):
    import cupy

    rng = np.random.default_rng(5)
    shapes = [(1,), (3, 3, 64, 64), (1000, 1000), (4097,), (2, 3)]
    ws, ss = zip(*[_pair(rng, sh, dtype) for sh in shapes])
    rhos, r0s = [0.01, 0.1, 1.0, 0.3, 0.2], [1.0, 2.0, 3.0, 4.0, 5.0]
    cpu = [w.copy() for w in ws]
    cpu_infos = layca_update_many(cpu, ss, rhos, r0s)
    gpu = [cupy.asarray(w) for w in ws]
    gpu_infos = layca_update_many(gpu, [cupy.asarray(s) for s in ss], rhos, r0s)
    for t in range(len(ws)):
        tol = {np.float64: 1e-13, np.float32: 1.2e-7}[dtype]
        assert _max_rel(cupy.asnumpy(gpu[t]), cpu[t]) <= tol
        assert gpu_infos[t].zero_step == cpu_infos[t].zero_step
        assert gpu_infos[t].norm == pytest.approx(cpu_infos[t].norm, rel=1e-12)


@pytest.mark.gpu
@skip_without_gpu
def test_gpu_layouts_and_aliasing():
    import cupy

    rng = np.random.default_rng(6)
    w, s = _pair(rng, (64, 48), np.float64)
    expected, info = w.copy(), None
    info = layca_update(expected, s, 0.3, 2.0)
    big = cupy.zeros((128, 96))
    view = big[::2, ::2]  # non-contiguous w: updated through a copy, the rest untouched
    view[...] = cupy.asarray(w)
    assert layca_update(view, cupy.asfortranarray(cupy.asarray(s)), 0.3, 2.0).zero_step == info.zero_step
    np.testing.assert_allclose(cupy.asnumpy(view), expected, rtol=1e-13, atol=1e-15)
    assert not cupy.asnumpy(big[1::2]).any()
    x = cupy.asarray(w)
    assert layca_update(x, x, 0.3, 2.0).zero_step  # s is w: copied, a zero step
    np.testing.assert_allclose(cupy.asnumpy(x), 2.0 * w / np.linalg.norm(w), rtol=1e-14)
