"""2-D convolution and max pooling on NCHW tensors.

Both are written as a loop over the kh * kw offsets of the window: for offset (i, j) the
window elements of every output position form one strided slice of the (padded) input,

    x_pad[:, :, i : i + s (Ho - 1) + 1 : s, j : j + s (Wo - 1) + 1 : s]     # (N, C, Ho, Wo)

so im2col, col2im and pooling are kh * kw whole-array operations, never a Python loop over
pixels, and they work unchanged on CuPy arrays. On NumPy arrays max pooling runs as one
compiled pass instead (``lastlayer.kernels.maxpool2d``: the same numbers; at (256, 8, 26, 26)
float32, forward 1.3 ms against 18 ms, backward 2.1 ms against 4.8 ms). The convolution is
one batched matrix product. Output size: Ho = floor((H + 2 p - kh) / s) + 1 (rows that do
not fill a window are dropped, as in PyTorch and Keras 'valid').

Threads (NumPy arrays). With more than one kernel thread (``lastlayer.engine.threads``
chooses the count) the per-sample products of forward and backward run over slices of the
batch on the kernels' pool (``lastlayer.kernels.threads.over_batch``), each at one BLAS
thread: the same products as one call, so the numbers do not depend on the thread count.
A single product of (C_out, K) with (K, P) per sample is too small to gain from BLAS's own
threads (measured at (64, 288) x (288, 121) float32 on the 2-core machine: 4.5 ms at one
thread, 6.6 ms at two; over the batch on two threads 2.5 ms). dW's sum runs over the
batch: it is a sum of products over fixed chunks of GRAD_CHUNK samples, added in chunk
order (``_weight_grad``), the chunks on the same pool. With a batch of more than one
sample, no product of the layer runs on BLAS's own threads: OpenBLAS's idle threads spin
after a call and took the second core from the batch slices (the CNN of bench/test_step_vs_torch.py at 2 threads on the
project's 2-core machine: conv2's forward 6.3 ms and backward 12.5 ms with BLAS threads in
the step, 3.4-3.9 and 6.6-7.5 ms without; at one thread 6.0-6.2 and 11.5-11.7 ms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from lastlayer.kernels import col2im, im2col, maxpool2d, maxpool2d_backward
from lastlayer.kernels.threads import kernel_threads, over_batch

from .._checks import pair, positive_int
from ..backend import array_module
from ..threads import blas_threads
from .initializers import Constant, HeNormal, Initializer
from .base import Layer, init_kernel_and_bias


def _window_slice(offset: int, stride: int, n_out: int) -> slice:
    """Input positions ``offset + stride * k`` for k = 0 .. n_out - 1."""
    return slice(offset, offset + stride * (n_out - 1) + 1, stride)


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _matmul_over_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a (M, K) and b (N, K, P) NumPy arrays -> (N, M, P): NumPy's one product
    per sample, run over slices of N on ``kernel_threads()`` threads at one BLAS thread each
    (module docstring), so every thread count gives the one-thread numbers bit for bit."""
    threads = kernel_threads()
    if threads <= 1 or b.shape[0] <= 1:
        return a @ b
    out = np.empty((b.shape[0], a.shape[0], b.shape[2]), dtype=np.result_type(a, b))
    with blas_threads(1):
        over_batch(lambda s, e: np.matmul(a, b[s:e], out=out[s:e]), b.shape[0], threads)
    return out


GRAD_CHUNK = 16  # samples per partial product of dW (_weight_grad): a constant, never the
                 # thread count, so that the order of dW's sum is the same on every machine


def _weight_grad(dy, cols):
    """dW[o, k] = sum_n sum_p dy[n, o, p] cols[n, k, p] for dy (N, C_out, P) and cols
    (N, K, P), NumPy or CuPy arrays, summed as

        dW = sum over chunks c, in order, of  A_c @ B_c^T,
        A_c = dy[c] as (C_out, |c| P),  B_c = cols[c] as (K, |c| P),

    over chunks c of GRAD_CHUNK consecutive samples (the last one shorter). On NumPy arrays
    the chunks' products run on the kernels' threads at one BLAS thread each, each chunk copying its own
    two operands (rows of P contiguous elements, never an element-wise transpose), and are
    added in chunk order on the calling thread: the same bits for every thread count. A
    single BLAS product sums over all N P at once; with a second BLAS thread OpenBLAS splits
    only dW's small output, and its idle threads then spin, taking the core the next
    layer's batch slices need (the CNN step at 2 threads: module docstring). One chunk
    (N <= GRAD_CHUNK) is one product, tensordot's sum in another layout. On a device the
    same chunks, one after another: the same sum of chunks as the host (each chunk's own
    sum is cuBLAS's on a GPU, so the bits there are not the host's)."""
    xp = array_module(cols)
    n, k, p = cols.shape
    c_out = dy.shape[1]
    dtype = np.result_type(dy.dtype, cols.dtype)  # NumPy dtypes on a device too
    if n == 0:  # an empty batch: no chunk, a zero gradient (as tensordot gives)
        return xp.zeros((c_out, k), dtype=dtype)
    starts = list(range(0, n, GRAD_CHUNK)) + [n]
    partial = xp.empty((len(starts) - 1, c_out, k), dtype=dtype)

    def chunks(first: int, stop: int) -> None:
        for c in range(first, stop):
            lo, hi = starts[c], starts[c + 1]
            a = dy[lo:hi].transpose(1, 0, 2).reshape(c_out, (hi - lo) * p)
            b = cols[lo:hi].transpose(1, 0, 2).reshape(k, (hi - lo) * p)
            partial[c] = a @ b.T

    if xp is np:
        with blas_threads(1):
            over_batch(chunks, len(starts) - 1)
    else:
        chunks(0, len(starts) - 1)
    total = partial[0].copy()  # its own array: dW keeps no chunk's partial sum alive
    for c in range(1, len(partial)):  # in chunk order (np.sum's pairwise order would do too)
        total += partial[c]
    return total


class Conv2DCache(NamedTuple):
    cols: object  # (N, C_in * kh * kw, Ho * Wo) im2col matrix, needed for dW
    x_shape: tuple  # (N, C_in, H, W)


@dataclass(frozen=True)
class Conv2D(Layer):
    """Cross-correlation ``y[n, o] = b[o] + sum_c x[n, c] (*) W[o, c]`` with stride and zero
    padding (what deep-learning libraries call convolution).

    Parameters: ``W`` (C_out, C_in, kh, kw), ``b`` (C_out,) if ``bias``.
    Input (N, C_in, H, W) -> output (N, C_out, Ho, Wo), Ho = (H + 2 ph - kh) // sh + 1.
    """

    c_in: int
    c_out: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    bias: bool = True
    weight_init: Initializer = field(default_factory=HeNormal)
    bias_init: Initializer = field(default_factory=Constant)

    def __post_init__(self):
        positive_int(self.c_in, "c_in")
        positive_int(self.c_out, "c_out")
        # store normalised pairs so that every method sees (int, int)
        object.__setattr__(self, "kernel_size", pair(self.kernel_size, "kernel_size", 1))
        object.__setattr__(self, "stride", pair(self.stride, "stride", 1))
        object.__setattr__(self, "padding", pair(self.padding, "padding", 0))

    def __str__(self):
        kh, kw = self.kernel_size
        return (f"Conv2D({self.c_in} -> {self.c_out}, {kh}x{kw}, stride {self.stride}, "
                f"padding {self.padding})")

    def param_shapes(self):
        shapes = {"W": (self.c_out, self.c_in, *self.kernel_size)}
        if self.bias:
            shapes["b"] = (self.c_out,)
        return shapes

    def init(self, rng, dtype=np.float64):
        return init_kernel_and_bias(self, rng, dtype)

    def output_shape(self, input_shape):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        expected = (f"(N, {self.c_in}, H, W) with H + {2 * ph} >= {kh} and "
                    f"W + {2 * pw} >= {kw}")
        if len(input_shape) != 4 or input_shape[1] != self.c_in:
            raise self.shape_error(expected, input_shape)
        n, _, h, w = input_shape
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise self.shape_error(expected, input_shape)
        return (n, self.c_out, _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw))

    def forward(self, params, x, train=False, *, state=None, rng=None):
        """x: (N, C_in, H, W) -> y: (N, C_out, Ho, Wo)."""
        self.check_input(params, x)
        xp = array_module(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, c, h, w = x.shape
        ho, wo = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
        if ph or pw:
            x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # (N, C, H + 2ph, W + 2pw)

        # im2col: cols[n, c, i, j, p, q] = x_pad[n, c, i + sh p, j + sw q]
        if xp is np:  # compiled row copies (kernels/im2col_cpu.py), the same array
            cols = im2col(x, (kh, kw), (sh, sw))
        else:
            cols = xp.empty((n, c, kh, kw, ho, wo), dtype=x.dtype)
            for i in range(kh):
                for j in range(kw):
                    cols[:, :, i, j] = x[:, :, _window_slice(i, sh, ho), _window_slice(j, sw, wo)]
        cols = cols.reshape(n, c * kh * kw, ho * wo)  # (N, K, P), K = C kh kw, P = Ho Wo

        kernel = params["W"].reshape(self.c_out, -1)
        # (C_out, K) @ (N, K, P) -> (N, C_out, P)
        y = _matmul_over_batch(kernel, cols) if xp is np else kernel @ cols
        if self.bias:
            y += params["b"][:, None]  # (C_out, 1) broadcast over N and P
        return y.reshape(n, self.c_out, ho, wo), Conv2DCache(cols, (n, c, h, w))

    def _upstream(self, cache, dy):
        """dy (N, C_out, Ho, Wo), checked -> (N, C_out, P)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, _, h, w = cache.x_shape
        ho, wo = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
        self.check_upstream(dy, (n, self.c_out, ho, wo), cache.cols.dtype)
        return dy.reshape(n, self.c_out, ho * wo)

    def backward(self, params, cache, dy):
        """dy: (N, C_out, Ho, Wo) -> dx: (N, C_in, H, W); grads W, b like params."""
        xp = array_module(dy)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, c, h, w = cache.x_shape
        ho, wo = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
        dy = self._upstream(cache, dy)  # (N, C_out, P)

        # dW[o, k] = sum_n sum_p dy[n, o, p] cols[n, k, p]
        dw = _weight_grad(dy, cache.cols)
        grads = {"W": dw.reshape(params["W"].shape)}
        if self.bias:
            grads["b"] = dy.sum(axis=(0, 2))  # (C_out,)

        wt = params["W"].reshape(self.c_out, -1).T
        # (K, C_out) @ (N, C_out, P) -> (N, K, P)
        dcols = _matmul_over_batch(wt, dy) if xp is np else wt @ dy
        dcols = dcols.reshape(n, c, kh, kw, ho, wo)
        # col2im: every window element sends its gradient back to the pixel it came from
        if xp is np:  # compiled, adding the offsets in the loop's (i, j) order: the same sums
            dx = col2im(dcols, (sh, sw), (n, c, h + 2 * ph, w + 2 * pw))
        else:
            dx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)
            for i in range(kh):
                for j in range(kw):
                    dx[:, :, _window_slice(i, sh, ho), _window_slice(j, sw, wo)] += \
                        dcols[:, :, i, j]
        return dx[:, :, ph:ph + h, pw:pw + w], grads

    def param_grads(self, params, cache, dy):
        """backward's grads without dx (Layer.param_grads): no dcols product, no col2im."""
        dy = self._upstream(cache, dy)
        dw = _weight_grad(dy, cache.cols)
        grads = {"W": dw.reshape(params["W"].shape)}
        if self.bias:
            grads["b"] = dy.sum(axis=(0, 2))
        return grads


class MaxPool2DCache(NamedTuple):
    argmax: object  # (N, C, Ho, Wo) uint8 index i * kw + j of the winning window offset
    x_shape: tuple  # (N, C, H, W)
    dtype: object  # of x and y


@dataclass(frozen=True)
class MaxPool2D(Layer):
    """Maximum over kh x kw windows with stride (default: the window size), no padding.

    Input (N, C, H, W) -> output (N, C, Ho, Wo), Ho = (H - kh) // sh + 1. Ties go to the
    first window element in row-major order, which alone receives the gradient.
    """

    pool_size: int | tuple[int, int] = 2
    stride: int | tuple[int, int] | None = None

    def __post_init__(self):
        pool = pair(self.pool_size, "pool_size", 1)
        if pool[0] * pool[1] > 255:
            raise ValueError(f"pool_size: expected at most 255 window elements, got {pool}")
        object.__setattr__(self, "pool_size", pool)
        stride = pool if self.stride is None else pair(self.stride, "stride", 1)
        object.__setattr__(self, "stride", stride)

    def __str__(self):
        return f"MaxPool2D({self.pool_size[0]}x{self.pool_size[1]}, stride {self.stride})"

    def output_shape(self, input_shape):
        (kh, kw), (sh, sw) = self.pool_size, self.stride
        if len(input_shape) != 4 or input_shape[2] < kh or input_shape[3] < kw:
            raise self.shape_error(f"(N, C, H, W) with H >= {kh} and W >= {kw}", input_shape)
        n, c, h, w = input_shape
        return (n, c, _out_size(h, kh, sh, 0), _out_size(w, kw, sw, 0))

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        xp = array_module(x)
        self.output_shape(x.shape)  # checks the shape
        if xp is np:  # one compiled pass, the same numbers as the array formulation
            y, argmax = maxpool2d(x, self.pool_size, self.stride)
        else:
            y, argmax = pool_forward_arrays(x, self.pool_size, self.stride)
        return y, MaxPool2DCache(argmax, tuple(x.shape), x.dtype)

    def backward(self, params, cache, dy):
        xp = array_module(dy)
        self.check_upstream(dy, tuple(cache.argmax.shape), cache.dtype)
        if xp is np:
            return maxpool2d_backward(cache.argmax, dy, cache.x_shape, self.pool_size,
                                      self.stride), {}
        return pool_backward_arrays(cache.argmax, dy, cache.x_shape, self.pool_size,
                                    self.stride), {}


def pool_forward_arrays(x, pool: tuple[int, int], stride: tuple[int, int]):
    """Max pooling as kh * kw whole-array steps (any array module: the device path, and
    the reference of ``lastlayer.kernels.maxpool2d``). x (N, C, H, W) -> (y (N, C, Ho, Wo),
    argmax (N, C, Ho, Wo) uint8, the first maximum's offset i * kw + j)."""
    xp = array_module(x)
    (kh, kw), (sh, sw) = pool, stride
    n, c, h, w = x.shape
    ho, wo = _out_size(h, kh, sh, 0), _out_size(w, kw, sw, 0)
    y = None
    argmax = xp.zeros((n, c, ho, wo), dtype=xp.uint8)
    for i in range(kh):
        for j in range(kw):
            v = x[:, :, _window_slice(i, sh, ho), _window_slice(j, sw, wo)]
            if y is None:
                y = v.copy()
                continue
            better = v > y  # strict: the first maximum keeps a tie
            y = xp.where(better, v, y)
            argmax[better] = i * kw + j
    return y, argmax


def pool_backward_arrays(argmax, dy, x_shape: tuple, pool: tuple[int, int],
                         stride: tuple[int, int]):
    """dy (N, C, Ho, Wo) -> dx (N, C, H, W): each dy to its window's winner."""
    xp = array_module(dy)
    (kh, kw), (sh, sw) = pool, stride
    ho, wo = argmax.shape[2:]
    dx = xp.zeros(x_shape, dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            # windows may overlap (stride < pool): accumulate, never assign
            dx[:, :, _window_slice(i, sh, ho), _window_slice(j, sw, wo)] += \
                dy * (argmax == i * kw + j)
    return dx
