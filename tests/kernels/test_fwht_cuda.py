"""The Numba-CUDA FWHT (kernels/fwht_cuda.py) against the NumPy reference.

Without a GPU these run on Numba's CUDA simulator (tests/conftest.py sets
NUMBA_ENABLE_CUDASIM=1 before Numba is imported), which runs every CUDA thread as a
Python thread: sizes stay tiny, and the tunables are patched small so that every code
path runs on them. Tests marked ``gpu`` need a real device and CuPy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import cuda

from lastlayer.kernels import config, device
from lastlayer.kernels.fwht_cuda import fwht_device
from lastlayer.kernels.fwht_reference import fwht_reference

from .cuda_env import skip_without_gpu

NS = [1, 2, 4, 8, 16, 32, 64]

# (CUDA_THREADS_PER_BLOCK, CUDA_SHARED_MAX), and what they exercise for n <= 64, rows 1 or 3:
TUNABLES = {
    # the project's defaults: whole rows in shared memory, several rows per block
    "default": (256, 4096),
    # 4 threads, segments of 16: two butterflies per thread per level (n >= 16), a partial
    # last block (n = 4, 3 rows: blocks of 8 elements), radix-2 / radix-4 global passes
    # (n = 32 / 64) over several blocks
    "4x16": (4, 16),
    # segments of 2: chained global passes, radix 8 + radix 2 (n = 32), 8 + 4 (n = 64)
    "4x2": (4, 2),
}


@pytest.fixture(params=list(TUNABLES), ids=list(TUNABLES))
def tunables(request, monkeypatch):
    threads, shared_max = TUNABLES[request.param]
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", threads)
    monkeypatch.setattr(config, "CUDA_SHARED_MAX", shared_max)


def _on_device(x: np.ndarray, scale: float | None = None) -> np.ndarray:
    """fwht_device on a copy of the (rows, n) array x on the device; the result on the host."""
    d = cuda.to_device(x)
    fwht_device(d, scale)
    return d.copy_to_host()


def _relative_error(y: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(y - exact) / np.linalg.norm(exact))


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("n", NS)
def test_pm1_inputs_are_exact(tunables, n, rows):
    # every intermediate is a small integer: any misplaced or missed butterfly shows
    x = np.random.default_rng(n + rows).choice([-1.0, 1.0], size=(rows, n))
    np.testing.assert_array_equal(_on_device(x), fwht_reference(x))


# n = 1: no levels; 8: all in shared memory (default, 4x16) or segments of 2 + a radix-4
# pass (4x2); 64: shared + global passes (4x16, 4x2)
@pytest.mark.parametrize("n", [1, 8, 64])
def test_random_float32_and_float64(tunables, n):
    rng = np.random.default_rng(n)
    x64 = rng.standard_normal((3, n))
    x32 = x64.astype(np.float32)
    exact32 = fwht_reference(x32.astype(np.float64))  # the float32 input, transformed exactly
    y32 = _on_device(x32)
    assert y32.dtype == np.float32
    assert _relative_error(y32, exact32) <= 1e-6 * math.log2(n)  # n = 1: exact
    y64 = _on_device(x64)
    assert y64.dtype == np.float64
    assert _relative_error(y64, fwht_reference(x64)) <= 1e-12


@pytest.mark.parametrize("n", [2, 8])  # scales 1/sqrt(2), 1/sqrt(8): not powers of two
def test_normalised(tunables, n):
    x = np.random.default_rng(n).standard_normal((3, n))
    y = _on_device(x, 1 / math.sqrt(n))
    assert _relative_error(y, fwht_reference(x, normalized=True)) <= 1e-12


@pytest.mark.parametrize("n", [1, 4, 16, 64])
def test_normalised_pm1_is_exact_when_the_scale_is_a_power_of_two(tunables, n):
    # n = 4^k: 1 / sqrt(n) = 2^-k, so the scaled +-1 transform is exact
    x = np.random.default_rng(n).choice([-1.0, 1.0], size=(3, n)).astype(np.float32)
    np.testing.assert_array_equal(_on_device(x, 1 / math.sqrt(n)), fwht_reference(x, normalized=True))


def test_empty_batch_is_a_no_op():
    d = cuda.to_device(np.zeros((0, 8)))
    fwht_device(d, 0.5)
    assert d.copy_to_host().shape == (0, 8)


@pytest.mark.parametrize("make, error, match", [
    (lambda: np.ones(8), ValueError, "2-D"),
    (lambda: np.ones((2, 8), dtype=np.int32), TypeError, "float32 or float64"),
    (lambda: np.asfortranarray(np.ones((2, 8))), ValueError, "C-contiguous"),
    (lambda: np.ones((2, 6)), ValueError, "power of two"),
])
def test_rejects_bad_arrays(make, error, match):
    with pytest.raises(error, match=match):
        fwht_device(cuda.to_device(make()))


def test_rejects_bad_tunables(monkeypatch):
    monkeypatch.setattr(config, "CUDA_SHARED_MAX", 24)
    with pytest.raises(ValueError, match="power of two"):
        fwht_device(cuda.to_device(np.ones((1, 8))))
    monkeypatch.setattr(config, "CUDA_SHARED_MAX", 1 << 14)
    with pytest.raises(ValueError, match="shared memory"):
        fwht_device(cuda.to_device(np.ones((1, 8))))


def test_without_a_device_the_error_says_so(monkeypatch):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    device.require_cuda.cache_clear()  # forget an earlier successful check
    with pytest.raises(RuntimeError, match="no CUDA device"):
        fwht_device(np.ones((1, 8)))


# ---- on a real GPU, through the public lastlayer.kernels.fwht with CuPy arrays ----


@pytest.mark.gpu
@skip_without_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("log2_n", [0, 1, 5, 12, 13, 16, 17, 24])
def test_gpu_matches_cpu_at_default_tunables(log2_n, dtype):
    # +-1 inputs: both results are exact integers (|y| <= n <= 2^24), so they must agree
    import cupy

    from lastlayer.kernels.fwht import fwht

    n = 1 << log2_n
    x = np.random.default_rng(log2_n).choice([-1.0, 1.0], size=(max(1, (1 << 22) // n), n))
    x = x.astype(dtype)
    np.testing.assert_array_equal(cupy.asnumpy(fwht(cupy.asarray(x))), fwht(x))
    y = cupy.asnumpy(fwht(cupy.asarray(x), normalized=True))
    np.testing.assert_allclose(y, fwht(x, normalized=True), rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.gpu
@skip_without_gpu
def test_gpu_out_argument_and_layouts():
    import cupy

    from lastlayer.kernels.fwht import fwht

    n = 1 << 13  # longer than a block's shared memory at the default tunables
    host = np.random.default_rng(0).standard_normal((2, 3, 2 * n))
    expected = fwht_reference(host[..., ::2])
    x = cupy.asarray(host)[..., ::2]  # a non-contiguous input, shape (2, 3, n)
    np.testing.assert_allclose(cupy.asnumpy(fwht(x)), expected, rtol=1e-12, atol=1e-9)
    out = cupy.empty((2, 3, n))  # another contiguous array
    assert fwht(x, out=out) is out
    np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=1e-12, atol=1e-9)
    out = cupy.empty((2, 3, 2 * n))[..., ::2]  # another non-contiguous array
    assert fwht(x, out=out) is out
    np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=1e-12, atol=1e-9)
    y = cupy.ascontiguousarray(x)
    assert fwht(y, out=y) is y  # in place, contiguous
    np.testing.assert_allclose(cupy.asnumpy(y), expected, rtol=1e-12, atol=1e-9)
    z = cupy.asarray(host)
    view = z[..., ::2]
    assert fwht(view, out=view) is view  # in place, non-contiguous: the rest of z untouched
    np.testing.assert_allclose(cupy.asnumpy(view), expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(cupy.asnumpy(z[..., 1::2]), host[..., 1::2])
    w = cupy.ascontiguousarray(x)
    alias = w[...]  # an out overlapping x that is not x itself
    assert fwht(w, out=alias) is alias
    np.testing.assert_allclose(cupy.asnumpy(alias), expected, rtol=1e-12, atol=1e-9)
    assert fwht(cupy.empty((0, n))).shape == (0, n)
