"""The fixed simplex-ETF head's ledger rows ETF1-ETF6 (models/beyond/etf_claims.py): every row
PASSes, and each FAILs when a deliberate bug is put into the code under it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from lastlayer.engine.layers import SimplexETFHead
from lastlayer.engine.streams import stream
from lastlayer.models.beyond import TOPICS, etf_claims
from lastlayer.models.ledger import FAIL, PASS, run_check

ROWS = {c.id: c for c in etf_claims.checks()}


@pytest.fixture
def fresh():
    """The rows cache the heads' W and the training runs: clear them around a mutation."""
    etf_claims._geometry_heads.cache_clear()
    etf_claims._etf6_runs.cache_clear()
    yield
    etf_claims._geometry_heads.cache_clear()
    etf_claims._etf6_runs.cache_clear()


def status(row_id: str) -> str:
    return run_check(ROWS[row_id]).status


def test_the_rows_are_registered_under_their_topic():
    topic = next(t for t in TOPICS if t.prefix == "ETF")
    assert [c.id for c in topic.checks()] == list(ROWS) == [
        "ETF1-norms", "ETF2-cosines", "ETF3-gram", "ETF4-centred", "ETF5-fwht", "ETF6-train"]


@pytest.mark.parametrize("row_id", list(ROWS))
def test_ledger_row(row_id):
    row = run_check(ROWS[row_id])
    assert row.status == PASS, row


def test_the_geometry_covers_both_methods_d_c_minus_1_and_a_large_matrix_free_d():
    labels = [label for label, _ in etf_claims._geometry_heads()]
    assert any(label.startswith("hadamard 65536x10") for label in labels)
    assert any(label.startswith("orthogonal 9x10") for label in labels)  # d = C - 1
    assert any(label.startswith("orthogonal 10x10") for label in labels)  # d = C
    assert any(label.startswith("hadamard 2048x1000") for label in labels)


def test_the_w_read_back_is_the_definition():
    """applied_w gives sqrt(C/(C-1)) (I - 1 1^T/C) P^T with scipy's Hadamard columns 1 .. C."""
    w = etf_claims.applied_w(SimplexETFHead(16, 5, method="hadamard", scale_init=3.0))
    p = scipy.linalg.hadamard(16)[:, 1:6] / 4
    np.testing.assert_allclose(w, math.sqrt(5 / 4) * (np.eye(5) - 1 / 5) @ p.T, rtol=0,
                               atol=1e-15)


def test_the_reference_hadamard_columns_are_scipys():
    np.testing.assert_array_equal(etf_claims.hadamard_columns(64, range(64)),
                                  scipy.linalg.hadamard(64))


def test_the_training_row_reports_both_accuracies():
    row = run_check(ROWS["ETF6-train"])  # cached: shared with test_ledger_row
    assert 90 < row.measured <= 100 and 90 < row.expected <= 100
    assert row.tolerance == etf_claims.ETF6_GAP_TOL


# ---- mutations: a bug under each row makes it FAIL ------------------------------------------
def test_ETF1_fails_without_the_orthonormalisation(monkeypatch, fresh):
    """P a raw Gaussian (the QR forgotten): columns of unequal norms."""
    def gaussian_p(self, dtype=np.float64):
        if self.resolved_method == "hadamard":
            return {}
        g = stream(self.seed, "etf").standard_normal((self.d_in, self.n_classes))
        return {"P": g.astype(dtype)}

    monkeypatch.setattr(SimplexETFHead, "init_state", gaussian_p)
    assert status("ETF1-norms") == FAIL


def test_ETF2_and_ETF4_fail_without_the_centring(monkeypatch, fresh):
    """W^T = sqrt(C/(C-1)) P: orthogonal classes (cosine 0), columns not summing to zero."""
    monkeypatch.setattr(SimplexETFHead, "_centre", lambda self, z: self.gain * z)
    assert status("ETF2-cosines") == FAIL
    assert status("ETF4-centred") == FAIL


def test_ETF3_fails_without_the_gain_and_ETF2_does_not_see_it(monkeypatch, fresh):
    """sqrt(C/(C-1)) dropped: norms sqrt((C-1)/C), the cosines unchanged."""
    monkeypatch.setattr(SimplexETFHead, "gain", property(lambda self: 1.0))
    assert status("ETF3-gram") == FAIL
    assert status("ETF2-cosines") == PASS


def test_ETF5_fails_with_the_all_ones_column(monkeypatch, fresh):
    """The forward transform keeps columns 0 .. C-1 (the backward still 1 .. C)."""
    def project(self, x, p):
        if p is not None:
            return x @ p
        from lastlayer.kernels import fwht
        return fwht(x)[:, :self.n_classes] * (1 / math.sqrt(self.d_in))

    monkeypatch.setattr(SimplexETFHead, "_project", project)
    assert status("ETF5-fwht") == FAIL


def test_ETF5_fails_when_the_centring_runs_over_the_batch(monkeypatch, fresh):
    """The mean taken over samples (axis 0) instead of classes: unseen by ETF1-ETF4, whose
    read-out dy = I_C is symmetric."""
    monkeypatch.setattr(SimplexETFHead, "_centre",
                        lambda self, z: self.gain * (z - z.mean(axis=0, keepdims=True)))
    assert status("ETF5-fwht") == FAIL
    assert status("ETF3-gram") == PASS


def test_ETF5_fails_without_the_1_over_sqrt_d_in_backward(monkeypatch, fresh):
    original = SimplexETFHead._project_transposed

    def unnormalised(self, dz, p):
        out = original(self, dz, p)
        return out if p is not None else out * math.sqrt(self.d_in)

    monkeypatch.setattr(SimplexETFHead, "_project_transposed", unnormalised)
    assert status("ETF5-fwht") == FAIL


def test_ETF6_fails_when_the_head_sends_the_wrong_sign_down(monkeypatch, fresh):
    """dx = -s dy W: the trunk climbs the loss; the test accuracy falls to chance."""
    original = SimplexETFHead.backward

    def flipped(self, params, cache, dy):
        dx, grads = original(self, params, cache, dy)
        return -dx, grads

    monkeypatch.setattr(SimplexETFHead, "backward", flipped)
    monkeypatch.setattr(etf_claims, "ETF6_SEEDS", 1)
    row = run_check(ROWS["ETF6-train"])
    assert row.status == FAIL and row.measured < 50, row
