"""The API cases that used to give a silently wrong result or a raw internal error: each
now computes the right answer, or refuses with a ValueError / TypeError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.engine import HadamardHead, fit_softmax_regression, ridge
from lastlayer.engine.solvers.exact.curvature import objective
from lastlayer.engine.solvers.exact.ridge import ridge_objective
from lastlayer.kernels import fwht, layca_update
from lastlayer.kernels.layca_reference import layca_reference


def problem(n=100, d=5, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), np.arange(n) % c


# ---- silently wrong before ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["newton", "newton-cg", "lbfgs"])
def test_an_absent_class_with_an_unpenalised_bias_is_refused(method):
    """Class 3 has no sample: its bias would go to -inf; the solvers used to return a finite
    b with a KKT residual < 1e-12."""
    phi, labels = problem()
    labels = np.where(labels == 3, 0, labels)
    with pytest.raises(ValueError, match=r"labels: class 3 has no sample: with an unpenalised bias"):
        fit_softmax_regression(phi, labels, 0.01, n_classes=4, method=method)
    sol = fit_softmax_regression(phi, labels, 0.01, n_classes=4, fit_bias=False, method=method)
    assert np.isfinite(sol.W).all()  # without a bias the optimum exists (lam > 0)


def test_newton_cg_keeps_the_gauge():
    """sum_c b_c = 0 to 1e-12 on 100 x 5, C = 4 problems (conjugate gradients let it drift
    to 1e-10 .. 4e-5 before: the e e^T regulariser leaves the gauge direction unchecked)."""
    worst = 0.0
    for seed in range(16, 20):
        rng = np.random.default_rng(seed)
        for lam in (1e-3, 1e-2, 1e-1):
            phi = rng.standard_normal((100, 5)) * rng.uniform(0.5, 5)
            labels = rng.integers(0, 4, 100)
            sol = fit_softmax_regression(phi, labels, lam, method="newton-cg", n_classes=4,
                                         fit_bias=bool(np.bincount(labels, minlength=4).all()))
            if sol.b is not None:
                worst = max(worst, abs(float(sol.b.sum())))
    assert worst <= 1e-12, worst


def test_lbfgs_reports_whether_it_reached_the_tolerance():
    phi, labels = problem()
    sol = fit_softmax_regression(phi, labels, 0.01, method="lbfgs", tol=1e-14)
    assert not sol.converged and sol.kkt_residual > 1e-14  # it says so, with the residual reached
    loose = fit_softmax_regression(phi, labels, 0.01, method="lbfgs", tol=1e-6)
    assert loose.converged and loose.kkt_residual <= 1e-6
    exact = fit_softmax_regression(phi, labels, 0.01, method="newton")
    assert exact.converged and exact.kkt_residual <= 1e-12


def test_hadamard_head_with_duplicate_rows_is_refused_unless_allowed():
    with pytest.raises(ValueError, match="998 classes would have the same row of Q"):
        HadamardHead(2, 1000)
    head = HadamardHead(2, 1000, allow_duplicate_rows=True)
    assert head.n == 1024
    HadamardHead(960, 1000)  # the paper's ShuffleNet head: dependent rows, none repeated


def test_float32_ridge_on_ill_conditioned_features_is_solved_accurately():
    """200 random float32 problems, lam = 0, cond(Phi) = 3e4: the excess objective over the
    float64 optimum of the same (float32) data stays below 1e-6 (it reached 38 % before)."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(200):
        u, _ = np.linalg.qr(rng.standard_normal((200, 20)))
        v, _ = np.linalg.qr(rng.standard_normal((20, 20)))
        phi = ((u * np.logspace(0, -np.log10(3e4), 20)) @ v.T).astype(np.float32)
        y = rng.standard_normal((200, 3)).astype(np.float32)
        W = ridge(phi, y, 0.0).W
        p64, y64 = phi.astype(np.float64), y.astype(np.float64)
        best = ridge_objective(ridge(p64, y64, 0.0).W, p64, y64, 0.0)
        worst = max(worst, (ridge_objective(W.astype(np.float64), p64, y64, 0.0) - best) / best)
    assert worst < 1e-6, worst


# ---- raw internal errors before -------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda phi, y: fit_softmax_regression(phi, list(y), 0.1), TypeError,
     "labels: expected a NumPy integer array, got list"),
    (lambda phi, y: fit_softmax_regression(phi, y, np.inf), ValueError,
     "lam: expected a finite number > 0, got inf"),
    (lambda phi, y: fit_softmax_regression(phi, y, 0.1, n_classes=0), ValueError,
     "n_classes: expected an integer >= 2, got 0"),
    (lambda phi, y: fit_softmax_regression(phi[:0], y[:0], 0.1), ValueError,
     r"Phi: expected shape \(N, d\) with N, d >= 1, got \(0, 5\)"),
    (lambda phi, y: fit_softmax_regression(phi * 1e150, y, 0.1, method="newton"), ValueError,
     "Phi: the Hessian of J is not positive definite in float64"),
    (lambda phi, y: fit_softmax_regression(phi, y, 0.1, W0=np.zeros((3, 5))), ValueError,
     r"W0: expected shape \(4, 5\), got \(3, 5\)"),
    (lambda phi, y: fit_softmax_regression(phi, y, 0.1, b0=np.zeros(2)), ValueError,
     r"b0: expected shape \(4,\), got \(2,\)"),
    (lambda phi, y: fit_softmax_regression(phi, y, 0.1, max_iter=0), ValueError, "max_iter"),
    (lambda phi, y: ridge(phi, phi[:, 0], "1"), TypeError, "lam: expected a real number, got str"),
    (lambda phi, y: ridge(phi, phi[:, 0], True), TypeError, "lam: expected a real number, got bool"),
    (lambda phi, y: fwht(np.ones(4), normalized="yes"), TypeError,
     "normalized: expected True or False, got str 'yes'"),
])
def test_raw_errors_became_named_errors(call, error, match):
    phi, labels = problem()
    with pytest.raises(error, match=match):
        call(phi, labels)


def test_numpy_scalars_are_numbers():
    phi, labels = problem()
    a = ridge(phi, phi[:, :2], np.int64(1)).W
    np.testing.assert_array_equal(a, ridge(phi, phi[:, :2], 1).W)
    b = fit_softmax_regression(phi, labels, np.float32(0.25))
    assert b.converged


@pytest.mark.parametrize("step", ["fused", "reference"])
@pytest.mark.parametrize("w, s, rho, r0, match", [
    (np.zeros(5), np.ones(5), 0.1, 1.0, "w.w = 0.0"),
    (np.ones(5), np.arange(5.0), np.nan, 1.0, "rho: expected a finite number >= 0, got nan"),
    (np.ones(5), np.arange(5.0), 0.1, -1.0, "target_norm: expected a finite number > 0, got -1.0"),
    (np.ones(5), np.ones(3), 0.1, 1.0, r"s: expected .*shape \(5,\)"),
])
def test_layca_step_refuses_what_it_cannot_do(step, w, s, rho, r0, match):
    with pytest.raises(ValueError, match=match):
        if step == "fused":
            layca_update(w.copy(), s, rho, r0)
        else:
            layca_reference(w, s, rho, r0)


def test_the_objective_at_the_refused_absent_class_really_has_no_minimiser():
    """Why the absent class is refused: J keeps decreasing as that class's bias goes down."""
    phi, labels = problem()
    labels = np.where(labels == 3, 0, labels)
    W = np.zeros((4, 5))
    values = [objective(W, np.array([0, 0, 0, -t]), phi, labels, 0.01, "ce").value for t in (1, 10, 30)]
    assert values[0] > values[1] > values[2]


# ---- the exact heads' Python API (issue 17) --------------------------------------------------------
def head_data(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, x @ rng.standard_normal(d) + rng.standard_normal(n), np.arange(n) % 3


@pytest.fixture
def no_reads(monkeypatch):
    """Fails the test if any row of any source is read: for checks made before any pass."""
    from lastlayer.engine.solvers.streaming.sources import ArraySource

    def read(self, start, stop):
        raise AssertionError(f"rows {start}-{stop} were read before the check")

    monkeypatch.setattr(ArraySource, "read", read)


@pytest.mark.parametrize("make, error, match", [
    (lambda E: E["ce"](lams=[1e-2, 1e-1], cv=60), ValueError,
     r"cv: 60 folds need at least 60 rows \(one per fold\), got 40"),
    (lambda E: E["squared"](lams=[1e-2, 1e-1], cv=41), ValueError,
     r"cv: 41 folds need at least 41 rows \(one per fold\), got 40"),
    (lambda E: E["squared"](lams=[0.0, 1.0], cv="gcv"), ValueError,
     r"lams: expected a finite number > 0, got 0.0 \(entry 0 of 2\)"),
    (lambda E: E["squared"](lams=[-1.0, 1.0], cv="loo"), ValueError,
     r"lams: expected a finite number > 0, got -1.0 \(entry 0 of 2\)"),
    (lambda E: E["squared"](lams=[1.0, float("nan")], cv=3), ValueError,
     r"lams: expected a finite number > 0, got nan \(entry 1 of 2\)"),
    (lambda E: E["squared"](1e-2, scheduler="bogus"), ValueError,
     r"scheduler: expected a Dask scheduler address \[PROTOCOL://\]HOST:PORT such as "
     r"tcp://127.0.0.1:8786 .*, got 'bogus'"),
    (lambda E: E["squared"](1e-2, scheduler="http://127.0.0.1:8786"), ValueError,
     r"scheduler: .* \(unknown protocol 'http'\)"),
    (lambda E: E["ce"](1e-2, workers=True), TypeError, r"workers: expected an integer, got bool True"),
    (lambda E: E["ce"](1e-2, cv=2.5, lams=[1.0, 2.0]), ValueError, r"cv: expected None, an integer >= 2"),
])
def test_the_heads_refuse_bad_settings_before_any_pass(make, error, match, no_reads):
    """cv > N for ce read the data for 9 s and failed with "'NoneType' object is not
    subscriptable"; a lambda grid holding 0 was a ZeroDivisionError in GCV; "bogus" as a
    scheduler waited for a connection: each is now one line naming the argument, raised
    before a row is read."""
    from lastlayer.engine.solvers.estimators import ExactRidgeHead, ExactSoftmaxHead

    x, y, labels = head_data()
    head = make({"squared": ExactRidgeHead, "ce": ExactSoftmaxHead})
    with pytest.raises(error, match=match):
        head.fit(x, labels if isinstance(head, ExactSoftmaxHead) else y)


def test_zero_rows_are_refused():
    from lastlayer.engine.solvers.estimators import ExactRidgeHead, evaluate_head

    x, y, _ = head_data()
    with pytest.raises(ValueError, match=r"X: expected features of shape \(N, d\) with N, d >= 1, got \(0, 3\)"):
        ExactRidgeHead().fit(x[:0], y[:0])
    with pytest.raises(ValueError, match=r"X: expected at least one row, got shape \(0, 3\)"):
        evaluate_head(x[:0], y[:0], np.ones((1, 3)), np.zeros(1), "squared")


def test_evaluate_head_reports_finite_metrics_or_refuses():
    """Labels none of which the head knows gave cross_entropy = nan (0 / 0 over the known
    rows); outputs that overflow gave inf: both are refused, naming y and X."""
    from lastlayer.engine.solvers.estimators import evaluate_head

    x, _, labels = head_data()
    W, b = np.ones((3, 3)), np.zeros(3)
    with pytest.raises(ValueError, match=r"y: none of the 40 labels is one of the head's 3 classes \(0, 1, 2\)"):
        evaluate_head(x, labels + 10, W, b, "ce", np.arange(3))
    m = evaluate_head(x, np.where(labels == 2, 7, labels), W, b, "ce", np.arange(3))
    assert np.isfinite(m["cross_entropy"]) and m["unknown_labels"] == int((labels == 2).sum())
    with pytest.raises(ValueError, match=r"X: the head's outputs W x \+ b overflow float64 in row 0"):
        evaluate_head(x * 1e200, labels, W * 1e200, b, "ce", np.arange(3))


@pytest.mark.parametrize("y_shape, W_shape, loss, match", [
    ((40,), (2, 3), "squared", r"y: expected targets of shape \(N, 2\), one column per output of the head "
                               r"\(W has 2 rows\), got \(40,\)"),
    ((40, 3), (2, 3), "squared", r"y: expected targets of shape \(N, 2\).*got \(40, 3\)"),
    ((40, 2), (1, 3), "squared", r"y: expected targets of shape \(N,\) or \(N, 1\).*got \(40, 2\)"),
    ((40,), (2, 4), "squared", r"X: expected features of shape \(N, 4\) like W's columns, got \(40, 3\)"),
    ((40, 2), (3, 3), "ce", r"y: expected integer class labels of shape \(N,\)"),
])
def test_evaluate_head_checks_shapes_against_the_head_before_reading(y_shape, W_shape, loss, match, no_reads):
    """1 target column against a 2-output head broadcast to an MSE: now refused from the
    sources' shapes, before any row is read."""
    from lastlayer.engine.solvers.estimators import evaluate_head

    x = np.zeros((40, 3))
    y = np.zeros(y_shape, dtype=np.int64 if loss == "ce" else np.float64)
    with pytest.raises(ValueError, match=match):
        evaluate_head(x, y, np.ones(W_shape), np.zeros(W_shape[0]), loss,
                      np.arange(W_shape[0]) if loss == "ce" else None)


def test_labels_beyond_int64_keep_their_values():
    """uint64 labels >= 2^63 were an OverflowError ("Python int too large to convert to C
    long"): the classes keep the labels' dtype, and int64 labels are matched exactly
    against them (NumPy would compare the two in float64)."""
    from lastlayer.engine.solvers.estimators import ExactSoftmaxHead, evaluate_head

    x, _, labels = head_data(60)
    big = labels.astype(np.uint64) + np.uint64(2**63)
    head = ExactSoftmaxHead(1e-2).fit(x, big)
    assert head.classes_.dtype == np.uint64 and head.classes_.tolist() == [2**63, 2**63 + 1, 2**63 + 2]
    assert set(head.predict(x).tolist()) <= set(head.classes_.tolist())
    m = evaluate_head(x, big, head.coef_, head.intercept_, "ce", head.classes_)
    assert m["unknown_labels"] == 0 and m["accuracy"] == pytest.approx(head.score(x, big))
    near = np.full(60, 2**63 - 1, dtype=np.int64)  # equal to 2^63 in float64, not as integers
    with pytest.raises(ValueError, match="y: none of the 60 labels is one of the head's 3 classes"):
        evaluate_head(x, near, head.coef_, head.intercept_, "ce", head.classes_)


def test_a_zarr_group_without_an_array_name_lists_its_arrays(tmp_path):
    import zarr

    from lastlayer.engine.solvers.estimators import ExactRidgeHead

    group = zarr.open_group(str(tmp_path / "f.zarr"), mode="w")
    group.create_array("features", data=np.zeros((4, 2)))
    group.create_group("more").create_array("targets", data=np.zeros(4))
    with pytest.raises(ValueError, match=r"X: '.*f.zarr' is a Zarr group, not an array: say which array, "
                                         r"e.g. .*f.zarr:features \(it holds: features, more/targets\)"):
        ExactRidgeHead().fit(str(tmp_path / "f.zarr"), np.zeros(4))


def test_scikit_learn_conventions_of_the_heads():
    """predict before fit: NotFittedError (was a ValueError of its own); fit(X, y, w)
    positionally: "'numpy.ndarray' object is not callable" (the third parameter was
    progress); NaN features: NaN predictions."""
    from sklearn.exceptions import NotFittedError

    from lastlayer.engine.solvers.estimators import ExactRidgeHead, ExactSoftmaxHead

    x, y, labels = head_data()
    for head in (ExactRidgeHead(), ExactSoftmaxHead()):
        with pytest.raises(NotFittedError):
            head.predict(x)
    with pytest.raises(ValueError, match=r"sample_weight: the exact heads weight every row equally .* "
                                         r"expected None, got ndarray of shape \(40,\)"):
        ExactRidgeHead().fit(x, y, np.ones(40))
    with pytest.raises(ValueError, match="sample_weight"):
        ExactSoftmaxHead().fit(x, labels, sample_weight=np.ones(40))
    seen = []
    ExactRidgeHead().fit(x, y, progress=seen.append)
    assert sum(seen) == 40
    bad = x.copy()
    bad[[5, 9], 1] = np.nan
    bad[9, 2] = np.inf
    for head in (ExactRidgeHead().fit(x, y), ExactSoftmaxHead().fit(x, labels)):
        with pytest.raises(ValueError, match=r"X: 3 NaN/Inf entries in 2 rows, the first in row 5"):
            head.predict(bad)


def test_numpy_scalars_are_numbers_everywhere():
    """PoF(search_batch=np.int64(32)) was refused; every engine check takes numbers.Integral /
    numbers.Real (NumPy scalars included) and still refuses a bool for an int and a float
    for an int."""
    from lastlayer.engine._checks import pair, positive_int, real_number
    from lastlayer.engine.solvers.estimators import ExactRidgeHead, ExactSoftmaxHead
    from lastlayer.models.papers.entame.method import RECIPES, head
    from lastlayer.models.papers.pof.method import PoF

    config = PoF(search_batch=np.int64(32), max_redraws=np.int32(3), gamma_max=np.float32(1.5), split=np.int8(-1))
    assert (config.search_batch, config.max_redraws, config.gamma_max, config.split) == (32, 3, 1.5, -1)
    assert type(config.search_batch) is int and type(config.gamma_max) is float
    for bad in (True, 2.5, 32.0, "32"):
        with pytest.raises(ValueError, match="search_batch: expected an integer >= 1"):
            PoF(search_batch=bad)
    assert len(head(RECIPES["zero"], 4, np.int64(10))) == 1
    assert positive_int(np.uint8(3), "k") == 3 and pair(np.int64(2), "k", 1) == (2, 2)
    assert pair(np.array([2, 3]), "k", 1) == (2, 3) and real_number(np.float16(0.5), "x") == 0.5
    for bad in (True, np.bool_(True), 2.5, 2.0):
        with pytest.raises(TypeError, match="k: expected an integer"):
            positive_int(bad, "k")
    x, y, labels = head_data()
    a = ExactRidgeHead(np.float32(0.25), chunk_rows=np.int64(7), lams=np.array([0.1, 1.0]), cv=np.int64(3)).fit(x, y)
    b = ExactRidgeHead(0.25, chunk_rows=7, lams=[0.1, 1.0], cv=3).fit(x, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert ExactSoftmaxHead(np.float64(1e-2), max_iter=np.int64(50), tol=np.float32(1e-8)).fit(x, labels).converged_


def test_the_checks_a_command_line_calls_first_name_its_flags():
    """check_cv and check_scheduler, like check_lams, take the name to report (the CLI's
    flag) and look at nothing but their arguments and the number of rows."""
    from lastlayer.engine.solvers.estimators import check_cv
    from lastlayer.engine.solvers.streaming.runners import check_scheduler

    assert check_cv(np.int64(5), 10, "ce", "--cv") == 5 and check_cv("gcv", 10) == "gcv"
    with pytest.raises(ValueError, match=r"^--cv: 11 folds need at least 11 rows \(one per fold\), got 10$"):
        check_cv(11, 10, "ce", "--cv")
    with pytest.raises(ValueError, match=r"^--cv: .*got 'loo' \(leave-one-out and GCV are for the squared loss\)"):
        check_cv("loo", 10, "ce", "--cv")
    assert check_scheduler("tls://[::1]:8786", "--scheduler") == "tls://[::1]:8786"
    assert check_scheduler("scheduler-host:8786") == "scheduler-host:8786"
    with pytest.raises(ValueError, match=r"^--scheduler: expected a Dask scheduler address .*, got 'tcp://h:0' "
                                         r"\(port 0 out of range\)"):
        check_scheduler("tcp://h:0", "--scheduler")


def test_features_too_large_for_the_softmax_hessian_are_refused():
    """|x| ~ 1e200 once ran 100 Newton iterations with overflow warnings and wrote W = 0."""
    from lastlayer.engine.solvers import ExactSoftmaxHead

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3))
    with pytest.raises(ValueError, match=r"^X: \|x\| = .* in row 0 is beyond 1e\+100"):
        ExactSoftmaxHead(lam=1e-3).fit(x * 1e200, (x[:, 0] > 0).astype(np.int64))


def test_a_nan_in_row_0_is_counted_with_the_rest_of_its_chunk():
    """Row 0 was read alone first (the centring shift) and reported as the whole story."""
    from lastlayer.engine.solvers import ExactRidgeHead

    x = np.random.default_rng(0).standard_normal((200, 8))
    with pytest.raises(ValueError, match=r"^targets: 200 NaN/Inf entries in rows 0-199"):
        ExactRidgeHead(lam=1e-3).fit(x, np.full(200, np.nan))
    x[0, 0] = x[100, :] = np.nan
    with pytest.raises(ValueError, match=r"^features: 9 NaN/Inf entries in rows 0-100"):
        ExactRidgeHead(lam=1e-3).fit(x, np.ones(200))
