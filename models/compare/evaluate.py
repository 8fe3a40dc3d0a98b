"""What ``lastlayer compare`` measures of one trained network, all in float64 on the
features of its last layer.

Every head of ``strategies`` is, at inference, an affine map of (possibly normalised)
features: logits z = phi W^T + b, with phi the last layer's input (Dense, simplex ETF) or
its L2-normalised input x / (||x|| + eps) (Hadamard: W = alpha Q). ``linear_head`` reads W
and b back through the layer's own forward pass and checks that phi W^T + b reproduces the
network's logits (to 1e-9 relative in float64, 1e-4 in float32) before anything is measured.

Per network, on the test set: error (%), NLL, ECE (15 equal-width bins) and Brier score,
three ways (``VARIANTS``):

* "plain": softmax(z);
* "ts": temperature scaling, T fitted on the held-out validation rows by the exact 1-D
  minimisation of their NLL (Guo et al. 2017; ``lastlayer.engine.solvers.diagnostics.calibration``);
* "laplace": the last-layer Laplace predictive (probit approximation, MacKay 1992) around
  (W, b) with the Hessian of the summed training CE (``lastlayer.engine.solvers.LastLayerLaplace``,
  the full matrix: C (d + 1) = 650 parameters); prior precisions tau_w (weights) and tau_b
  (bias) chosen by the closed-form Laplace evidence, the MAP kept fixed (post-hoc, as
  laplace-torch does);
* "laplace-val": the same posterior with one prior precision tau_w = tau_b = tau chosen on
  the validation rows instead: the tau of ``VAL_TAUS`` (log-spaced) with the lowest
  validation NLL of the probit predictive, the first on a tie (Laplace Redux's "gridsearch").

Deviation where it acts: the fixed heads' W = alpha Q (Hadamard) and W (ETF) were never
trained, so (W, b) is not a mode of J there; the Laplace is centred on it all the same,
which is what a user applying it to such a network gets.

And two properties of the head and its features, the same for the three variants:
lambda_max, the largest eigenvalue of the Hessian of the mean training CE in (W, b) (lam =
0; Lanczos, ``lastlayer.engine.solvers.top_eigenpairs``), and NC1 = Tr(Sigma_W Sigma_B^+) /
C of the training features (Papyan et al. 2020;
``lastlayer.engine.solvers.diagnostics.neural_collapse``).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from lastlayer.engine import Dense, L2Normalize
from lastlayer.engine.losses import softmax
from lastlayer.engine.solvers import top_eigenpairs

from .strategies import Trained, head_features

__all__ = ["VARIANTS", "METRICS", "HEAD_METRICS", "linear_head", "measure"]

VARIANTS = ("plain", "ts", "laplace", "laplace-val")
METRICS = ("error", "nll", "ece", "brier")  # per variant
HEAD_METRICS = ("lambda_max", "nc1")  # per network
ECE_BINS = 15
VAL_TAUS = np.logspace(-4, 8, 13)  # the validation grid of "laplace-val", 1 per decade


def linear_head(trained: Trained, x: np.ndarray):
    """(phi(x) (N, d) float64, W (C, d), b (C,)) with logits = phi W^T + b for the network's
    last layer, checked against the network's own logits on ``x``."""
    layer, params = trained.net[-1], trained.params[-1]
    state = trained.state[-1]
    phi = head_features(trained, x)
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    s64 = {k: np.asarray(v, dtype=np.float64) for k, v in (state or {}).items()} or None
    d = phi.shape[1]
    if not isinstance(layer, Dense) and hasattr(layer, "eps"):  # the normalising fixed heads
        phi = L2Normalize(layer.eps).forward({}, phi)[0]
        layer = dataclasses.replace(layer, eps=1e-300)  # x_hat = e_j exactly on the unit rows
    b = p64["b"] if "b" in p64 else np.zeros(layer.output_shape((1, d))[1])
    rows, _ = layer.forward(p64, np.eye(d), state=s64)
    W = (rows - b).T.copy()
    logits = trained.net.forward(trained.params, x[:500], train=False, state=trained.state)[0]
    mine = phi[:500] @ W.T + b
    tol = 1e-9 if logits.dtype == np.float64 else 1e-4
    scale = max(1.0, float(np.abs(logits).max()))
    err = float(np.abs(mine - logits).max()) / scale
    if not err <= tol:
        raise AssertionError(f"linear_head: phi W^T + b differs from the network's logits by "
                             f"{err:.2e} (relative), above {tol:g}")
    return phi, W, b


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from lastlayer.engine.solvers.diagnostics.calibration import brier, ece, nll

    return {"error": 100.0 * float(np.mean(probs.argmax(axis=1) != labels)),
            "nll": nll(probs, labels, inputs="probs"),
            "ece": float(ece(probs, labels, n_bins=ECE_BINS, binning="width").ece),
            "brier": brier(probs, labels)}


def measure(trained: Trained, x_val: np.ndarray, y_val: np.ndarray, lam: float) -> dict:
    """{variant: {metric: value}}, {"head": {head metric: value}} and {"chosen": the
    temperature and the Laplace prior precisions} (module docstring). ``lam``: the L2
    coefficient of the head's training; the evidence search starts at tau_w = 2 N lam, the
    prior under which a head trained on J with lam is a mode, and tau_b = 1."""
    from lastlayer.engine.solvers.diagnostics.calibration import CalibrationWarning
    from lastlayer.engine.solvers.diagnostics.temperature import apply_temperature, fit_temperature
    from lastlayer.engine.solvers.laplace.posterior import LastLayerLaplace, tau_from_lam
    from lastlayer.engine.solvers.diagnostics.neural_collapse import neural_collapse

    data = trained.data
    phi_tr, W, b = linear_head(trained, data.x_train)
    phi_te, _, _ = linear_head(trained, data.x_test)
    phi_va, _, _ = linear_head(trained, x_val)
    y_tr, y_te = data.y_train, data.y_test
    z_te, z_va = phi_te @ W.T + b, phi_va @ W.T + b
    out: dict = {"plain": _scores(softmax(z_te), y_te)}
    with warnings.catch_warnings():  # T = inf (a collapsed run): kept in ``chosen``, and the
        warnings.simplefilter("ignore", CalibrationWarning)  # report names collapsed runs
        temp = fit_temperature(z_va, y_val)
    out["ts"] = _scores(softmax(apply_temperature(z_te, temp.T)), y_te)
    la = LastLayerLaplace(W, b, phi_tr, y_tr, loss="ce",
                          tau_w=tau_from_lam(lam, len(phi_tr)), tau_b=1.0)
    best = la.optimize_prior(mode="separate")
    la = la.with_prior(best.tau_w, best.tau_b)
    out["laplace"] = _scores(la.predict_proba(phi_te, method="probit"), y_te)
    val_nll = [la.with_prior(t, t).predictive_nll(phi_va, y_val, "probit") for t in VAL_TAUS]
    tau = float(VAL_TAUS[int(np.argmin(val_nll))])
    out["laplace-val"] = _scores(la.with_prior(tau, tau).predict_proba(phi_te, "probit"), y_te)
    lam_max = float(top_eigenpairs(W, b, phi_tr, y_tr, 0.0, "ce", k=1).values[0])
    nc = neural_collapse(phi_tr, y_tr, W, b, n_classes=data.n_classes)
    out["head"] = {"lambda_max": lam_max, "nc1": float(nc.nc1)}
    out["chosen"] = {"temperature": float(temp.T), "tau_w": float(best.tau_w),
                     "tau_b": float(best.tau_b), "tau_val": tau}
    return out
