"""Hypothesis fuzzing of the public API: random shapes, dtypes and values give a correct
result or a ValueError / TypeError naming the argument, never another exception, and never
a non-finite output from finite input.

Values are finite and moderate (|x| <= 1e3; the engine's documented domain: finite inputs
whose squares do not overflow); shapes include empty and wrong-rank ones; dtypes include
integers, float16, complex and bool, which must be refused, not silently cast. NumPy's
RuntimeWarnings are errors in this suite (pyproject.toml), so an overflow inside a layer
fails the test as well.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lastlayer.engine import (
    BatchNorm, Conv2D, Dense, Dropout, Flatten, HadamardHead, L2Normalize, MaxPool2D,
    OrthogonalHead, ReLU, Sigmoid, Tanh, ZNormalize, fit_softmax_regression, ridge,
    softmax_cross_entropy, squared_error,
)
from lastlayer.engine.solvers import ridge_path
from lastlayer.engine.solvers.exact.ridge import RankDeficientWarning
from lastlayer.kernels import fwht, layca_update
from lastlayer.kernels.layca_reference import layca_reference

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)
REFUSED = (ValueError, TypeError)
DTYPES = [np.float64, np.float32, np.int64, np.float16, np.complex128, np.bool_]


@st.composite
def arrays(draw, min_dims=0, max_dims=4, max_side=6, dtypes=DTYPES, shape=None):
    """An array of a random dtype and shape (or ``shape``), finite values |x| <= 1e3."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0,
                                      max_side=max_side))
    if dtype.kind == "f":
        elements = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False,
                             width=8 * dtype.itemsize if dtype.itemsize < 8 else 64)
    elif dtype.kind == "c":
        elements = st.complex_numbers(max_magnitude=1e3, allow_nan=False, allow_infinity=False)
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        elements = st.integers(-1000, 1000)
    return draw(hnp.arrays(dtype, shape, elements=elements))


def outcome(function, *args, **kwargs):
    """The result, or None for a ValueError / TypeError (any other exception propagates)."""
    try:
        result = function(*args, **kwargs)
    except REFUSED as err:
        assert str(err), "an error without a message"
        event(f"refused: {type(err).__name__}")
        return None
    event("computed")
    return result


def assert_finite(*values):
    for v in values:
        if isinstance(v, dict):
            assert_finite(*v.values())
        elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
            assert np.isfinite(v).all(), "a non-finite output from finite input"
        elif isinstance(v, float):
            assert np.isfinite(v), "a non-finite output from finite input"


# (layer of width k, the input shape it takes for a batch of n): half the examples use it
LAYERS = [
    (lambda k: Dense(k, 3), lambda n, k: (n, k)), (lambda k: ReLU(), None), (lambda k: Tanh(), None),
    (lambda k: Sigmoid(), None), (lambda k: Flatten(), lambda n, k: (n, k, 2)),
    (lambda k: L2Normalize(), lambda n, k: (n, k)), (lambda k: BatchNorm(k), lambda n, k: (n, k)),
    (lambda k: ZNormalize(k), lambda n, k: (n, k)), (lambda k: Dropout(0.3), None),
    (lambda k: Conv2D(k, 2, 3, padding=1), lambda n, k: (n, k, 4, 5)),
    (lambda k: MaxPool2D(2), lambda n, k: (n, k, 4, 4)),
    (lambda k: HadamardHead(max(k, 2), 2), lambda n, k: (n, max(k, 2))),
    (lambda k: OrthogonalHead(max(k, 2), 2), lambda n, k: (n, max(k, 2))),
]


@FUZZ
@given(which=st.integers(0, len(LAYERS) - 1), k=st.integers(1, 4), n=st.integers(0, 4),
       matching=st.booleans(), train=st.booleans(), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_layers_forward_and_backward(which, k, n, matching, train, seed, data):
    make, good_shape = LAYERS[which]
    layer = make(k)
    shape = good_shape(n, k) if matching and good_shape is not None else None
    x = data.draw(arrays(shape=shape, dtypes=[np.float64, np.float32, np.int64]) if shape else arrays())
    rng = np.random.default_rng(seed)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    params = layer.init(rng, dtype)
    kwargs = {"state": layer.init_state(dtype)} if getattr(layer, "stateful", False) else {}
    if isinstance(layer, Dropout):
        kwargs["rng"] = rng
    result = outcome(layer.forward, params, x, train, **kwargs)
    if shape is not None and x.dtype in (np.float32, np.float64) and n > 0:
        assert result is not None, "valid input refused"
    if result is None:
        return
    y, cache = result
    assert_finite(y)
    assert y.dtype == x.dtype
    dy = rng.standard_normal(y.shape).astype(y.dtype)
    back = outcome(layer.backward, params, cache, dy)
    assert back is not None, "backward refused the output's own shape"
    dx, grads = back
    assert dx.shape == x.shape
    assert_finite(dx, grads)


FLOATS = [np.float64, np.float32]


@FUZZ
@given(valid=st.booleans(), n=st.integers(1, 6), c=st.integers(1, 5), labels=st.booleans(),
       which=st.sampled_from(["ce", "se"]), data=st.data())
def test_losses(valid, n, c, labels, which, data):
    if valid:
        logits = data.draw(arrays(shape=(n, c), dtypes=FLOATS))
        if labels and which == "ce":
            targets = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
        else:
            targets = data.draw(arrays(shape=(n, c), dtypes=[logits.dtype]))
            if which == "ce":
                targets = np.abs(targets)
    else:
        logits, targets = data.draw(arrays(max_dims=3)), data.draw(arrays(max_dims=3))
    loss = softmax_cross_entropy if which == "ce" else squared_error
    result = outcome(loss, logits, targets)
    if valid:
        assert result is not None, "valid input refused"
    if result is not None:
        value, grad = result
        assert_finite(float(value), grad)
        assert grad.shape == logits.shape


LAMS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 5),
                 st.sampled_from([np.int64(1), np.float32(0.5), "1", None, True]))


@FUZZ
@given(valid=st.booleans(), n=st.integers(1, 8), d=st.integers(1, 8), c=st.integers(0, 3),
       lam_valid=st.floats(0, 10), lam=LAMS, fit_bias=st.booleans(), data=st.data())
def test_ridge(valid, n, d, c, lam_valid, lam, fit_bias, data):
    if valid:
        phi = data.draw(arrays(shape=(n, d), dtypes=FLOATS))
        y = data.draw(arrays(shape=(n, c) if c else (n,), dtypes=[phi.dtype]))
        lam = lam_valid
    else:
        phi, y = data.draw(arrays(max_dims=3, max_side=8)), data.draw(arrays(max_dims=3, max_side=8))
    with warnings.catch_warnings():  # a singular system is solved by the SVD, with a warning
        warnings.simplefilter("ignore", RankDeficientWarning)
        sol = outcome(ridge, phi, y, lam, fit_bias=fit_bias)
        path = outcome(ridge_path, phi, y, [lam] if not isinstance(lam, (str, type(None))) else lam)
    if valid:
        assert sol is not None and path is not None, "valid input refused"
    if sol is not None:
        assert_finite(sol.W)
        if fit_bias:
            assert_finite(sol.b)
    if path is not None:
        assert_finite(path)


@FUZZ
@given(valid=st.booleans(), n=st.integers(2, 10), d=st.integers(1, 4), c=st.integers(2, 4),
       lam_valid=st.floats(1e-3, 10), fit_bias=st.booleans(),
       method=st.sampled_from(["auto", "newton", "newton-cg", "lbfgs", "sgd"]),
       n_classes=st.one_of(st.none(), st.integers(-1, 5)), data=st.data())
def test_softmax_regression(valid, n, d, c, lam_valid, fit_bias, method, n_classes, data):
    if valid:
        phi = data.draw(arrays(shape=(n, d), dtypes=[np.float64]))
        labels = np.arange(n) % c  # every class present
        lam, n_classes, method = lam_valid, None, method if method != "sgd" else "auto"
    else:
        phi = data.draw(arrays(max_dims=3, max_side=8, dtypes=[np.float64, np.float32, np.int64]))
        labels = data.draw(arrays(max_dims=2, max_side=8, dtypes=[np.int64, np.float64, np.bool_]))
        lam = data.draw(st.one_of(st.floats(-1, 10), st.sampled_from([np.int64(1), 0.0, np.nan, "x"])))
    sol = outcome(fit_softmax_regression, phi, labels, lam, fit_bias=fit_bias, method=method,
                  n_classes=n_classes, max_iter=50)
    if valid:
        assert sol is not None, "valid input refused"
    if sol is not None:
        assert_finite(sol.W, float(sol.kkt_residual))
        if fit_bias:
            assert abs(float(sol.b.sum())) <= 1e-12 * max(1.0, float(np.abs(sol.b).max()))


@FUZZ
@given(valid=st.booleans(), rows=st.integers(0, 3), k=st.integers(0, 6),
       normalized=st.sampled_from([True, False, "yes", 1, None]), data=st.data())
def test_fwht(valid, rows, k, normalized, data):
    x = data.draw(arrays(shape=(rows, 1 << k), dtypes=FLOATS) if valid else arrays(max_dims=3, max_side=9))
    y = outcome(fwht, x, normalized=normalized)
    if valid and isinstance(normalized, bool):
        assert y is not None, "valid input refused"
    if not isinstance(normalized, bool):
        assert y is None, "a non-bool normalized was taken as a flag"
    if y is not None:
        assert_finite(y)
        assert y.shape == x.shape and y.dtype == x.dtype


@FUZZ
@given(valid=st.booleans(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
       rho=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["a", None])),
       r0=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([np.int64(2)])),
       fused=st.booleans(), data=st.data())
def test_layca_step(valid, shape, rho, r0, fused, data):
    if valid:
        w = data.draw(arrays(shape=shape, dtypes=FLOATS))
        s = data.draw(arrays(shape=shape, dtypes=[w.dtype]))
        w[(0,) * w.ndim] = 1.0  # a non-zero w
        rho, r0 = data.draw(st.floats(0, 10)), data.draw(st.floats(1e-3, 1e3))
    else:
        w, s = data.draw(arrays(max_dims=3)), data.draw(arrays(max_dims=3))
    if fused:
        target = w.copy()
        info = outcome(layca_update, target, s, rho, r0)
    else:
        result = outcome(layca_reference, w, s, rho, r0)
        target, info = (None, None) if result is None else result
    if valid:
        assert info is not None, "valid input refused"
    if info is not None:
        assert_finite(target)
        tol = 1e-5 if target.dtype == np.float32 else 1e-12
        assert abs(np.linalg.norm(target.astype(np.float64)) / float(r0) - 1) < tol


@pytest.mark.parametrize("layer", [Dense(3, 2), BatchNorm(3), HadamardHead(3, 2)])
def test_wrong_params_are_refused_by_name(layer):
    x = np.ones((2, 3))
    with pytest.raises(REFUSED, match=str(layer).split("(")[0]):
        layer.forward({}, x, True, **({"state": layer.init_state()} if getattr(layer, "stateful", False) else {}))
