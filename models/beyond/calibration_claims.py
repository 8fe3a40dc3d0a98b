"""Ledger rows CAL1-CAL6: calibration scores and exact temperature scaling
(``lastlayer.engine.solvers.diagnostics.calibration``; Guo et al., ICML 2017; Naeini et al.
2015; Nixon et al. 2019; Brier 1950).

Temperature scaling fits one T > 0 to held-out logits z (N, C) and labels y by minimising

    f(beta) = (1/N) sum_i [lse(beta z_i) - beta z_iy],    beta = 1 / T,

convex in beta, with f'(beta) = mean_i (E_p[z_i] - z_iy) and f''(beta) = mean_i Var_p[z_i]
(p_i = softmax(beta z_i)). The rows check that the solver finds its minimiser to rounding
(CAL1), that it recovers a known temperature within the sampling error of the maximum
likelihood estimate (CAL2), the ECE / MCE binning conventions on hand-computed cases
(CAL3), NLL and Brier against known values and direct formulas (CAL4), that temperature
scaling never changes a prediction (CAL5) and that it removes the miscalibration of
overconfident logits down to the sampling level (CAL6). Generated data: the stream
``lastlayer.engine.streams.stream(0, "beyond-data", k)``, k in 300 .. 399, one k per row.
"""

from __future__ import annotations

import math

import numpy as np

from lastlayer.engine.losses import softmax
from lastlayer.engine.solvers.diagnostics import calibration as cal
from lastlayer.engine.solvers.diagnostics import temperature as ts
from lastlayer.engine.streams import stream

from ..ledger import FAIL, PASS, Check, Outcome, at_most

SEED = 0
U = np.finfo(np.float64).eps / 2  # the unit roundoff 2^-53


def _rng(k: int) -> np.random.Generator:
    return stream(SEED, "beyond-data", k)


def _sampled(rng, n: int, c: int, scale: float = 2.0):
    """True logits z_true = scale * N(0, 1) (n, c) and labels drawn from softmax(z_true)
    by inverse CDF."""
    z_true = scale * rng.standard_normal((n, c))
    u = rng.random(n)
    labels = np.minimum((u[:, None] > np.cumsum(softmax(z_true), axis=1)).sum(axis=1), c - 1)
    return z_true, labels


def _cal1_problem():
    """Logits of a mis-specified, overconfident model: 2.5 z_true + 0.5 noise, N = 2000,
    C = 10 (the fitted T is near 2.5, not known in closed form)."""
    rng = _rng(301)
    z_true, y = _sampled(rng, 2000, 10)
    return 2.5 * z_true + 0.5 * rng.standard_normal(z_true.shape), y


def _nll_at(z, y, T: float) -> float:
    return cal.nll(ts.apply_temperature(z, T), y, inputs="logits")


# ---- CAL1: the fitted temperature is the exact minimiser ---------------------------------
def cal1_slope() -> Outcome:
    """|f'(beta*)| at the fitted beta* = 1 / T, relative to the mean row range of z (the
    scale of the terms E_p[z_i] - z_iy): 0 up to rounding."""
    z, y = _cal1_problem()
    fit = ts.fit_temperature(z, y)
    slope = ts.temperature_profile(z, y, 1.0 / fit.T).slope
    return at_most(abs(slope) / float(np.ptp(z, axis=1).mean()), 1e-13)


def cal1_neighbours() -> Outcome:
    """NLL at T* against T*(1 -+ 1e-4) and 2000 log-spaced T in [T*/2, 2 T*] (T* itself not
    among them): the largest (f(T*) - f(T')) / f(T*), negative at a minimum; tolerance the
    rounding of two NLLs, each ~(C + log2 N) u relative."""
    z, y = _cal1_problem()
    T = ts.fit_temperature(z, y).T
    best = _nll_at(z, y, T)
    others = [T * (1 - 1e-4), T * (1 + 1e-4), *np.geomspace(T / 2, 2 * T, 2000)]
    excess = max(best - _nll_at(z, y, t) for t in others) / best
    return at_most(excess, 1e-14)


def cal1_newton() -> Outcome:
    """Evaluations of (f', f'') used by the safeguarded Newton search, worst of the CAL1
    logits scaled by 1e-3, 1 and 1e3 (quadratic convergence: ~10; bisection alone would
    need >= 52 to shrink a bracket to rounding)."""
    z, y = _cal1_problem()
    worst = max(ts.fit_temperature(s * z, y).iterations for s in (1e-3, 1.0, 1e3))
    return Outcome(worst, "<= 20", 20, PASS if worst <= 20 else FAIL)


def cal1_derivatives() -> Outcome:
    """f' and f'' of ``temperature_profile`` against central differences (h = 1e-5 beta) of
    the NLL (through ``nll``'s own log-softmax) and of f', at beta = beta* x {1/4, 1/2, 1, 2,
    4}: the largest error, f' relative to the mean row range R, f'' relative to R^2."""
    z, y = _cal1_problem()
    beta_star = ts.fit_temperature(z, y).beta
    r = float(np.ptp(z, axis=1).mean())
    worst = 0.0
    for beta in beta_star * np.array([0.25, 0.5, 1.0, 2.0, 4.0]):
        h = 1e-5 * beta
        prof = ts.temperature_profile(z, y, beta)
        fd1 = (_nll_at(z, y, 1 / (beta + h)) - _nll_at(z, y, 1 / (beta - h))) / (2 * h)
        fd2 = (ts.temperature_profile(z, y, beta + h).slope
               - ts.temperature_profile(z, y, beta - h).slope) / (2 * h)
        worst = max(worst, abs(prof.slope - fd1) / r, abs(prof.curvature - fd2) / r ** 2)
    return at_most(float(worst), 1e-8)


# ---- CAL2: a known temperature is recovered --------------------------------------------
def cal2_known_temperature() -> Outcome:
    """Labels drawn from softmax(z_true) (N = 20000, C = 10), logits handed over as
    3 z_true: the fitted T against 3. Tolerance 4 standard errors of the maximum-likelihood
    estimate: sd(beta_hat) = 1 / sqrt(N f''(1/3)) (the Fisher information of the canonical
    parameter beta is N mean_i Var_p[z_i]), sd(T_hat) = sd(beta_hat) / beta_0^2."""
    z_true, y = _sampled(_rng(320), 20_000, 10)
    z = 3.0 * z_true
    T = ts.fit_temperature(z, y).T
    info = len(y) * ts.temperature_profile(z, y, 1 / 3).curvature
    tol = 4 * (1 / math.sqrt(info)) * 3.0 ** 2
    return Outcome(T, 3.0, tol, PASS if abs(T - 3.0) <= tol else FAIL)


# ---- CAL3: ECE and MCE on constructed cases ----------------------------------------------
def _confident_rows(pred, c: int, top: float) -> np.ndarray:
    p = np.full((len(pred), c), (1 - top) / (c - 1))
    p[np.arange(len(pred)), pred] = top
    return p


def cal3_constant() -> Outcome:
    """Every confidence 0.8, accuracy exactly 0.6 (N = 1000, C = 5, the 600 correct
    samples placed at random): ECE = MCE = |0.6 - 0.8| = 0.2 for both binnings (15 bins).
    Measured: the largest absolute error of the four values."""
    rng = _rng(330)
    n, c = 1000, 5
    pred = rng.integers(0, c, n)
    right = rng.permutation(n) < 600
    labels = np.where(right, pred, (pred + 1 + rng.integers(0, c - 1, n)) % c)
    p = _confident_rows(pred, c, 0.8)
    worst = 0.0
    for binning in cal.BINNINGS:
        out = cal.ece(p, labels, 15, binning)
        worst = max(worst, abs(out.ece - 0.2), abs(out.mce - 0.2))
    return at_most(worst, 1e-15)


HAND_CONFIDENCE = np.array([0.55, 0.65, 0.75, 0.9, 0.95, 1.0])
HAND_RIGHT = np.array([False, True, True, True, False, True])
# width, 10 right-closed bins: 0.55 | 0.65 | 0.75 | 0.9 (= the edge 9/10, bin (0.8, 0.9]) |
# {0.95, 1.0}; gaps 0.55, 0.35, 0.25, 0.1, |1 - 1.95| / 2: ECE = 2.2 / 6 = 11/30, MCE = 0.55.
# mass, 3 bins of 2: {0.55, 0.65} gap 0.1, {0.75, 0.9} 0.175, {0.95, 1.0} 0.475:
# ECE = (0.2 + 0.35 + 0.95) / 6 = 0.25, MCE = 0.475.
HAND_EXPECTED = {("width", 10): (11 / 30, 0.55), ("mass", 3): (0.25, 0.475)}


def _binary(confidence, right):
    """Rows [c, 1 - c] (class 0 predicted), label 0 where ``right``, 1 elsewhere."""
    return np.stack([confidence, 1 - confidence], axis=1), np.where(right, 0, 1)


def cal3_hand() -> Outcome:
    """Six binary samples (confidences 0.55 .. 1.0, one exactly on the edge 0.9 and one at
    1.0) where equal-width (10 bins) and equal-mass (3 bins) differ: ECE 11/30 vs 0.25, MCE
    0.55 vs 0.475 by hand. Measured: the largest absolute error."""
    p, labels = _binary(HAND_CONFIDENCE, HAND_RIGHT)
    worst = 0.0
    for (binning, m), (want_ece, want_mce) in HAND_EXPECTED.items():
        out = cal.ece(p, labels, m, binning)
        worst = max(worst, abs(out.ece - want_ece), abs(out.mce - want_mce))
    return at_most(worst, 1e-15)


def cal3_ties() -> Outcome:
    """Equal-mass bins keep ties together: confidences (0.7, 0.7, 0.7, 0.9), correct (1, 0,
    0, 1), 2 bins: the boundary floor(4 / 2) = 2 falls inside the run of 0.7 and moves to
    3: bins {0.7 x 3} (gap |1/3 - 0.7|) and {0.9} (gap 0.1), ECE = (1.1 + 0.1) / 4 = 0.3.
    Measured: the largest |ECE - 0.3| over the samples in their order and 20 random
    permutations (membership depends on the confidences alone)."""
    p, labels = _binary(np.array([0.7, 0.7, 0.7, 0.9]), np.array([True, False, False, True]))
    rng = _rng(332)
    orders = [np.arange(4)] + [rng.permutation(4) for _ in range(20)]
    worst = max(abs(cal.ece(p[o], labels[o], 2, "mass").ece - 0.3) for o in orders)
    return at_most(worst, 1e-15)


# ---- CAL4: NLL and Brier ---------------------------------------------------------------
def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1.0)


def cal4_known() -> Outcome:
    """Known values: uniform predictions (zero logits, or probabilities 1/C) give NLL = log C
    and Brier = 1 - 1/C (C = 2, 10, 1000); one-hot correct rows give Brier 0 and NLL 0,
    one-hot wrong rows Brier 2 and NLL +inf; logits (0, 1000) give NLL 1000 for label 0 and
    0 for label 1 (no overflow). Measured: the largest error relative to max(1, |value|)."""
    errors = []
    for c in (2, 10, 1000):
        labels = np.arange(3) % c
        uniform = np.full((3, c), 1.0 / c)
        errors += [_rel(cal.nll(np.zeros((3, c)), labels, inputs="logits"), math.log(c)),
                   _rel(cal.nll(uniform, labels, inputs="probs"), math.log(c)),
                   _rel(cal.brier(uniform, labels), 1 - 1 / c)]
    eye = np.eye(4)
    right, wrong = np.arange(4), (np.arange(4) + 1) % 4
    errors += [_rel(cal.brier(eye, right), 0.0), _rel(cal.nll(eye, right, inputs="probs"), 0.0),
               _rel(cal.brier(eye, wrong), 2.0)]
    if cal.nll(eye, wrong, inputs="probs") != math.inf:
        errors.append(math.inf)
    z = np.array([[0.0, 1000.0]])
    errors += [_rel(cal.nll(z, np.array([0]), inputs="logits"), 1000.0),
               _rel(cal.nll(z, np.array([1]), inputs="logits"), 0.0)]
    return at_most(max(errors), 1e-14)


def cal4_direct() -> Outcome:
    """Against the formulas written out sample by sample in exact summation (math.fsum):
    Dirichlet probabilities (N = 200, C = 7): NLL = -(1/N) sum_i log p_iy, Brier = (1/N)
    sum_i sum_k (p_ik - 1[k = y_i])^2; logits 3 N(0, 1): NLL = (1/N) sum_i (log sum_k
    exp z_ik - z_iy), and equal to the NLL of softmax(z) as probabilities. Measured: the
    largest relative error."""
    rng = _rng(340)
    n, c = 200, 7
    p = rng.dirichlet(np.ones(c), n)
    y = rng.integers(0, c, n)
    z = 3.0 * rng.standard_normal((n, c))
    rows = p.tolist()
    nll_p = -math.fsum(math.log(rows[i][y[i]]) for i in range(n)) / n
    brier_p = math.fsum((rows[i][k] - (k == y[i])) ** 2 for i in range(n) for k in range(c)) / n
    nll_z = math.fsum(math.log(math.fsum(math.exp(v) for v in z[i].tolist())) - z[i, y[i]]
                      for i in range(n)) / n
    errors = [_rel(cal.nll(p, y, inputs="probs"), nll_p), _rel(cal.brier(p, y), brier_p),
              _rel(cal.nll(z, y, inputs="logits"), nll_z),
              _rel(cal.nll(softmax(z), y, inputs="probs"), nll_z)]
    return at_most(max(errors), 1e-14)


# ---- CAL5: predictions are unchanged ---------------------------------------------------
def cal5_argmax() -> Outcome:
    """Temperature scaling divides every logit of a row by the same T > 0: no prediction
    changes, so the accuracy is unchanged, while the NLL can only fall (T* minimises it;
    T = 1 is a candidate). N = 5000, C = 10. Measured: the number of changed predictions
    (FAIL also if NLL(T*) > NLL(1))."""
    rng = _rng(350)
    z_true, y = _sampled(rng, 5000, 10)
    z = 4.0 * z_true + rng.standard_normal(z_true.shape)
    fit = ts.fit_temperature(z, y)
    scaled = ts.apply_temperature(z, fit.T)
    changed = int((scaled.argmax(axis=1) != z.argmax(axis=1)).sum())
    ok = changed == 0 and _nll_at(z, y, fit.T) <= cal.nll(z, y, inputs="logits")
    return Outcome(changed, 0, 0, PASS if ok else FAIL)


# ---- CAL6: miscalibration removed --------------------------------------------------------
def _calibrated_ece_level(conf, n_bins: int) -> float:
    """The expected ECE of *calibrated* predictions with these confidences (width bins):
    in bin m, k_m - S_m is a sum of independent centred Bernoulli(c_i) variables, so
    E|k_m - S_m| ~ sqrt(2 / pi) sqrt(sum_i c_i (1 - c_i)) (normal approximation), and
    E[ECE] ~ (1/N) sum_m sqrt(2 / pi) sqrt(sum_{i in m} c_i (1 - c_i))."""
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    spread = np.bincount(idx, weights=conf * (1 - conf), minlength=n_bins)
    return float(math.sqrt(2 / math.pi) * np.sqrt(spread).sum() / len(conf))


def cal6_ece_reduced() -> Outcome:
    """Overconfident logits 3 z_true (labels drawn from softmax(z_true)): T fitted on one
    split (N = 20000, C = 10), ECE (15 width bins) measured on an independent one (N =
    20000). Measured: ECE after scaling / the ECE level of calibrated predictions
    (``_calibrated_ece_level``, ~1 if calibrated; its sampling spread is ~20 %). Tolerance
    2; FAIL also unless the ECE before scaling is >= 10 times that level."""
    z_fit, y_fit = _sampled(_rng(360), 20_000, 10)
    z_test, y_test = _sampled(_rng(361), 20_000, 10)
    T = ts.fit_temperature(3.0 * z_fit, y_fit).T
    before = softmax(3.0 * z_test)
    after = softmax(ts.apply_temperature(3.0 * z_test, T))
    level = _calibrated_ece_level(after.max(axis=1), 15)
    ratio_after = cal.ece(after, y_test, 15).ece / level
    ratio_before = cal.ece(before, y_test, 15).ece / _calibrated_ece_level(before.max(axis=1), 15)
    ok = ratio_after <= 2 and ratio_before >= 10
    return Outcome(ratio_after, "~1 (before: >= 10)", 2, PASS if ok else FAIL)


def checks() -> list[Check]:
    return [
        Check("CAL1-slope", "fitted T: |dNLL/dbeta| at beta = 1/T, relative to the mean row "
              "range (0 to rounding)", cal1_slope),
        Check("CAL1-neighbours", "fitted T: NLL(T) - NLL(T') over T(1 -+ 1e-4) and a 2000-point "
              "grid on [T/2, 2T], relative (<= 0)", cal1_neighbours),
        Check("CAL1-newton", "safeguarded Newton on dNLL/dbeta: evaluations used (quadratic "
              "convergence)", cal1_newton),
        Check("CAL1-derivatives", "dNLL/dbeta and d2NLL/dbeta2 vs central differences",
              cal1_derivatives),
        Check("CAL2", "labels from softmax(z), logits 3 z: fitted T vs 3 (4 standard errors of "
              "the MLE)", cal2_known_temperature),
        Check("CAL3-constant", "confidence 0.8, accuracy 0.6: ECE = MCE = 0.2, both binnings",
              cal3_constant),
        Check("CAL3-hand", "hand-computed ECE / MCE, equal-width (edge 0.9, 1.0) vs equal-mass",
              cal3_hand),
        Check("CAL3-ties", "equal-mass bins never split ties: ECE = 0.3 in every sample order",
              cal3_ties),
        Check("CAL4-known", "NLL = log C, Brier = 1 - 1/C (uniform); Brier 0 / 2 (one-hot); "
              "logits 0, 1000", cal4_known),
        Check("CAL4-direct", "NLL and Brier vs per-sample formulas in exact summation",
              cal4_direct),
        Check("CAL5", "temperature scaling changes no prediction (and lowers the NLL)",
              cal5_argmax),
        Check("CAL6", "overconfident logits: ECE after temperature scaling / calibrated level",
              cal6_ece_reduced),
    ]
