"""The evidence of the last-layer Laplace (``posterior``), maximised over its prior precisions.

With theta* fixed (post-hoc, as laplace-torch's ``optimize_prior_precision``), groups k
(0: the C d weights, 1: the C biases) of n_k parameters, s_k = ||theta*_k||^2, t_k their
prior precision, E_k = I_C (x) diag(group k):

    E(t) = const - (1/2) sum_k t_k s_k + (1/2) sum_k n_k log t_k - (1/2) log det Lambda(t),
    dE/dt_k = -s_k / 2 + n_k / (2 t_k) - tr(Sigma E_k) / 2,
    d2E/dt_k dt_l = -delta_kl n_k / (2 t_k^2) + tr(Sigma E_k Sigma E_l) / 2,

the traces in closed form from each structure's factors. In u = log t, E is concave:
-(1/2) e^u s and (n/2) u are, and log det(H + sum_k e^(u_k) E_k) is convex in u (its second
derivative along h is sum_k h_k^2 tr(A_k) - tr((sum_k h_k A_k)^2) >= 0 with A_k =
Lambda^-1/2 t_k E_k Lambda^-1/2, which sum to I with H's part: Kadison's inequality for the
unital positive map x -> sum_k x_k A_k). It is strictly concave where every s_k > 0, so its
maximum is unique (with an s_k = 0 it may lie at a bound), and ``maximize_evidence`` finds
it by Newton's method in log space with the exact gradient and Hessian, a backtracking
(Armijo) line search and the box ``bounds`` (a coordinate at a bound whose gradient points
outwards is held there). At an interior optimum dE/du_k = 0 is MacKay's fixed point
("Bayesian interpolation", 1992) t_k s_k = gamma_k = n_k - t_k tr(Sigma E_k), the number of
well-determined parameters of group k. Modes: "separate" (t_w, t_b: 2-D), "scalar" (t_w =
t_b = t: 1-D), "weights" (t_w alone, t_b held); without a bias all three are the 1-D search
over t_w.

Depends on nothing of ``posterior``: ``la`` is any object with its attributes (W, b, tau_w,
tau_b, the structure's ``traces``, ``log_evidence`` and ``with_prior``), so the posterior
imports this module and not the other way round.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..._checks import positive_int, real_number

__all__ = ["EvidenceOptimum", "MODES", "maximize_evidence", "evidence_derivatives"]

MODES = ("separate", "scalar", "weights")


class EvidenceOptimum(NamedTuple):
    tau_w: float
    tau_b: float | None
    log_evidence: float
    gradient: np.ndarray  # dE / d log t of the searched variables at the optimum
    iterations: int
    converged: bool  # |gradient| <= tol on the coordinates not held at a bound
    at_bound: tuple  # per searched variable: held at a bound


def evidence_derivatives(la):
    """(E, g, H) of the log evidence in the log prior precisions of the groups (weights;
    bias): g_k = t_k dE/dt_k, H_kl = t_k t_l d2E/dt_k dt_l + delta_kl g_k."""
    bias = la.b is not None
    n = np.array([la.n_classes * la.n_features] + ([la.n_classes] if bias else []), float)
    s = np.array([float((la.W * la.W).sum())] + ([float(la.b @ la.b)] if bias else []))
    t = np.array([la.tau_w] + ([la.tau_b] if bias else []))
    tr, q = la._post.traces()
    d1 = -s / 2 + n / (2 * t) - tr / 2
    d2 = -np.diag(n / (2 * t * t)) + q / 2
    g = t * d1
    return la.log_evidence(), g, np.outer(t, t) * d2 + np.diag(g)


def _tying(la, mode):
    """(tie (k, v), fixed log t (k,)): log t = fixed + tie @ x for the searched x (v,)."""
    if la.b is None:
        return np.ones((1, 1)), np.zeros(1)
    if mode == "separate":
        return np.eye(2), np.zeros(2)
    if mode == "scalar":
        return np.ones((2, 1)), np.zeros(2)
    return np.array([[1.0], [0.0]]), np.array([0.0, np.log(la.tau_b)])


def maximize_evidence(la, mode: str = "separate", bounds=(1e-8, 1e8), max_iter: int = 100,
                      tol: float | None = None) -> EvidenceOptimum:
    """Maximise ``la.log_evidence()`` over the prior precisions (module docstring), theta*
    fixed, tau in [bounds[0], bounds[1]]; ``tol`` on |dE/d log tau| (default 1e-10 P).
    Starts from la's own precisions (their geometric mean for "scalar")."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
        raise ValueError(f"bounds: expected (low, high), got {bounds!r}")
    lo = real_number(bounds[0], "bounds[0]", minimum=0, open_minimum=True)
    hi = real_number(bounds[1], "bounds[1]", minimum=lo, open_minimum=True)
    max_iter = positive_int(max_iter, "max_iter")
    tol = 1e-10 * la.n_params if tol is None else real_number(tol, "tol", minimum=0,
                                                                open_minimum=True)
    if la.b is not None and la.tau_b == 0:
        raise ValueError("tau_b: the evidence needs tau_b > 0 (start from a proper prior)")
    tie, fixed = _tying(la, mode)
    free = tie.sum(axis=0) > 0
    start = np.log([la.tau_w] + ([la.tau_b] if la.b is not None else []))
    x = np.clip(np.linalg.lstsq(tie, start - fixed, rcond=None)[0], np.log(lo), np.log(hi))

    def evaluate(x):
        t = np.exp(fixed + tie @ x)
        cand = la.with_prior(t[0], t[1] if la.b is not None else None)
        e, g, h = evidence_derivatives(cand)
        return cand, e, tie.T @ g, tie.T @ h @ tie

    cand, e, g, h = evaluate(x)
    held = np.zeros(len(x), bool)
    for it in range(max_iter + 1):
        held = ((x <= np.log(lo)) & (g < 0)) | ((x >= np.log(hi)) & (g > 0))
        act = free & ~held
        if np.abs(g[act]).max(initial=0.0) <= tol or it == max_iter:
            break
        ha, ga = h[np.ix_(act, act)], g[act]
        try:
            np.linalg.cholesky(-ha)
            step_a = -np.linalg.solve(ha, ga)
        except np.linalg.LinAlgError:  # not negative definite in rounding: scaled ascent
            step_a = ga / np.maximum(np.abs(np.diag(ha)), 1.0)
        step = np.zeros_like(x)
        step[act] = step_a
        step *= min(1.0, 10.0 / np.abs(step).max())  # at most a factor e^10 per iteration
        t = 1.0
        while True:
            x_new = np.clip(x + t * step, np.log(lo), np.log(hi))
            new = evaluate(x_new)
            gain = float(g @ (x_new - x))
            if new[1] >= e + 1e-4 * gain:
                break
            flat = abs(gain) <= 1e-13 * max(1.0, abs(e))
            if flat and np.abs(new[2][act]).max() < np.abs(ga).max():
                break  # E is flat to rounding here: the step lowers the gradient
            t /= 2
            if t < 1e-10:
                break
        if t < 1e-10:
            break
        x = x_new
        cand, e, g, h = new
    act = free & ~held
    return EvidenceOptimum(cand.tau_w, cand.tau_b, e, g, it,
                           bool(np.abs(g[act]).max(initial=0.0) <= tol), tuple(held.tolist()))
