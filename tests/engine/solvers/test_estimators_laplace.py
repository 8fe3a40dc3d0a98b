"""The exact heads with their last-layer Laplace posterior (``laplace=True``) and the
calibration metrics of ``evaluate_head``: the predictive equals LastLayerLaplace's own, the
ridge head's predictive variance equals Bayesian linear regression's closed form, the
metrics merged over chunks equal lastlayer.engine.solvers.diagnostics.calibration on the
whole arrays, the estimator conventions hold, and every bad setting is named before any
pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.base import clone

from lastlayer.engine.solvers import estimators
from lastlayer.engine.solvers.diagnostics.calibration import brier, ece
from lastlayer.engine.solvers.estimators import ExactRidgeHead, ExactSoftmaxHead, evaluate_head
from lastlayer.engine.solvers.laplace.posterior import LastLayerLaplace, tau_from_lam
from lastlayer.engine.solvers.streaming.sources import ArraySource

N, D, C = 240, 5, 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, D)) + 0.2
    y = x @ rng.standard_normal((D, 2)) + 0.5 + 0.7 * rng.standard_normal((N, 2))
    labels = (x[:, :3] @ rng.standard_normal((3, C)) + rng.gumbel(size=(N, C))).argmax(axis=1)
    return x, y, labels


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


# ---- the predictive: LastLayerLaplace's own ------------------------------------------------------
def test_softmax_head_predicts_with_the_laplace_posterior_of_its_mode(data):
    """predict_proba is the probit predictive of LastLayerLaplace built here from the head's
    (W, b) at the prior maximising the evidence from (2 N lam, 2 N lam); rows sum to 1."""
    x, _, labels = data
    lam = 3e-3
    head = ExactSoftmaxHead(lam, laplace=True).fit(x, labels + 7)  # any integer labels
    tau = tau_from_lam(lam, N)
    start = LastLayerLaplace(head.coef_, head.intercept_, x, labels, loss="ce", tau_w=tau,
                             tau_b=tau)
    opt = start.optimize_prior(mode="separate")
    ref = start.with_prior(opt.tau_w, opt.tau_b)
    p = head.predict_proba(x)
    assert np.abs(p.sum(axis=1) - 1).max() <= 1e-12  # float64 rounding of C = 3 terms
    assert max_diff(p, ref.predict_proba(x, method="probit")) <= 1e-15
    assert (head.predict(x) == head.classes_[p.argmax(axis=1)]).all()
    assert head.laplace_.structure == "full" and head.laplace_evidence_.converged
    assert head.laplace_log_evidence_ == pytest.approx(ref.log_evidence(), rel=1e-13)
    assert (head.laplace_.tau_w, head.laplace_.tau_b) == (opt.tau_w, opt.tau_b)
    # the Laplace predictive is not the MAP's: the probit flattens the probabilities
    plain = ExactSoftmaxHead(lam).fit(x, labels + 7)
    assert max_diff(plain.predict_proba(x), p) > 1e-3
    assert max_diff(head.decision_function(x), plain.decision_function(x)) <= 1e-12


def test_a_fixed_prior_keeps_the_maps_tau_w(data):
    x, _, labels = data
    head = ExactSoftmaxHead(1e-2, laplace=True, laplace_prior="fixed", laplace_tau_b=0.5,
                            laplace_structure="kfac").fit(x, labels)
    assert head.laplace_.tau_w == 2 * N * 1e-2 and head.laplace_.tau_b == 0.5
    assert head.laplace_.structure == "kfac" and head.laplace_evidence_ is None
    ref = LastLayerLaplace(head.coef_, head.intercept_, x, labels, loss="ce", tau_w=2 * N * 1e-2,
                           tau_b=0.5, structure="kfac")
    assert max_diff(head.predict_proba(x), ref.predict_proba(x)) <= 1e-15
    none = ExactSoftmaxHead(1e-2, fit_intercept=False, laplace=True,
                            laplace_prior="fixed").fit(x, labels)
    assert none.laplace_.b is None and none.laplace_log_evidence_ is not None
    searched = ExactSoftmaxHead(1e-2, fit_intercept=False, laplace=True).fit(x, labels)
    assert searched.laplace_evidence_.tau_b is None and searched.laplace_evidence_.converged
    assert searched.laplace_log_evidence_ >= none.laplace_log_evidence_  # its maximum over tau_w


def test_ridge_predictive_is_bayesian_linear_regression(data):
    """std^2 = phit^T (2 Phit^T Phit + D)^-1 phit + 1/2 (noise variance 1/2: the squared
    loss is -log N(y; z, I/2)), computed here from the normal equations."""
    x, y, _ = data
    head = ExactRidgeHead(1e-2, laplace=True, laplace_prior="fixed", laplace_tau_b=0.0).fit(x, y)
    xt = np.hstack([x, np.ones((N, 1))])
    k = 2 * xt.T @ xt + np.diag([2 * N * 1e-2] * D + [0.0])
    var = np.einsum("mj,jk,mk->m", xt, np.linalg.inv(k), xt) + 0.5
    mean, std = head.predict(x, return_std=True)
    assert np.array_equal(mean, head.predict(x)) and std.shape == (N, 2)
    assert np.abs(std ** 2 / var[:, None] - 1).max() < 1e-12
    mu, cov = head.predict_gaussian(x[:5])
    assert max_diff(mu, mean[:5]) <= 1e-12
    assert max_diff(cov, var[:5, None, None] * np.eye(2)) < 1e-12
    # tau_b = 0: the flat prior whose exact mode the ridge head is; no evidence (improper)
    scale = float(np.linalg.norm(2 * N * 1e-2 * head.coef_))
    assert head.laplace_.mode_residual <= 1e-10 * scale and head.laplace_log_evidence_ is None
    one = ExactRidgeHead(1e-2, laplace=True).fit(x, y[:, 0])
    assert one.predict(x, return_std=True)[1].shape == (N,) and one.laplace_.structure == "kron"
    with pytest.raises(ValueError, match="return_std: needs the Laplace posterior: fit with "
                                         "laplace=True"):
        ExactRidgeHead(1e-2).fit(x, y).predict(x, return_std=True)


def test_estimator_conventions_hold_with_laplace(data):
    x, _, labels = data
    head = ExactSoftmaxHead(1e-3, laplace=True, laplace_structure="full")
    params = head.get_params()
    assert {"laplace", "laplace_prior", "laplace_structure", "laplace_tau_b"} <= set(params)
    fitted = clone(head).fit(x, labels)
    assert clone(fitted).get_params() == params and not hasattr(clone(fitted), "laplace_")
    off = clone(head).set_params(laplace=False).fit(x, labels)
    assert off.laplace_ is None and off.get_params()["laplace_structure"] == "full"
    plain = ExactSoftmaxHead(1e-3).fit(x, labels)
    assert max_diff(off.predict_proba(x), plain.predict_proba(x)) == 0


def test_float32_features_give_the_posterior_of_their_float64_values(data):
    x, _, labels = data
    x32 = x.astype(np.float32)
    a = ExactSoftmaxHead(1e-3, laplace=True).fit(x32, labels)
    b = ExactSoftmaxHead(1e-3, laplace=True).fit(x32.astype(np.float64), labels)
    assert max_diff(a.predict_proba(x32), b.predict_proba(x32.astype(np.float64))) <= 1e-12


# ---- evaluate_head: calibration merged over chunks ---------------------------------------------
def test_chunked_calibration_equals_the_whole_array_scores(data):
    """ECE / MCE / Brier of chunks of 37 rows merged: calibration.ece and brier on all rows
    (ECE's bin sums are exact per bin; the merge adds them: 1e-14 is a few roundings)."""
    x, _, labels = data
    head = ExactSoftmaxHead(1e-3, laplace=True).fit(x, labels)
    m = evaluate_head(x, labels, head.coef_, head.intercept_, "ce", head.classes_,
                      laplace=head.laplace_, chunk_rows=37)
    p = ExactSoftmaxHead(1e-3).fit(x, labels).predict_proba(x)
    whole = ece(p, labels, 15, "width")
    assert abs(m["ece"] - whole.ece) < 1e-14 and abs(m["mce"] - whole.mce) < 1e-14
    assert m["brier"] == pytest.approx(brier(p, labels), rel=1e-13)
    assert m["nll"] == m["cross_entropy"]
    pl = head.laplace_.predict_proba(x)
    la = m["laplace"]
    assert abs(la["ece"] - ece(pl, labels).ece) < 1e-14
    assert abs(la["mce"] - ece(pl, labels).mce) < 1e-14
    assert la["brier"] == pytest.approx(brier(pl, labels), rel=1e-13)
    assert la["nll"] == pytest.approx(head.laplace_.predictive_nll(x, labels), rel=1e-13)
    assert la["accuracy"] == float((pl.argmax(axis=1) == labels).mean())
    # a label the head does not know: wrong, and out of nll / ece / brier
    odd = labels.copy()
    odd[:10] = 99
    u = evaluate_head(x, odd, head.coef_, head.intercept_, "ce", head.classes_, chunk_rows=37)
    assert u["unknown_labels"] == 10
    assert abs(u["ece"] - ece(p[10:], labels[10:]).ece) < 1e-14


def test_squared_loss_nll_is_the_gaussian_one(data):
    x, y, _ = data
    head = ExactRidgeHead(1e-2, laplace=True).fit(x, y)
    m = evaluate_head(x, y, head.coef_, head.intercept_, "squared", laplace=head.laplace_,
                      chunk_rows=50)
    r = head.predict(x) - y
    assert m["nll"] == pytest.approx(math.log(math.pi) + (r * r).sum(axis=1).mean(), rel=1e-13)
    assert m["laplace"]["nll"] == pytest.approx(head.laplace_.predictive_nll(x, y), rel=1e-13)


def test_a_posterior_of_another_head_is_refused(data):
    x, _, labels = data
    a = ExactSoftmaxHead(1e-3, laplace=True).fit(x, labels)
    b = ExactSoftmaxHead(1e-1).fit(x, labels)
    with pytest.raises(ValueError, match="laplace: its mode .* is not the head's"):
        evaluate_head(x, labels, b.coef_, b.intercept_, "ce", b.classes_, laplace=a.laplace_)
    with pytest.raises(TypeError, match="laplace: expected a LastLayerLaplace or None, got dict"):
        evaluate_head(x, labels, b.coef_, b.intercept_, "ce", b.classes_, laplace={})


# ---- bad settings: named, before any pass ------------------------------------------------------
@pytest.mark.parametrize("make, fragment", [
    (lambda: ExactSoftmaxHead(laplace=True, laplace_prior="cv"),
     r"laplace_prior: expected one of 'evidence', 'fixed', got 'cv' \('cv', .* not offered\)"),
    (lambda: ExactSoftmaxHead(laplace=True, laplace_structure="kron"),
     "laplace_structure: 'kron' is exact only for the squared loss"),
    (lambda: ExactSoftmaxHead(laplace=True, laplace_structure="diag"),
     "laplace_structure: expected one of 'auto', 'full', 'kron', 'kfac', got 'diag'"),
    (lambda: ExactSoftmaxHead(laplace=True, laplace_prior="fixed"),
     "laplace_tau_b: laplace_prior 'fixed' with a bias needs the bias's prior precision"),
    (lambda: ExactSoftmaxHead(laplace=True, laplace_prior="fixed", laplace_tau_b=0.0),
     "laplace_tau_b: expected > 0 for ce"),
    (lambda: ExactSoftmaxHead(laplace=True, laplace_tau_b=1.0),
     "laplace_tau_b: only with laplace_prior 'fixed'"),
    (lambda: ExactSoftmaxHead(laplace=True, laplace_prior="fixed", laplace_tau_b=1.0,
                              fit_intercept=False),
     r"laplace_tau_b: the head has no bias \(fit_intercept False\): expected None, got 1.0"),
    (lambda: ExactSoftmaxHead(laplace="yes"), "laplace: expected True or False, got str 'yes'"),
    (lambda: ExactRidgeHead(0.0, laplace=True),
     "lam: the Laplace prior precision tau_w = 2 N lam needs lam > 0"),
    (lambda: ExactRidgeHead(laplace=True, laplace_prior="fixed", laplace_tau_b=0.0,
                            laplace_structure="kfac"),
     "laplace_tau_b: expected > 0 with laplace_structure 'kfac'"),
    (lambda: ExactRidgeHead(laplace=True, laplace_prior="fixed", laplace_tau_b=-1.0),
     "laplace_tau_b: expected a finite number >= 0, got -1.0"),
])
def test_bad_laplace_settings_are_named_before_any_pass(data, monkeypatch, make, fragment):
    x, y, labels = data
    reads = []
    monkeypatch.setattr(ArraySource, "read", lambda self, a, b: reads.append((a, b)))
    head = make()
    with pytest.raises((ValueError, TypeError), match=fragment):
        head.fit(x, labels if isinstance(head, ExactSoftmaxHead) else y)
    assert reads == []


def test_the_memory_and_size_limits_are_named(data, monkeypatch):
    x, y, labels = data
    reads = []
    monkeypatch.setattr(estimators.checks, "LAPLACE_FEATURES_MAX", N * D * 8 - 1)
    monkeypatch.setattr(ArraySource, "read", lambda self, a, b: reads.append((a, b)))
    with pytest.raises(ValueError, match=r"laplace: the posterior needs the training features in "
                                         r"memory as float64, 240 x 5 = 9,600 bytes, above "
                                         r"LAPLACE_FEATURES_MAX = 9,599 "
                                         r"bytes; fit without it"):
        ExactRidgeHead(laplace=True).fit(x, y)
    assert reads == []
    monkeypatch.undo()
    monkeypatch.setattr(estimators.checks, "FULL_MAX", C * (D + 1) - 1)
    with pytest.raises(ValueError, match=r"laplace_structure: 'full' needs a dense 18 x 18 "
                                         r"precision .* above FULL_MAX = 17 parameters "
                                         r"C \(d \+ 1\); use 'kfac'"):
        # after the pass over the labels that counts the classes C
        ExactSoftmaxHead(laplace=True, laplace_structure="full").fit(x, labels)
