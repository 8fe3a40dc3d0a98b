"""Neural-collapse metrics (lastlayer.engine.solvers.diagnostics.neural_collapse): against a
direct two-pass NumPy reference, closed forms, streamed from files and on a 2-worker Dask
cluster, far from the origin, and every refused input."""

from __future__ import annotations

import importlib
import math

import h5py
import numpy as np
import pytest
import zarr

from lastlayer.engine.solvers.streaming.runners import LocalRunner
from lastlayer.engine.solvers.streaming.sources import ArraySource

# the module itself (lastlayer.engine.solvers may export the function under the module's name)
NCM = importlib.import_module("lastlayer.engine.solvers.diagnostics.neural_collapse")
neural_collapse = NCM.neural_collapse


def reference(x, y, W=None, b=None):
    """The definitions written out directly (two passes, explicit matrices, np.linalg.pinv)."""
    c = int(y.max()) + 1
    means = np.array([x[y == k].mean(axis=0) for k in range(c)])
    mu_g = x.mean(axis=0)
    dev = x - means[y]
    sigma_w = dev.T @ dev / len(x)
    m = means - mu_g
    sigma_b = m.T @ m / c
    nc1 = np.trace(sigma_w @ np.linalg.pinv(sigma_b, hermitian=True)) / c
    norms = np.linalg.norm(m, axis=1)
    u = m / norms[:, None]
    g = u @ u.T
    etf = (np.eye(c) - np.ones((c, c)) / c)
    nc2 = np.linalg.norm(g / np.linalg.norm(g) - etf / np.linalg.norm(etf))
    cos = np.array([g[i, j] for i in range(c) for j in range(c) if i < j])
    var = np.array([(dev[y == k] ** 2).sum(axis=1).mean() for k in range(c)])
    cdnv = np.mean([(var[i] + var[j]) / (2 * np.sum((means[i] - means[j]) ** 2))
                    for i in range(c) for j in range(c) if i != j])
    out = dict(nc1=nc1, nc2=nc2, nc2_equinorm=norms.std() / norms.mean(),
               nc2_equiangular=cos.std(), nc2_max_angle=np.abs(cos + 1 / (c - 1)).mean(),
               cdnv=cdnv, means=means, global_mean=mu_g, sigma_w=sigma_w, sigma_b=sigma_b,
               class_variances=var)
    if W is not None:
        out["nc3"] = np.linalg.norm(W / np.linalg.norm(W) - m / np.linalg.norm(m))
        z = x @ W.T + (0 if b is None else b)
        dist = np.array([[np.sum((xi - mk) ** 2) for mk in means] for xi in x])
        out["nc4"] = np.mean(z.argmax(axis=1) != dist.argmin(axis=1))
        out["classifier_error"] = np.mean(z.argmax(axis=1) != y)
        out["ncc_error"] = np.mean(dist.argmin(axis=1) != y)
    return out


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(float).tiny))


def assert_same(res, ref, tol):
    for key, value in ref.items():
        assert rel(getattr(res, key), value) <= tol, (key, getattr(res, key), value)


@pytest.fixture(scope="module")
def data():
    """400 x 12, 7 unequal classes, labels in random order, W and b drawn."""
    rng = np.random.default_rng(0)
    c, d, n = 7, 12, 400
    y = rng.choice(c, n, p=np.arange(1, c + 1) / (c * (c + 1) / 2))
    y[:c] = np.arange(c)
    means = 2.0 * rng.standard_normal((c, d))
    x = means[y] + rng.standard_normal((n, d)) * rng.uniform(0.3, 1.5, d) + 2.0
    return x, y, rng.standard_normal((c, d)), rng.standard_normal(c)


@pytest.fixture(scope="module")
def files(tmp_path_factory, data):
    x, y, _, _ = data
    root = tmp_path_factory.mktemp("nc")
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    np.savez(root / "xy.npz", x=x, y=y)
    with h5py.File(root / "f.h5", "w") as f:
        f["group/x"], f["y"] = x, y
    z = zarr.open_group(str(root / "f.zarr"), mode="w")
    z.create_array("x", data=x, chunks=(64, x.shape[1]))
    return root


# ---- the definitions ---------------------------------------------------------------------------
def test_metrics_equal_the_direct_definitions(data):
    x, y, W, b = data
    res = neural_collapse(x, y, W, b)
    assert_same(res, reference(x, y, W, b), 1e-12)
    assert res.counts.dtype == np.int64 and res.counts.tolist() == np.bincount(y).tolist()
    assert res.rank_b == 6  # C - 1 = 6 < d = 12
    assert isinstance(res.nc1, float) and isinstance(res.nc4, float)


def test_without_a_classifier_nc3_and_nc4_are_none(data):
    x, y, _, _ = data
    res = neural_collapse(x, y)
    assert res.nc3 is res.nc4 is res.classifier_error is res.ncc_error is None
    assert_same(res, reference(x, y), 1e-12)


def test_no_bias_means_zero_bias(data):
    x, y, W, _ = data
    assert neural_collapse(x, y, W).nc4 == neural_collapse(x, y, W, np.zeros(len(W))).nc4


def test_fewer_features_than_classes_keeps_every_direction():
    """d = 3 < C - 1 = 5: Sigma_B is invertible, its pinv is its inverse."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(6), 20)
    x = rng.standard_normal((6, 3))[y] + 0.5 * rng.standard_normal((120, 3))
    res = neural_collapse(x, y)
    assert res.rank_b == 3
    expected = np.trace(res.sigma_w @ np.linalg.inv(res.sigma_b)) / 6
    assert abs(res.nc1 / expected - 1) < 1e-12


def test_closed_form_nc1_and_cdnv():
    """Class c: mu_c +- a_c q_k (k = 1..d, q orthonormal), mu_c = o + r v_c on a simplex ETF:
    NC1 = mean(a^2)(C-1)^2/(C d r^2), CDNV = mean(a^2)(C-1)/(2 C r^2)."""
    rng = np.random.default_rng(2)
    c, d, r = 6, 9, 1.5
    u = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :c]
    means = rng.standard_normal(d) + r * math.sqrt(c / (c - 1)) * (np.eye(c) - 1 / c) @ u.T
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    a = rng.uniform(0.1, 0.5, c)
    x = np.concatenate([np.concatenate([m + ak * q.T, m - ak * q.T]) for m, ak in zip(means, a)])
    y = np.repeat(np.arange(c), 2 * d)
    res = neural_collapse(x, y)
    v = np.mean(a**2)
    assert abs(res.nc1 / (v * (c - 1) ** 2 / (c * d * r * r)) - 1) < 1e-12
    assert abs(res.cdnv / (v * (c - 1) / (2 * c * r * r)) - 1) < 1e-12
    assert res.nc2 < 1e-13 and res.nc2_equinorm < 1e-13 and res.nc2_max_angle < 1e-13
    assert np.abs(res.class_variances / a**2 - 1).max() < 1e-12


def test_relabelling_the_classes_changes_nothing(data):
    x, y, W, b = data
    perm = np.random.default_rng(3).permutation(len(W))  # class k becomes perm[k]
    res = neural_collapse(x, y, W, b)
    inv = np.argsort(perm)
    again = neural_collapse(x, perm[y], W[inv], b[inv])
    for key in ("nc1", "nc2", "nc2_equinorm", "nc2_equiangular", "nc2_max_angle", "nc3", "nc4",
                "cdnv"):
        assert rel(getattr(again, key), getattr(res, key)) < 1e-12, key
    assert np.abs(again.means[perm] - res.means).max() < 1e-13


def test_float32_features_are_widened_exactly(data):
    x, y, W, b = data
    x32 = x.astype(np.float32)
    res32 = neural_collapse(x32, y, W.astype(np.float32), b.astype(np.float32))
    res64 = neural_collapse(x32.astype(np.float64), y, W.astype(np.float32).astype(np.float64),
                            b.astype(np.float32).astype(np.float64))
    assert res32.nc1 == res64.nc1 and res32.nc4 == res64.nc4
    assert np.array_equal(res32.sigma_w, res64.sigma_w)


def test_degenerate_geometry_is_nan_not_a_number_that_looks_collapsed():
    """Every class mean equal: Sigma_B = 0, NC1 = 0/0 is NaN (pinv would give 0)."""
    x = np.concatenate([np.eye(3), -np.eye(3), np.eye(3), -np.eye(3)])
    y = np.repeat([0, 1], 6)
    res = neural_collapse(x, y)
    assert res.rank_b == 0 and math.isnan(res.nc1)


# ---- the pseudo-inverse's rank cut-off ---------------------------------------------------------
def test_the_null_direction_of_the_centred_means_is_dropped():
    """d >= C: the C-th singular value of M is 0 in exact arithmetic (about eps ||M|| here);
    keeping it would add Sigma_W / eps^2 to NC1."""
    rng = np.random.default_rng(4)
    c, d = 4, 10
    centred = rng.standard_normal((c, d))
    centred -= centred.mean(axis=0)
    pinv, rank = NCM.between_pinv(centred, c)
    assert rank == c - 1
    sigma_b = centred.T @ centred / c
    assert np.abs(sigma_b @ pinv @ sigma_b - sigma_b).max() < 1e-13 * np.abs(sigma_b).max()
    plane = rng.standard_normal((c, 2)) @ rng.standard_normal((2, d))  # rank 2 < C - 1
    plane -= plane.mean(axis=0)
    assert NCM.between_pinv(plane, c)[1] == 2  # the third value, ~eps s_1, is cut


# ---- one pass, chunks and their merge ----------------------------------------------------------
def test_chan_merge_of_two_parts_equals_the_whole(data):
    x, y, _, _ = data
    src, lab = ArraySource.memory(x), ArraySource.memory(y)
    shift = x[0]
    whole = NCM._chunk_statistics(0, len(x), src, lab, shift, 7)
    merged = NCM.merge_statistics(NCM._chunk_statistics(0, 150, src, lab, shift, 7),
                                  NCM._chunk_statistics(150, len(x), src, lab, shift, 7))
    assert np.array_equal(merged[0], whole[0])
    for a, b in zip(merged[1:], whole[1:]):
        assert rel(a, b) < 1e-13


def test_a_class_missing_from_a_chunk_merges_as_nothing():
    x = np.arange(12.0).reshape(6, 2) ** 1.5
    y = np.array([0, 0, 0, 1, 1, 1])
    src, lab = ArraySource.memory(x), ArraySource.memory(y)
    a = NCM._chunk_statistics(0, 3, src, lab, x[0], 2)  # class 1 absent
    b = NCM._chunk_statistics(3, 6, src, lab, x[0], 2)  # class 0 absent
    assert a[0].tolist() == [3, 0] and b[0].tolist() == [0, 3]
    merged = NCM.merge_statistics(a, b)
    whole = NCM._chunk_statistics(0, 6, src, lab, x[0], 2)
    for m, w in zip(merged, whole):
        assert np.abs(np.asarray(m, float) - w).max() <= 1e-12 * max(1, np.abs(w).max())


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 399, 400, 10_000])
def test_chunk_sizes_give_the_same_result(data, chunk_rows):
    x, y, W, b = data
    assert_same(neural_collapse(x, y, W, b, chunk_rows=chunk_rows), reference(x, y, W, b), 1e-12)


def test_files_give_the_in_memory_result(data, files):
    x, y, W, b = data
    ref = reference(x, y, W, b)
    for spec, labels in [("x.npy", "y.npy"), ("xy.npz:x", "xy.npz:y"), ("f.h5:group/x", "f.h5:y"),
                         ("f.zarr:x", y)]:
        labels = str(files / labels) if isinstance(labels, str) else labels
        res = neural_collapse(str(files / spec), labels, W, b, chunk_rows=50)
        assert_same(res, ref, 1e-12)


@pytest.fixture(scope="module")
def cluster():
    import logging

    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.CRITICAL) as c:
        yield c.scheduler_address


def test_dask_workers_merge_to_the_local_result(data, files, cluster):
    """8 chunks on 2 workers, from a file and from memory: the fixed tree of merges."""
    from lastlayer.engine.solvers.streaming.runners import make_runner

    x, y, W, b = data
    local = neural_collapse(x, y, W, b, chunk_rows=50)
    with make_runner(scheduler=cluster) as runner:
        on_file = neural_collapse(str(files / "x.npy"), str(files / "y.npy"), W, b,
                                  chunk_rows=50, runner=runner)
        in_memory = neural_collapse(x, y, W, b, chunk_rows=50, runner=runner)
    for res in (on_file, in_memory):
        for key in ("nc1", "nc2", "nc3", "nc4", "cdnv", "sigma_w", "means"):
            assert rel(getattr(res, key), getattr(local, key)) < 1e-12, key


# ---- far from the origin ------------------------------------------------------------------------
def naive_sigma_w(x, y):
    """sum phi phi^T - n mu mu^T per class: what the one-pass formula without centring does."""
    total = np.zeros((x.shape[1], x.shape[1]))
    for k in np.unique(y):
        xk = x[y == k]
        mu = xk.mean(axis=0)
        total += xk.T @ xk - len(xk) * np.outer(mu, mu)
    return total / len(x)


def test_an_offset_of_1e6_loses_no_digits(data):
    """Features on a 2^-20 grid, so that x + 1e6 is exact: every metric equals that at the
    origin to 1e-12, where the raw sums miss Sigma_W by far more (the test can fail)."""
    x, y, W, b = data
    x = np.round(x * 2.0**20) / 2.0**20
    near = neural_collapse(x, y, W, b, chunk_rows=37)
    far = neural_collapse(x + 1e6, y, W, b - 1e6 * W.sum(axis=1), chunk_rows=37)
    for key in ("nc1", "nc2", "nc2_equinorm", "nc2_equiangular", "nc2_max_angle", "nc3", "nc4",
                "cdnv", "sigma_w", "sigma_b", "class_variances"):
        assert rel(getattr(far, key), getattr(near, key)) < 1e-12, key
    assert rel(far.means, near.means + 1e6) < 1e-15
    assert rel(naive_sigma_w(x + 1e6, y), near.sigma_w) > 1e-6


# ---- refused inputs ----------------------------------------------------------------------------
@pytest.fixture
def never_read(monkeypatch):
    """Fail if any feature chunk is summed: errors must come before the work."""
    def boom(*args):
        raise AssertionError("the features were read before the error")
    monkeypatch.setattr(NCM, "_chunk_statistics", boom)


@pytest.mark.parametrize("labels, n_classes, error, match", [
    (np.array([0, 1, 2, -1]), None, ValueError, r"labels: expected labels >= 0, got -1 in row 3"),
    (np.array([0, 1, 2, 3]), 3, ValueError, r"labels: expected labels in \[0, 3\), got 3 in row 3"),
    (np.array([0, 1, 2]), None, ValueError, r"labels: expected shape \(4,\), one label per row"),
    (np.array([[0, 1, 2, 0]]), None, ValueError, r"labels: expected shape \(4,\)"),
    (np.array([0.0, 1.0, 2.0, 0.0]), None, TypeError, "labels: expected integer class labels, "
                                                      "got float64"),
    (np.array([True, False, True, False]), None, TypeError, "labels: expected integer class"),
    ([0, 1, 2, 0], None, TypeError, "labels: expected an \\(N,\\) integer array.*got list"),
    (np.array([0, 2, 2, 0]), None, ValueError, r"labels: class 1 of n_classes = 3 has no sample"),
    (np.array([0, 1, 1, 0]), 5, ValueError, r"labels: classes 2, 3, 4 of n_classes = 5 have no "
                                            r"sample"),
    (np.array([0, 0, 0, 0]), None, ValueError, "labels: every label is 0"),
    (np.array([0, 1, 2, 0]), 1, ValueError, "n_classes: expected an integer >= 2, got 1"),
    (np.array([0, 1, 2, 0]), 2.0, TypeError, "n_classes: expected an integer"),
])
def test_bad_labels_are_refused_naming_them(never_read, labels, n_classes, error, match):
    x = np.arange(12.0).reshape(4, 3)
    with pytest.raises(error, match=match):
        neural_collapse(x, labels, n_classes=n_classes)


def test_a_missing_class_among_many_is_named_without_an_array_of_that_size(never_read):
    y = np.array([0, 1, 2**40], dtype=np.int64)
    with pytest.raises(ValueError, match=r"classes 2, 3, .*, 11, \.\.\. \(1099511627774 in all\)"):
        neural_collapse(np.ones((3, 2)), y)


@pytest.mark.parametrize("W, b, error, match", [
    (np.zeros((3, 4)), None, ValueError, r"W: expected shape \(C, d\) = \(3, 3\) .*got \(3, 4\)"),
    (np.zeros((2, 3)), None, ValueError, r"W: expected shape \(C, d\) = \(3, 3\)"),
    (np.zeros(3), None, ValueError, r"W: expected shape \(C, d\)"),
    (np.full((3, 3), np.nan), None, ValueError, "W: expected finite values, got 9 NaN/Inf"),
    (np.zeros((3, 3), int), None, TypeError, "W: expected dtype float32 or float64, got int64"),
    ([[0.0] * 3] * 3, None, TypeError, "W: expected a float32 or float64 array, got list"),
    (np.zeros((3, 3)), np.zeros(2), ValueError, r"b: expected shape \(C,\) = \(3,\), got \(2,\)"),
    (np.zeros((3, 3)), np.array([0, np.inf, 0]), ValueError, "b: expected finite values"),
    (None, np.zeros(3), ValueError, "b: given without W"),
])
def test_bad_classifiers_are_refused_before_any_work(never_read, W, b, error, match):
    x = np.arange(12.0).reshape(4, 3)
    for n_classes in (None, 3):
        with pytest.raises(error, match=match):
            neural_collapse(x, np.array([0, 1, 2, 0]), W, b, n_classes=n_classes)


@pytest.mark.parametrize("features, error, match", [
    (np.array([[1.0, np.nan], [2.0, 3.0], [np.inf, 1.0]]), ValueError,
     r"features: expected finite values, got 2 NaN/Inf entries \(the first in row 0\)"),
    (np.ones(3), ValueError, r"features: expected shape \(N, d\) with N, d >= 1, got \(3,\)"),
    (np.ones((3, 0)), ValueError, r"features: expected shape \(N, d\)"),
    (np.ones((3, 2), int), TypeError, "features: expected dtype float32 or float64, got int64"),
    (np.ones((3, 2), np.float16), TypeError, "features: expected dtype float32 or float64"),
    ([[1.0, 2.0]] * 3, TypeError, "features: expected an \\(N, d\\) float array.*got list"),
    ("features.csv", ValueError, "features: 'features.csv': expected a .npy"),
])
def test_bad_features_are_refused_naming_them(never_read, features, error, match):
    with pytest.raises(error, match=match):
        neural_collapse(features, np.array([0, 1, 0]))


def test_non_finite_rows_of_a_file_are_named(tmp_path):
    x = np.random.default_rng(5).standard_normal((100, 3))
    x[57, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match=r"features: 1 NaN/Inf entry in row 57 \(in the chunk "
                                         r"of rows 50-74\)"):
        neural_collapse(str(tmp_path / "x.npy"), np.arange(100) % 2, chunk_rows=25)


def test_integer_features_and_labels_in_files_are_refused_before_any_work(tmp_path, never_read):
    np.save(tmp_path / "xi.npy", np.ones((4, 2), np.int64))
    np.save(tmp_path / "x.npy", np.ones((4, 2)))
    np.save(tmp_path / "yf.npy", np.zeros(4))
    np.save(tmp_path / "y5.npy", np.zeros(5, np.int64))
    with pytest.raises(TypeError, match=r"features: expected float32 or float64 features, got "
                                        r"int64 \(.*xi.npy\)"):
        neural_collapse(str(tmp_path / "xi.npy"), np.array([0, 1, 0, 1]))
    with pytest.raises(TypeError, match=r"labels: expected integer class labels, got float64"):
        neural_collapse(str(tmp_path / "x.npy"), str(tmp_path / "yf.npy"))
    with pytest.raises(ValueError, match=r"labels: expected shape \(4,\), one label per row of "
                                         r"features, got \(5,\)"):
        neural_collapse(str(tmp_path / "x.npy"), str(tmp_path / "y5.npy"))


def test_out_of_range_labels_in_a_file_are_named_with_their_row(tmp_path, never_read):
    y = np.zeros(100, np.int64)
    y[1::2] = 1
    y[83] = 7
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(ValueError, match=r"labels: expected labels in \[0, 2\), got 7 in row 83"):
        neural_collapse(np.ones((100, 2)), str(tmp_path / "y.npy"), n_classes=2, chunk_rows=30)


def test_bad_chunk_rows_and_runner_are_refused(never_read):
    x, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="chunk_rows: expected an integer >= 1, got 0"):
        neural_collapse(x, y, chunk_rows=0)
    with pytest.raises(TypeError, match="chunk_rows: expected an integer, got float"):
        neural_collapse(x, y, chunk_rows=2.0)
    with pytest.raises(TypeError, match="runner: expected a LocalRunner or DaskRunner"):
        neural_collapse(x, y, runner="local")
    assert isinstance(LocalRunner(), LocalRunner)


def test_features_whose_squares_underflow_are_refused_and_the_metrics_are_scale_free():
    rng = np.random.default_rng(9)
    y = np.repeat(np.arange(3), 20)
    phi = rng.standard_normal((60, 4)) + 2.0 * y[:, None]
    nc1 = neural_collapse(phi, y).nc1
    assert neural_collapse(phi * 1e-140, y).nc1 == pytest.approx(nc1, rel=1e-12)
    with pytest.raises(ValueError, match="fall below float64's normal range"):
        neural_collapse(phi * 1e-155, y)  # NC1 was NaN there, NC2 and CDNV silently off
