"""The compiled max pooling (lastlayer.kernels.maxpool2d) and im2col / col2im against the
array formulation the device path uses (lastlayer.engine.layers.conv.pool_forward_arrays):
the same maxima, the same winners (ties and NaN included), the same gradients; and its
argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.engine.layers.conv import pool_backward_arrays, pool_forward_arrays
from lastlayer.kernels import col2im, im2col, maxpool2d, maxpool2d_backward

GEOMETRIES = [((2, 2), (2, 2), (3, 4, 26, 26)),  # the CNNs' pools
              ((2, 2), (2, 2), (2, 3, 11, 11)),  # an odd size: the last row and column dropped
              ((3, 3), (1, 2), (2, 2, 9, 10)),  # overlapping windows
              ((1, 2), (1, 2), (4, 5, 1, 40))]  # mnist1d's one-row pools


@pytest.mark.parametrize("pool, stride, shape", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_equals_the_array_formulation_with_ties_and_nan(pool, stride, shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, size=shape).astype(dtype)  # few values: many ties
    x[rng.random(shape) < 0.05] = np.nan
    y, argmax = maxpool2d(x, pool, stride)
    y_ref, argmax_ref = pool_forward_arrays(x, pool, stride)
    assert y.dtype == dtype and argmax.dtype == np.uint8
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(y, y_ref)  # NaN where the reference has NaN
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = maxpool2d_backward(argmax, dy, x.shape, pool, stride)
    dx_ref = pool_backward_arrays(argmax_ref, dy, x.shape, pool, stride)
    np.testing.assert_array_equal(dx, dx_ref)  # overlapping windows: summed in the same order
    assert dx.sum() == pytest.approx(float(dy.astype(np.float64).sum()), rel=1e-5)


def test_the_first_of_tied_maxima_takes_the_gradient():
    x = np.zeros((1, 1, 2, 2))
    y, argmax = maxpool2d(x, (2, 2), (2, 2))
    assert argmax[0, 0, 0, 0] == 0
    dx = maxpool2d_backward(argmax, np.ones((1, 1, 1, 1)), x.shape, (2, 2), (2, 2))
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(TypeError, match="x: expected a 4-D NumPy array"):
        maxpool2d(np.zeros((2, 3, 4)), (2, 2), (2, 2))
    with pytest.raises(TypeError, match="x: expected float32 or float64, got int64"):
        maxpool2d(np.zeros((1, 1, 4, 4), dtype=np.int64), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="at least one window"):
        maxpool2d(np.zeros((1, 1, 1, 4)), (2, 2), (2, 2))
    y, argmax = maxpool2d(np.zeros((1, 1, 4, 4)), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="dy: shape"):
        maxpool2d_backward(argmax, y, (1, 1, 6, 6), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="argmax: expected uint8"):
        maxpool2d_backward(argmax.astype(np.int64), y, (1, 1, 4, 4), (2, 2), (2, 2))


# ---- im2col / col2im -----------------------------------------------------------------------------
@pytest.mark.parametrize("kernel, stride, shape", [((3, 3), (1, 1), (3, 2, 13, 13)),
                                                   ((3, 2), (2, 3), (2, 3, 9, 11)),
                                                   ((1, 5), (1, 1), (4, 2, 1, 44))])
def test_im2col_is_the_window_copy_and_col2im_its_adjoint(kernel, stride, shape):
    """cols[n, c, i, j, p, q] = x[n, c, i + sh p, j + sw q] element for element, and
    <im2col(x), d> = <x, col2im(d)> (col2im is the transpose of the copy)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    cols = im2col(x, kernel, stride)
    n, c, kh, kw, ho, wo = cols.shape
    assert (kh, kw) == kernel and ho == (shape[2] - kh) // stride[0] + 1
    for i in range(kh):
        for j in range(kw):
            np.testing.assert_array_equal(
                cols[:, :, i, j], x[:, :, i:i + stride[0] * (ho - 1) + 1:stride[0],
                                    j:j + stride[1] * (wo - 1) + 1:stride[1]])
    d = rng.standard_normal(cols.shape)
    dx = col2im(d, stride, shape)
    assert float((cols * d).sum()) == pytest.approx(float((x * dx).sum()), rel=1e-12)
    with pytest.raises(ValueError, match="is not the im2col shape"):
        col2im(d, stride, (n, c, shape[2] + 5, shape[3]))
    with pytest.raises(TypeError, match="x: expected a 4-D float32 or float64"):
        im2col(x.astype(np.int64), kernel, stride)
