"""Ledger rows LA (models/beyond/laplace_claims.py): every row once, and for each row a
deliberate bug in the code under it that makes it FAIL."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.engine.solvers.laplace import evidence
from lastlayer.engine.solvers.laplace import posterior as laplace
from lastlayer.engine.solvers.laplace import structures as laplace_structures
from lastlayer.engine.solvers.laplace.structures import FullPosterior, KfacPosterior, KronPosterior
from lastlayer.models.beyond import TOPICS
from lastlayer.models.beyond import laplace_claims as claims
from lastlayer.models.ledger import DIFFERS, FAIL, PASS, run_check

ROWS = claims.checks()
# the measured approximation errors: KFAC against the exact posterior, the multiclass probit
# against the exact predictive (each FAILs when the derivation under it breaks)
DIFFERS_ROWS = {"LA4-multiclass", "LA4-multiclass-centred", "LA5-frobenius", "LA5-kl",
                "LA5-probit"}


@pytest.mark.parametrize("check", ROWS, ids=[c.id for c in ROWS])
def test_ledger_row(check):
    row = run_check(check)
    assert row.status == (DIFFERS if check.id in DIFFERS_ROWS else PASS), row


def test_the_rows_are_registered_under_la():
    topic = next(t for t in TOPICS if t.prefix == "LA")
    assert [c.id for c in topic.checks()] == [c.id for c in ROWS]


def test_the_centred_probit_is_closer_than_the_plain_one():
    assert claims.la4_multiclass_centred().measured < claims.la4_multiclass().measured


# ---- the mutations -------------------------------------------------------------------------------
def test_LA1_fails_without_the_bias_block(monkeypatch):
    real = laplace.hessian

    def no_cross(W, b, phi, t, lam, loss):
        h = real(W, b, phi, t, lam, loss)
        nw = W.size
        h[:nw, nw:] = 0.0
        h[nw:, :nw] = 0.0
        return h

    monkeypatch.setattr(laplace, "hessian", no_cross)
    assert claims.la1_covariance().status == FAIL


def test_LA1_fails_when_the_bias_gets_the_weights_prior(monkeypatch):
    monkeypatch.setattr(laplace.LastLayerLaplace, "_dvec",
                        lambda self: np.full(self.n_features + 1, self.tau_w))
    assert claims.la1_covariance().status == FAIL


def test_LA1_predictive_fails_without_the_cross_class_blocks(monkeypatch):
    def diagonal_only(self, phit):
        return np.einsum("mc,ce->mce", self.logit_variance(phit), np.eye(self.curv.c))

    monkeypatch.setattr(FullPosterior, "logit_covariance", diagonal_only)
    assert claims.la1_predictive().status == FAIL


def test_LA1_predictive_fails_when_the_bias_input_is_dropped(monkeypatch):
    def zeros_for_ones(phi, bias):
        return np.hstack([phi, np.zeros((len(phi), 1))]) if bias else phi

    monkeypatch.setattr(laplace, "_augment", zeros_for_ones)
    assert claims.la1_predictive().status == FAIL


def test_LA2_fails_with_tau_equal_to_lam(monkeypatch):
    monkeypatch.setattr(laplace, "tau_from_lam", lambda lam, n: lam)  # not 2 N lam
    assert claims.la2_blr().status == FAIL


def test_LA2_fails_with_the_kronecker_order_transposed(monkeypatch):
    monkeypatch.setattr(KronPosterior, "covariance",
                        lambda self: np.kron(self.k_inv, np.eye(self.curv.c)))
    assert claims.la2_blr().status == FAIL


def test_LA3_fails_without_the_bias_prior_normaliser(monkeypatch):
    real = laplace.LastLayerLaplace.log_evidence
    monkeypatch.setattr(laplace.LastLayerLaplace, "log_evidence",
                        lambda self: real(self) - 0.5 * self.n_classes * np.log(self.tau_b))
    assert claims.la3_evidence().status == FAIL


def test_LA3_fails_with_noise_variance_one_instead_of_one_half(monkeypatch):
    real = laplace_structures.KronCurvature.__init__

    def halved(self, gram, c, d, q):
        real(self, 0.5 * gram, c, d, q)  # K = Phit^T Phit + D: the loss ||z - y||^2 / 2

    monkeypatch.setattr(laplace_structures.KronCurvature, "__init__", halved)
    assert claims.la3_evidence().status == FAIL


def test_LA3_fails_away_from_the_exact_mode(monkeypatch):
    real = laplace.squared_loss_mode
    monkeypatch.setattr(laplace, "squared_loss_mode",
                        lambda x, y, tau_w, tau_b: real(x, y, tau_w, 0.0))  # the flat-bias mode
    assert claims.la3_evidence().status == FAIL


def _independent_noise(self, phit, eps):
    """A broken Monte Carlo: every logit drawn alone, the correlations dropped."""
    return np.sqrt(self.logit_variance(phit))[:, None, :] * eps


def test_LA4_mc_fails_when_the_logit_correlations_are_dropped(monkeypatch):
    monkeypatch.setattr(FullPosterior, "logit_noise", _independent_noise)
    assert claims.la4_mc().status == FAIL


def test_LA4_probit_fails_without_pi_over_8(monkeypatch):
    monkeypatch.setattr(laplace, "PROBIT_SCALE", 1.0)
    assert claims.la4_probit().status == FAIL


def test_LA4_multiclass_rows_fail_when_the_monte_carlo_breaks(monkeypatch):
    monkeypatch.setattr(FullPosterior, "logit_noise", _independent_noise)
    assert claims.la4_multiclass().status == FAIL
    assert claims.la4_multiclass_centred().status == FAIL


def test_LA5_closed_form_fails_with_the_scalar_prior_trick(monkeypatch):
    real = KfacPosterior.__init__
    monkeypatch.setattr(KfacPosterior, "__init__",
                        lambda self, curv, dvec: real(self, curv, np.full_like(dvec, dvec[0])))
    assert claims.la5_closed_form().status == FAIL


def test_LA5_closed_form_fails_with_the_kronecker_order_transposed(monkeypatch):
    def transposed(self):
        b = np.kron(self.v, self.curv.q_a)
        return (b * self.w.T.ravel()) @ b.T

    monkeypatch.setattr(KfacPosterior, "covariance", transposed)
    assert claims.la5_closed_form().status == FAIL


@pytest.mark.parametrize("bug", ["transposed", "unscaled"])
def test_LA5_identity_and_the_differs_rows_fail_with_a_wrong_kfac_precision(monkeypatch, bug):
    def wrong(self):
        s_a, g = self.curv.s_a, self.curv.gram
        lam = np.kron(g, s_a) / self.curv.n if bug == "transposed" else np.kron(s_a, g)
        lam = lam.copy()
        lam[np.diag_indices_from(lam)] += np.tile(self.dvec, self.curv.c)
        return lam

    monkeypatch.setattr(KfacPosterior, "precision", wrong)
    for row in (claims.la5_identity, claims.la5_frobenius, claims.la5_kl, claims.la5_probit):
        assert row().status == FAIL, row.__name__


def test_LA6_fails_when_the_evidence_gradient_is_wrong(monkeypatch):
    """Newton's line search on the true evidence refuses steps of a wrong gradient."""
    real = FullPosterior.traces
    monkeypatch.setattr(FullPosterior, "traces",
                        lambda self: (real(self)[0] * np.array([1.01, 1.0]), real(self)[1]))
    out = claims.la6_fixed_point()
    assert out.status == FAIL and "not converged" in out.measured


def test_LA6_fails_off_the_optimum(monkeypatch):
    real = evidence.maximize_evidence
    def nudged(la, **kw):
        opt = real(la, **kw)
        return opt._replace(tau_w=opt.tau_w * (1 + 1e-6))

    monkeypatch.setattr(evidence, "maximize_evidence", nudged)
    out = claims.la6_fixed_point()
    assert out.status == FAIL and out.measured > 1e-9
