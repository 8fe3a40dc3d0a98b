"""The ``laplace/`` group of a head file: the last-layer Laplace posterior of the head,
written by ``lastlayer head fit --laplace`` and read back by ``lastlayer head eval``.

The posterior (``lastlayer.engine.solvers.laplace.posterior``; MacKay 1992, Daxberger et al.
2021) is q(theta) = N(theta*, Lambda^-1), Lambda = Hn + P0, with theta* = (W, b) the head
itself (the file's ``W`` and ``b``), Hn = sum_i J_i^T A_i J_i the data's curvature and P0 =
diag(tau_w on the weights, tau_b on the biases). P = C q parameters, q = d + 1 with a bias
(else d), in the class-major order (c, j): j < d is W[c, j], j = d is b_c; ``order`` (P,)
gives the engine's index [vec(W) row by row; b] of each
(``lastlayer.engine.solvers.laplace.structures.engine_order``).

Attributes: ``structure`` ("full", "kron", "kfac"), ``loss``, ``tau_w``, ``tau_b`` (absent
without a bias), ``tau_w_map`` = 2 N lam (the prior whose mode the head is), ``prior``
("evidence": maximised, theta* held; "fixed": tau_w_map and --laplace-tau-b),
``log_evidence`` (absent where tau_b = 0), ``mode_residual`` ||grad log p(D, theta*)||,
``rows`` N, ``sum_loss`` sum_i loss_i(theta*), ``predictive`` ("probit" for ce, "gaussian"
for squared); for "evidence" also ``evidence_iterations``, ``evidence_converged`` and the
dataset ``evidence_gradient`` (dE / d log tau at the optimum).

Datasets: ``grad_sum`` (P,) sum_i grad loss_i(theta*) in the engine's order; the curvature,
prior-free, from which with (tau_w, tau_b) the posterior is rebuilt bit for bit:

* full: ``hessian`` (P, P) Hn;
* kron (squared loss, exact): ``gram`` (q, q) G = Phit^T Phit, Hn = I_C (x) 2 G;
* kfac: ``logit_hessian_sum`` (C, C) S_A = sum_i A_i and ``gram`` (q, q), Hn ~ S_A (x) G / N;

and the posterior at (tau_w, tau_b), for readers without this code (D = diag(tau_w ... tau_w,
tau_b), (q,)):

* full: ``precision_cholesky`` (P, P) lower L, Lambda = L L^T (gzip: half of it is zeros);
* kron: ``weight_covariance`` (q, q) K^-1, K = 2 G + D, Sigma = I_C (x) K^-1;
* kfac: ``eigvecs_a`` (C, C) Q_A, ``eigvecs_g`` (q, q) V (V^T G V diagonal, V^T D V = I),
  ``weights`` (C, q) w: Sigma = (Q_A (x) V) diag(vec w) (Q_A (x) V)^T.

Size: 2 P^2 doubles for "full" (26 MB for P = 1 290, the CNN features' 10 x 129), O(q^2 +
C^2) otherwise. Rebuilding a LastLayerLaplace from these arrays uses its private fields
(``_curv``, ``_grad_sum``): the engine has no public constructor from a curvature.
"""

from __future__ import annotations

import numpy as np

from lastlayer.engine.solvers.laplace.posterior import LastLayerLaplace
from lastlayer.engine.solvers.laplace.structures import (
    FullCurvature, KfacCurvature, KronCurvature, engine_order,
)

from .common import HeadUsageError

__all__ = ["write_laplace", "read_laplace", "laplace_summary", "laplace_rows", "GROUP"]

GROUP = "laplace"
CURVATURE = {"full": ("hessian",), "kron": ("gram",), "kfac": ("logit_hessian_sum", "gram")}


def write_laplace(f, la: LastLayerLaplace, prior: str, tau_w_map: float, evidence) -> None:
    """The group ``laplace/`` of the open HDF5 file ``f`` (module docstring)."""
    g = f.create_group(GROUP)
    c, d, bias = la.n_classes, la.n_features, la.b is not None
    curv, post = la._curv, la._post
    if la.structure == "full":
        g["hessian"] = curv.hn
        g.create_dataset("precision_cholesky", data=post.chol, compression="gzip",
                         compression_opts=1)
    elif la.structure == "kron":
        g["gram"] = curv.gram
        g["weight_covariance"] = post.k_inv
    else:
        g["logit_hessian_sum"], g["gram"] = curv.s_a, curv.gram
        g["eigvecs_a"], g["eigvecs_g"], g["weights"] = curv.q_a, post.v, post.w
    g["grad_sum"] = la._grad_sum
    g["order"] = engine_order(c, d, bias)
    attrs = {"structure": la.structure, "loss": la.loss, "tau_w": la.tau_w, "prior": prior,
             "tau_w_map": tau_w_map, "mode_residual": la.mode_residual, "rows": la.n_rows,
             "sum_loss": la.sum_loss, "predictive": "probit" if la.loss == "ce" else "gaussian"}
    if bias:
        attrs["tau_b"] = la.tau_b
    if not bias or la.tau_b > 0:
        attrs["log_evidence"] = la.log_evidence()
    if evidence is not None:
        attrs["evidence_iterations"] = int(evidence.iterations)
        attrs["evidence_converged"] = bool(evidence.converged)
        g["evidence_gradient"] = np.asarray(evidence.gradient, dtype=np.float64)
    for k, v in attrs.items():
        g.attrs[k] = v


def _array(g, name: str, shape: tuple, where: str) -> np.ndarray:
    if name not in g:
        raise HeadUsageError(f"{where}: no dataset {GROUP}/{name}")
    a = g[name][()]
    if a.shape != shape or a.dtype != np.float64 or not np.isfinite(a).all():
        raise HeadUsageError(f"{where}: {GROUP}/{name}: expected finite float64 of shape {shape}, "
                             f"got {a.dtype} {a.shape}")
    return a


def read_laplace(g, W: np.ndarray, b: np.ndarray | None, loss: str,
                 where: str) -> LastLayerLaplace:
    """The LastLayerLaplace of the head (W, b) from its group ``g`` (module docstring): the
    very posterior the fit had (the same arrays, the same factorisation). ``where`` names the
    file in errors."""
    try:
        structure, g_loss = str(g.attrs["structure"]), str(g.attrs["loss"])
        n, tau_w = int(g.attrs["rows"]), float(g.attrs["tau_w"])
        tau_b = float(g.attrs["tau_b"]) if b is not None else None
        sum_loss = float(g.attrs["sum_loss"])
    except KeyError as err:
        raise HeadUsageError(f"{where}: {GROUP}/ lacks the attribute {err}") from None
    if structure not in CURVATURE or g_loss != loss:
        raise HeadUsageError(f"{where}: {GROUP}/: structure {structure!r} for loss {g_loss!r} "
                             f"does not fit a {loss!r} head")
    W = np.ascontiguousarray(W, dtype=np.float64)
    b = None if b is None else np.asarray(b, dtype=np.float64)
    c, d = W.shape
    q = d + (b is not None)
    if structure == "full":
        curv = FullCurvature(_array(g, "hessian", (c * q, c * q), where), c, d, q)
    elif structure == "kron":
        curv = KronCurvature(_array(g, "gram", (q, q), where), c, d, q)
    else:
        curv = KfacCurvature(_array(g, "logit_hessian_sum", (c, c), where),
                             _array(g, "gram", (q, q), where), n, c, d, q)
    la = LastLayerLaplace.__new__(LastLayerLaplace)  # what __init__ sets, from the file
    la.loss, la.structure, la.W, la.b = loss, structure, W.copy(), None if b is None else b.copy()
    la.n_rows, la.n_classes, la.n_features, la.n_params = n, c, d, c * q
    la.tau_w, la.tau_b, la.sum_loss = tau_w, tau_b, sum_loss
    la._grad_sum, la._curv = _array(g, "grad_sum", (c * q,), where), curv
    try:
        return la.with_prior(tau_w, tau_b)  # the engine's checks of the taus, then the posterior
    except ValueError as err:
        raise HeadUsageError(f"{where}: {GROUP}/: {err}") from None


def laplace_summary(la: LastLayerLaplace, prior: str, tau_w_map: float, evidence=None) -> dict:
    """The numbers of the posterior for the summary table and the JSON, from a fitted
    LastLayerLaplace, its prior's name, tau_w_map and EvidenceOptimum (or None)."""
    bias = la.b is not None
    out = {"structure": la.structure, "parameters": la.n_params, "prior": prior,
           "tau_w": la.tau_w, "tau_b": la.tau_b if bias else None, "tau_w_map": tau_w_map,
           "log_evidence": la.log_evidence() if not bias or la.tau_b > 0 else None,
           "mode_residual": la.mode_residual}
    if evidence is not None:
        out["evidence_iterations"] = int(evidence.iterations)
        out["evidence_converged"] = bool(evidence.converged)
        out["evidence_at_bound"] = [bool(x) for x in evidence.at_bound]
    return out


def laplace_rows(s: dict) -> list[tuple[str, str]]:
    """Rows of the fit's summary table for ``laplace_summary``'s dict."""
    taus = f"tau_w = {s['tau_w']:.4g}" + (f", tau_b = {s['tau_b']:.4g}" if s["tau_b"] is not None
                                          else "")
    if s["prior"] == "evidence":
        how = (f"{s['evidence_iterations']} Newton steps"
               + ("" if s["evidence_converged"] else ", NOT converged")
               + (", at a bound" if any(s["evidence_at_bound"]) else ""))
        prior = f"{taus} (maximum of the evidence, {how})"
    else:
        prior = f"{taus} (fixed)"
    evidence = ("n/a (tau_b = 0: a flat bias prior)" if s["log_evidence"] is None
                else f"{s['log_evidence']:.6g} nats")
    return [("Laplace posterior", f"{s['structure']}, {s['parameters']:,} parameters"),
            ("Laplace prior", prior),
            ("Laplace tau_w of the MAP (2 N lam)", f"{s['tau_w_map']:.4g}"),
            ("Laplace log evidence", evidence),
            ("Laplace ||grad log p(D, theta*)||", f"{s['mode_residual']:.2e}")]
