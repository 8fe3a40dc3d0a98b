"""The checkers of the head exercises: ridge-head (an exact solver) and softmax-ce (a loss).

ridge-head is checked where its answer is exact: the gradient of J at the learner's W must
vanish (stationarity, measured relative to the gradient at W = 0), and W must agree with
``lastlayer.engine.solvers.exact.ridge``. When W is the minimiser for another lam, the
checker finds that lam from the stationarity condition, (1/N) (Phi W^T - Y)^T Phi + lam' W =
0, and names the slip (lam / N: the N of the mean convention left off the diagonal).
softmax-ce is checked against ``lastlayer.engine.losses.softmax_cross_entropy``, with
``lastlayer.engine.gradcheck.check_loss``, and on logits of size 1000, where an unstable exp
overflows.
"""

from __future__ import annotations

import numpy as np

from lastlayer.engine.gradcheck import check_loss, relative_error
from lastlayer.engine.gradcheck.cases import LAYER_TOL
from lastlayer.engine.losses import softmax_cross_entropy
from lastlayer.engine.solvers.exact.ridge import ridge, ridge_gradient

from .checking import (Check, Failed, Learner, LearnerError, hinted, ok, relation, within,
                       worst)

SOLVER_TOL = 1e-10  # a d x d solve of a well-conditioned system, in float64


# ---- ridge-head ---------------------------------------------------------------------------
RIDGE_CASES = [(40, 6, 3, 0.1), (8, 12, 2, 0.05), (30, 4, 2, 0.0)]  # N, d, C, lam


def ridge_problem(i: int):
    """Phi (N, d), Y (N, C) of case i: a linear signal plus noise, and lam."""
    n, d, c, lam = RIDGE_CASES[i]
    rng = np.random.default_rng(50 + i)
    phi = rng.standard_normal((n, d))
    y = phi @ rng.standard_normal((d, c)) + 0.5 * rng.standard_normal((n, c))
    return phi, y, lam


def _where(i: int) -> str:
    n, d, c, lam = RIDGE_CASES[i]
    return f"N {n}, d {d}, C {c}, lam {lam:g}"


def _fitted(learner: Learner, i: int):
    """The learner's W for case i, after checking it: (C, d), float64, finite, inputs kept."""
    def fit():
        phi, y, lam = ridge_problem(i)
        before = (phi.copy(), y.copy())
        W = learner.call("fit", learner.get("fit"), phi, y, lam)
        n, d = phi.shape
        c = y.shape[1]
        if not (np.array_equal(phi, before[0]) and np.array_equal(y, before[1])):
            raise Failed("fit modified Phi or Y in place; leave the inputs as they are")
        shape = getattr(W, "shape", None)
        if shape != (c, d):
            why = " (did you return W^T, of shape (d, C)?)" if shape == (d, c) else ""
            raise Failed(f"fit returned {type(W).__name__} of shape {shape} for {_where(i)}; "
                         f"expected W of shape (C, d) = {(c, d)}{why}")
        if W.dtype != np.float64:
            raise Failed(f"fit returned {W.dtype} for float64 inputs; expected float64")
        if not np.all(np.isfinite(W)):
            raise Failed(f"fit returned W with NaN or Inf entries for {_where(i)}")
        return W
    return learner.once(("ridge", i), fit)


def effective_lam(W, phi, y) -> float | None:
    """The lam' >= 0 for which W is the ridge solution, or None if there is none: lam' from
    the stationarity condition (least squares over its entries), then W checked against
    ``ridge`` at lam'."""
    g = (phi @ W.T - y).T @ phi / len(phi)  # (1/N) R^T Phi; at a minimiser g + lam' W = 0
    ww = float(np.vdot(W, W))
    if ww == 0.0:
        return None
    lam = -float(np.vdot(g, W)) / ww
    lam = 0.0 if abs(lam) <= 1e-12 else lam
    if lam < 0 or relative_error(W, ridge(phi, y, lam).W) > 1e-8:
        return None
    return lam


def diagnose(W, phi, y, lam: float) -> str:
    """What a wrong W is, in terms of the lam it minimises J for."""
    n = len(phi)
    found = effective_lam(W, phi, y)
    if found is None:
        return ("your W minimises J for no lam: check the matrix of the system you solve "
                "(the d x d one in W^T) and its right-hand side")
    if lam == 0.0:
        return f"your W minimises J for lam = {found:.4g}, but lam = 0: what is on the diagonal?"
    ratio = found / lam
    named = [(1 / n, "lam / N: put N lam on the diagonal (the loss is a mean over the N rows, "
                     "the penalty is not)"),
             (n, "N lam: lam looks multiplied by N once too often"),
             (2.0, "2 lam: the 2 of the penalty's gradient 2 lam W cancels with the 2 of (2/N)"),
             (0.5, "lam / 2: the 2 of the penalty's gradient 2 lam W cancels with the 2 of (2/N)"),
             (0.0, "lam = 0: your W ignores the penalty")]
    for value, text in named:
        if abs(ratio - value) <= 1e-6 * max(value, 1e-3):
            return f"your W minimises J for {text}"
    return f"your W minimises J for lam = {found:.4g} instead of {lam:g} ({ratio:.4g} times lam)"


def _ridge_shape(learner: Learner):
    for i in range(len(RIDGE_CASES)):
        _fitted(learner, i)
    return ok("(C, d), float64, finite, for N > d, N < d and lam = 0")


def _ridge_stationary(learner: Learner):
    errors, hints = [], {}
    for i in range(len(RIDGE_CASES)):
        W = _fitted(learner, i)
        phi, y, lam = ridge_problem(i)
        at_zero = float(np.linalg.norm(ridge_gradient(np.zeros_like(W), phi, y, lam)))
        errors.append((float(np.linalg.norm(ridge_gradient(W, phi, y, lam))) / at_zero, i))
        hints[i] = diagnose(W, phi, y, lam) if errors[-1][0] > SOLVER_TOL else None
    error, i = worst(errors)
    return within(error, SOLVER_TOL, "relative gradient norm", hint=hinted(_where(i), hints[i]),
                  note=f"||dJ/dW|| at your W over ||dJ/dW|| at W = 0, {len(RIDGE_CASES)} "
                       f"problems")


def _ridge_engine(learner: Learner):
    errors = []
    for i in range(len(RIDGE_CASES)):
        phi, y, lam = ridge_problem(i)
        errors.append((relative_error(_fitted(learner, i), ridge(phi, y, lam).W), i))
    error, i = worst(errors)
    return within(error, SOLVER_TOL, hint=f"worst for {_where(i)}",
                  note=f"{len(RIDGE_CASES)} problems")


RIDGE_HEAD = [
    Check("fit returns W", _ridge_shape),
    Check("stationarity: dJ/dW = 0 at your W", _ridge_stationary),
    Check("W against lastlayer.engine.solvers.exact.ridge", _ridge_engine),
]


# ---- softmax-ce ---------------------------------------------------------------------------
CE_CASES = [((5, 4), 1.0), ((1, 3), 1.0), ((6, 10), 3.0)]  # logits shape, scale
LARGE = ((4, 5), 1000.0)
STABLE_TOL = 1e-10  # logits of size 1000: the row maximum cancels to ~1e-13 relative


def ce_problem(shape, scale: float, seed: int):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal(shape), rng.integers(0, shape[1], shape[0])


def _ce(learner: Learner, logits, labels):
    """(loss, dlogits) of the learner's function, after checking them."""
    before = logits.copy()
    out = learner.call("softmax_cross_entropy", learner.get("softmax_cross_entropy"),
                       logits, labels)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise Failed(f"softmax_cross_entropy must return (loss, dlogits), got {type(out).__name__}")
    loss, d = out
    if not np.array_equal(logits, before):
        raise Failed("softmax_cross_entropy modified the logits in place")
    if np.ndim(loss) != 0:
        raise Failed(f"softmax_cross_entropy returned a loss of shape {np.shape(loss)}; expected "
                     f"one number, the mean over the rows")
    if getattr(d, "shape", None) != logits.shape or d.dtype != logits.dtype:
        raise Failed(f"softmax_cross_entropy returned dlogits of shape {getattr(d, 'shape', None)} "
                     f"and dtype {getattr(d, 'dtype', None)}; expected {logits.shape}, "
                     f"{logits.dtype}")
    return float(loss), d


def _mean_hint(got, want, n: int) -> str | None:
    text = relation(got, want)
    if text and n > 1 and text == f"yours is {n:.4g} times the right one":
        return text + " (a sum over the rows, not the mean?)"
    return text


def _ce_loss(learner: Learner):
    errors, hints = [], {}
    for k, (shape, scale) in enumerate(CE_CASES):
        logits, labels = ce_problem(shape, scale, 60 + k)
        loss, _ = _ce(learner, logits, labels)
        want, _ = softmax_cross_entropy(logits, labels)
        where = f"logits {shape} of scale {scale:g}"
        errors.append((abs(loss - want) / abs(want), where))
        hints[where] = _mean_hint(np.array(loss), np.array(want), shape[0])
    error, where = worst(errors)
    return within(error, 1e-12, hint=hinted(where, hints[where]),
                  note="against lastlayer.engine.losses.softmax_cross_entropy, batches of 5, 1 and 6")


def _ce_gradient(learner: Learner):
    errors, hints = [], {}
    fn = learner.get("softmax_cross_entropy")
    for k, (shape, scale) in enumerate(CE_CASES):
        logits, labels = ce_problem(shape, scale, 70 + k)
        _, d = _ce(learner, logits, labels)
        where = f"logits {shape} of scale {scale:g}"
        errors.append((check_loss(lambda z, t: learner.call("softmax_cross_entropy", fn, z, t),
                                  logits, labels), where))
        right = softmax_cross_entropy(logits, labels)[1]
        hints[where] = ("your dlogits is the right one, but not the gradient of your loss: "
                        "see the loss line" if relative_error(d, right) <= 1e-12
                        else _mean_hint(d, right, shape[0]))
    error, where = worst(errors)
    return within(error, LAYER_TOL, hint=hinted(where, hints[where]),
                  note="central differences of your loss (check_loss)")


def _ce_large(learner: Learner):
    logits, labels = ce_problem(*LARGE, 80)
    try:
        loss, d = _ce(learner, logits, labels)
    except LearnerError as err:
        if "FloatingPointError" not in str(err):
            raise
        raise Failed(f"{err}; subtract each row's maximum before exp, and take log p as "
                     f"z - max - log(sum exp(z - max))") from None
    want, dwant = softmax_cross_entropy(logits, labels)
    error = max(abs(loss - want) / abs(want), relative_error(d, dwant))
    small, small_labels = ce_problem(*CE_CASES[0], 60)
    loss_small, d_small = _ce(learner, small, small_labels)
    want_small, dwant_small = softmax_cross_entropy(small, small_labels)
    right_when_small = max(abs(loss_small - want_small) / abs(want_small),
                           relative_error(d_small, dwant_small)) <= STABLE_TOL
    return within(error, STABLE_TOL, "relative error of loss and gradient",
                  hint="finite but inaccurate at this size: compute log p as z - max - "
                       "log(sum exp(z - max)), not log(softmax)" if right_when_small
                  else "wrong on small logits already: see the lines above",
                  note=f"logits {LARGE[0]} of size {LARGE[1]:g}, NumPy overflow an error")


SOFTMAX_CE = [
    Check("loss", _ce_loss),
    Check("gradient", _ce_gradient),
    Check("large logits", _ce_large),
]
