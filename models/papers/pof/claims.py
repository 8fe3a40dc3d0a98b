"""Ledger rows P1-P6: PoF (Sato et al., ICML 2022), docs/claims.md section P.

Notation: phi the feature extractor, theta = (W, b) the classifier at theta0, a minimum of
the training objective; for a mini-batch B, g = dL_B/dtheta at theta0, g_hat = g / ||g||
(eq. 3), xi* = argmin_{xi >= 0} L_B(theta0 - xi g_hat) (eq. 2), H_B and H_D the Hessians in
classifier space of L_B and L_D.

P1-P5 run on the pre-trained toy model of ``protocol`` (seed 0; its classifier is the
exact optimum of J = L_D + lam ||W||^2, so the first-order term that eq. 8 drops is 0 to
rounding); mini-batches of 32 come from the stream ("probe"). P6 post-trains from it over
several seeds. FAIL means a derivation or the protocol is broken; DIFFERS-FROM-PAPER that
the paper's equation or reported effect does not hold here, with both values given.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from lastlayer.engine import Dense, Network, Tanh, optim, stream
from lastlayer.engine.gradcheck import check_network
from lastlayer.engine.losses import softmax_cross_entropy
from lastlayer.engine.solvers import (
    LineProfile, fit_softmax_regression, hessian, released_line_search, ridge, top_eigenpairs,
)
from lastlayer.engine.solvers.exact.eigen import pack
from lastlayer.engine.training import TrainState, train
from lastlayer.engine.training.data import digits

from ...experiment import Paired, format_p, paired, single_threaded_blas
from ...ledger import DIFFERS, FAIL, PASS, Check, Outcome, at_most
from . import protocol
from .method import PoF, feature_mask, pof_step

N_BATCHES = 50  # mini-batches of P1-P3
SEARCH_SIZE = 32  # |B| (the paper's)
GAMMAS = (0.25, 0.5, 1.0, 2.0, 3.0)  # P3
SMALL_GAMMAS = (0.01, 0.02, 0.04, 0.08)  # P3-order
P5_BATCHES, P5_TOP = 400, 10  # their Fig. 2a: 10 eigenvectors
P6_SEEDS, P6_STEPS = 5, 500
CE_GAP_TOL = 0.1  # P2-ce: L_B(2 xi*) - L_B(0) within 10 % of the dip L_B(0) - L_B(xi*)
EQ9_TOL = 0.1  # P3: the effective loss within 10 % of the exact increment at gamma = 2
SIGNIFICANCE = 0.05


# ---- shared problems ----------------------------------------------------------------------
@lru_cache(maxsize=1)
def _model():
    """The pre-trained toy model: (net, train state, data)."""
    data = protocol.toy_data(0)
    with single_threaded_blas():
        ts = protocol.pretrain("toy", data, 0)
    return protocol.network("toy", data), ts, data


@lru_cache(maxsize=2)
def _problems(loss: str = "ce"):
    """(line-search problems, W, b, Phi, targets) on the toy training set. "ce": the model's
    classifier; "squared": one-hot targets and, as theta0, the ridge optimum of the
    training objective (a minimum of L_D, as PoF assumes), where eq. 6 is exact."""
    net, ts, data = _model()
    phi = protocol.features(net, ts.params, ts.net_state, data.x_train)
    W, b, y = ts.params[-1]["W"], ts.params[-1]["b"], data.y_train
    if loss == "squared":
        y = np.eye(W.shape[0])[y]
        sol = ridge(phi, y, protocol.LAM, fit_bias=True)
        W, b = sol.W, sol.b
    rng = stream(0, "probe", 1)
    return protocol.searches(phi, y, W, b, N_BATCHES, SEARCH_SIZE, rng, loss), W, b, phi, y


def _minima(loss: str = "ce"):
    return [s for s in _problems(loss)[0] if s.found.status == "minimum"]


@lru_cache(maxsize=2)
def _table(loss: str = "ce") -> dict[str, np.ndarray]:
    problems, W, b, phi, y = _problems(loss)
    return protocol.effective_loss_table(problems, W, b, phi, y, protocol.LAM,
                                         SMALL_GAMMAS + GAMMAS, loss)


# ---- P1: the line search ------------------------------------------------------------------
def p1_quadratic() -> Outcome:
    """Squared loss (one-hot targets on the toy features, theta0 the ridge optimum): the
    exact line search against the closed form xi* = ||g|| / (g_hat^T H_B g_hat), 50
    batches. Measured: the largest relative difference."""
    _, W, b, _, _ = _problems("squared")
    worst = 0.0
    for s in _problems("squared")[0]:
        g_hat = pack(s.g_hat["W"], s.g_hat["b"])
        closed = s.norm / float(g_hat @ hessian(W, b, s.phi, s.y, 0.0, "squared") @ g_hat)
        worst = max(worst, abs(s.found.xi - closed) / closed)
    return at_most(worst, 1e-12)


def p1_ce() -> Outcome:
    """Softmax CE, 50 batches: the slope |dL_B/dxi| at the xi* found, relative to the slope
    at 0 (||g||), and xi* inside the sign change of the slope on a dense scan of 2000
    points over [0, 3 xi*]. Measured: the largest relative slope (FAIL if a scan
    disagrees or no batch has a minimum)."""
    worst, disagree, problems = 0.0, 0, _minima("ce")
    for s in problems:
        grid = np.linspace(0.0, 3.0 * s.found.xi, 2001)
        k = int(np.argmax(s.profile.scan(grid)[1] >= 0))  # first non-negative slope
        disagree += not grid[k - 1] <= s.found.xi <= grid[k]
        worst = max(worst, abs(s.profile.slope(s.found.xi)) / s.norm)
    if disagree or not problems:
        return Outcome(worst, 0.0, 1e-10, FAIL)
    return at_most(worst, 1e-10)


def p1_released() -> Outcome:
    """The released code's scheme (doubling from 1 along the unnormalised g, best of 16 grid
    points) on the same batches: |xi_grid - xi*| in units of its grid step. Measured: the
    worst; by convexity the best grid point neighbours the minimum, so <= 1 is predicted."""
    _, W, b, _, _ = _problems("ce")
    worst = 0.0
    for s in _minima("ce"):
        raw = LineProfile(s.phi, s.y, W, b, s.g_hat["W"] * s.norm, s.g_hat["b"] * s.norm)
        step, _, _ = released_line_search(raw)
        bound, f0 = 1.0, raw.value(0.0)
        while raw.value(bound) <= f0 and bound < 2.0**20:  # where its doubling stopped
            bound *= 2.0
        worst = max(worst, abs(step * s.norm - s.found.xi) / (bound * s.norm / 16))
    return at_most(worst, 1.0)


# ---- P2: gamma = 2 is the mirror point ------------------------------------------------------
def p2_quadratic() -> Outcome:
    """Squared loss (as P1-quadratic), 50 batches: |L_B(theta0 - 2 xi* g_hat) - L_B(theta0)|
    / L_B(theta0). Measured: the largest; 0 to rounding predicted (the profile is exactly
    quadratic)."""
    worst = max(abs(s.profile.value(2 * s.found.xi) - s.profile.value(0.0))
                / s.profile.value(0.0) for s in _minima("squared"))
    return at_most(worst, 1e-12)


def p2_ce() -> Outcome:
    """Softmax CE: the median over batches of the gap (L_B(theta0 - 2 xi* g_hat) -
    L_B(theta0)) / (L_B(theta0) - L_B(xi*)); their Section 4 (the quadratic model of eq. 6):
    0. PASS within 10 % of the dip. The true mirror factors are in docs/claims.md and the
    reproduction's report."""
    gap = float(np.median(protocol.mirror_statistics(_minima("ce"))["gap"]))
    return Outcome(gap, 0.0, CE_GAP_TOL, PASS if abs(gap) <= CE_GAP_TOL else DIFFERS)


# ---- P3: the effective loss (eqs. 8-10) ------------------------------------------------------
def p3_order() -> Outcome:
    """The error of eq. 9 against the exact J at gamma = 0.01 .. 0.08: the median over
    batches of the log-log slope of |exact - eq. 9| against gamma. theta0 is J's exact
    minimum, so the first-order term vanishes and the error of the second-order model is
    O(gamma^3): slope 3 predicted."""
    table, k = _table("ce"), len(SMALL_GAMMAS)
    err = np.abs(table["exact"][:, :k] - table["eq9"][:, :k])
    slope = float(np.median([np.polyfit(np.log(table["gamma"][:k]), np.log(e), 1)[0]
                             for e in err]))
    return Outcome(slope, 3.0, 0.15, PASS if abs(slope - 3.0) <= 0.15 else FAIL)


def p3_effective_loss() -> Outcome:
    """Eq. 9 (the effective loss: L_D(theta0) plus the second-order term) against the exact
    increment of J at gamma = 2, their default gamma_max: the median over batches of
    |eq. 9 - exact| / exact. Their eq. 9 writes ~=; PASS within 10 %."""
    table = _table("ce")
    col = list(table["gamma"]).index(2.0)
    rel = float(np.median(np.abs(table["eq9"][:, col] - table["exact"][:, col])
                          / table["exact"][:, col]))
    return Outcome(rel, 0.0, EQ9_TOL, PASS if rel <= EQ9_TOL else DIFFERS)


def p3_eq10() -> Outcome:
    """The step from eq. 9 to eq. 10 replaces xi*^2 / 2 (g_hat^T H_B g_hat) by L_B(theta0):
    exact only if the 1-D quadratic of eq. 6 has minimum value 0. Checked where eq. 6 is
    exact, the squared loss (as P1-quadratic): the median over batches of eq. 10's
    second-order term / eq. 9's (the paper's equality: 1). The derivation keeps
    L_B(theta0) - min_xi L_B: that ratio must be 1 to 1e-10 (FAIL otherwise)."""
    table = _table("squared")
    ratio = float(np.median(table["eq10"][:, -1] / table["eq9"][:, -1]))
    worst = float(np.abs(table["eq10_corrected"][:, -1] / table["eq9"][:, -1] - 1).max())
    if worst > 1e-10:
        return Outcome(ratio, f"corrected eq. 10 off by {worst:.2g}", 1e-10, FAIL)
    status = PASS if abs(ratio - 1) <= 1e-10 else DIFFERS
    return Outcome(ratio, f"1 (paper); corrected: 1 to {worst:.1g}", 1e-10, status)


# ---- P4: gamma = 0 is SGD on phi ----------------------------------------------------------------
def p4_sgd() -> Outcome:
    """30 steps of PoF with gamma = 0 from the toy checkpoint against 30 steps of the plain
    training loop with the classifier frozen (same optimizer, seed, batches). Measured: the
    largest |difference| of any parameter or batch loss; 0 predicted (bit-identical)."""
    net, ts, data = _model()
    mask = feature_mask(net, ts.params)
    opt = optim.nesterov(protocol.POST_LR, 0.9, weight_decay=protocol.LAM, mask=mask)
    runs = []
    for step in (None, pof_step(net, PoF(gamma=0.0))):
        state = TrainState(ts.params, ts.net_state, opt.init(ts.params), 7)
        kwargs = {} if step is None else {"step": step}
        runs.append(train(net, opt, data, state, iterations=30, batch_size=protocol.POST_BATCH,
                          mask=mask, quiet=True, eval_every=10**9, eval_train=False, **kwargs))
    worst = max(float(np.abs(a[k] - b[k]).max()) for a, b in zip(runs[0].params, runs[1].params)
                for k in a)
    worst = max(worst, float(np.abs(np.subtract(runs[0].history["batch_loss"],
                                                runs[1].history["batch_loss"])).max()))
    return Outcome(worst, 0.0, 0.0, PASS if worst == 0.0 else FAIL)


def p4_gradient() -> Outcome:
    """The phi-gradient of L_B~(phi, theta0 - gamma xi* g_hat) (eq. 5) against central
    differences: a 10-8-8-8-8-4 tanh MLP, the classifier perturbed by PoF's exact search at
    gamma = 1.5, every tensor checked (``lastlayer.engine.gradcheck``). Measured: the largest relative
    error."""
    rng = np.random.default_rng(11)
    net = Network([Dense(10, 8), Tanh(), Dense(8, 8), Tanh(), Dense(8, 8), Tanh(),
                   Dense(8, 8), Tanh(), Dense(8, 4)])
    params = net.init(rng)
    x, y = rng.standard_normal((16, 10)), rng.integers(0, 4, 16)
    phi = net[:-1].forward(params[:-1], x)[0]
    W, b = params[-1]["W"], params[-1]["b"]
    search = protocol.searches(phi, y, W, b, 1, 16, rng)[0]
    shift = 1.5 * search.found.xi
    perturbed = params[:-1] + [{k: params[-1][k] - shift * search.g_hat[k] for k in ("W", "b")}]
    errors = check_network(net, perturbed, x, softmax_cross_entropy, y)
    return at_most(max(errors.values()), 1e-7)


# ---- P5: mini-batch gradients and the top eigenvector ---------------------------------------------
@lru_cache(maxsize=1)
def gradient_alignment() -> dict[str, np.ndarray]:
    """``protocol.gradient_alignment`` on the toy model: 400 mini-batches of 32, the top 10
    exact eigenvectors of H_D (their Fig. 2a)."""
    net, ts, data = _model()
    return protocol.gradient_alignment(net, ts, data, P5_BATCHES, SEARCH_SIZE, P5_TOP, seed=5)


def p5_alignment() -> Outcome:
    """Their Fig. 2a: mini-batch gradients correlate most with the principal eigenvector.
    Measured: the share of 400 mini-batches whose gradient has its largest |projection| on
    v_1 (of the top 10); PASS when v_1 is the most frequent index. Expected: the share the
    Gaussian model of ``gradient_alignment`` predicts."""
    table = gradient_alignment()
    hist = table["measured"]
    return Outcome(float(hist[0]), f"mode at v_1; Gaussian model {table['predicted'][0]:.3f}",
                   "-", PASS if int(hist.argmax()) == 0 else DIFFERS)


def p5_model() -> Outcome:
    """Why (the Gaussian model's mechanism): v_i^T g_B has variance v_i^T Sigma_B v_i, and
    the per-sample gradient covariance Sigma (an empirical Fisher) grows with the
    Hessian's eigenvalues, so v_1 carries the most variance. Measured: the largest
    |measured - predicted| of the variances of the 10 projections over the 400 batches,
    in bootstrap standard errors of the measured variance; PASS within 3."""
    table = gradient_alignment()
    z = np.abs(table["variance"] - table["predicted_variance"]) / table["variance_se"]
    return at_most(float(z.max()), 3.0)


def p5_lanczos() -> Outcome:
    """Exact curvature: the top eigenvalue of a 650-parameter classifier Hessian (digits,
    64 pixels x 10 classes + bias, at the exact optimum of J with lam = 1e-2) by Lanczos on
    exact Hessian-vector products against the dense eigh. Measured: relative difference."""
    data = digits(seed=0)
    sol = fit_softmax_regression(data.x_train, data.y_train, 1e-2, n_classes=10,
                                 method="newton-cg")
    values = [top_eigenpairs(sol.W, sol.b, data.x_train, data.y_train, 1e-2, "ce", k=1,
                             method=m).values[0] for m in ("dense", "lanczos")]
    return at_most(float(abs(values[1] - values[0]) / values[0]), 1e-8)


# ---- P6: PoF against SGD on phi ------------------------------------------------------------------
@lru_cache(maxsize=1)
def toy_comparison() -> dict[str, dict[str, np.ndarray]]:
    """P6_SEEDS seeds: pre-train the toy model, then P6_STEPS steps of SGD on phi (PoF with
    gamma = 0) and of PoF (gamma ~ U[0, 2]) from the same checkpoint; ``protocol.measure``
    of each, as arrays over seeds."""
    data = protocol.toy_data(0)
    net = protocol.network("toy", data)
    out: dict[str, dict[str, list]] = {"start": {}, "sgd-phi": {}, "pof": {}}
    with single_threaded_blas():
        for seed in range(P6_SEEDS):
            start = _model()[1] if seed == 0 else protocol.pretrain("toy", data, seed)
            results = {"start": start}
            for method in ("sgd-phi", "pof"):
                results[method] = protocol.post_train(method, net, start, data, P6_STEPS, seed)
            for name, ts in results.items():
                for key, value in protocol.measure(net, ts, data).items():
                    out[name].setdefault(key, []).append(value)
    return {name: {k: np.array(v) for k, v in d.items()} for name, d in out.items()}


def _paired_row(key: str, relative: bool = True) -> Outcome:
    table = toy_comparison()
    if table["start"]["train_error"].max() > 5.0:  # the checkpoint did not fit its data
        return Outcome(math.nan, "< 0", "-", FAIL)
    sgd, pof = table["sgd-phi"][key], table["pof"][key]
    if relative:
        pof, sgd = pof / sgd - 1.0, np.zeros_like(sgd)
    return _lower(paired(sgd, pof), "< 0 (paper)")


def _lower(cmp: Paired, expected: str) -> Outcome:
    """PASS when the mean difference is negative with t-test p < SIGNIFICANCE; a t-test that
    is undefined (differences without variance) is no evidence: DIFFERS, saying why."""
    if cmp.t_p is None:
        return Outcome(cmp.mean, expected, cmp.note, DIFFERS)
    significant = cmp.mean < 0 and cmp.t_p < SIGNIFICANCE
    return Outcome(cmp.mean, expected, f"p = {format_p(cmp.t_p)}", PASS if significant else DIFFERS)


def p6_train() -> Outcome:
    """PoF vs SGD on phi (500 steps each from one checkpoint, 5 seeds, paired): the top
    classifier-space Hessian eigenvalue on the training set, mean relative change
    (PoF / SGD - 1); their Fig. 5a: PoF lowers it. PASS when lower with paired t-test
    p < 0.05."""
    return _paired_row("eig_train")


def p6_test() -> Outcome:
    """Same runs: the top eigenvalue on the test set (their Fig. 5b), mean relative change."""
    return _paired_row("eig_test")


def p6_loss() -> Outcome:
    """Same runs: test loss, mean difference PoF - SGD (their Table 1: PoF improves the
    test performance). PASS when lower with p < 0.05."""
    return _paired_row("test_loss", relative=False)


def p6_norm() -> Outcome:
    """Same runs: is the flatter classifier space more than shrunken features? The top
    training eigenvalue scales with the squared feature norm, so the row measures the
    mean relative change of eig_train / feature_rms^2 (PoF vs SGD). PASS when lower with
    p < 0.05; the change of ||phi|| itself is in the reproduction's report."""
    table = toy_comparison()
    ratios = {m: table[m]["eig_train"] / table[m]["feature_rms"] ** 2 for m in ("sgd-phi", "pof")}
    return _lower(paired(np.zeros(P6_SEEDS), ratios["pof"] / ratios["sgd-phi"] - 1.0), "< 0")


def checks() -> list[Check]:
    return [
        Check("P1-quadratic", "exact line search (eq. 2) vs closed form ||g|| / (g^T H_B g) for a "
              "squared loss, 50 batches: max rel. difference", p1_quadratic),
        Check("P1-ce", "softmax CE line search, 50 batches: |slope at xi*| / ||g|| (xi* inside "
              "a 2000-point scan's sign change)", p1_ce),
        Check("P1-released", "released grid scheme vs the exact xi*: worst error in grid steps",
              p1_released),
        Check("P2-quadratic", "squared loss: |L_B(theta0 - 2 xi* g) - L_B(theta0)| / L_B(theta0), "
              "50 batches (gamma = 2 is the mirror point)", p2_quadratic),
        Check("P2-ce", "softmax CE: median (L_B(2 xi*) - L_B(0)) / (L_B(0) - L_B(xi*)) over 50 "
              "batches (the quadratic model says 0)", p2_ce),
        Check("P3-order", "effective loss eq. 9 vs exact J: log-log slope of the error at "
              "gamma = 0.01 .. 0.08 (second-order model: 3)", p3_order),
        Check("P3", "effective loss eq. 9 vs exact increment of J at gamma = 2: median rel. "
              "error over 50 batches", p3_effective_loss),
        Check("P3-eq10", "squared loss (eq. 6 exact): eq. 10 / eq. 9 second-order terms, median "
              "over batches (eq. 10 assumes min L_B = 0 along the line)", p3_eq10),
        Check("P4", "gamma = 0: PoF vs the training loop with the classifier frozen, 30 steps: "
              "max |difference| (bit-identical)", p4_sgd),
        Check("P4-gradient", "phi-gradient through the perturbed classifier (eq. 5) vs central "
              "differences: max rel. error", p4_gradient),
        Check("P5", "their Fig. 2a: share of 400 mini-batch gradients most aligned with the top "
              "Hessian eigenvector (of the top 10)", p5_alignment),
        Check("P5-model", "why: variances of v_i^T g_B (i <= 10) over the batches vs the Gaussian "
              "model's v_i^T Sigma_B v_i: max |difference| in standard errors", p5_model),
        Check("P5-lanczos", "top eigenvalue of a 650-parameter classifier Hessian: Lanczos on exact "
              "HVPs vs dense eigh, rel. difference", p5_lanczos),
        Check("P6-train", "toy, PoF vs SGD on phi (5 seeds, paired): relative change of the top "
              "classifier Hessian eigenvalue, training set (their Fig. 5a)", p6_train),
        Check("P6-test", "same runs: relative change of the top eigenvalue, test set (Fig. 5b)",
              p6_test),
        Check("P6-loss", "same runs: test loss PoF - SGD (their Table 1: lower)", p6_loss),
        Check("P6-norm", "same runs: relative change of eig_train / feature RMS^2 (flatter beyond "
              "shrunken features?)", p6_norm),
    ]
