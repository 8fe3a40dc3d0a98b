"""lastlayer.kernels.layca on the CPU: the unfused reference
(lastlayer.kernels.layca_reference) against a direct transcription of Algorithm 1, and the
fused two-pass Layca update against the reference: the many-tensor call, norm kept, angle
arctan(rho), degenerate steps, the cancellation fallback, layouts and errors."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from lastlayer.kernels import config
from lastlayer.kernels.layca import LaycaInfo, layca_update, layca_update_many
from lastlayer.kernels.layca_reference import layca_reference

SHAPES = [(1,), (2,), (7,), (3, 5), (64, 3, 3, 3), (1001,), (33, 129)]
TOL = {np.float64: 1e-12, np.float32: 1e-6}


@pytest.fixture(params=["default", "chunk=5"])
def chunk(request, monkeypatch):
    """The default chunk (most test tensors are one chunk), and chunks of 5 elements: many
    chunks per tensor, short last chunks, 1-element tensors."""
    if request.param == "chunk=5":
        monkeypatch.setattr(config, "LAYCA_CHUNK", 5)


def _pair(rng, shape, dtype, scale=1.0):
    w = rng.standard_normal(shape).astype(dtype)
    s = (scale * rng.standard_normal(shape)).astype(dtype)
    return w, s


def _max_rel(x, y) -> float:
    """max |x - y| / max |y|, in float64."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.abs(x - y).max() / np.abs(y).max())


def _angle(u, v) -> float:
    """The angle between two vectors, accurate for small angles too (atan2 of sine and cosine)."""
    u = np.asarray(u, dtype=np.float64).reshape(-1) / np.linalg.norm(u)
    v = np.asarray(v, dtype=np.float64).reshape(-1) / np.linalg.norm(v)
    cos = u @ v
    return math.atan2(np.linalg.norm(v - cos * u), cos)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fused_matches_reference(chunk, shape, dtype):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    w, s = _pair(rng, shape, dtype)
    rho, r0 = 0.37, 3.0
    expected, expected_info = layca_reference(w, s, rho, r0)
    got = w.copy()
    info = layca_update(got, s, rho, r0)
    assert got.dtype == dtype and got.shape == shape
    assert _max_rel(got, expected) <= TOL[dtype]
    assert info.zero_step == expected_info.zero_step == (w.size == 1)  # 1 element: s is parallel
    assert info.nonfinite == 0
    assert info.norm == pytest.approx(r0, rel=TOL[dtype])
    if dtype == np.float32:  # float64 arithmetic rounded once: closer to exact than float32 NumPy
        exact, _ = layca_reference(w.astype(np.float64), s.astype(np.float64), rho, r0)
        assert _max_rel(got, exact) <= 1.2e-7


def test_many_equals_one_by_one_bitwise(chunk):
    """One call for all tensors (mixed dtypes and sizes) gives exactly the per-tensor results:
    each tensor's chunks and summation order do not depend on the others."""
    rng = np.random.default_rng(1)
    shapes = [(7,), (64, 3, 3, 3), (1,), (33, 129), (5, 4), (2000,)]
    dtypes = [np.float32, np.float64, np.float64, np.float32, np.float32, np.float64]
    ws, ss = zip(*[_pair(rng, sh, dt) for sh, dt in zip(shapes, dtypes)])
    ss[3].flat[[4, 40]] = [np.nan, np.inf]  # one tensor of a dtype group takes the masked loops
    rhos = rng.uniform(0.01, 2.0, len(ws))
    r0s = rng.uniform(0.5, 5.0, len(ws))
    batch = [w.copy() for w in ws]
    infos = layca_update_many(batch, ss, rhos, r0s)
    assert len(infos) == len(ws) and all(isinstance(i, LaycaInfo) for i in infos)
    assert [i.nonfinite for i in infos] == [0, 0, 0, 2, 0, 0]
    for t in range(len(ws)):
        single = ws[t].copy()
        assert layca_update(single, ss[t], rhos[t], r0s[t]) == infos[t]
        np.testing.assert_array_equal(batch[t], single)


def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    monkeypatch.setattr(config, "LAYCA_CHUNK", 64)
    w, s = _pair(np.random.default_rng(2), (5000,), np.float64)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        x = w.copy()
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            results.append((layca_update(x, s, 0.5, 2.0), x))
        finally:
            numba.set_num_threads(previous)
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_C1_norm_is_kept_over_many_steps(dtype):
    rng = np.random.default_rng(3)
    w, _ = _pair(rng, (40, 30), dtype)
    r0 = float(np.linalg.norm(w.astype(np.float64)))
    for _ in range(50):
        info = layca_update(w, rng.standard_normal(w.shape).astype(dtype), 0.2, r0)
        norm = np.linalg.norm(w.astype(np.float64))
        assert abs(norm - r0) <= {np.float64: 1e-12, np.float32: 1e-6}[dtype] * r0
        assert info.norm == pytest.approx(norm, rel=1e-14)  # the kernel measures what it stored


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
@pytest.mark.parametrize("rho", [1e-3, 0.1, 1.0, 3.0])
def test_C2_angle_is_arctan_rho_whatever_the_step_scale(rho, scale):
    rng = np.random.default_rng(4)
    w, s = _pair(rng, (17, 31), np.float64, scale)
    s += 0.7 * scale * w / np.linalg.norm(w) * np.sqrt(w.size)  # a component along w: projected out
    before = w.copy()
    info = layca_update(w, s, rho, 2.5)
    assert not info.zero_step
    assert abs(_angle(before, w) - math.atan(rho)) <= 1e-10


def test_C4_zero_steps_leave_w_unchanged():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 7))
    r0 = float(np.linalg.norm(w))
    cases = {"zero": np.zeros_like(w), "below eps": 1e-9 * rng.standard_normal(w.shape) / math.sqrt(w.size),
             "parallel to w": -3.0 * w}
    for name, s in cases.items():
        x = w.copy()
        info = layca_update(x, s, 0.5, r0)
        assert info == LaycaInfo(info.norm, True, 0), name
        np.testing.assert_allclose(x, w, rtol=4e-16, atol=0, err_msg=name)
        assert layca_reference(w, s, 0.5, r0)[1].zero_step, name
    x = w.copy()
    layca_update(x, np.zeros_like(w), 0.5, 2 * r0)  # a zero step still lands on the target sphere
    np.testing.assert_allclose(x, 2 * w, rtol=4e-16, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_C4_nonfinite_entries_count_as_zero(chunk, dtype):
    rng = np.random.default_rng(6)
    w, s = _pair(rng, (9, 11), dtype)
    bad = s.copy()
    bad.flat[[0, 5, 50, 98]] = [np.nan, np.inf, -np.inf, np.nan]
    cleaned = np.where(np.isfinite(bad), bad, 0).astype(dtype)
    x = w.copy()
    info = layca_update(x, bad, 0.4, 1.5)
    assert info.nonfinite == 4 and not info.zero_step
    assert np.isfinite(x).all()
    y = w.copy()
    clean_info = layca_update(y, cleaned, 0.4, 1.5)
    assert (clean_info.zero_step, clean_info.nonfinite) == (False, 0)
    assert clean_info.norm == pytest.approx(info.norm, rel=1e-15)
    # as if those entries were zero, to rounding (the masked loops add in another order)
    assert _max_rel(x, y) <= 4 * np.finfo(dtype).eps
    expected, expected_info = layca_reference(w, bad, 0.4, 1.5)
    assert expected_info.nonfinite == 4
    assert _max_rel(x, expected) <= TOL[dtype]


def test_C4_all_nonfinite_is_a_counted_zero_step():
    w = np.random.default_rng(7).standard_normal(10)
    s = np.full(10, np.nan)
    s[::3] = np.inf
    x = w.copy()
    info = layca_update(x, s, 1.0, float(np.linalg.norm(w)))
    assert info.zero_step and info.nonfinite == 10
    np.testing.assert_allclose(x, w, rtol=4e-16, atol=0)


def test_rho_zero_only_renormalises():
    w, s = _pair(np.random.default_rng(8), (50,), np.float64)
    x = w.copy()
    info = layca_update(x, s, 0.0, 1.0)
    assert not info.zero_step
    np.testing.assert_allclose(x, w / np.linalg.norm(w), rtol=1e-15, atol=0)


def _nearly_parallel(sin_theta: float, n: int = 500):
    """w, and s at angle theta from w: s = 2 (cos(theta) w_hat + sin(theta) u_hat), u _|_ w."""
    rng = np.random.default_rng(9)
    w = rng.standard_normal(n)
    u = rng.standard_normal(n)
    u -= (u @ w) / (w @ w) * w
    cos = math.sqrt(1 - sin_theta**2)
    s = 2 * (cos * w / np.linalg.norm(w) + sin_theta * u / np.linalg.norm(u))
    return w, s


@pytest.mark.skipif(np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps,
                    reason="needs an extended-precision long double for the exact answer")
@pytest.mark.parametrize("sin_theta", [0.9, 0.3, 0.1, 1e-2, 1e-4, 1e-6])
def test_cancellation_fused_is_as_accurate_as_unfused(sin_theta):
    """s nearly parallel to w: ss - sw^2/ww cancels; below LAYCA_CANCELLATION_RATIO the kernel
    recomputes ||p|| directly, so its error stays at the unfused steps' own level, ~u / sin."""
    w, s = _nearly_parallel(sin_theta)
    exact, _ = layca_reference(w.astype(np.longdouble), s.astype(np.longdouble), 0.5, 1.0)
    unfused, _ = layca_reference(w, s, 0.5, 1.0)
    fused = w.copy()
    assert not layca_update(fused, s, 0.5, 1.0).zero_step
    unfused_error = _max_rel(unfused, exact.astype(np.float64))
    fused_error = _max_rel(fused, exact.astype(np.float64))
    assert fused_error <= max(4 * unfused_error, 1e-15 / sin_theta)
    assert _max_rel(fused, unfused) <= max(1e-12, 1e-15 / sin_theta)


def test_cancellation_without_the_fallback_would_lose_accuracy(monkeypatch):
    """Why the fallback exists: with it disabled, sin(theta) = 1e-6 loses ~10 digits."""
    w, s = _nearly_parallel(1e-6)
    unfused, _ = layca_reference(w, s, 0.5, 1.0)
    fused = w.copy()
    layca_update(fused, s, 0.5, 1.0)
    monkeypatch.setattr(config, "LAYCA_CANCELLATION_RATIO", 0.0)
    formula_only = w.copy()
    layca_update(formula_only, s, 0.5, 1.0)
    assert _max_rel(fused, unfused) <= 1e-9
    assert _max_rel(formula_only, unfused) >= 1e-7


@pytest.mark.parametrize("sin_theta", [0.2, 1e-2, 1e-4, 1e-6])
def test_nearly_parallel_steps_keep_the_norm_to_rounding(sin_theta):
    """The closed-form norm assumes the normalised step exactly orthogonal to w; it is so
    only to ~u / sin(theta). The kernel rescales those tensors to r0 after pass 2 (like step
    4 of the reference): the norm after the step is r0 to a few roundings, the reported
    norm is the measured one, and a well-conditioned step is not touched twice."""
    w, s = _nearly_parallel(sin_theta)
    r0 = 1.7
    fused = w.copy()
    info = layca_update(fused, s, 0.8, r0)
    measured = float(np.linalg.norm(fused))
    assert abs(measured / r0 - 1) <= 4 * np.finfo(np.float64).eps
    assert info.norm == pytest.approx(measured, rel=1e-15)


def test_fallback_forced_everywhere_still_matches(monkeypatch, chunk):
    """Ratio 1: ||p|| is always recomputed directly (the residual pass on every tensor)."""
    monkeypatch.setattr(config, "LAYCA_CANCELLATION_RATIO", 1.0)
    rng = np.random.default_rng(10)
    ws, ss = zip(*[_pair(rng, sh, dt) for sh, dt in [((7,), np.float64), ((30, 3), np.float32)]])
    got = [w.copy() for w in ws]
    layca_update_many(got, ss, [0.3, 0.3], [1.0, 2.0])
    for t in range(2):
        assert _max_rel(got[t], layca_reference(ws[t], ss[t], 0.3, [1.0, 2.0][t])[0]) <= TOL[ws[t].dtype.type]


def test_layouts_and_aliasing():
    rng = np.random.default_rng(11)
    w, s = _pair(rng, (12, 10), np.float64)
    expected = w.copy()
    info = layca_update(expected, s, 0.3, 2.0)
    f_order = np.asfortranarray(w)
    assert layca_update(f_order, np.asfortranarray(s), 0.3, 2.0) == info
    np.testing.assert_array_equal(f_order, expected)
    big = np.zeros((24, 20))
    view = big[::2, ::2]  # non-contiguous: updated through a copy, the rest untouched
    view[...] = w
    assert layca_update(view, s[:, ::-1][:, ::-1], 0.3, 2.0) == info
    np.testing.assert_array_equal(view, expected)
    assert not big[1::2].any() and not big[:, 1::2].any()
    x = w.copy()
    assert layca_update(x, x, 0.3, 2.0).zero_step  # s is w: parallel, a zero step
    np.testing.assert_allclose(x, 2.0 * w / np.linalg.norm(w), rtol=1e-15)


def test_empty_list():
    assert layca_update_many([], [], [], []) == []


def test_errors_name_the_argument_and_modify_nothing():
    rng = np.random.default_rng(12)
    w, s = _pair(rng, (4, 3), np.float64)
    zero = np.zeros((2, 2))
    ws = [w.copy(), zero.copy()]
    with pytest.raises(ValueError, match=r"ws\[1\]: w.w = 0.0 in float64: the rotation is undefined"):
        layca_update_many(ws, [s, np.ones((2, 2))], [0.1, 0.1], [1.0, 1.0])
    np.testing.assert_array_equal(ws[0], w)  # checked before anything is written
    with pytest.raises(ValueError, match=r"^w: w.w = 0.0"):
        layca_update(np.zeros(3), np.ones(3), 0.1, 1.0)
    with pytest.raises(ValueError, match=r"^w: w.w = nan"):
        layca_update(np.array([1.0, np.nan]), np.ones(2), 0.1, 1.0)
    with pytest.raises(ValueError, match=r"^s: s.s = inf.*rescale s"):
        layca_update(np.ones(3), np.array([1e200, 1.0, 0.0]), 0.1, 1.0)
    with pytest.raises(ValueError, match=r"w: w.w = 0.0"):
        layca_update(np.zeros(0), np.zeros(0), 0.1, 1.0)


@pytest.mark.parametrize("call, error, match", [
    (lambda w, s: layca_update(w.astype(np.int64), s, 0.1, 1.0), TypeError,
     r"^w: expected dtype float32 or float64, got int64"),
    (lambda w, s: layca_update(w, s.astype(np.float32), 0.1, 1.0), TypeError,
     r"^s: expected dtype float64 \(w's dtype\), got float32"),
    (lambda w, s: layca_update(w, s.T, 0.1, 1.0), ValueError,
     r"^s: expected shape \(4, 3\) \(w's shape\), got \(3, 4\)"),
    (lambda w, s: layca_update(w.tolist(), s, 0.1, 1.0), TypeError,
     r"^w: expected a NumPy array, or a CuPy or Numba device array, got list"),
    (lambda w, s: layca_update(w, s.tolist(), 0.1, 1.0), TypeError,
     r"^s: expected a NumPy array like w, got list"),
    (lambda w, s: layca_update(w, s, -0.1, 1.0), ValueError,
     r"^rho: expected a finite number >= 0, got -0.1"),
    (lambda w, s: layca_update(w, s, float("nan"), 1.0), ValueError,
     r"^rho: expected a finite number >= 0"),
    (lambda w, s: layca_update(w, s, 0.1, 0.0), ValueError,
     r"^target_norm: expected a finite number > 0, got 0.0"),
    (lambda w, s: layca_update(w, s, 0.1, "one"), ValueError,
     r"^target_norm: expected a finite number > 0, got 'one'"),
    (lambda w, s: layca_update(w, s, 0.1, 1.0, eps=-1.0), ValueError, r"^eps: expected a finite number >= 0"),
    (lambda w, s: layca_update_many([w, w], [s], [0.1, 0.1], [1.0, 1.0]), ValueError,
     r"^ss: expected 2 entries \(one per tensor of ws\), got 1"),
    (lambda w, s: layca_update_many([w], [s], [0.1], [1.0, 2.0]), ValueError,
     r"^target_norms: expected 1 entries"),
    (lambda w, s: layca_update_many([w, w.copy()], [s, s], [0.1, -1.0], [1.0, 1.0]), ValueError,
     r"^rhos\[1\]: expected a finite number >= 0, got -1.0"),
    (lambda w, s: layca_update_many([w, w[:2]], [s, s], [0.1, 0.1], [1.0, 1.0]), ValueError,
     r"^ss\[1\]: expected shape \(2, 3\) \(ws\[1\]'s shape\), got \(4, 3\)"),
])
def test_bad_arguments(call, error, match):
    w, s = _pair(np.random.default_rng(13), (4, 3), np.float64)
    before = w.copy()
    with pytest.raises(error, match=match):
        call(w, s)
    np.testing.assert_array_equal(w, before)


def test_read_only_w():
    w = np.ones(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match=r"^w: the array is read-only"):
        layca_update(w, np.arange(3.0), 0.1, 1.0)


def test_bad_chunk_tunable(monkeypatch):
    monkeypatch.setattr(config, "LAYCA_CHUNK", 0)
    with pytest.raises(ValueError, match="LAYCA_CHUNK must be >= 1, got 0"):
        layca_update(np.ones(3), np.arange(3.0), 0.1, 1.0)


# ---- the unfused reference ---------------------------------------------------------------------
def test_reference_nonfinite_entries_count_as_zero():
    rng = np.random.default_rng(6)
    w, s = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    dirty = s.copy()
    dirty[0, :3] = [np.nan, np.inf, -np.inf]
    clean = s.copy()
    clean[0, :3] = 0.0
    got, info = layca_reference(w, dirty, 0.1, 2.0)
    want, _ = layca_reference(w, clean, 0.1, 2.0)
    np.testing.assert_array_equal(got, want)
    assert info.nonfinite == 3 and not info.zero_step
    assert np.linalg.norm(got) == pytest.approx(2.0, rel=1e-15)


def test_reference_extreme_finite_steps_do_not_overflow():
    rng = np.random.default_rng(7)
    w, s = rng.standard_normal(50), rng.standard_normal(50)
    reference, _ = layca_reference(w, s, 0.1, 1.0)
    # s.w and ||s||^2 would under/overflow without the rescaling (eps = 0: no zero-step test)
    for scale in (1e-250, 1e250):
        got, info = layca_reference(w, scale * s, 0.1, 1.0, eps=0.0)
        assert not info.zero_step
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-14)


def test_reference_matches_a_direct_transcription_of_algorithm_1():
    rng = np.random.default_rng(8)
    w, s = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    v, u = w.ravel(), s.ravel()
    u = u - (u @ v) / (v @ v) * v
    u = u * np.linalg.norm(v) / np.linalg.norm(u)
    new = v - 0.25 * u
    new = new * 1.5 / np.linalg.norm(new)
    got, _ = layca_reference(w, s, 0.25, 1.5)
    assert got.shape == w.shape
    np.testing.assert_allclose(got.ravel(), new, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("call, error, match", [
    (lambda w, s: layca_reference(np.zeros(3), s[:3], 0.1, 1.0), ValueError, r"^w: w.w = 0.0"),
    (lambda w, s: layca_reference(w, s, math.nan, 1.0), ValueError, r"^rho: expected a finite number >= 0, got nan"),
    (lambda w, s: layca_reference(w, s, 0.1, -1.0), ValueError, r"^target_norm: expected a finite number > 0, got -1.0"),
    (lambda w, s: layca_reference(w, s[:2], 0.1, 1.0), ValueError, r"^s: expected w's shape \(4,\), got \(2,\)"),
    (lambda w, s: layca_reference(w, s.astype(np.float32), 0.1, 1.0), TypeError, r"^s: expected w's dtype float64"),
    (lambda w, s: layca_reference(list(w), s, 0.1, 1.0), TypeError, r"^w: expected a NumPy or CuPy array, got list"),
    (lambda w, s: layca_reference(w, s, 0.1, 1.0, eps=-1.0), ValueError, r"^eps: expected a finite number >= 0"),
])
def test_reference_bad_arguments_name_the_argument(call, error, match):
    rng = np.random.default_rng(9)
    w, s = rng.standard_normal(4), rng.standard_normal(4)
    with pytest.raises(error, match=match):
        call(w, s)


def test_reference_zero_step_rescales_to_the_target_norm_like_the_kernel():
    w = np.array([3.0, 4.0])
    got, info = layca_reference(w, np.zeros(2), 0.5, 10.0)
    assert info.zero_step and info.nonfinite == 0
    np.testing.assert_allclose(got, [6.0, 8.0], rtol=1e-15)
    kernel = w.copy()
    assert layca_update(kernel, np.zeros(2), 0.5, 10.0).zero_step
    np.testing.assert_allclose(kernel, got, rtol=1e-15)


def test_layca_refuses_a_step_that_overlaps_the_kernel():
    """A step sharing memory with w (but not w itself) was read while w was written: a
    silently wrong update. Refused before anything is written; s is w (a zero step) and
    interleaved views that share no element still work."""
    buf = np.arange(1.0, 11.0)
    before = buf.copy()
    with pytest.raises(ValueError, match=r"^s: shares memory with w, which the update overwrites in place"):
        layca_update(buf[:6], buf[4:], 0.1, 1.0)
    with pytest.raises(ValueError, match=r"^ss\[1\]: shares memory with ws\[0\]"):
        layca_update_many([buf[:5], np.ones(5)], [np.ones(5), buf[2:7]], [0.1, 0.1], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"^ws\[0\]: shares memory with ws\[1\]: the tensors of ws must not overlap"):
        layca_update_many([buf[:5], buf[4:9]], [np.ones(5), np.ones(5)], [0.1, 0.1], [1.0, 1.0])
    np.testing.assert_array_equal(buf, before)
    assert layca_update(buf[::2], buf[1::2], 0.1, 1.0).norm == pytest.approx(1.0)
