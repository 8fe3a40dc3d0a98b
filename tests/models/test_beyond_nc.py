"""Ledger rows NC (models/beyond/nc_claims.py): every row PASSes, its closed form agrees with
the definitions computed directly, and a deliberate bug under each row makes it FAIL."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from lastlayer.models.beyond import nc_claims as claims
from lastlayer.models.ledger import DIFFERS, FAIL, PASS, run_check

NCM = importlib.import_module("lastlayer.engine.solvers.diagnostics.neural_collapse")
ROWS = {check.id: check for check in claims.checks()}


def status(row_id: str) -> str:
    return run_check(ROWS[row_id]).status


@pytest.mark.parametrize("row_id", list(ROWS))
def test_ledger_row_passes(row_id):
    row = run_check(ROWS[row_id])
    assert row.status == PASS, row


def test_ids_follow_the_topic_prefix():
    from lastlayer.models.beyond import TOPICS

    topic = next(t for t in TOPICS if t.prefix == "NC")
    assert [c.id for c in topic.checks()] == list(ROWS)


# ---- the closed forms against the definitions computed directly --------------------------------
def direct(x, y):
    """(NC1, CDNV, NC2, equinorm, equiangularity, max-angle) written out with np.linalg.pinv."""
    c = int(y.max()) + 1
    means = np.array([x[y == k].mean(axis=0) for k in range(c)])
    m = means - x.mean(axis=0)
    dev = x - means[y]
    nc1 = np.trace(dev.T @ dev / len(x) @ np.linalg.pinv(m.T @ m / c, hermitian=True)) / c
    var = [(dev[y == k] ** 2).sum(axis=1).mean() for k in range(c)]
    pairs = [(i, j) for i in range(c) for j in range(c) if i < j]
    cdnv = np.mean([(var[i] + var[j]) / (2 * np.sum((means[i] - means[j]) ** 2)) for i, j in pairs])
    u = m / np.linalg.norm(m, axis=1)[:, None]
    g = u @ u.T
    etf = np.eye(c) - 1 / c
    cos = np.array([g[i, j] for i, j in pairs])
    norms = np.linalg.norm(m, axis=1)
    return (nc1, cdnv, np.linalg.norm(g / np.linalg.norm(g) - etf / np.linalg.norm(etf)),
            norms.std() / norms.mean(), cos.std(), np.abs(cos + 1 / (c - 1)).mean())


def test_spread_case_closed_forms_are_the_definitions():
    x, y, means, a, r = claims.spread_case()
    nc1, cdnv = claims.nc1_closed_form(a, len(means), x.shape[1], r)
    got = direct(x, y)
    assert abs(got[0] / nc1 - 1) < 1e-12 and abs(got[1] / cdnv - 1) < 1e-12


def test_rhombus_closed_forms_are_the_definitions():
    x, y, x_len, y_len = claims.rhombus_case()
    expected = claims.rhombus_closed_form(x_len, y_len)
    for got, want in zip(direct(x, y)[2:], expected):
        assert abs(got / want - 1) < 1e-12


def test_nc4_closed_case_disagrees_exactly_on_classes_0_and_1():
    x, y, means, _, _ = claims.spread_case(claims.NC4_COUNTS, k=5)
    centre = means.mean(axis=0)
    W = means - centre
    W[[0, 1]] = W[[1, 0]]
    clf = ((x - centre) @ W.T).argmax(axis=1)
    ncc = np.array([np.argmin(((xi - means) ** 2).sum(axis=1)) for xi in x])
    assert np.array_equal(ncc, y)  # NCC is right everywhere
    assert set(np.flatnonzero(clf != ncc)) == set(np.flatnonzero(y <= 1))


def test_the_training_curve_is_measured_at_every_listed_epoch():
    curve = claims.nc_training_curve()
    assert curve.epochs.tolist() == list(claims.TRAINING.measured)
    for values in curve:
        assert values.shape == (len(claims.TRAINING.measured),)
        assert np.isfinite(values).all()
    assert ((curve.nc4 >= 0) & (curve.nc4 <= 1)).all()


# ---- mutations: the code under each row, broken ------------------------------------------------
def test_NC1_collapsed_fails_when_the_scatter_is_not_centred_on_the_class_means(monkeypatch):
    real = NCM._chunk_statistics

    def about_the_shift(start, stop, phi_src, lab_src, shift, c):
        n, mean, _, t = real(start, stop, phi_src, lab_src, shift, c)
        p = phi_src.read(start, stop) - shift
        return n, mean, p.T @ p, t

    monkeypatch.setattr(NCM, "_chunk_statistics", about_the_shift)
    assert status("NC1-collapsed") == FAIL


def test_NC1_closed_fails_with_the_inverse_instead_of_the_pseudo_inverse(monkeypatch):
    def inverse(centred, c):
        return np.linalg.inv(centred.T @ centred / c), centred.shape[1]

    monkeypatch.setattr(NCM, "between_pinv", inverse)
    assert status("NC1-closed") == FAIL


def test_NC1_closed_fails_when_the_null_direction_is_kept(monkeypatch):
    """All C singular values of M kept (no rank <= C - 1 cut): the ~eps one blows NC1 up."""
    def keep_all(centred, c):
        u, s, _ = np.linalg.svd(centred.T, full_matrices=False)
        return (u * (c / s**2)) @ u.T, len(s)

    monkeypatch.setattr(NCM, "between_pinv", keep_all)
    assert status("NC1-closed") == FAIL


def test_NC1_cdnv_fails_with_unsquared_distances(monkeypatch):
    def unsquared(mean, variances):
        pairs = [(i, j) for i in range(len(mean)) for j in range(i + 1, len(mean))]
        return float(np.mean([(variances[i] + variances[j])
                              / (2 * np.linalg.norm(mean[i] - mean[j])) for i, j in pairs]))

    monkeypatch.setattr(NCM, "_cdnv", unsquared)
    assert status("NC1-cdnv") == FAIL


def test_NC2_collapsed_fails_with_the_etf_normalised_by_sqrt_C(monkeypatch):
    monkeypatch.setattr(NCM, "_etf_target", lambda c: (np.eye(c) - 1.0 / c) / math.sqrt(c))
    assert status("NC2-collapsed") == FAIL


def test_NC2_closed_fails_when_the_diagonal_joins_the_pairs(monkeypatch):
    monkeypatch.setattr(NCM, "_pairs", lambda v: v[np.triu_indices(len(v))])
    assert status("NC2-closed") == FAIL


def test_NC3_collapsed_fails_when_W_is_not_normalised(monkeypatch):
    monkeypatch.setattr(NCM, "self_duality",
                        lambda W, m: float(np.linalg.norm(W - m / np.linalg.norm(m))))
    assert status("NC3-collapsed") == FAIL


def test_NC3_closed_fails_with_the_squared_distance(monkeypatch):
    real = NCM.self_duality
    monkeypatch.setattr(NCM, "self_duality", lambda W, m: real(W, m) ** 2)
    assert status("NC3-closed") == FAIL


@pytest.mark.parametrize("row_id", ["NC4-collapsed", "NC4-closed"])
def test_NC4_rows_fail_with_argmax_for_the_nearest_centre(monkeypatch, row_id):
    monkeypatch.setattr(NCM, "_nearest", lambda dist: dist.argmax(axis=1))
    assert status(row_id) == FAIL


def test_NC4_closed_fails_when_the_bias_is_dropped(monkeypatch):
    real = NCM._chunk_decisions

    def no_bias(start, stop, phi_src, lab_src, shift, c, mean, W, bias):
        return real(start, stop, phi_src, lab_src, shift, c, mean, W, W @ shift)

    monkeypatch.setattr(NCM, "_chunk_decisions", no_bias)
    assert status("NC4-closed") == FAIL


def test_NC5_stream_fails_without_the_chan_correction(monkeypatch):
    def plain_sum(a, b):
        na, ma, sa, ta = a
        nb, mb, sb, tb = b
        n = na + nb
        return n, ma + (mb - ma) * (nb / np.maximum(n, 1))[:, None], sa + sb, ta + tb

    monkeypatch.setattr(NCM, "merge_statistics", plain_sum)
    assert status("NC5-stream") == FAIL


def test_NC5_offset_fails_with_raw_sums(monkeypatch):
    """sum phi phi^T - n mu mu^T about the origin, per chunk (no shift, no centring)."""
    def raw(start, stop, phi_src, lab_src, shift, c):
        phi = phi_src.read(start, stop)
        y = lab_src.read(start, stop).astype(np.int64)
        n = np.bincount(y, minlength=c)
        sums = np.zeros((c, phi.shape[1]))
        np.add.at(sums, y, phi)
        mean = sums / np.maximum(n, 1)[:, None]
        scatter = phi.T @ phi - (n[:, None] * mean).T @ mean
        t = np.bincount(y, (phi * phi).sum(axis=1), minlength=c) - n * (mean * mean).sum(axis=1)
        return n, mean - shift, scatter, t

    monkeypatch.setattr(NCM, "_chunk_statistics", raw)
    assert status("NC5-offset") == FAIL


@pytest.fixture
def fresh_curve():
    claims.nc_training_curve.cache_clear()
    yield
    claims.nc_training_curve.cache_clear()


def test_NC6_training_says_differs_when_nothing_is_learnt(monkeypatch, fresh_curve):
    monkeypatch.setattr(claims, "train", lambda net, opt, data, ts, **kwargs: ts)
    row = run_check(ROWS["NC6-training"])
    assert row.status == DIFFERS and row.measured == 1.0, row


def test_NC6_training_fails_on_a_non_finite_measurement(monkeypatch, fresh_curve):
    monkeypatch.setattr(claims, "train", lambda net, opt, data, ts, **kwargs: ts)  # fast
    real = claims.neural_collapse
    monkeypatch.setattr(claims, "neural_collapse",
                        lambda *args, **kwargs: real(*args, **kwargs)._replace(nc1=math.nan))
    assert status("NC6-training") == FAIL
