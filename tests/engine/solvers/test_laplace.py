"""The last-layer Laplace approximation (lastlayer.engine.solvers.laplace.posterior,
structures, evidence): structures against each other and against dense algebra, the
predictive, the evidence and its optimum, cross-validation, and every argument check."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from lastlayer.engine.solvers.laplace import evidence
from lastlayer.engine.solvers.laplace import posterior as laplace
from lastlayer.engine.solvers.laplace import structures as laplace_structures
from lastlayer.engine.solvers.exact.curvature import hessian
from lastlayer.engine.solvers.laplace.posterior import (
    LastLayerLaplace, squared_loss_mode, tau_from_lam,
)
from lastlayer.engine.solvers.laplace.select import select_prior
from lastlayer.engine.solvers.laplace.structures import engine_order
from lastlayer.engine.solvers.exact.ridge import ridge
from lastlayer.engine.solvers.exact.softmax_regression import fit_softmax_regression
from lastlayer.engine.solvers.streaming.sources import fold_edges
from lastlayer.engine.streams import stream


def ce_problem(n=60, d=3, c=4, lam=1e-2, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((c, d))
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    x = mu[y] + rng.standard_normal((n, d))
    sol = fit_softmax_regression(x, y, lam, fit_bias=bias, n_classes=c)
    return x, y, sol.W, sol.b


def sq_problem(n=50, d=4, c=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, x @ rng.standard_normal((d, c)) + rng.standard_normal((n, c))


def rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


# ---- the precision in the engine's order -------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_full_precision_is_n_times_the_engine_hessian_plus_the_prior(bias):
    x, y, W, b = ce_problem(bias=bias)
    post = LastLayerLaplace(W, b, x, y, tau_w=0.8, tau_b=0.3 if bias else None, structure="full")
    want = len(x) * hessian(W, b, x, y, 0.0, "ce")
    want[np.diag_indices(12)] += 0.8
    if bias:
        want[np.arange(12, 16), np.arange(12, 16)] += 0.3
    assert rel(post.precision(), want) < 1e-14
    assert rel(post.covariance() @ post.precision(), np.eye(len(want))) < 1e-12
    assert post.n_params == len(want) and post.mean.shape == (len(want),)


def test_engine_order_is_the_permutation_of_the_class_major_order():
    perm = engine_order(2, 3, True)  # (c, j): W[0, :3], b_0, W[1, :3], b_1
    assert perm.tolist() == [0, 1, 2, 6, 3, 4, 5, 7]
    assert engine_order(2, 3, False).tolist() == list(range(6))


def test_ce_hessian_null_space_is_every_shift_shared_by_the_classes():
    x, y, W, b = ce_problem()
    hn = len(x) * hessian(W, b, x, y, 0.0, "ce")
    v = np.random.default_rng(3).standard_normal(4)  # (v_W, v_b) added to every class
    shift = np.concatenate([np.tile(v[:3], 4), np.full(4, v[3])])
    assert np.abs(hn @ shift).max() < 1e-12 * np.abs(hn).max()


# ---- the squared loss: kron, full and kfac are one posterior -------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_squared_loss_structures_agree(bias):
    x, y = sq_problem()
    tau_b = 0.4 if bias else None
    W, b = squared_loss_mode(x, y, 0.9, tau_b)
    posts = [LastLayerLaplace(W, b, x, y, loss="squared", tau_w=0.9, tau_b=tau_b, structure=s)
             for s in ("kron", "full", "kfac")]
    xs = np.random.default_rng(2).standard_normal((6, 4))
    ref = posts[1]
    for post in posts:
        assert rel(post.covariance(), ref.covariance()) < 1e-12
        assert post.log_det_precision == pytest.approx(ref.log_det_precision, rel=1e-12)
        assert rel(post.logit_moments(xs)[1], ref.logit_moments(xs)[1]) < 1e-12
        assert abs(post.log_evidence() - ref.log_evidence()) < 1e-12 * abs(ref.log_evidence())
        assert post.mode_residual < 1e-10


def test_squared_loss_mode_is_ridge_at_tau_w_2_n_lam_and_a_flat_bias_prior():
    x, y = sq_problem()
    sol = ridge(x, y, 0.03, fit_bias=True)
    W, b = squared_loss_mode(x, y, tau_from_lam(0.03, len(x)), 0.0)
    assert rel(W, sol.W) < 1e-12 and rel(b, sol.b) < 1e-12
    post = LastLayerLaplace(sol.W, sol.b, x, y, loss="squared", tau_w=tau_from_lam(0.03, 50),
                            tau_b=0.0)
    assert post.structure == "kron" and post.mode_residual < 1e-10


def test_a_single_output_squared_head():
    x, y = sq_problem(c=1)
    W, b = squared_loss_mode(x, y, 1.0, 1.0)
    post = LastLayerLaplace(W, b, x, y, loss="squared", tau_w=1.0, tau_b=1.0)
    mean, cov = post.predict_gaussian(x[:3])
    assert mean.shape == (3, 1) and cov.shape == (3, 1, 1) and np.all(cov > 0.5)


def test_the_softmax_map_at_lam_is_the_mode_but_for_the_bias_prior():
    """N grad J = grad sum loss + 2 N lam W: the residual left is the bias prior's tau_b b."""
    x, y, W, b = ce_problem(lam=0.02)
    post = LastLayerLaplace(W, b, x, y, tau_w=tau_from_lam(0.02, len(x)), tau_b=0.5)
    assert abs(post.mode_residual - 0.5 * np.linalg.norm(b)) < 1e-9


# ---- kfac ----------------------------------------------------------------------------------
def test_kfac_equals_its_dense_assembly_with_separate_priors():
    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=2.0, tau_b=0.1, structure="kfac")
    lam = post.precision()
    assert rel(post.covariance(), np.linalg.inv(lam)) < 1e-12
    assert post.log_det_precision == pytest.approx(np.linalg.slogdet(lam)[1], rel=1e-12)
    xs = np.random.default_rng(5).standard_normal((4, 3))
    _, cov = post.logit_moments(xs)
    _, var = post.logit_moments(xs, full=False)
    assert rel(var, np.diagonal(cov, axis1=1, axis2=2)) < 1e-13


def test_kfac_sums_are_streamed_in_row_blocks(monkeypatch):
    x, y, W, b = ce_problem()
    whole = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0, structure="kfac")
    monkeypatch.setattr(laplace, "BLOCK_BYTES", 8 * 4 * 7)  # 7 rows a block
    blocks = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0, structure="kfac")
    assert rel(blocks.covariance(), whole.covariance()) < 1e-13


def test_auto_picks_kron_full_then_kfac(monkeypatch):
    x, y, W, b = ce_problem()
    assert LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0).structure == "full"
    monkeypatch.setattr(laplace, "FULL_AUTO_MAX", 15)
    assert LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0).structure == "kfac"
    xs, ys = sq_problem()
    Ws, bs = squared_loss_mode(xs, ys, 1.0, 1.0)
    sq = LastLayerLaplace(Ws, bs, xs, ys, loss="squared", tau_w=1.0, tau_b=1.0)
    assert sq.structure == "kron"


def test_with_prior_equals_a_fresh_fit_and_leaves_the_original(monkeypatch):
    x, y, W, b = ce_problem()
    for structure in ("full", "kfac"):
        post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0, structure=structure)
        moved = post.with_prior(3.0, 0.2)
        fresh = LastLayerLaplace(W, b, x, y, tau_w=3.0, tau_b=0.2, structure=structure)
        assert rel(moved.covariance(), fresh.covariance()) < 1e-13
        assert moved.log_evidence() == pytest.approx(fresh.log_evidence(), rel=1e-13)
        assert post.tau_w == 1.0 and rel(post.covariance(), np.linalg.inv(post.precision())) < 1e-12


# ---- the predictive -----------------------------------------------------------------------------
def test_multiclass_probit_is_the_scaled_softmax():
    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0)
    xs = x[:5] * 3
    z, var = post.logit_moments(xs, full=False)
    s = z / np.sqrt(1 + np.pi / 8 * var)
    want = np.exp(s - s.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    assert rel(post.predict_proba(xs), want) < 1e-13


def test_binary_probit_is_the_sigmoid_of_the_logit_difference():
    x, y, W, b = ce_problem(c=2)
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0)
    xs = x[:5] * 3
    z, cov = post.logit_moments(xs)
    v = cov[:, 0, 0] + cov[:, 1, 1] - 2 * cov[:, 0, 1]
    p1 = 1 / (1 + np.exp(-(z[:, 1] - z[:, 0]) / np.sqrt(1 + np.pi * v / 8)))
    p = post.predict_proba(xs)
    assert rel(p[:, 1], p1) < 1e-13 and np.abs(p.sum(1) - 1).max() < 1e-15
    assert np.array_equal(post.predict_proba(xs, "probit-centred"), p)  # already invariant


def test_monte_carlo_draws_are_keyed_by_seed_and_row_not_by_block(monkeypatch):
    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0, structure="kfac")
    xs = x[:9]
    a = post.predict_proba(xs, method="mc", draws=50, seed=3)
    monkeypatch.setattr(laplace, "BLOCK_BYTES", 8 * 50 * 4 * 2)  # 2 rows a block
    assert np.array_equal(post.predict_proba(xs, method="mc", draws=50, seed=3), a)
    assert not np.array_equal(post.predict_proba(xs, method="mc", draws=50, seed=4), a)


def test_monte_carlo_with_one_draw_is_the_softmax_of_one_sample():
    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0, structure="full")
    one = post.predict_proba(x[:1], method="mc", draws=1, seed=3)
    z, cov = post.logit_moments(x[:1])
    e, u = np.linalg.eigh(cov[0])
    sample = z[0] + (u * np.sqrt(np.maximum(e, 0))) @ stream(3, "laplace-mc", 0).standard_normal(4)
    want = np.exp(sample - sample.max())
    assert rel(one[0], want / want.sum()) < 1e-12


def test_monte_carlo_mean_in_probability_space_equals_the_log_space_form():
    """The draws' probabilities are averaged directly; where a class's mean underflows (here
    e^-1000 below the best class) that entry is redone in log space, so the log predictive
    stays finite and equals log-sum-exp over the draws of the log-softmax everywhere."""
    from scipy.special import logsumexp

    from lastlayer.engine.losses import log_softmax

    logits = 3 * stream(5, "laplace-mc", 0).standard_normal((6, 40, 5))
    logits[3:, :, 0] += 1000.0  # rows 3-5: classes 1-4 have mean probability ~e^-1000
    want = logsumexp(log_softmax(logits.reshape(-1, 5)).reshape(logits.shape), axis=1) - np.log(40)
    got = laplace._log_mean_softmax(logits)
    assert np.isfinite(got).all() and got[3:, 1:].max() < -900
    assert np.abs(got - want).max() <= 1e-13 * np.abs(want).max()
    assert np.abs(got[:3] - want[:3]).max() < 1e-14  # no underflow: probability space alone


def test_monte_carlo_approaches_the_probit_for_small_variance():
    x, y, W, b = ce_problem(n=400)
    post = LastLayerLaplace(W, b, x, y, tau_w=100.0, tau_b=100.0)
    p_mc = post.predict_proba(x[:10], method="mc", draws=4000)  # standard error <= 0.008
    assert np.abs(p_mc - post.predict_proba(x[:10])).max() < 0.01


@pytest.mark.parametrize("structure", ["full", "kfac"])
def test_centred_probit_uses_the_variance_of_the_centred_logits(structure):
    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0, structure=structure)
    xs = x[:5] * 2
    z, cov = post.logit_moments(xs)
    p = np.eye(4) - 1 / 4
    var = np.diagonal(p @ cov @ p, axis1=1, axis2=2)
    s = z / np.sqrt(1 + np.pi / 8 * var)
    want = np.exp(s - s.max(1, keepdims=True))
    assert rel(post.predict_proba(xs, "probit-centred"), want / want.sum(1, keepdims=True)) < 1e-12
    # the shared shift 1_C carries prior variance only: the centred logits see much less
    assert np.all(var < 0.5 * np.diagonal(cov, axis1=1, axis2=2))


def test_squared_predictive_nll_is_the_gaussian_density():
    x, y = sq_problem()
    W, b = squared_loss_mode(x, y, 1.0, 1.0)
    post = LastLayerLaplace(W, b, x, y, loss="squared", tau_w=1.0, tau_b=1.0)
    mean, cov = post.predict_gaussian(x[:5])
    want = -np.mean([scipy.stats.multivariate_normal(mean[i], cov[i]).logpdf(y[i])
                     for i in range(5)])
    assert post.predictive_nll(x[:5], y[:5]) == pytest.approx(want, rel=1e-12)
    _, logit_cov = post.logit_moments(x[:5])
    assert rel(cov - logit_cov, np.broadcast_to(0.5 * np.eye(3), cov.shape)) < 1e-14


def test_ce_predictive_nll_is_the_mean_negative_log_probability():
    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0)
    p = post.predict_proba(x)
    want = -np.log(p[np.arange(len(y)), y]).mean()
    assert post.predictive_nll(x, y) == pytest.approx(want, rel=1e-13)


# ---- the evidence and its optimum -------------------------------------------------------------
def test_the_evidence_is_concave_in_log_tau_and_newton_finds_the_grid_maximum():
    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0)
    grid = np.logspace(-3, 3, 121)
    curve = np.array([post.with_prior(t, t).log_evidence() for t in grid])
    assert np.all(np.diff(curve, 2) < 0)  # concave in log tau (evidence's docstring)
    opt = post.optimize_prior("scalar")
    assert opt.converged and opt.tau_w == opt.tau_b
    assert opt.log_evidence >= curve.max()
    assert abs(np.log(opt.tau_w) - np.log(grid[np.argmax(curve)])) <= np.log(grid[1] / grid[0])


def test_newton_derivatives_match_central_differences():
    x, y, W, b = ce_problem()
    for structure in ("full", "kfac"):
        post = LastLayerLaplace(W, b, x, y, tau_w=0.7, tau_b=2.0, structure=structure)
        e, g, h = evidence.evidence_derivatives(post)
        step = 1e-5
        for k in range(2):
            u = np.log([0.7, 2.0])
            plus, minus = u.copy(), u.copy()
            plus[k] += step
            minus[k] -= step
            ep, gp, _ = evidence.evidence_derivatives(post.with_prior(*np.exp(plus)))
            em, gm, _ = evidence.evidence_derivatives(post.with_prior(*np.exp(minus)))
            assert (ep - em) / (2 * step) == pytest.approx(g[k], rel=1e-7, abs=1e-9)
            assert np.allclose((gp - gm) / (2 * step), h[:, k], rtol=1e-6, atol=1e-8)


def test_separate_and_weights_modes_and_the_bounds():
    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0)
    both = post.optimize_prior("separate")
    assert both.converged and np.abs(both.gradient).max() < 1e-10 * post.n_params
    weights = post.with_prior(1.0, both.tau_b).optimize_prior("weights")
    assert weights.tau_b == both.tau_b and weights.tau_w == pytest.approx(both.tau_w, rel=1e-8)
    big = int(both.tau_b > both.tau_w)  # cap the larger of the two between them
    top = np.sqrt(both.tau_w * both.tau_b)
    capped = post.optimize_prior("separate", bounds=(1e-3, top))
    assert [capped.tau_w, capped.tau_b][big] == pytest.approx(top, rel=1e-12)
    assert capped.at_bound == ((True, False) if big == 0 else (False, True)) and capped.converged
    assert capped.log_evidence < both.log_evidence


def test_evidence_without_a_bias_is_one_dimensional():
    x, y, W, b = ce_problem(bias=False)
    post = LastLayerLaplace(W, None, x, y, tau_w=1.0, tau_b=None, structure="kfac")
    opt = post.optimize_prior()
    assert opt.tau_b is None and opt.gradient.shape == (1,) and opt.converged


# ---- cross-validation ----------------------------------------------------------------------
def test_select_prior_squared_matches_a_hand_written_k_fold():
    x, y = sq_problem(n=40)
    taus = [0.1, 1.0, 10.0]
    sel = select_prior(x, y, loss="squared", lam=0.01, taus=taus, folds=4, seed=7)
    order = stream(7, "laplace-folds").permutation(40)
    edges = fold_edges(40, 4)
    nll = np.zeros(3)
    for f in range(4):
        held = np.sort(order[edges[f]:edges[f + 1]])
        train = np.setdiff1d(np.arange(40), held)
        sol = ridge(x[train], y[train], 0.01 * 40 / 30, fit_bias=True)  # same N lam ||W||^2
        for i, t in enumerate(taus):
            post = LastLayerLaplace(sol.W, sol.b, x[train], y[train], loss="squared", tau_w=t,
                                    tau_b=t)
            nll[i] += len(held) * post.predictive_nll(x[held], y[held])
    assert rel(sel.cv_curve, nll / 40) < 1e-12
    full = ridge(x, y, 0.01, fit_bias=True)
    base = LastLayerLaplace(full.W, full.b, x, y, loss="squared", tau_w=1.0, tau_b=1.0)
    curve = np.array([base.with_prior(t, t).log_evidence() for t in taus])
    assert rel(sel.evidence_curve, curve) < 1e-13
    assert sel.cv_choice == taus[int(np.argmin(nll))] and sel.folds == 4
    opt = sel.evidence_optimum
    assert opt.converged and opt.tau_w == opt.tau_b


def test_select_prior_ce_with_a_fixed_bias_precision():
    x, y, _, _ = ce_problem(n=80)
    sel = select_prior(x, y, loss="ce", lam=1e-2, taus=np.logspace(-1, 2, 4), tau_b=0.5, folds=3)
    assert sel.tau_b == 0.5 and sel.evidence_optimum.tau_b == 0.5
    assert sel.cv_curve.shape == (4,) and np.all(np.isfinite(sel.cv_curve))
    assert sel.evidence_choice in sel.taus and sel.cv_choice in sel.taus
    again = select_prior(x, y, loss="ce", lam=1e-2, taus=np.logspace(-1, 2, 4), tau_b=0.5,
                         folds=3, seed=1)
    assert not np.array_equal(again.cv_curve, sel.cv_curve)  # other folds


def test_select_prior_names_a_fold_that_cannot_be_fitted():
    x, y, _, _ = ce_problem(n=20, c=2)
    y = np.zeros(20, dtype=np.int64)
    y[0] = 1  # one sample of class 1: some fold's training rows lack it
    with pytest.raises(ValueError, match="folds: fold .* cannot be fitted"):
        select_prior(x, y, loss="ce", lam=1e-2, taus=[1.0], folds=20)


# ---- argument checks -----------------------------------------------------------------------
def test_bad_arguments_are_named():
    x, y, W, b = ce_problem()

    def make(**kw):
        args = dict(W=W, b=b, Phi=x, targets=y, loss="ce", tau_w=1.0, tau_b=1.0)
        args.update(kw)
        return LastLayerLaplace(args.pop("W"), args.pop("b"), args.pop("Phi"), args.pop("targets"),
                                **args)

    cases = [
        (dict(loss="hinge"), ValueError, "loss: expected one of"),
        (dict(structure="diag"), ValueError, "structure: expected one of"),
        (dict(W=W.astype(np.float32)), TypeError, "W: expected float64"),
        (dict(W=W.ravel()), ValueError, r"W: expected a non-empty array of shape \(n, m\)"),
        (dict(b=b[:2]), ValueError, r"b: expected shape \(4,\)"),
        (dict(Phi=x[:, :2]), ValueError, r"Phi: expected shape \(N, 3\)"),
        (dict(Phi=np.where(x > 2, np.nan, x)), ValueError, "Phi: expected finite values"),
        (dict(targets=y + 4), ValueError, r"targets: expected labels in \[0, 4\)"),
        (dict(targets=y.astype(float)), ValueError, "targets: expected integer labels"),
        (dict(targets=list(y)), TypeError, "targets: expected a NumPy array"),
        (dict(tau_w=0.0), ValueError, "tau_w: expected a finite number > 0"),
        (dict(tau_w=True), TypeError, "tau_w: expected a real number"),
        (dict(tau_b=None), ValueError, "tau_b: the head has a bias"),
        (dict(b=None), ValueError, "tau_b: the head has no bias"),
        (dict(tau_b=0.0), ValueError, "tau_b: expected > 0 for 'ce': shifting every bias"),
        (dict(tau_b=-1.0), ValueError, "tau_b: expected a finite number >= 0"),
        (dict(structure="kron"), ValueError, "structure: 'kron' is exact only for the squared"),
        (dict(W=W[:1], b=b[:1], targets=np.zeros(60, np.int64)), ValueError, "W: expected C >= 2"),
    ]
    for kw, err, msg in cases:
        with pytest.raises(err, match=msg):
            make(**kw)
    xs, ys = sq_problem()
    Ws, bs = squared_loss_mode(xs, ys, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"targets: expected real targets of shape \(50, 3\)"):
        LastLayerLaplace(Ws, bs, xs, ys[:, :2], loss="squared", tau_w=1.0, tau_b=1.0)
    with pytest.raises(ValueError, match="tau_b: expected > 0 for structure 'kfac'"):
        LastLayerLaplace(Ws, bs, xs, ys, loss="squared", tau_w=1.0, tau_b=0.0, structure="kfac")
    flat = LastLayerLaplace(Ws, bs, xs, ys, loss="squared", tau_w=1.0, tau_b=0.0)
    with pytest.raises(ValueError, match="tau_b: the evidence needs a proper prior"):
        flat.log_evidence()
    with pytest.raises(ValueError, match="tau_b: the evidence needs tau_b > 0"):
        flat.optimize_prior()
    with pytest.raises(ValueError, match="predict_proba: the squared loss's predictive is Gau"):
        flat.predict_proba(xs)


def test_bad_predictive_and_selection_arguments_are_named(monkeypatch):
    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0)
    for kw, err, msg in [
        (dict(method="laplace"), ValueError, "method: expected one of"),
        (dict(method="mc", draws=0), ValueError, "draws: expected an integer >= 1"),
        (dict(method="mc", draws=2.0), TypeError, "draws: expected an integer"),
        (dict(method="mc", seed=-1), ValueError, "seed: expected an integer >= 0"),
    ]:
        with pytest.raises(err, match=msg):
            post.predict_proba(x, **kw)
    with pytest.raises(ValueError, match=r"Phi_star: expected shape \(N, 3\)"):
        post.predict_proba(x[:, :2])
    with pytest.raises(TypeError, match="Phi_star: expected float64"):
        post.logit_moments(x.astype(np.float32))
    with pytest.raises(ValueError, match="predict_gaussian: for 'ce' use predict_proba"):
        post.predict_gaussian(x)
    with pytest.raises(ValueError, match="mode: expected one of"):
        post.optimize_prior("diagonal")
    with pytest.raises(ValueError, match="bounds\\[1\\]: expected a finite number > 1"):
        post.optimize_prior(bounds=(1.0, 0.5))
    with pytest.raises(ValueError, match="taus: expected a non-empty 1-D grid"):
        select_prior(x, y, loss="ce", lam=1e-2, taus=[1.0, -1.0])
    with pytest.raises(ValueError, match="folds: 100 folds need at least 100 rows"):
        select_prior(x, y, loss="ce", lam=1e-2, taus=[1.0], folds=100)
    with pytest.raises(ValueError, match="folds: expected an integer >= 2"):
        select_prior(x, y, loss="ce", lam=1e-2, taus=[1.0], folds=1)
    with pytest.raises(ValueError, match="lam: expected a finite number > 0"):
        select_prior(x, y, loss="ce", lam=0.0, taus=[1.0])
    monkeypatch.setattr(laplace, "FULL_MAX", 10)
    with pytest.raises(ValueError, match="structure: 'full' needs a dense \\(16\\)\\^2 precision"):
        LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0, structure="full")
    kfac = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0, structure="kfac")
    with pytest.raises(ValueError, match="covariance: a dense \\(16\\)\\^2 matrix"):
        kfac.covariance()


def test_squared_predictive_nll_closed_forms_agree_across_structures():
    x, y = sq_problem()
    W, b = squared_loss_mode(x, y, 0.9, 0.4)
    nll = [LastLayerLaplace(W, b, x, y, loss="squared", tau_w=0.9, tau_b=0.4,
                            structure=s).predictive_nll(x[:7] * 2, y[:7])
           for s in ("full", "kron", "kfac")]
    assert nll[1] == pytest.approx(nll[0], rel=1e-12) and nll[2] == pytest.approx(nll[0], rel=1e-12)


def test_kfac_gaussian_density_is_the_dense_one_for_a_rotated_factor():
    """With CE curvature S_A is not a multiple of I: its eigenvectors rotate the residual."""
    from lastlayer.engine.solvers.laplace.structures import _dense_gaussian_nll

    x, y, W, b = ce_problem()
    post = LastLayerLaplace(W, b, x, y, tau_w=1.0, tau_b=1.0, structure="kfac")._post
    phit = np.hstack([x[:6], np.ones((6, 1))])
    r = np.random.default_rng(4).standard_normal((6, 4))
    want = _dense_gaussian_nll(post.logit_covariance(phit), r)
    assert rel(post.gaussian_nll(phit, r), want) < 1e-12
    cov = post.logit_covariance(phit)
    assert rel(post.logit_centred_variance(phit), laplace_structures.centred_variance(cov)) < 1e-12


def test_overflowing_inputs_and_a_non_finite_mode_are_refused_by_name():
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(3), 10)
    phi = rng.standard_normal((30, 3)) + y[:, None]
    la = LastLayerLaplace(0.3 * rng.standard_normal((3, 3)), np.zeros(3), phi, y, tau_w=1.0,
                          tau_b=1.0)
    p = la.predict_proba(phi * 1e100)  # large but finite: the moderated limit, not NaN
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="Phi_star: its logits or squared row norms overflow"):
        la.predict_proba(phi * 1e155)  # the squared norms overflow: was 1/3, 1/3, 1/3
    with pytest.raises(ValueError, match="draws: expected an integer >= 1"):
        la.predict_proba(phi, method="probit", draws=0)  # checked whatever the method
    with pytest.raises(ValueError, match="W: the loss at theta"):
        LastLayerLaplace(rng.standard_normal((3, 3)) * 1e160, np.zeros(3), phi, y, tau_w=1.0,
                         tau_b=1.0)
