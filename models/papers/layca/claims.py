"""Ledger rows C1-C7: Layca and layer rotation (Carbonnelle & De Vleeschouwer), docs/claims.md
section C.

C1-C4 are exact properties of the transform (``lastlayer.engine.optim.layca``), checked in
float64 to rounding. C5-C7 are the paper's experimental observations, run as small versions
of ``lastlayer reproduce layca`` (seconds each). For those, FAIL means the protocol itself
was not met (a run did not fit its training set) and DIFFERS-FROM-PAPER means it was met but
the paper's observation does not show at this scale; the measured numbers say by how much
either way.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from lastlayer.engine import Dense, Network, ReLU, optim, stream
from lastlayer.engine.losses import softmax_cross_entropy
from lastlayer.engine.optim.layca import layca
from lastlayer.engine.training.data import digits

from ...experiment import single_threaded_blas
from ...ledger import DIFFERS, FAIL, PASS, Check, Outcome, at_most
from . import protocol
from .method import METHODS, uniformity

CHECK_SEEDS = 2
TOY_LAYERS = (0, 3, 6, 9)  # hidden layers trained alone for C5 (the reproduction: all ten)
TOY_CAP = 600
ITERATIONS = 300  # updates of every C6 / C7 run (the reproduction: 800)
GAP_TOLERANCE = 0.015  # C7: adaptive vs non-adaptive test accuracy, as a fraction
UNIFORM_ENOUGH = 0.5  # C6: min / max over layers of the rotation angle


# ---- C1-C4: the transform ---------------------------------------------------------------------
def _mlp() -> Network:
    return Network([Dense(6, 8, bias=False), ReLU(), Dense(8, 8, bias=False), ReLU(),
                    Dense(8, 3, bias=False)])


def _gradients(net, params, seed: int, loss_scale: float):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)
    out, caches = net.forward(params, x, train=True)
    return net.backward(params, caches, loss_scale * softmax_cross_entropy(out, y)[1])[1]


def c1_norms() -> Outcome:
    """1000 Layca steps (SGD and Adam directions, rho = 0.7, alpha = -0.3) on a dense and a
    convolution kernel with random steps of scale 1e-3 .. 1e3, applied both ways: the fused
    step in place (the training loop's path, the default) and the unfused reference through
    ``update`` + ``apply_updates``: the largest | ||w_t|| / ||w_0|| - 1 | over all steps,
    tensors and both paths."""
    worst = 0.0
    for fused in (True, False):
        for base in (optim.identity(), optim.scale_by_adam()):
            rng = np.random.default_rng(1)
            params = [{"W": rng.standard_normal((5, 7))}, {"W": rng.standard_normal((4, 3, 3, 3))}]
            mask = [{"W": True}, {"W": True}]
            opt = layca(base, 0.7, -0.3, mask=mask, layer_index=optim.kernel_layer_index(mask),
                        fused=fused)
            state = opt.init(params)
            norms0 = [np.linalg.norm(p["W"]) for p in params]
            for _ in range(1000):
                grads = [{"W": 10.0 ** rng.uniform(-3, 3) * rng.standard_normal(p["W"].shape)}
                         for p in params]
                if fused:
                    state = opt.update_in_place(grads, state, params)
                else:
                    updates, state = opt.update(grads, state, params)
                    params = optim.apply_updates(params, updates)
                worst = max(worst, *(abs(np.linalg.norm(p["W"]) / n - 1)
                                     for p, n in zip(params, norms0)))
    return at_most(worst, 1e-14)


def c2_angle() -> Outcome:
    """Angle between w before and after each of 20 steps on a 3-layer MLP (rho = 0.2, alpha
    = -0.6, so rho_l differs per layer), SGD and momentum directions, loss multiplied by
    1e-6, 1 and 1e6: the largest |angle - arctan(rho_l)| / arctan(rho_l)."""
    net = _mlp()
    rho, alpha = 0.2, -0.6
    expected = np.arctan(rho * optim.rate_multipliers(alpha, 3))
    worst = 0.0
    for base in (optim.identity(), optim.scale_by_momentum(0.9)):
        for scale in (1e-6, 1.0, 1e6):
            params = net.init(np.random.default_rng(2))
            mask = optim.kernel_mask(net, params)
            opt = layca(base, rho, alpha, mask=mask, layer_index=optim.kernel_layer_index(mask))
            state = opt.init(params)
            for t in range(20):
                updates, state = opt.update(_gradients(net, params, t, scale), state, params)
                new = optim.apply_updates(params, updates)
                angles = [optim.rotation_angle(params[i]["W"], new[i]["W"]) for i in (0, 2, 4)]
                worst = max(worst, float(np.max(np.abs(angles - expected) / expected)))
                params = new
    return at_most(worst, 1e-10)


def c3_multipliers() -> Outcome:
    """Section 5.1 multipliers vs a direct transcription of the formula for alpha in
    {-1, -0.8, -0.3, 0, 0.3, 0.8, 1} and L in {1, 2, 5, 11} (0^0 = 1 at alpha = +-1), and
    through the transform: tan(step angle) / rho of every layer of a 5-layer MLP (angle 0
    for a multiplier 0). Measured: the largest relative error (absolute for zeros). The
    formula part is exact to ~1e-16; the angles, measured on params + updates, carry an
    absolute error ~1e-16 rad, i.e. ~1e-12 relative at the smallest rate (0.2^5 rho)."""
    worst = 0.0
    alphas = (-1.0, -0.8, -0.3, 0.0, 0.3, 0.8, 1.0)
    for alpha in alphas:
        for n in (1, 2, 5, 11):
            got = optim.rate_multipliers(alpha, n)
            for i in range(n):
                if n == 1:
                    want = 1.0
                elif alpha > 0:
                    want = math.pow(1 - alpha, 5 * (n - 1 - i) / (n - 1))
                else:
                    want = math.pow(1 + alpha, 5 * i / (n - 1))
                worst = max(worst, abs(got[i] - want) / (want if want else 1.0))
    net = Network([Dense(6, 8, bias=False), ReLU()] + [Dense(8, 8, bias=False), ReLU()] * 3
                  + [Dense(8, 3, bias=False)])
    rho = 0.3
    for alpha in alphas:
        params = net.init(np.random.default_rng(3))
        mask = optim.kernel_mask(net, params)
        opt = optim.layca_sgd(rho, alpha, mask=mask, layer_index=optim.kernel_layer_index(mask))
        rng = np.random.default_rng(4)
        grads = [{k: rng.standard_normal(v.shape) for k, v in p.items()} for p in params]
        updates, _ = opt.update(grads, opt.init(params), params)
        new = optim.apply_updates(params, updates)
        for k, want in enumerate(optim.rate_multipliers(alpha, 5)):
            got = math.tan(optim.rotation_angle(params[2 * k]["W"], new[2 * k]["W"])) / rho
            worst = max(worst, abs(got - want) / (want if want else 1.0))
    return at_most(worst, 1e-10)


def c4_degenerate() -> Outcome:
    """Layca (SGD direction) fed a zero step, all-NaN, all-Inf, partly NaN/Inf, tiny
    (||s|| <= eps) and parallel-to-w steps. Measured: the number of violations of (a) every
    weight finite after every step, (b) a zero step changes nothing (bit for bit), (c) the
    state's counters equal the injected non-finite entries and zero steps."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 5))
    params = [{"W": w}]
    mask = [{"W": True}]
    opt = optim.layca_sgd(0.5, mask=mask, layer_index=[{"W": 0}])
    state = opt.init(params)
    partial = rng.standard_normal((4, 5))
    partial[0, :3] = [np.nan, np.inf, -np.inf]
    cases = [  # (step, non-finite entries, zero step)
        (np.zeros((4, 5)), 0, True), (np.full((4, 5), np.nan), 20, True),
        (np.full((4, 5), np.inf), 20, True), (partial, 3, False),
        (np.full((4, 5), 1e-9), 0, True), (None, 0, True),  # None: 3 w, parallel to w
    ]
    violations = 0
    for step, n_bad, zero in cases:
        s = 3.0 * params[0]["W"] if step is None else step
        before = state
        updates, state = opt.update([{"W": s}], state, params)
        new = optim.apply_updates(params, updates)
        violations += int(not np.all(np.isfinite(new[0]["W"])))
        violations += int(zero and not np.array_equal(new[0]["W"], params[0]["W"]))
        violations += int(state.nonfinite[0]["W"] - before.nonfinite[0]["W"] != n_bad)
        violations += int(state.zero_steps[0]["W"] - before.zero_steps[0]["W"] != int(zero))
        params = new
    return Outcome(violations, 0, 0, PASS if violations == 0 else FAIL)


# ---- C5: one layer trained alone -----------------------------------------------------------------
@lru_cache(maxsize=1)
def _toy() -> tuple[np.ndarray, np.ndarray]:
    """(held-out accuracy, training accuracy), each (CHECK_SEEDS, len(TOY_LAYERS))."""
    test = np.zeros((CHECK_SEEDS, len(TOY_LAYERS)))
    fit = np.zeros_like(test)
    with single_threaded_blas():
        for seed in range(CHECK_SEEDS):
            net, data = protocol.toy_net(), protocol.toy_data(seed)
            params = net.init(stream(seed, "init"))
            for j, k in enumerate(TOY_LAYERS):
                test[seed, j], fit[seed, j], _ = protocol.train_one_layer(
                    net, params, data, k, cap=TOY_CAP, seed=seed)
    return test, fit


def _noise(acc: np.ndarray) -> float:
    """Standard error of a difference of two layers' seed means (pooled over layers)."""
    return float(math.sqrt(2 * acc.var(axis=0, ddof=1).mean() / acc.shape[0]))


def c5_spread() -> Outcome:
    """Their Section 3 toy (11-layer MLP, 10 digits per class, one hidden layer trained
    alone to 100 % training accuracy), hidden layers 0, 3, 6, 9, 2 seeds: best minus worst
    mean held-out accuracy over layers. PASS above 3 standard errors of a difference."""
    test, fit = _toy()
    mean = test.mean(axis=0)
    spread, tol = float(mean.max() - mean.min()), 3 * _noise(test)
    if fit.min() < 1.0:
        return Outcome(spread, "> 0", tol, FAIL)
    return Outcome(spread, "> 0 (layer matters)", tol, PASS if spread > tol else DIFFERS)


def c5_trend() -> Outcome:
    """Same runs: mean held-out accuracy of hidden layer 0 minus that of layer 9 (their
    Fig. 1a: accuracy degrades with the depth of the trained layer). PASS above 3 standard
    errors."""
    test, fit = _toy()
    mean = test.mean(axis=0)
    drop, tol = float(mean[0] - mean[-1]), 3 * _noise(test)
    if fit.min() < 1.0:
        return Outcome(drop, "> 0", tol, FAIL)
    return Outcome(drop, "> 0 (first layers best)", tol, PASS if drop > tol else DIFFERS)


# ---- C6: rotation at alpha = 0 -----------------------------------------------------------------------
@lru_cache(maxsize=1)
def _rotation() -> dict[str, float]:
    """Mean over seeds of the rotation uniformity (``method.uniformity``) for SGD and Layca."""
    data = digits(seed=0)
    out = {}
    with single_threaded_blas():
        for kind in ("sgd", "layca"):
            runs = [protocol.end_to_end("sgd", kind == "layca", 0.0, data, seed, ITERATIONS)
                    for seed in range(CHECK_SEEDS)]
            out[kind] = float(np.mean([uniformity(r["final_rotation"]) for r in runs]))
    return out


def c6_layca() -> Outcome:
    """8-layer MLP on digits, Layca (SGD direction, rho = 3^-3, alpha = 0), 300 updates,
    2 seeds: min / max over layers of the rotation angle since initialisation (1 = all
    layers rotated equally; their Fig. 3). PASS at >= 0.5."""
    u = _rotation()["layca"]
    return Outcome(u, "~ 1", f">= {UNIFORM_ENOUGH}", PASS if u >= UNIFORM_ENOUGH else DIFFERS)


def c6_sgd() -> Outcome:
    """Same network, plain SGD (lr 0.1): its rotation uniformity, which their Fig. 3 shows
    below Layca's (gradient propagation makes layers rotate at different rates)."""
    u = _rotation()
    return Outcome(u["sgd"], f"< Layca's {u['layca']:.3g}", "-",
                   PASS if u["sgd"] < u["layca"] else DIFFERS)


# ---- C7: adaptive methods ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _adaptive() -> dict[str, dict]:
    """Adaptive minus non-adaptive mean test accuracy per pair, with and without Layca."""
    data = digits(seed=0)
    out = {}
    with single_threaded_blas():
        for kind in ("plain", "layca"):
            accuracy = {m: np.array([protocol.end_to_end(m, kind == "layca", 0.0, data, seed,
                                                         ITERATIONS)["test_accuracy"]
                                     for seed in range(CHECK_SEEDS)]) for m in METHODS}
            out[kind] = protocol.pair_gaps(accuracy)
    return out


def c7_with_layca() -> Outcome:
    """8-layer MLP on digits, 300 updates, 2 seeds, with Layca: the largest |test accuracy
    of Adam / RMSprop / Adagrad minus that of SGD_AMom / SGD / SGD| (their Section 6.2: the
    curves become indistinguishable). PASS within 1.5 percentage points."""
    gap = max(abs(v) for v in _adaptive()["layca"].values())
    return Outcome(gap, 0.0, GAP_TOLERANCE, PASS if gap <= GAP_TOLERANCE else DIFFERS)


def c7_without_layca() -> Outcome:
    """Same runs without Layca: the largest (adaptive minus non-adaptive) test accuracy over
    the three pairs. Their Fig. 4 (left, after Wilson et al. 2017): every adaptive method
    clearly below its equivalent. PASS below -1.5 percentage points (the tolerance within
    which C7 calls two methods similar)."""
    gap = max(_adaptive()["plain"].values())
    return Outcome(gap, "< 0", -GAP_TOLERANCE, PASS if gap < -GAP_TOLERANCE else DIFFERS)


def checks() -> list[Check]:
    return [
        Check("C1", "Layca keeps every kernel on the sphere of its initial norm: max "
              "| ||w_t|| / ||w_0|| - 1 | over 1000 steps (SGD and Adam directions; fused in place "
              "and unfused)", c1_norms),
        Check("C2", "one Layca step rotates w by arctan(rho_l), loss scaled by 1e-6, 1, 1e6: "
              "max relative angle error", c2_angle),
        Check("C3", "layer-wise rates (Section 5.1) incl. alpha = -1, 0, 1 and L = 1, and "
              "tan(step angle) / rho per layer: max relative error", c3_multipliers),
        Check("C4", "zero / NaN / Inf / tiny / parallel steps: non-finite weights, changes "
              "on zero steps, miscounted events (violations)", c4_degenerate),
        Check("C5", "Section 3 toy, one layer trained alone: best - worst held-out accuracy "
              "over hidden layers 0, 3, 6, 9 (fraction)", c5_spread),
        Check("C5-trend", "Section 3 toy: held-out accuracy of hidden layer 0 - layer 9 "
              "(their Fig. 1a: degrades with depth)", c5_trend),
        Check("C6", "alpha = 0, Layca: rotation angle min / max over the 8 layers (their Fig. 3)",
              c6_layca),
        Check("C6-sgd", "alpha = 0, SGD: rotation angle min / max over the 8 layers", c6_sgd),
        Check("C7", "with Layca: max |adaptive - non-adaptive| test accuracy (Adam/SGD_AMom, "
              "RMSprop/SGD, Adagrad/SGD; Section 6.2)", c7_with_layca),
        Check("C7-without", "without Layca: max (adaptive - non-adaptive) test accuracy "
              "(their Fig. 4 left: every adaptive method worse)", c7_without_layca),
    ]
