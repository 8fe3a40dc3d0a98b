"""The conv path's kernels over slices of the batch (lastlayer.kernels.threads.over_batch):
im2col, col2im and max pooling give the one-thread result bit for bit at any thread count
(no copy or sum crosses samples), for odd batches, batch 1, strides, padding and
overlapping windows; and over_batch itself splits, waits and re-raises."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest

from lastlayer.kernels import col2im, im2col, maxpool2d, maxpool2d_backward
from lastlayer.kernels import threads as threads_module
from lastlayer.kernels.threads import batch_bounds, kernel_threads, numba_threads, over_batch

# the dispatcher modules (the package's names im2col and maxpool2d are the functions)
im2col_module = importlib.import_module("lastlayer.kernels.im2col")
pool_module = importlib.import_module("lastlayer.kernels.pool")

# (batch, channels, H, W, kernel, stride, padding): padding is applied before im2col, as
# Conv2D does; stride < kernel makes windows overlap, so col2im adds several terms a pixel
CONV = [(7, 3, 13, 13, (3, 3), (1, 1), (0, 0)),  # odd batch: slices of 3 and 4
        (1, 2, 9, 11, (3, 3), (1, 1), (1, 1)),  # batch 1: nothing to split
        (5, 4, 11, 10, (3, 2), (2, 1), (1, 0)),  # strides, uneven padding
        (3, 2, 1, 40, (1, 5), (1, 1), (0, 2))]  # one-row inputs (mnist1d)
POOL = [(7, 3, 26, 26, (2, 2), (2, 2)), (1, 2, 11, 11, (2, 2), (2, 2)),
        (5, 2, 9, 10, (3, 3), (1, 2)),  # overlapping windows: the backward adds in order
        (3, 4, 1, 40, (1, 2), (1, 2))]


def _at(threads, f, *args):
    """f(*args) with the kernels on ``threads`` threads: Numba's count, as
    ``lastlayer.engine.threads.thread_limits`` sets it, up to NUMBA_NUM_THREADS (the cores);
    more slices than that through over_batch's ``threads`` argument."""
    import numba

    if threads <= numba.config.NUMBA_NUM_THREADS:
        with numba_threads(threads):
            assert kernel_threads() == threads
            return f(*args)
    original = threads_module.over_batch

    def wider(work, n, _threads=None):
        return original(work, n, threads)

    for module in (im2col_module, pool_module):
        module.over_batch = wider
    try:
        return f(*args)
    finally:
        for module in (im2col_module, pool_module):
            module.over_batch = original


@pytest.mark.parametrize("n, c, h, w, kernel, stride, pad", CONV)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_and_col2im_are_the_same_bits_on_any_number_of_threads(n, c, h, w, kernel, stride,
                                                                       pad, dtype):
    rng = np.random.default_rng(3)
    x = np.pad(rng.standard_normal((n, c, h, w)).astype(dtype),
               ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    one = _at(1, im2col, x, kernel, stride)
    d = rng.standard_normal(one.shape).astype(dtype)
    dx_one = _at(1, col2im, d, stride, x.shape)
    for threads in (2, 3, 8):  # 8 > batch: one sample a slice, some threads idle
        np.testing.assert_array_equal(_at(threads, im2col, x, kernel, stride), one, strict=True)
        np.testing.assert_array_equal(_at(threads, col2im, d, stride, x.shape), dx_one,
                                      strict=True)
    # and the one-thread result is the definition: the window copy
    ho, wo = one.shape[4:]
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            np.testing.assert_array_equal(
                one[:, :, i, j], x[:, :, i:i + stride[0] * (ho - 1) + 1:stride[0],
                                   j:j + stride[1] * (wo - 1) + 1:stride[1]])


@pytest.mark.parametrize("n, c, h, w, pool, stride", POOL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pooling_is_the_same_bits_on_any_number_of_threads(n, c, h, w, pool, stride, dtype):
    rng = np.random.default_rng(4)
    x = rng.integers(-2, 3, size=(n, c, h, w)).astype(dtype)  # ties
    x[rng.random(x.shape) < 0.05] = np.nan
    y1, a1 = _at(1, maxpool2d, x, pool, stride)
    dy = rng.standard_normal(y1.shape).astype(dtype)
    dx1 = _at(1, maxpool2d_backward, a1, dy, x.shape, pool, stride)
    for threads in (2, 3, 8):
        y, a = _at(threads, maxpool2d, x, pool, stride)
        np.testing.assert_array_equal(y, y1, strict=True)
        np.testing.assert_array_equal(a, a1, strict=True)
        np.testing.assert_array_equal(_at(threads, maxpool2d_backward, a1, dy, x.shape, pool,
                                          stride), dx1, strict=True)


def test_batch_bounds_cover_the_batch_in_nearly_equal_slices():
    assert batch_bounds(7, 2) == [0, 3, 7]
    assert batch_bounds(1, 4) == [0, 1]
    assert batch_bounds(0, 2) == [0, 0]
    assert batch_bounds(8, 3) == [0, 2, 5, 8]
    for n in range(0, 20):
        for t in range(1, 6):
            b = batch_bounds(n, t)
            assert b[0] == 0 and b[-1] == n and all(b2 - b1 >= (n > 0) for b1, b2 in zip(b, b[1:]))


def test_over_batch_runs_every_slice_once_and_on_other_threads():
    seen, names = [], set()
    together = threading.Barrier(3, timeout=10)  # three slices at once, or a BrokenBarrierError

    def work(a, b):
        seen.append((a, b))
        names.add(threading.current_thread().name)
        if b - a < 10:
            together.wait()

    over_batch(work, 10, threads=1)
    assert seen == [(0, 10)] and names == {threading.current_thread().name}
    seen.clear()
    names.clear()
    over_batch(work, 10, threads=3)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 10)]
    assert threading.current_thread().name in names and len(names) == 3  # the caller and two


def test_over_batch_waits_for_every_slice_and_reraises():
    done = []

    def work(a, b):
        if a > 0:
            raise RuntimeError(f"slice {a}:{b}")
        done.append(a)

    with pytest.raises(RuntimeError, match="slice 5:10"):
        over_batch(work, 10, threads=2)
    assert done == [0]

    def slow_first(a, b):
        if a == 0:
            raise KeyError("first")
        threading.Event().wait(0.05)
        done.append(b)

    done.clear()
    with pytest.raises(KeyError):
        over_batch(slow_first, 4, threads=2)
    assert done == [4]  # the other slice had finished before the error came back
