"""Ledger rows LA1-LA6: the exact last-layer Laplace
(lastlayer.engine.solvers.laplace.posterior) against independent computations (MacKay 1992;
Daxberger et al., "Laplace Redux", NeurIPS 2021).

Every row builds its reference here, from the definitions: the per-sample Jacobian J_i of
the logits written out entry by entry in the engine's parameter order [vec(W) row by row;
b], the softmax Hessians A_i, dense inverses and log-determinants, the textbook Bayesian
linear regression, the Gaussian marginal likelihood, Gauss-Hermite quadrature. Data come
from lastlayer.engine.streams.stream(0, "beyond-data", counter), float64, one BLAS thread.
"""

from __future__ import annotations

import numpy as np
import scipy.special
import scipy.stats

# the module: the tests' mutations reach it
# the module, not its names: the tests' mutations reach it
from lastlayer.engine.solvers.laplace import posterior as la_mod
from lastlayer.engine.solvers.exact.ridge import ridge
from lastlayer.engine.solvers.exact.softmax_regression import fit_softmax_regression
from lastlayer.engine.streams import stream

from ..ledger import DIFFERS, FAIL, Check, Outcome, at_most
from .laplace_reference import (
    _ce_head, _class_major, _classes, _explicit_precision, _jacobian, _rel, _softmax_hessian,
)

TOL = 1e-10  # float64 rounding through inverses of matrices with condition numbers < 1e4
MC_DRAWS = 20_000  # LA4: per test row
MC_Z = 4.5  # LA4: |MC - exact| <= 4.5 standard errors; P(any of 20 rows beyond) < 1.4e-4
GH_NODES = 150  # LA4: Gauss-Hermite nodes (within 5e-9 of scipy's adaptive quad here)


# ---- LA1: the full posterior ------------------------------------------------------------
def _la1():
    x, y, W, b = _ce_head(101, 15, 3, 3, 1.0, 0.05)
    tau_w, tau_b = la_mod.tau_from_lam(0.05, len(x)), 0.7
    post = la_mod.LastLayerLaplace(W, b, x, y, loss="ce", tau_w=tau_w, tau_b=tau_b,
                                   structure="full")
    return post, np.linalg.inv(_explicit_precision(W, b, x, tau_w, tau_b))


def la1_covariance() -> Outcome:
    """Full covariance and log det Lambda against a dense inversion of sum_i J_i^T A_i J_i
    + P0 assembled with explicit Jacobians (CE, bias, N = 15, d = 3, C = 3)."""
    post, ref = _la1()
    logdet = -np.linalg.slogdet(ref)[1]
    return at_most(max(_rel(post.covariance(), ref),
                       abs(post.log_det_precision - logdet) / abs(logdet)), TOL)


def la1_predictive() -> Outcome:
    """Logit covariance Sigma_z (blockwise, no Jacobian) and its diagonal against J* Sigma
    J*^T with the explicit J* and the dense reference Sigma, 7 new inputs."""
    post, ref = _la1()
    xs = stream(0, "beyond-data", 102).standard_normal((7, 3)) * 2
    z, cov = post.logit_moments(xs)
    _, var = post.logit_moments(xs, full=False)
    jac = [_jacobian(x, 3, True) for x in xs]
    want = np.array([j @ ref @ j.T for j in jac])
    mean = np.array([j @ post.mean for j in jac])
    return at_most(max(_rel(cov, want), _rel(var, np.diagonal(want, axis1=1, axis2=2)),
                       _rel(z, mean)), TOL)


# ---- LA2: the squared loss is Bayesian linear regression ----------------------------------
def la2_blr() -> Outcome:
    """Squared loss, the engine's ridge MAP at lam (bias unpenalised): "kron" and "full"
    mean and covariance against the textbook Bayesian linear regression posterior with noise
    variance 1/2, prior N(0, D^-1), D = diag(2 N lam, ..., 0): S = (D + Phit^T Phit /
    sigma^2)^-1, m_c = S Phit^T y_c / sigma^2."""
    rng = stream(0, "beyond-data", 103)
    n, d, c, lam = 50, 4, 3, 0.02
    x = rng.standard_normal((n, d))
    y = x @ rng.standard_normal((d, c)) + 0.5 + rng.standard_normal((n, c))
    sol = ridge(x, y, lam, fit_bias=True)
    tau_w = la_mod.tau_from_lam(lam, n)
    pt = np.hstack([x, np.ones((n, 1))])
    prior = np.diag([2 * n * lam] * d + [0.0])
    s = np.linalg.inv(prior + pt.T @ pt / 0.5)
    m = s @ pt.T @ y / 0.5  # (d + 1, C)
    mean = np.concatenate([m[:d].T.ravel(), m[d]])
    perm = _class_major(c, d)
    cov = np.zeros((c * (d + 1), c * (d + 1)))
    cov[np.ix_(perm, perm)] = np.kron(np.eye(c), s)
    worst = 0.0
    for structure in ("kron", "full"):
        post = la_mod.LastLayerLaplace(sol.W, sol.b, x, y, loss="squared", tau_w=tau_w,
                                       tau_b=0.0, structure=structure)
        worst = max(worst, _rel(post.mean, mean), _rel(post.covariance(), cov))
    return at_most(worst, TOL)


# ---- LA3: the evidence --------------------------------------------------------------------
def la3_evidence() -> Outcome:
    """Squared loss at the exact posterior mode: the Laplace log evidence of "kron", "full"
    and "kfac" against sum_c log N(y_c; 0, Phit D^-1 Phit^T + (1/2) I_N) (tau_w = 0.7,
    tau_b = 0.3, N = 40, d = 4, C = 2): largest relative difference."""
    rng = stream(0, "beyond-data", 104)
    n, d, tau_w, tau_b = 40, 4, 0.7, 0.3
    x = rng.standard_normal((n, d))
    y = x @ rng.standard_normal((d, 2)) + rng.standard_normal((n, 2))
    W, b = la_mod.squared_loss_mode(x, y, tau_w, tau_b)
    pt = np.hstack([x, np.ones((n, 1))])
    k = pt @ np.diag(1 / np.array([tau_w] * d + [tau_b])) @ pt.T + 0.5 * np.eye(n)
    exact = sum(scipy.stats.multivariate_normal(np.zeros(n), k).logpdf(y[:, j]) for j in range(2))
    worst = 0.0
    for structure in ("kron", "full", "kfac"):
        post = la_mod.LastLayerLaplace(W, b, x, y, loss="squared", tau_w=tau_w, tau_b=tau_b,
                                       structure=structure)
        worst = max(worst, abs(post.log_evidence() - exact) / abs(exact))
    return at_most(worst, TOL)


# ---- LA4: the predictive -----------------------------------------------------------------
def _binary():
    """A binary CE head (N = 30, d = 2), tau_w = tau_b = 1, and 20 inputs along a ray: the
    logit difference f = z_1 - z_0 ~ N(m, v) with v from 0.3 to 36."""
    rng = stream(0, "beyond-data", 105)
    y = rng.integers(0, 2, 30)
    x = np.array([[1.0, 0.5], [-1.0, -0.5]])[y] + rng.standard_normal((30, 2))
    sol = fit_softmax_regression(x, y, 1 / 60, n_classes=2)  # 2 N lam = 1
    post = la_mod.LastLayerLaplace(sol.W, sol.b, x, y, loss="ce", tau_w=1.0, tau_b=1.0,
                                   structure="full")
    xs = np.linspace(0.0, 8.0, 20)[:, None] * np.array([0.8, 0.6]) + np.array([0.3, -0.2])
    z, cov = post.logit_moments(xs)
    m = z[:, 1] - z[:, 0]
    v = cov[:, 0, 0] + cov[:, 1, 1] - 2 * cov[:, 0, 1]
    t, w = np.polynomial.hermite.hermgauss(GH_NODES)
    s = scipy.special.expit(m[:, None] + np.sqrt(2 * v)[:, None] * t)
    exact, second = s @ w / np.sqrt(np.pi), (s * s) @ w / np.sqrt(np.pi)
    se = np.sqrt((second - exact ** 2) / MC_DRAWS)  # the standard error of an S-draw mean
    return post, xs, exact, se


def probit_sup_error() -> float:
    """delta = sup_x |sigmoid(x) - Phi(sqrt(pi/8) x)| on a 1e-4 grid of [-30, 30] (0.0177)."""
    grid = np.linspace(-30.0, 30.0, 600_001)
    probit = scipy.stats.norm.cdf(np.sqrt(np.pi / 8) * grid)
    return float(np.abs(scipy.special.expit(grid) - probit).max())


def la4_mc() -> Outcome:
    """Binary Monte Carlo predictive (20 000 draws a row) against the exact E[sigmoid(f)] by
    Gauss-Hermite quadrature: the largest |MC - exact| in standard errors over 20 rows."""
    post, xs, exact, se = _binary()
    mc = post.predict_proba(xs, method="mc", draws=MC_DRAWS, seed=0)[:, 1]
    return at_most(float((np.abs(mc - exact) / se).max()), MC_Z)


def la4_probit() -> Outcome:
    """Binary probit sigmoid(m / sqrt(1 + pi v / 8)) against the Monte Carlo predictive:
    |probit - exact| <= 2 delta (E sigmoid(f) ~ E Phi(k f) = Phi(k m / sqrt(1 + k^2 v)) ~
    sigmoid(m / sqrt(1 + k^2 v)), k^2 = pi/8, each step within delta = sup |sigmoid(x) -
    Phi(k x)|), plus 4.5 MC standard errors. Measured: the largest |probit - MC|."""
    post, xs, _, se = _binary()
    mc = post.predict_proba(xs, method="mc", draws=MC_DRAWS, seed=0)[:, 1]
    probit = post.predict_proba(xs, method="probit")[:, 1]
    return at_most(float(np.abs(probit - mc).max()), 2 * probit_sup_error() + MC_Z * se.max())


def _multiclass():
    """CE, C = 4 (N = 400, d = 3, tau_w = tau_b = 1), 50 inputs: the exact predictive
    E[softmax(z)] by a 30^3-node Gauss-Hermite product rule over the centred logits (all a
    softmax sees; P Sigma_z P has rank C - 1 = 3; converged to 6e-15 against 50^3 nodes),
    its second moments, and the Monte Carlo predictive (20 000 draws a row)."""
    x, y, W, b = _ce_head(112, 400, 3, 4, 1.0, 1 / 800)
    post = la_mod.LastLayerLaplace(W, b, x, y, loss="ce", tau_w=1.0, tau_b=1.0, structure="full")
    xs, _ = _classes(113, 50, 3, 4, 1.0)
    z, cov = post.logit_moments(xs)
    t, w = np.polynomial.hermite.hermgauss(30)
    grid = np.sqrt(2) * np.stack(np.meshgrid(t, t, t, indexing="ij"), axis=-1).reshape(-1, 3)
    weights = np.einsum("i,j,k->ijk", w, w, w).ravel() / np.pi ** 1.5
    centre = np.eye(4) - 1 / 4
    exact, second = [], []
    for zm, cm in zip(z, cov):
        e, u = np.linalg.eigh(centre @ cm @ centre)
        logits = zm + grid @ (u[:, 1:] * np.sqrt(np.maximum(e[1:], 0.0))).T
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        exact.append(weights @ p)
        second.append(weights @ (p * p))
    exact, second = np.array(exact), np.array(second)
    se = np.sqrt(np.maximum(second - exact ** 2, 0.0) / MC_DRAWS)
    mc = post.predict_proba(xs, method="mc", draws=MC_DRAWS, seed=0)
    mc_z = float((np.abs(mc - exact) / np.maximum(se, 1e-9)).max())
    return post, xs, exact, mc_z


def _multiclass_probit(method: str) -> Outcome:
    post, xs, exact, mc_z = _multiclass()
    error = float(np.abs(post.predict_proba(xs, method=method) - exact).max())
    ok = mc_z <= MC_Z and error > 2 * probit_sup_error()
    return Outcome(error, 0.0, 2 * probit_sup_error(), DIFFERS if ok else FAIL)


def la4_multiclass() -> Outcome:
    """C = 4: the multiclass probit softmax(z / sqrt(1 + pi/8 diag Sigma_z)) (Redux,
    laplace-torch) against the exact predictive (quadrature, which the MC predictive
    matches within 4.5 standard errors): DIFFERS when its error exceeds the binary bound
    2 delta, FAIL when the quadrature and MC disagree or the error is within it."""
    return _multiclass_probit("probit")


def la4_multiclass_centred() -> Outcome:
    """As LA4-multiclass with diag(P Sigma_z P), P = I - 1 1^T / C (the null direction's
    prior variance removed)."""
    return _multiclass_probit("probit-centred")


# ---- LA5: the Kronecker-factored approximation ----------------------------------------------
def _kfac_problem(counter, n, d, c, sep, lam, tau_b):
    x, y, W, b = _ce_head(counter, n, d, c, sep, lam)
    tau_w = la_mod.tau_from_lam(lam, n)
    full, kfac = (la_mod.LastLayerLaplace(W, b, x, y, loss="ce", tau_w=tau_w, tau_b=tau_b,
                                          structure=s) for s in ("full", "kfac"))
    return x, y, W, b, full, kfac


def _factors(W, b, x):
    """A_i (N, C, C) and G_i = phit_i phit_i^T (N, q, q), written out."""
    a = np.array([_softmax_hessian(W @ xi + b) for xi in x])
    pt = np.hstack([x, np.ones((len(x), 1))])
    return a, pt[:, :, None] * pt[:, None, :]


def la5_closed_form() -> Outcome:
    """"kfac" (tau_w = 0.9 != tau_b = 0.4): covariance, log det and logit covariance from
    the eigenvectors of the factors, against the dense inverse of (1/N) sum_i A_i (x) sum_i
    phit_i phit_i^T + I_C (x) D assembled here (N = 60, d = 3, C = 4)."""
    x, y, W, b = _ce_head(106, 60, 3, 4, 1.0, 1e-2)
    post = la_mod.LastLayerLaplace(W, b, x, y, loss="ce", tau_w=0.9, tau_b=0.4, structure="kfac")
    a, g = _factors(W, b, x)
    prior = np.kron(np.eye(4), np.diag([0.9] * 3 + [0.4]))
    aug = np.kron(a.sum(axis=0), g.sum(axis=0)) / len(x) + prior
    perm = _class_major(4, 3)
    lam = np.zeros_like(aug)
    lam[np.ix_(perm, perm)] = aug
    ref = np.linalg.inv(lam)
    xs = stream(0, "beyond-data", 107).standard_normal((5, 3))
    _, cov = post.logit_moments(xs)
    want = np.array([_jacobian(xi, 4, True) @ ref @ _jacobian(xi, 4, True).T for xi in xs])
    logdet = np.linalg.slogdet(lam)[1]
    return at_most(max(_rel(post.covariance(), ref), _rel(cov, want),
                       abs(post.log_det_precision - logdet) / abs(logdet)), TOL)


def _identity_error(x, W, b, full, kfac) -> float:
    """|| (Lambda - Lambda_kfac) - sum_i (A_i - Abar) (x) (G_i - Gbar) || relative."""
    a, g = _factors(W, b, x)
    a, g = a - a.mean(axis=0), g - g.mean(axis=0)
    c, q = W.shape[0], x.shape[1] + 1
    aug = np.einsum("iab,ijk->ajbk", a, g).reshape(c * q, c * q)
    perm = _class_major(c, x.shape[1])
    want = np.zeros_like(aug)
    want[np.ix_(perm, perm)] = aug
    return _rel(full.precision() - kfac.precision(), want)


def la5_identity() -> Outcome:
    """The KFAC error is exactly the covariance term: Lambda - Lambda_kfac = sum_i (A_i -
    Abar) (x) (G_i - Gbar) (CE, N = 60, d = 3, C = 4): relative difference."""
    x, y, W, b, full, kfac = _kfac_problem(108, 60, 3, 4, 1.0, 1e-2, 0.5)
    return at_most(_identity_error(x, W, b, full, kfac), TOL)


KFAC_SIZES = dict(counter=109, n=300, d=6, c=4, sep=1.0, lam=1e-3, tau_b=1.0)


def _kfac_errors():
    x, y, W, b, full, kfac = _kfac_problem(**KFAC_SIZES)
    identity = _identity_error(x, W, b, full, kfac)
    l0, l1 = full.precision(), kfac.precision()
    frob = float(np.linalg.norm(l1 - l0) / np.linalg.norm(l0))
    kl = 0.5 * (float(np.trace(l1 @ np.linalg.inv(l0))) - len(l0)
                + full.log_det_precision - kfac.log_det_precision)
    xs, _ = _classes(110, 200, KFAC_SIZES["d"], KFAC_SIZES["c"], KFAC_SIZES["sep"])
    probit = float(np.abs(full.predict_proba(xs) - kfac.predict_proba(xs)).max())
    return identity, frob, kl, probit


def _differs(measured: float, identity: float) -> Outcome:
    """DIFFERS when the error formula is confirmed (identity to TOL) and the approximation
    is visibly off (> 1e-6); FAIL otherwise."""
    ok = identity <= TOL and measured > 1e-6
    return Outcome(measured, 0.0, TOL, DIFFERS if ok else FAIL)


def la5_frobenius() -> Outcome:
    identity, frob, _, _ = _kfac_errors()
    return _differs(frob, identity)


def la5_kl() -> Outcome:
    identity, _, kl, _ = _kfac_errors()
    return _differs(kl, identity)


def la5_probit() -> Outcome:
    identity, _, _, probit = _kfac_errors()
    return _differs(probit, identity)


# ---- LA6: the evidence's optimum ------------------------------------------------------------
def la6_fixed_point() -> Outcome:
    """At the evidence maximiser over (tau_w, tau_b) (Newton, theta* fixed), MacKay's
    fixed point t_k ||theta*_k||^2 = gamma_k = n_k - t_k tr(Sigma_kk), the traces taken from
    the dense covariance (CE, N = 80, d = 4, C = 3; "full" and "kfac"): the largest
    |t_k s_k - gamma_k| / n_k; FAIL unless converged inside the bounds."""
    x, y, W, b = _ce_head(111, 80, 4, 3, 1.0, 1e-2)
    c, d = W.shape
    worst = 0.0
    for structure in ("full", "kfac"):
        post = la_mod.LastLayerLaplace(W, b, x, y, loss="ce", tau_w=1.0, tau_b=1.0,
                                       structure=structure)
        opt = post.optimize_prior("separate")
        if not opt.converged or any(opt.at_bound):
            return Outcome(f"{structure}: not converged inside the bounds", 0.0, TOL, FAIL)
        best = post.with_prior(opt.tau_w, opt.tau_b)
        diag = np.diag(best.covariance())
        for tau, theta, var in ((opt.tau_w, W.ravel(), diag[:c * d]), (opt.tau_b, b, diag[c * d:])):
            gamma = len(theta) - tau * var.sum()
            worst = max(worst, abs(tau * float(theta @ theta) - gamma) / len(theta))
    return at_most(worst, TOL)


def checks() -> list[Check]:
    return [
        Check("LA1", "full Laplace covariance and log det vs dense inverse of the explicitly "
              "assembled sum_i J_i^T A_i J_i + P0 (CE, bias): max rel. error", la1_covariance),
        Check("LA1-predictive", "logit covariance J* Sigma J*^T without the Jacobian vs explicit "
              "J*: max rel. error", la1_predictive),
        Check("LA2", "squared loss: 'kron' and 'full' mean and covariance at the ridge MAP "
              "(tau_w = 2 N lam, tau_b = 0) vs textbook Bayesian linear regression "
              "(noise variance 1/2): max rel. error", la2_blr),
        Check("LA3", "squared loss at the exact mode: Laplace log evidence ('kron', 'full', "
              "'kfac') vs the exact Gaussian marginal likelihood: max rel. error", la3_evidence),
        Check("LA4-mc", "binary Monte Carlo predictive vs Gauss-Hermite quadrature: max "
              "|difference| in MC standard errors", la4_mc),
        Check("LA4-probit", "binary probit (pi/8) vs Monte Carlo: max |difference| (bound 2 "
              "sup|sigmoid - Phi(sqrt(pi/8) x)| + 4.5 MC s.e.)", la4_probit),
        Check("LA4-multiclass", "C = 4: multiclass probit softmax(z / sqrt(1 + pi/8 diag "
              "Sigma_z)) vs the exact predictive (3-D Gauss-Hermite, MC-confirmed): max "
              "|difference|", la4_multiclass),
        Check("LA4-multiclass-centred", "C = 4: the probit on the centred logits' variance "
              "diag(P Sigma_z P) vs the exact predictive: max |difference|",
              la4_multiclass_centred),
        Check("LA5-closed-form", "'kfac' covariance, log det and logit covariance (tau_w != "
              "tau_b, the prior exact) vs dense inverse of the KFAC precision: max rel. error",
              la5_closed_form),
        Check("LA5-identity", "Lambda - Lambda_kfac = sum_i (A_i - Abar) (x) (G_i - Gbar): max "
              "rel. error", la5_identity),
        Check("LA5-frobenius", "KFAC vs exact precision, CE (N 300, d 6, C 4): relative "
              "Frobenius error", la5_frobenius),
        Check("LA5-kl", "KFAC vs exact Laplace posterior, CE (N 300, d 6, C 4): KL(exact || "
              "kfac) in nats", la5_kl),
        Check("LA5-probit", "KFAC vs exact Laplace, CE (N 300, d 6, C 4): max |probit "
              "predictive difference| over 200 inputs", la5_probit),
        Check("LA6", "evidence maximiser over (tau_w, tau_b): MacKay's fixed point "
              "tau_k ||theta_k||^2 = gamma_k ('full', 'kfac'): max rel. residual",
              la6_fixed_point),
    ]
