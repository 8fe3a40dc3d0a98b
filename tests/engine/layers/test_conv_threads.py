"""The training step at more than one thread (issue 29): the convolution's per-sample
products, its weight gradient's chunk products and the conv path's kernels run over slices
of the batch, so Conv2D's forward and backward are the one-thread numbers bit for bit at any
thread count. The forward and dx products are the one-call formulation they replace
(``kernel @ cols``) bit for bit; dW is summed over chunks of GRAD_CHUNK samples in chunk
order (``conv._weight_grad``), so it is held to that sum exactly and to ``np.tensordot``'s
within the bound any two summation orders obey: |a - b| <= 2 gamma_K (|A| |B|), gamma_K =
K u / (1 - K u). Dense keeps BLAS's own threads above the engine's threshold; OpenBLAS
splits their output, not their sums, and gives the same bits here too, but no BLAS promises
that, so those are held to the same bound."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.engine import Conv2D, Dense, Flatten, MaxPool2D, Network, ReLU, softmax_cross_entropy
from lastlayer.engine.layers import conv as conv_module
from lastlayer.engine.threads import blas_threads, thread_limits

LAYERS = [(7, Conv2D(3, 5, 3)),  # odd batch
          (1, Conv2D(2, 4, 3, padding=1)),  # batch 1
          (5, Conv2D(3, 4, (3, 2), stride=(2, 1), padding=(1, 0))),  # strides, padding
          (6, Conv2D(2, 3, (1, 5), padding=(0, 2))),  # one-row inputs
          (2 * conv_module.GRAD_CHUNK + 5, Conv2D(3, 4, 3))]  # three chunks of dW


def _run(layer, params, x, dy, threads):
    with thread_limits(threads=threads):
        y, cache = layer.forward(params, x, train=True)
        dx, grads = layer.backward(params, cache, dy)
        alone = layer.param_grads(params, cache, dy)
    return y, dx, grads, alone, cache


@pytest.mark.parametrize("n, layer", LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_is_the_same_bits_on_one_and_two_threads(n, layer, dtype):
    rng = np.random.default_rng(5)
    params = layer.init(rng, dtype)
    h, w = (1, 17) if layer.kernel_size[0] == 1 else (11, 10)
    x = rng.standard_normal((n, layer.c_in, h, w)).astype(dtype)
    dy = rng.standard_normal(layer.output_shape(x.shape)).astype(dtype)
    y1, dx1, g1, alone1, cache = _run(layer, params, x, dy, 1)
    for threads in (2, 3):
        y2, dx2, g2, alone2, _ = _run(layer, params, x, dy, threads)
        np.testing.assert_array_equal(y2, y1, strict=True)
        np.testing.assert_array_equal(dx2, dx1, strict=True)
        for k in g1:
            np.testing.assert_array_equal(g2[k], g1[k], strict=True)
            np.testing.assert_array_equal(alone1[k], g1[k], strict=True)  # param_grads: no dx
            np.testing.assert_array_equal(alone2[k], g1[k], strict=True)
    # the one-call formulation the threaded one replaces, on one thread: the same bits
    with thread_limits(threads=1):
        kernel = params["W"].reshape(layer.c_out, -1)
        y_ref = kernel @ cache.cols
        y_ref += params["b"][:, None]
        dy3 = dy.reshape(n, layer.c_out, -1)
        dw_tensordot = np.tensordot(dy3, cache.cols, axes=([0, 2], [0, 2]))
        dw_ref = _chunked_weight_grad(dy3, cache.cols)
        dcols_ref = kernel.T @ dy3
        np.testing.assert_array_equal(conv_module._matmul_over_batch(kernel.T, dy3), dcols_ref)
    np.testing.assert_array_equal(y1.reshape(y_ref.shape), y_ref, strict=True)
    np.testing.assert_array_equal(g1["W"].reshape(dw_ref.shape), dw_ref, strict=True)
    a = dy3.transpose(1, 0, 2).reshape(layer.c_out, -1)
    b = cache.cols.transpose(0, 2, 1).reshape(a.shape[1], -1)
    assert np.all(np.abs(dw_ref - dw_tensordot) <= _bound(a, b))
    with thread_limits(threads=2):
        np.testing.assert_array_equal(conv_module._matmul_over_batch(kernel.T, dy3), dcols_ref)


def _chunked_weight_grad(dy3, cols):
    """sum over chunks c of GRAD_CHUNK samples, in order, of dy[c] (C_out, |c| P) times
    cols[c] (K, |c| P) transposed: the sum conv._weight_grad promises, written out."""
    total = None
    for lo in range(0, cols.shape[0], conv_module.GRAD_CHUNK):
        hi = min(lo + conv_module.GRAD_CHUNK, cols.shape[0])
        a = dy3[lo:hi].transpose(1, 0, 2).reshape(dy3.shape[1], -1)
        b = cols[lo:hi].transpose(1, 0, 2).reshape(cols.shape[1], -1)
        total = a @ b.T if total is None else total + a @ b.T
    return total


def test_an_empty_batch_gives_a_zero_weight_gradient():
    layer = Conv2D(3, 4, 3)
    params = layer.init(np.random.default_rng(0))
    y, cache = layer.forward(params, np.zeros((0, 3, 6, 6)), train=True)
    dx, grads = layer.backward(params, cache, y)
    assert dx.shape == (0, 3, 6, 6)
    np.testing.assert_array_equal(grads["W"], np.zeros_like(params["W"]), strict=True)
    assert grads["W"].base is None or grads["W"].base.shape == (4, 27)  # no chunk kept alive


def _bound(a, b):
    """2 gamma_K |a| |b|: how far two summation orders of a @ b may be apart."""
    u = np.finfo(a.dtype).eps / 2
    k = a.shape[-1]
    return 2 * k * u / (1 - k * u) * (np.abs(a) @ np.abs(b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blas_threads_keep_the_products_within_the_summation_bound(dtype):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((128, 1024)).astype(dtype)
    b = rng.standard_normal((1024, 384)).astype(dtype)
    with blas_threads(1):
        one = a @ b
        bt = a.T @ a[:, :300]  # a weight-gradient shape: the sum runs over the batch
    with blas_threads(2):
        two = a @ b
        bt2 = a.T @ a[:, :300]
    assert np.all(np.abs(two - one) <= _bound(a, b))
    assert np.all(np.abs(bt2 - bt) <= _bound(a.T, a[:, :300]))


def test_a_cnn_training_step_on_two_threads_matches_one():
    """The whole step as `lastlayer train` runs it (input_grad=False: the first
    convolution computes no dx), float64: equal to one thread within 1e-13 relative (the
    BLAS-threaded products, above); the loss the same."""
    rng = np.random.default_rng(7)
    net = Network([Conv2D(1, 4, 3), ReLU(), MaxPool2D(2), Conv2D(4, 6, 3), ReLU(), MaxPool2D(2),
                   Flatten(), Dense(6 * 5 * 5, 16), ReLU(), Dense(16, 10)])
    params = net.init(rng)
    x, labels = rng.standard_normal((9, 1, 28, 28)), rng.integers(0, 10, 9)

    def step(threads):
        with thread_limits(threads=threads):
            out, caches = net.forward(params, x, train=True)
            loss, dout = softmax_cross_entropy(out, labels)
            dx, grads = net.backward(params, caches, dout, input_grad=False)
            _, full = net.backward(params, caches, dout)
        assert dx is None
        for g, f in zip(grads, full):  # the lowest layer's gradients without its dx
            for k in g:
                np.testing.assert_array_equal(g[k], f[k], strict=True)
        return loss, grads

    loss1, g1 = step(1)
    loss2, g2 = step(2)
    assert loss2 == pytest.approx(loss1, rel=1e-15)
    for a, b in zip(g1, g2):
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-13, atol=1e-13 * np.abs(a[k]).max())
