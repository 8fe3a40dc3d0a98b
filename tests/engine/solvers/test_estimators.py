"""Exact heads on user features (lastlayer.engine.solvers.estimators): equal to
scikit-learn's solvers, the same in memory, streamed from files and on a 2-worker Dask
LocalCluster; lambda chosen as RidgeCV / LogisticRegressionCV choose it; scikit-learn's
estimator conventions."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lastlayer.engine.solvers.estimators import ExactRidgeHead, ExactSoftmaxHead, evaluate_head
from lastlayer.engine.solvers.streaming.sources import ArraySource, open_source

N, D, C = 600, 12, 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)) + 0.3
    y = x @ rng.standard_normal((D, C)) + 0.5 + rng.standard_normal((N, C))
    labels = (x[:, :4] @ rng.standard_normal((4, 4)) + rng.standard_normal((N, 4))).argmax(axis=1)
    return x, y, labels


@pytest.fixture(scope="module")
def files(data, tmp_path_factory):
    """The same arrays as .h5, .npy, .npz and .zarr."""
    import zarr

    x, y, labels = data
    root = tmp_path_factory.mktemp("features")
    with h5py.File(root / "f.h5", "w") as f:
        f["group/x"] = x
        f["y"] = y
        f["labels"] = labels
    np.save(root / "x.npy", x)
    np.savez(root / "xy.npz", x=x, labels=labels)
    z = zarr.open_group(str(root / "f.zarr"), mode="w")
    z.create_array("x", data=x, chunks=(100, D))
    return root


@pytest.fixture(scope="module")
def cluster():
    """A 2-worker LocalCluster, used through its address (`scheduler=`)."""
    from dask.distributed import LocalCluster
    import logging

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.CRITICAL) as c:
        yield c.scheduler_address


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


# ---- equal to scikit-learn, in memory ----------------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True])
def test_ridge_head_equals_sklearn_ridge(data, bias):
    x, y, _ = data
    lam = 1e-2
    head = ExactRidgeHead(lam, fit_intercept=bias).fit(x, y)
    ref = Ridge(alpha=N * lam, fit_intercept=bias).fit(x, y)
    assert max_diff(head.coef_, ref.coef_) < 1e-10
    assert max_diff(head.intercept_, ref.intercept_) < 1e-10
    assert head.kkt_residual_ < 1e-12
    one = ExactRidgeHead(lam, fit_intercept=bias).fit(x, y[:, 0])  # 1-D y: sklearn's shapes
    assert one.coef_.shape == (D,) and np.isscalar(one.intercept_) or np.ndim(one.intercept_) == 0


@pytest.mark.parametrize("bias", [False, True])
def test_softmax_head_equals_newton_cholesky(data, bias):
    x, _, labels = data
    lam = 1e-3
    head = ExactSoftmaxHead(lam, fit_intercept=bias).fit(x, labels)
    ref = LogisticRegression(C=1 / (2 * N * lam), solver="newton-cholesky", fit_intercept=bias,
                             tol=1e-12, max_iter=1000).fit(x, labels)
    assert head.converged_ and head.kkt_residual_ <= 1e-10
    assert max_diff(head.coef_, ref.coef_) < 1e-8
    if bias:  # the intercept is defined up to a constant: compare centred
        assert max_diff(head.intercept_, ref.intercept_ - ref.intercept_.mean()) < 1e-8
        assert abs(head.intercept_.sum()) < 1e-12
    assert max_diff(head.predict_proba(x), ref.predict_proba(x)) < 1e-8


# ---- streamed from files and on Dask: the same heads -------------------------------------------------
def test_streamed_heads_equal_in_memory(data, files):
    x, y, labels = data
    memory = ExactRidgeHead(1e-2).fit(x, y)
    for spec in ("f.h5:group/x", "x.npy", "xy.npz:x", "f.zarr:x"):
        streamed = ExactRidgeHead(1e-2, chunk_rows=97).fit(str(files / spec), str(files / "f.h5:y"))
        assert max_diff(streamed.coef_, memory.coef_) < 1e-10, spec
    soft = ExactSoftmaxHead(1e-3).fit(x, labels)
    streamed = ExactSoftmaxHead(1e-3, chunk_rows=97).fit(str(files / "f.h5:group/x"), str(files / "f.h5:labels"))
    assert max_diff(streamed.coef_, soft.coef_) < 1e-8


def test_dask_heads_equal_in_memory(data, files, cluster):
    x, y, labels = data
    memory = ExactRidgeHead(1e-2, fit_intercept=True).fit(x, y)
    on_files = ExactRidgeHead(1e-2, fit_intercept=True, chunk_rows=97, scheduler=cluster).fit(
        str(files / "f.h5:group/x"), str(files / "f.h5:y"))
    in_memory = ExactRidgeHead(1e-2, fit_intercept=True, chunk_rows=97, scheduler=cluster).fit(x, y)
    ref = Ridge(alpha=N * 1e-2).fit(x, y)
    for head in (on_files, in_memory):
        assert max_diff(head.coef_, memory.coef_) < 1e-10
        assert max_diff(head.coef_, ref.coef_) < 1e-10
    soft = ExactSoftmaxHead(1e-3, fit_intercept=True).fit(x, labels)
    dask_soft = ExactSoftmaxHead(1e-3, fit_intercept=True, chunk_rows=150, scheduler=cluster).fit(
        str(files / "xy.npz:x"), str(files / "xy.npz:labels"))
    assert max_diff(dask_soft.coef_, soft.coef_) < 1e-8


def test_dask_evaluates_the_laplace_predictive_as_in_memory(data, files, cluster):
    """The posterior is scattered to the workers once; their chunk sums (a pairwise tree)
    equal the in-memory pass to rounding."""
    x, _, labels = data
    head = ExactSoftmaxHead(1e-3, laplace=True).fit(x, labels)
    args = (head.coef_, head.intercept_, "ce", head.classes_)
    local = evaluate_head(x, labels, *args, laplace=head.laplace_, chunk_rows=150)
    dask = evaluate_head(str(files / "x.npy"), str(files / "f.h5:labels"), *args,
                         laplace=head.laplace_, chunk_rows=150, scheduler=cluster)
    assert dask.pop("laplace") == pytest.approx(local.pop("laplace"), rel=1e-13, abs=1e-15)
    assert dask == pytest.approx(local, rel=1e-13, abs=1e-15)


def test_workers_start_and_stop_a_local_cluster(data):
    x, y, _ = data
    head = ExactRidgeHead(1e-2, workers=2, chunk_rows=200).fit(x, y)
    assert max_diff(head.coef_, ExactRidgeHead(1e-2).fit(x, y).coef_) < 1e-10


def test_an_unreachable_scheduler_is_a_clear_error(data):
    x, y, _ = data
    with pytest.raises(ValueError, match=r"cannot connect to the scheduler at 'tcp://127.0.0.1:9' within"):
        ExactRidgeHead(1e-2, scheduler="tcp://127.0.0.1:9").fit(x, y)


# ---- lambda by cross-validation ----------------------------------------------------------------------
LAMS = np.logspace(-5, 1, 20)  # scikit-learn: alphas = N * LAMS, C = 1 / (2 N LAMS)


@pytest.mark.parametrize("bias", [False, True])
def test_loo_and_kfold_choose_ridgecv_lambda(data, bias):
    x, y, _ = data
    loo = ExactRidgeHead(lams=LAMS, cv="loo", fit_intercept=bias, chunk_rows=128).fit(x, y)
    assert loo.lam_ == pytest.approx(RidgeCV(alphas=N * LAMS, fit_intercept=bias).fit(x, y).alpha_ / N)
    kfold = ExactRidgeHead(lams=LAMS, cv=5, fit_intercept=bias).fit(x, y)
    ref = RidgeCV(alphas=N * LAMS, fit_intercept=bias, cv=KFold(5), scoring="neg_mean_squared_error").fit(x, y)
    assert kfold.lam_ == pytest.approx(ref.alpha_ / N)
    # and the curve itself: the K-fold scores are scikit-learn's fold-averaged MSEs
    i = int(np.argmin(np.abs(LAMS - 1e-2)))
    sk = -cross_val_score(Ridge(alpha=N * LAMS[i], fit_intercept=bias), x, y, cv=KFold(5),
                          scoring="neg_mean_squared_error").mean()
    assert kfold.cv_scores_[i] == pytest.approx(sk, rel=1e-9)
    gcv = ExactRidgeHead(lams=LAMS, cv="gcv", fit_intercept=bias).fit(x, y)
    assert gcv.cv_scores_.shape == LAMS.shape and np.isfinite(gcv.cv_scores_).all()


def test_loo_scores_are_exact_leave_one_out(data):
    """The LOO shortcut r_i / (1 - h_ii) equals refitting without each row, row by row."""
    x, y, _ = data
    lam = 1e-2
    head = ExactRidgeHead(lams=[lam, 1.0], cv="loo", fit_intercept=True).fit(x, y)
    errors = []
    for i in range(N):
        keep = np.arange(N) != i
        fit = Ridge(alpha=N * lam).fit(x[keep], y[keep])
        errors.append(((fit.predict(x[i:i + 1]) - y[i]) ** 2).mean())
    assert head.cv_scores_[0] == pytest.approx(np.mean(errors), rel=1e-10)


def test_softmax_kfold_chooses_logisticregressioncv_lambda(data):
    x, _, labels = data
    lams = np.logspace(-4, 0, 8)
    head = ExactSoftmaxHead(lams=lams, cv=5).fit(x, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = LogisticRegressionCV(Cs=1 / (2 * N * lams), cv=KFold(5), solver="newton-cholesky",
                                   scoring="neg_log_loss", tol=1e-12, max_iter=1000).fit(x, labels)
    assert head.lam_ == pytest.approx(1 / (2 * N * ref.C_[0]))


# ---- scikit-learn conventions -----------------------------------------------------------------------
def test_estimator_conventions(data):
    x, y, labels = data
    head = ExactRidgeHead(1e-2, fit_intercept=True)
    assert clone(head).get_params() == head.get_params()
    scores = cross_val_score(make_pipeline(StandardScaler(), ExactSoftmaxHead(1e-3)), x, labels, cv=3)
    assert scores.shape == (3,) and (scores > 0.5).all()
    assert 0.5 < head.fit(x, y).score(x, y) <= 1.0
    soft = ExactSoftmaxHead(1e-3).fit(x, labels + 10)  # any integer labels
    assert set(soft.predict(x)) <= {10, 11, 12, 13} and list(soft.classes_) == [10, 11, 12, 13]


def test_evaluate_head_streams_the_metrics(data, files):
    x, y, labels = data
    head = ExactSoftmaxHead(1e-3).fit(x, labels)
    m = evaluate_head(str(files / "x.npy"), str(files / "f.h5:labels"), head.coef_, head.intercept_,
                      "ce", head.classes_, chunk_rows=64)
    assert m["accuracy"] == pytest.approx(head.score(x, labels))
    ridge = ExactRidgeHead(1e-2).fit(x, y)
    r = evaluate_head(x, y, ridge.coef_, ridge.intercept_, "squared", chunk_rows=50)
    assert r["mse"] == pytest.approx(((ridge.predict(x) - y) ** 2).mean(), rel=1e-12)


# ---- bad input ---------------------------------------------------------------------------------------
def test_bad_input_is_named(data, files, tmp_path):
    x, y, labels = data
    with pytest.raises(ValueError, match="y: expected 600 rows like X, got 599"):
        ExactRidgeHead().fit(x, y[:-1])
    bad = x.copy()
    bad[321, 4] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"features: 1 NaN/Inf entry in row 321 \(in the chunk of rows 300-399\)"):
        ExactRidgeHead(chunk_rows=100).fit(str(tmp_path / "bad.npy"), y)
    with pytest.raises(ValueError, match="y: expected integer class labels"):
        ExactSoftmaxHead().fit(x, y[:, 0])
    with pytest.raises(ValueError, match=r"X: '.*f.h5:nope': no array 'nope' in"):
        ExactRidgeHead().fit(str(files / "f.h5:nope"), y)
    with pytest.raises(ValueError, match="cv: cross-validation needs a grid"):
        ExactRidgeHead(cv=5).fit(x, y)
    with pytest.raises(ValueError, match="cv: expected None, an integer >= 2"):
        ExactRidgeHead(lams=LAMS, cv=1).fit(x, y)
    with pytest.raises(ValueError, match="lam: expected a finite number > 0"):
        ExactSoftmaxHead(0.0).fit(x, labels)
    with pytest.raises(ValueError, match="y: expected at least 2 classes"):
        ExactSoftmaxHead().fit(x, np.zeros(N, dtype=np.int64))
    assert open_source(str(files / "x.npy")).shape == (N, D)
    with pytest.raises(TypeError, match="expected a NumPy array"):
        ArraySource.memory([1, 2])


# ---- hostile inputs (issue 17): the numerics ----------------------------------------------------------
def test_dask_merges_the_centred_sums_of_offset_features(cluster, tmp_path):
    """Features offset by 1e6, 8 chunks summed on 2 workers (the pairwise merge in the fixed
    tree): scikit-learn's Ridge to 1e-9, and its K-fold MSEs (the complements merge folds)."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((512, 6))
    y = z @ rng.standard_normal(6) + 0.5 + 0.3 * rng.standard_normal(512)
    np.save(tmp_path / "x.npy", z + 1e6)
    np.save(tmp_path / "y.npy", y)
    head = ExactRidgeHead(1e-3, chunk_rows=64, scheduler=cluster).fit(str(tmp_path / "x.npy"),
                                                                    str(tmp_path / "y.npy"))
    ref = Ridge(alpha=512 * 1e-3).fit(z + 1e6, y)
    assert max_diff(head.coef_, ref.coef_) / np.abs(ref.coef_).max() < 1e-9
    assert abs(head.intercept_ - ref.intercept_) / abs(ref.intercept_) < 1e-9
    lams = np.array([1e-3, 1e-1])
    kfold = ExactRidgeHead(lams=lams, cv=4, chunk_rows=64, scheduler=cluster).fit(str(tmp_path / "x.npy"),
                                                                                str(tmp_path / "y.npy"))
    sk = [-cross_val_score(Ridge(alpha=512 * lam), z + 1e6, y, cv=KFold(4),
                           scoring="neg_mean_squared_error").mean() for lam in lams]
    assert np.abs(kfold.cv_scores_ / np.array(sk) - 1).max() < 1e-9


def test_lambdas_whose_products_overflow_are_refused_before_any_work(data, monkeypatch):
    """lam = 1.7e308 gave the ridge head a NaN residual (N lam = inf), lam = 1e300 a softmax
    head that stopped after one step with b = 1e-302: N lam <= 1e150 is checked first, by
    check_lams, which a command line calls before reading anything."""
    x, y, labels = data
    reads = []
    monkeypatch.setattr(ArraySource, "read", lambda self, a, b: reads.append((a, b)))
    with pytest.raises(ValueError, match=r"lam: expected N lam <= 1e\+150 \(N = 600 rows: lam <= 1.67e\+147\), "
                                         r"got 1.7e\+308"):
        ExactRidgeHead(1.7e308).fit(x, y)
    with pytest.raises(ValueError, match=r"lam: expected N lam <= 1e\+150 .* got 1e\+300"):
        ExactSoftmaxHead(1e300).fit(x, labels)
    with pytest.raises(ValueError, match=r"lams: expected N lam <= 1e\+150 .* got 1e\+149 \(entry 1 of 2\)"):
        ExactRidgeHead(lams=[1.0, 1e149], cv="gcv").fit(x, y)
    assert reads == []  # refused before a single row was read
    from lastlayer.engine.solvers.estimators import LAM_ROWS_MAX, check_lams

    assert LAM_ROWS_MAX == 1e150
    np.testing.assert_array_equal(check_lams([1e-3, np.float32(0.5)], 600, "--lam-grid"), [1e-3, 0.5])
    assert check_lams(0, 600, "--lam", allow_zero=True).tolist() == [0.0]
    for bad, error, match in [
        ([1.0, 0.0], ValueError, r"--lam-grid: expected a finite number > 0, got 0.0 \(entry 1 of 2\)"),
        ([1.0, -2.0], ValueError, r"--lam-grid: expected a finite number > 0, got -2.0 \(entry 1 of 2\)"),
        ([np.nan], ValueError, r"--lam-grid: expected a finite number > 0, got nan"),
        ([], ValueError, r"--lam-grid: expected at least one value"),
        ("1e-3", TypeError, r"--lam-grid: expected a number or a sequence of numbers, got str '1e-3'"),
        ([1.0, True], TypeError, r"--lam-grid: expected a real number, got bool True \(entry 1 of 2\)"),
        (1e148, ValueError, r"--lam-grid: expected N lam <= 1e\+150 \(N = 600 rows: lam <= 1.67e\+147\)"),
    ]:
        with pytest.raises(error, match=match):
            check_lams(bad, 600, "--lam-grid")


def test_a_large_lambda_leaves_the_bias_at_the_log_class_priors(data):
    """At the largest admissible lambda W is 0 to rounding and the unpenalised bias is the
    centred log class priors. Plain conjugate gradients moved b by ~1 / (2 lam) per
    iteration (the W block's curvature is >= 2 lam, b's <= 1/2: 10 Newton iterations at
    lam = 1e100 with the bias 4.5e-10 off); preconditioned by the Hessian's diagonal,
    the head converges in a few steps and b to 1e-12."""
    x, _, labels = data
    prior = np.log(np.bincount(labels) / N)
    lam = 1e150 / N
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning either
        head = ExactSoftmaxHead(lam, chunk_rows=97).fit(x, labels)
    assert head.converged_ and head.n_iter_ <= 8
    assert max_diff(head.intercept_, prior - prior.mean()) < 1e-12
    assert np.abs(head.coef_).max() < 1e-140
    from lastlayer.engine.solvers import fit_softmax_regression

    sol = fit_softmax_regression(x, labels, lam, method="newton-cg", tol=1e-12)
    assert sol.converged and sol.iterations <= 8
    assert max_diff(sol.b, prior - prior.mean()) < 1e-12


def test_every_path_solve_of_the_kfold_cv_converges(data):
    """Near the optimum Newton's decrease fell below the rounding of J, Armijo's test
    rejected every full step and the solve crept on with t ~ 1e-9: one solve of this CV path
    stayed at a residual of 3.6e-10 > tol = 1e-10 for 100 iterations, silently. The full
    step is now judged by the residual where J is flat to rounding: every solve converges
    in at most 10 iterations."""
    from lastlayer.engine.solvers.streaming.runners import LocalRunner
    from lastlayer.engine.solvers.estimators.softmax_streamed import softmax_path

    x, _, labels = data
    lams = np.logspace(-4, 0, 8)
    edges = [0, 120, 240, 360, 480, 600]
    for f in range(5):
        train = [(a, b) for a, b in ((0, edges[f]), (edges[f + 1], N)) if b > a]
        sols, _ = softmax_path(LocalRunner(), ArraySource.memory(x), ArraySource.memory(labels),
                               np.arange(4), lams, True, 1e-10, 100, 97, train=train)
        assert all(s.converged and s.kkt_residual <= 1e-10 and s.iterations <= 10 for s in sols), \
            [(s.iterations, s.kkt_residual) for s in sols]


def test_an_unconverged_softmax_fit_says_so(data):
    """A fit stopped by max_iter warns ConvergenceWarning with the residual it reached and
    the tolerance (it said nothing), and keeps converged_ = False."""
    from sklearn.exceptions import ConvergenceWarning

    x, _, labels = data
    with pytest.warns(ConvergenceWarning, match=r"ExactSoftmaxHead: the solve at lam = 0.001 \(residual "
                                                r"[0-9.e+-]+\) stopped above tol = 1e-10 after max_iter = 1 "
                                                r"Newton iterations"):
        head = ExactSoftmaxHead(1e-3, max_iter=1).fit(x, labels)
    assert not head.converged_ and head.kkt_residual_ > 1e-10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ExactSoftmaxHead(lams=[1e-2, 1e-1], cv=2, max_iter=1).fit(x, labels)
    said = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(said) == 5  # every solve of the path (2 folds x 2 lambdas) and the final one
    assert any("lam = 0.1 (fold 1 of 2, residual" in m for m in said)


def test_float32_features_are_taken_as_they_are(data, tmp_path):
    """`lastlayer features` writes a float32 network's features as float32. Comparing such a
    chunk with FEATURE_MAX (1e100) cast the limit to float32 and overflowed (RuntimeWarning,
    an error in this suite); the heads equal the fit on the same values in float64."""
    x, y, labels = data
    x32 = x.astype(np.float32)
    with h5py.File(tmp_path / "f32.h5", "w") as f:
        f["x"], f["labels"], f["y"] = x32, labels, y
    soft = ExactSoftmaxHead(1e-3, chunk_rows=97).fit(str(tmp_path / "f32.h5:x"), str(tmp_path / "f32.h5:labels"))
    ref = ExactSoftmaxHead(1e-3).fit(x32.astype(np.float64), labels)
    assert max_diff(soft.coef_, ref.coef_) < 1e-8
    ridge = ExactRidgeHead(1e-2, chunk_rows=97).fit(str(tmp_path / "f32.h5:x"), str(tmp_path / "f32.h5:y"))
    assert max_diff(ridge.coef_, ExactRidgeHead(1e-2).fit(x32.astype(np.float64), y).coef_) < 1e-10
