"""lastlayer.engine.solvers.diagnostics.calibration: NLL, Brier, ECE / MCE conventions and
exact temperature scaling (the ledger rows CAL1-CAL6 are in
tests/models/test_beyond_calibration.py)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.optimize

from lastlayer.engine.losses import softmax, softmax_cross_entropy
from lastlayer.engine.solvers.diagnostics import calibration as cal
from lastlayer.engine.solvers.diagnostics import temperature as ts


def sampled(seed=0, n=500, c=6, scale=2.0, hand_over=2.5):
    """Logits hand_over * z_true and labels drawn from softmax(z_true)."""
    rng = np.random.default_rng(seed)
    z_true = scale * rng.standard_normal((n, c))
    u = rng.random(n)
    y = np.minimum((u[:, None] > np.cumsum(softmax(z_true), axis=1)).sum(axis=1), c - 1)
    return hand_over * z_true, y


def confident_rows(conf, c):
    """Rows with max conf at column 0 and the rest spread evenly over c - 1 columns."""
    conf = np.asarray(conf, dtype=np.float64)
    p = np.repeat(((1 - conf) / (c - 1))[:, None], c, axis=1)
    p[:, 0] = conf
    return p


# ---- validation ------------------------------------------------------------------------
GOOD_Z = np.array([[1.0, 0.0, -1.0], [0.5, 0.2, 0.1]])
GOOD_Y = np.array([0, 2])
GOOD_P = softmax(GOOD_Z)


@pytest.mark.parametrize("call, error, message", [
    (lambda: cal.nll(GOOD_Z, GOOD_Y, inputs="logit"), ValueError,
     "inputs: expected one of 'logits', 'probs', got 'logit'"),
    (lambda: cal.nll(GOOD_Z.astype(np.float32), GOOD_Y, inputs="logits"), TypeError,
     "logits: expected dtype float64 .* got float32"),
    (lambda: cal.nll(GOOD_Z.tolist(), GOOD_Y, inputs="logits"), TypeError,
     "logits: expected a float64 NumPy array of shape \\(N, C\\), got list"),
    (lambda: cal.nll(GOOD_Z[0], GOOD_Y, inputs="logits"), ValueError,
     "logits: expected shape \\(N, C\\) with N >= 1 and C >= 2 .* got \\(3,\\)"),
    (lambda: cal.nll(GOOD_Z[:, :1], GOOD_Y, inputs="logits"), ValueError,
     "C >= 2 classes .* got \\(2, 1\\)"),
    (lambda: cal.nll(np.zeros((0, 3)), np.zeros(0, int), inputs="logits"), ValueError,
     "N >= 1 .* got \\(0, 3\\)"),
    (lambda: cal.nll(np.where(GOOD_Z > 0.9, np.nan, GOOD_Z), GOOD_Y, inputs="logits"),
     ValueError, "logits: expected finite values, got 1 NaN/Inf of 6 entries"),
    (lambda: cal.nll(GOOD_Z, GOOD_Y.astype(float), inputs="logits"), TypeError,
     "labels: expected a NumPy integer array of shape \\(2,\\), got float64 array"),
    (lambda: cal.nll(GOOD_Z, [0, 2], inputs="logits"), TypeError,
     "labels: expected a NumPy integer array of shape \\(2,\\), got list"),
    (lambda: cal.nll(GOOD_Z, np.array([0, 1, 2]), inputs="logits"), ValueError,
     "labels: expected shape \\(2,\\) .* got \\(3,\\)"),
    (lambda: cal.nll(GOOD_Z, np.array([0, 3]), inputs="logits"), ValueError,
     "labels: expected values in \\[0, 3\\) for C = 3 classes, got values in \\[0, 3\\]"),
    (lambda: cal.brier(GOOD_Z, GOOD_Y), ValueError,
     "probs: expected probabilities >= 0, got -1.0 at row 0, column 2"),
    (lambda: cal.brier(GOOD_P * (1 + 2e-6), GOOD_Y), ValueError,
     "probs: expected rows summing to 1 within 1e-06, got a row sum of 1.000002"),
    (lambda: cal.ece(GOOD_P, GOOD_Y, 0), ValueError, "n_bins: expected an integer >= 1, got 0"),
    (lambda: cal.ece(GOOD_P, GOOD_Y, 15.0), TypeError, "n_bins: expected an integer, got float"),
    (lambda: cal.ece(GOOD_P, GOOD_Y, True), TypeError, "n_bins: expected an integer, got bool"),
    (lambda: cal.ece(GOOD_P, GOOD_Y, binning="quantile"), ValueError,
     "binning: expected one of 'width', 'mass', got 'quantile'"),
    (lambda: ts.apply_temperature(GOOD_Z, 0.0), ValueError,
     "T: expected a real number > 0 \\(inf allowed\\), got 0.0"),
    (lambda: ts.apply_temperature(GOOD_Z, math.nan), ValueError, "T: expected a real number > 0"),
    (lambda: ts.apply_temperature(GOOD_Z, "2"), ValueError, "T: expected a real number > 0"),
    (lambda: ts.temperature_profile(GOOD_Z, GOOD_Y, -1.0), ValueError,
     "beta: expected a finite real number >= 0, got -1.0"),
    (lambda: ts.temperature_profile(GOOD_Z, GOOD_Y, math.inf), ValueError,
     "beta: expected a finite real number >= 0"),
    (lambda: ts.fit_temperature(GOOD_Z, GOOD_Y, max_iter=0), ValueError,
     "max_iter: expected an integer >= 1, got 0"),
    (lambda: ts.fit_temperature(np.array([[0.0, 1e308], [-1e308, 0.0]]), np.array([0, 1])),
     ValueError, "logits: expected row ranges max - min below 2\\^1023"),
])
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_nll_needs_to_be_told_logits_or_probabilities():
    with pytest.raises(TypeError, match="inputs"):
        cal.nll(GOOD_Z, GOOD_Y)


def test_rows_off_by_less_than_the_tolerance_are_used_as_given():
    p = GOOD_P * (1 + 5e-7)
    assert cal.brier(p, GOOD_Y) == pytest.approx(cal.brier(GOOD_P, GOOD_Y), abs=1e-5)
    assert cal.brier(p, GOOD_Y) != cal.brier(GOOD_P, GOOD_Y)  # not renormalised


# ---- NLL and Brier ---------------------------------------------------------------------
def test_nll_of_logits_is_the_cross_entropy_of_engine_losses():
    z, y = sampled(1)
    assert cal.nll(z, y, inputs="logits") == pytest.approx(softmax_cross_entropy(z, y)[0],
                                                           rel=1e-15)
    assert cal.nll(softmax(z), y, inputs="probs") == pytest.approx(
        cal.nll(z, y, inputs="logits"), rel=1e-13)


def test_nll_of_logits_is_invariant_to_row_shifts_and_finite_at_any_magnitude():
    z, y = sampled(2)
    shift = np.random.default_rng(3).uniform(-1e4, 1e4, (len(z), 1))
    # z + shift rounds each entry by up to ulp(1e4) / 2 = 9e-13
    assert abs(cal.nll(z + shift, y, inputs="logits") - cal.nll(z, y, inputs="logits")) <= 2e-12
    big = np.array([[0.0, 1e300], [1e300, -1e300]])
    assert cal.nll(big, np.array([1, 0]), inputs="logits") == 0.0
    assert cal.nll(big, np.array([0, 0]), inputs="logits") == pytest.approx(0.5e300, rel=1e-15)


def test_nll_of_a_zero_probability_is_inf_without_a_runtime_warning():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cal.nll(p, np.array([1, 0]), inputs="probs") == math.inf


def test_brier_is_one_minus_twice_the_label_probability_plus_the_squared_norm():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.full(5, 0.3), 300)
    y = rng.integers(0, 5, 300)
    rows = 1 - 2 * p[np.arange(300), y] + (p * p).sum(axis=1)
    assert cal.brier(p, y) == pytest.approx(rows.mean(), rel=1e-14)
    assert 0 <= cal.brier(p, y) <= 2


# ---- ECE / MCE conventions -------------------------------------------------------------
def gpleiss_ece(p, y, n_bins):
    """gpleiss/temperature_scaling's _ECELoss, transcribed from PyTorch to NumPy: bins
    (lo, hi] on torch.linspace(0, 1, n_bins + 1), weights by the bin's share of samples."""
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    acc = pred == y
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.mean() > 0:
            total += abs(conf[inside].mean() - acc[inside].mean()) * inside.mean()
    return total


@pytest.mark.parametrize("seed", range(5))
def test_equal_width_ece_is_the_reference_implementations(seed):
    rng = np.random.default_rng(seed)
    z = 3 * rng.standard_normal((2000, 10))
    y = rng.integers(0, 10, 2000)
    for m in (1, 5, 15, 30):
        assert cal.ece(softmax(z), y, m).ece == pytest.approx(gpleiss_ece(softmax(z), y, m),
                                                               abs=1e-14)


@pytest.mark.parametrize("n_bins", [1, 2, 3, 7, 10, 15, 100])
def test_a_confidence_on_an_edge_goes_into_the_bin_below_and_one_into_the_last(n_bins):
    c = 200  # confidences down to 1/200
    conf = np.arange(1, n_bins + 1) / n_bins  # every upper edge m / M, 1.0 included
    keep = conf >= 1 / c
    out = cal.ece(confident_rows(conf[keep], c), np.zeros(int(keep.sum()), int), n_bins)
    np.testing.assert_array_equal(out.bins.count, keep.astype(np.int64))
    np.testing.assert_array_equal(out.bins.upper, np.arange(1, n_bins + 1) / n_bins)
    np.testing.assert_array_equal(out.bins.lower, np.arange(n_bins) / n_bins)
    assert out.bins.count[-1] == 1  # 1.0


def test_empty_width_bins_have_count_zero_and_nan_means():
    p = confident_rows([0.95, 0.96], 2)
    out = cal.ece(p, np.array([0, 1]), 10)
    assert out.bins.count.tolist() == [0] * 9 + [2]
    assert np.isnan(out.bins.confidence[:9]).all() and np.isnan(out.bins.accuracy[:9]).all()
    assert out.bins.confidence[-1] == pytest.approx(0.955, rel=1e-15)
    assert out.bins.accuracy[-1] == 0.5
    assert out.ece == pytest.approx(0.455, rel=1e-14) and out.mce == out.ece


def test_the_hand_case_table():
    p = confident_rows([0.55, 0.65, 0.75, 0.9, 0.95, 1.0], 2)
    y = np.array([1, 0, 0, 0, 1, 0])
    width = cal.ece(p, y, 10)
    assert width.bins.count.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 2]
    np.testing.assert_allclose(width.bins.accuracy[5:], [0, 1, 1, 1, 0.5], rtol=0, atol=0)
    np.testing.assert_allclose(width.bins.confidence[5:], [0.55, 0.65, 0.75, 0.9, 0.975],
                               rtol=1e-15)
    assert width.ece == pytest.approx(11 / 30, rel=1e-15)
    assert width.mce == pytest.approx(0.55, rel=1e-15)
    mass = cal.ece(p, y, 3, "mass")
    assert mass.bins.count.tolist() == [2, 2, 2]
    np.testing.assert_array_equal(mass.bins.lower, [0.55, 0.75, 0.95])
    np.testing.assert_array_equal(mass.bins.upper, [0.65, 0.9, 1.0])
    assert mass.ece == pytest.approx(0.25, rel=1e-15)
    assert mass.mce == pytest.approx(0.475, rel=1e-15)
    assert cal.mce(p, y, 3, "mass") == mass.mce


def test_equal_mass_bins_have_sizes_floor_or_ceil_of_n_over_m():
    rng = np.random.default_rng(5)
    p = softmax(3 * rng.standard_normal((1003, 4)))  # distinct confidences
    y = rng.integers(0, 4, 1003)
    for m in (1, 2, 7, 15, 1003, 2000):
        counts = cal.ece(p, y, m, "mass").bins.count
        assert counts.sum() == 1003 and len(counts) == min(m, 1003)
        assert set(counts.tolist()) <= {1003 // m, -(-1003 // m)} - {0}


def test_equal_mass_bins_never_split_a_tie_and_ignore_sample_order():
    rng = np.random.default_rng(6)
    conf = np.round(rng.uniform(0.5, 1.0, 400), 1)  # six distinct values, long runs
    p, y = confident_rows(conf, 3), rng.integers(0, 3, 400)
    out = cal.ece(p, y, 10, "mass")
    for lo, hi, n in zip(out.bins.lower, out.bins.upper, out.bins.count):
        assert ((conf >= lo) & (conf <= hi)).sum() == n  # every sample of its range
    assert (out.bins.upper[:-1] < out.bins.lower[1:]).all()
    for _ in range(10):
        order = rng.permutation(400)
        again = cal.ece(p[order], y[order], 10, "mass")
        assert again.ece == out.ece and again.mce == out.mce  # bit for bit (math.fsum)


def test_one_bin_is_the_overall_gap_for_both_binnings():
    z, y = sampled(7)
    p = softmax(z)
    gap = abs((p.argmax(axis=1) == y).mean() - p.max(axis=1).mean())
    for binning in cal.BINNINGS:
        assert cal.ece(p, y, 1, binning).ece == pytest.approx(gap, abs=1e-15)


def test_argmax_ties_take_the_first_class():
    p = np.array([[0.4, 0.4, 0.2]])
    assert cal.ece(p, np.array([0]), 5).bins.accuracy[1] == 1.0
    assert cal.ece(p, np.array([1]), 5).bins.accuracy[1] == 0.0


# ---- temperature scaling ---------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_fit_agrees_with_a_scalar_minimiser_and_is_stationary(seed):
    z, y = sampled(seed, hand_over=0.5 + seed / 2)
    fit = ts.fit_temperature(z, y)
    assert fit.status == "minimum" and fit.iterations <= 20
    def nll_at(T):
        return cal.nll(z / T, y, inputs="logits")

    found = math.exp(scipy.optimize.minimize_scalar(
        lambda t: nll_at(math.exp(t)), bounds=(-5, 5), method="bounded",
        options={"xatol": 1e-12}).x)
    # from NLL values alone a minimiser is resolved only to ~sqrt(u) relative: the NLL is
    # flat to rounding within ~1e-8 of T*; ours is never worse, and is the root of f'
    assert fit.T == pytest.approx(found, rel=1e-6)
    assert nll_at(fit.T) <= nll_at(found) + 4e-16 * nll_at(found)
    root = scipy.optimize.brentq(lambda b: ts.temperature_profile(z, y, b).slope, 1e-3, 1e2,
                                 xtol=1e-300, rtol=4 * np.finfo(float).eps)
    assert fit.beta == pytest.approx(root, rel=1e-13)
    assert abs(fit.slope) <= 1e-13 * np.ptp(z, axis=1).mean()
    assert fit.nll_after <= fit.nll_before
    assert fit.nll_after == pytest.approx(cal.nll(ts.apply_temperature(z, fit), y,
                                                  inputs="logits"), rel=1e-14)
    assert fit.nll_before == pytest.approx(cal.nll(z, y, inputs="logits"), rel=1e-14)
    assert fit.beta == pytest.approx(1 / fit.T, rel=1e-15)


def test_the_temperature_scales_with_the_logits_and_ignores_row_shifts():
    z, y = sampled(11)
    T = ts.fit_temperature(z, y).T
    for k in (-600, -3, 1, 600):  # powers of two: the scaled problem is bit-identical
        assert ts.fit_temperature(math.ldexp(1.0, k) * z, y).T == math.ldexp(T, k)
    assert ts.fit_temperature(3 * z, y).T == pytest.approx(3 * T, rel=1e-12)
    shift = np.random.default_rng(12).uniform(-5, 5, (len(z), 1))
    assert ts.fit_temperature(z + shift, y).T == pytest.approx(T, rel=1e-12)


def test_profile_derivatives_are_those_of_the_nll():
    z, y = sampled(13)
    r = float(np.ptp(z, axis=1).mean())  # the scale of f'; r^2 that of f''
    for beta in (0.1, 0.4, 1.0, 3.0):
        prof = ts.temperature_profile(z, y, beta)
        h = 1e-5 * beta
        lo, hi = (ts.temperature_profile(z, y, b) for b in (beta - h, beta + h))
        # truncation (h beta r)^2 / 6 ~ 1e-9 relative, rounding u f / (h r) ~ 1e-11
        assert abs(prof.slope - (hi.value - lo.value) / (2 * h)) <= 1e-8 * r
        assert abs(prof.curvature - (hi.slope - lo.slope) / (2 * h)) <= 1e-8 * r * r
    prof0 = ts.temperature_profile(z, y, 0.0)
    assert prof0.value == pytest.approx(math.log(z.shape[1]), rel=1e-15)
    assert prof0.slope == pytest.approx((z.mean(axis=1) - z[np.arange(len(y)), y]).mean(),
                                        rel=1e-12)


def test_constant_rows_give_t_equal_one_with_a_warning():
    with pytest.warns(cal.CalibrationWarning, match="every row of logits is constant"):
        fit = ts.fit_temperature(np.full((4, 3), 2.5), np.array([0, 1, 2, 0]))
    assert (fit.T, fit.status, fit.iterations) == (1.0, "flat", 0)
    assert fit.nll_after == pytest.approx(math.log(3), rel=1e-15)


@pytest.mark.parametrize("z, y", [
    (np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 1.0]]), np.array([0, 1])),  # all right, margins
    (np.array([[1.0, 1.0, 0.0], [0.0, 3.0, 1.0]]), np.array([1, 1])),  # a tie with the label
    (np.array([[1.0, 1.0, 1.0], [0.0, 3.0, 1.0]]), np.array([2, 1])),  # a constant row
])
def test_no_temperature_minimises_when_every_label_logit_is_maximal(z, y):
    with pytest.raises(ValueError, match="labels: the label's logit is the largest of its row "
                                         "in all 2 samples.*no T > 0 minimises it"):
        ts.fit_temperature(z, y)


@pytest.mark.parametrize("z, y", [
    (np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 1.0]]), np.array([1, 0])),  # anti-informative
    (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0])),  # f'(0) = 0 exactly
])
def test_uninformative_logits_give_the_uniform_prediction_with_a_warning(z, y):
    with pytest.warns(cal.CalibrationWarning, match="T = inf, the uniform prediction"):
        fit = ts.fit_temperature(z, y)
    assert (fit.T, fit.beta, fit.status, fit.iterations) == (math.inf, 0.0, "uniform", 0)
    assert fit.slope >= 0
    assert fit.nll_after == pytest.approx(math.log(z.shape[1]), rel=1e-15)
    np.testing.assert_array_equal(softmax(ts.apply_temperature(z, fit)), 1 / z.shape[1])


def test_a_barely_informative_set_gets_a_large_finite_temperature():
    z = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 2)
    y = np.zeros(5, dtype=int)  # three right, two wrong, margins 1: f'(0) = -0.1
    fit = ts.fit_temperature(z, y)
    # with s = sigmoid(beta): f'(beta) = (3 (s - 1) + 2 s) / 5 = 0 at s = 3/5
    assert fit.status == "minimum"
    assert fit.beta == pytest.approx(math.log(1.5), rel=1e-14)


def test_one_mistake_among_many_gives_a_small_temperature():
    z = np.array([[4.0, 0.0]] * 999 + [[0.0, 4.0]])
    fit = ts.fit_temperature(z, np.zeros(1000, dtype=int))
    # with s = sigmoid(4 beta): f'(beta) = 4 (999 (s - 1) + s) / 1000 = 0 at s = 0.999
    assert fit.beta == pytest.approx(math.log(999) / 4, rel=1e-12)
    assert fit.iterations <= 20


def test_hitting_max_iter_warns_and_says_so():
    z, y = sampled(14)
    with pytest.warns(cal.CalibrationWarning, match="no convergence in max_iter = 2"):
        fit = ts.fit_temperature(z, y, max_iter=2)
    assert fit.status == "max-iter" and fit.iterations == 2


def test_apply_temperature_divides_and_accepts_inf_and_a_fit():
    z, y = sampled(15)
    fit = ts.fit_temperature(z, y)
    np.testing.assert_array_equal(ts.apply_temperature(z, fit), z / fit.T)
    np.testing.assert_array_equal(ts.apply_temperature(z, math.inf), np.zeros_like(z))
    out = ts.apply_temperature(z, 2.0)
    assert out is not z and np.array_equal(z, sampled(15)[0])  # the input is left alone


def test_row_blocks_give_the_same_numbers(monkeypatch):
    z, y = sampled(16, n=300, c=7)
    whole = ts.fit_temperature(z, y), ts.temperature_profile(z, y, 0.7)
    monkeypatch.setattr(ts, "BLOCK_ENTRIES", 50)  # blocks of 7 rows, the last one short
    blocked = ts.fit_temperature(z, y), ts.temperature_profile(z, y, 0.7)
    assert blocked[0].T == pytest.approx(whole[0].T, rel=1e-14)
    np.testing.assert_allclose(blocked[1], whole[1], rtol=1e-13)


def test_a_beta_that_overflows_against_the_logits_is_refused():
    with pytest.raises(ValueError, match="beta: expected beta times the largest row range"):
        ts.temperature_profile(GOOD_Z * 1e300, GOOD_Y, 1e300)


def test_a_minimiser_beyond_the_search_range_is_an_error(monkeypatch):
    z = np.array([[4.0, 0.0]] * 999 + [[0.0, 4.0]])  # gamma* = 8 log(999) / 4 = 13.8
    monkeypatch.setattr(ts, "MAX_GAMMA", 8.0)
    with pytest.raises(ValueError, match="logits: the NLL keeps decreasing up to beta = 8"):
        ts.fit_temperature(z, np.zeros(1000, dtype=int))


def test_an_absurd_bin_count_and_an_overflowing_temperature_are_refused():
    p, y = np.full((5, 3), 1 / 3), np.zeros(5, dtype=np.int64)
    limit = cal.N_BINS_MAX
    with pytest.raises(ValueError, match=f"n_bins: expected an integer from 1 to {limit}"):
        cal.ece(p, y, n_bins=10**9)  # before any table is built (it would fill the memory)
    assert cal.ece(p, y, n_bins=limit).n_bins == limit
    z = np.array([[1.0, -2.0], [0.5, 3.0]])
    with pytest.raises(ValueError, match="T: expected a T > 0 for which z / T is finite"):
        ts.apply_temperature(z, 1e-320)
    assert np.array_equal(ts.apply_temperature(z, 0.5), 2 * z)
