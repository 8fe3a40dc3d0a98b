"""The CNNs' conv path on the CPU: the compiled max pooling and im2col / col2im
(lastlayer.kernels.pool, lastlayer.kernels.im2col) against the array formulation the device
path runs (lastlayer.engine.layers.conv) and a memory floor (one np.copy of the input), in
one run, with the load printed. Shapes: the image sections' first and second blocks (28x28
MNIST, 8 and 16 channels) at the eval chunk's 500 rows and the fine-tuning batch of 256,
float32. Correctness first: the kernel's outputs equal the array formulation's."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lastlayer.engine.layers.conv import pool_backward_arrays, pool_forward_arrays
from lastlayer.kernels import col2im, im2col, maxpool2d, maxpool2d_backward

from .conftest import REPORT, interleaved_times

SHAPES = {"block 1 (256, 8, 26, 26)": (256, 8, 26, 26), "block 2 (500, 16, 11, 11)": (500, 16, 11, 11)}
INPUTS = {"block 1 (256, 1, 28, 28)": (256, 1, 28, 28), "block 2 (500, 8, 13, 13)": (500, 8, 13, 13)}


def _arrays_im2col(x, k):
    n, c, h, w = x.shape
    ho, wo = h - k + 1, w - k + 1
    cols = np.empty((n, c, k, k, ho, wo), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = x[:, :, i:i + ho, j:j + wo]
    return cols


@pytest.mark.parametrize("name", list(SHAPES))
def test_maxpool_kernel_vs_arrays(benchmark, name):
    x = np.maximum(np.random.default_rng(0).standard_normal(SHAPES[name]), 0).astype(np.float32)
    y, argmax = maxpool2d(x, (2, 2), (2, 2))
    y_ref, argmax_ref = pool_forward_arrays(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    dy = np.ones_like(y)
    t = interleaved_times({
        "kernel": lambda: maxpool2d(x, (2, 2), (2, 2)),
        "arrays": lambda: pool_forward_arrays(x, (2, 2), (2, 2)),
        "kernel_bwd": lambda: maxpool2d_backward(argmax, dy, x.shape, (2, 2), (2, 2)),
        "arrays_bwd": lambda: pool_backward_arrays(argmax, dy, x.shape, (2, 2), (2, 2)),
        "floor": lambda: np.copy(x)}, rounds=20)
    benchmark.pedantic(maxpool2d, args=(x, (2, 2), (2, 2)), rounds=20, warmup_rounds=2)
    ms = {k: 1e3 * v["median"] for k, v in t.items()}
    benchmark.extra_info.update(ms)
    REPORT.append(f"maxpool 2x2 {name} float32, load {os.getloadavg()[0]:.2f}: forward "
                  f"{ms['kernel']:.2f} ms (arrays {ms['arrays']:.2f} ms, "
                  f"{ms['arrays'] / ms['kernel']:.1f}x; {ms['kernel'] / ms['floor']:.1f}x the "
                  f"floor {ms['floor']:.2f} ms), backward {ms['kernel_bwd']:.2f} ms (arrays "
                  f"{ms['arrays_bwd']:.2f} ms)")


@pytest.mark.parametrize("name", list(INPUTS))
def test_im2col_kernel_vs_arrays(benchmark, name):
    x = np.random.default_rng(0).standard_normal(INPUTS[name]).astype(np.float32)
    cols = im2col(x, (3, 3), (1, 1))
    np.testing.assert_array_equal(cols, _arrays_im2col(x, 3))
    t = interleaved_times({"kernel": lambda: im2col(x, (3, 3), (1, 1)),
                           "arrays": lambda: _arrays_im2col(x, 3),
                           "col2im": lambda: col2im(cols, (1, 1), x.shape),
                           "floor": lambda: np.copy(cols)}, rounds=20)
    benchmark.pedantic(im2col, args=(x, (3, 3), (1, 1)), rounds=20, warmup_rounds=2)
    ms = {k: 1e3 * v["median"] for k, v in t.items()}
    benchmark.extra_info.update(ms)
    REPORT.append(f"im2col 3x3 of {x.shape} float32, load {os.getloadavg()[0]:.2f}: "
                  f"{ms['kernel']:.2f} ms (arrays {ms['arrays']:.2f} ms, "
                  f"{ms['arrays'] / ms['kernel']:.1f}x; floor: a copy of cols {ms['floor']:.2f} "
                  f"ms), col2im {ms['col2im']:.2f} ms")
