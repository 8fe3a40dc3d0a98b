"""Prior precisions of the last-layer Laplace chosen two ways, side by side: the evidence
(``evidence``) and K-fold cross-validation of the held-out predictive NLL (``select_prior``).

For cross-validation the rows are permuted by ``lastlayer.engine.streams.stream(seed,
"laplace-folds")`` and cut into K contiguous folds (the sizes of scikit-learn's KFold). The MAP IS refit on each fold's training rows, with
the whole problem's summed penalty N lam ||W||^2 (lam N / N_train in that fold's J, the
convention of ``ExactRidgeHead`` / ``ExactSoftmaxHead``; the same tau_w = 2 N lam), so no
held-out row informs theta*; then, as for the evidence, theta* is held while tau runs over the grid.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..._checks import boolean, positive_int
from ...streams import stream
from ..exact.ridge import ridge
from ..exact.softmax_regression import fit_softmax_regression
from ..streaming.sources import fold_edges
from .evidence import EvidenceOptimum, maximize_evidence
from .posterior import LastLayerLaplace, _check_targets, _float64, tau_from_lam

__all__ = ["PriorSelection", "select_prior"]


class PriorSelection(NamedTuple):
    taus: np.ndarray  # (T,) the grid: tau_w = tau (and tau_b = tau when ``tau_b`` is None)
    tau_b: float | None  # the fixed bias precision, None when tied to tau (or no bias)
    evidence_curve: np.ndarray  # (T,) log evidence of the full-data posterior
    evidence_choice: float  # the grid's argmax
    evidence_optimum: EvidenceOptimum  # the continuous maximiser (Newton), same tying
    cv_curve: np.ndarray  # (T,) held-out predictive NLL per row, averaged over all N rows
    cv_choice: float  # the grid's argmin
    folds: int
    W: np.ndarray  # the full-data MAP at lam
    b: np.ndarray | None


def _folds(folds, n: int) -> int:
    k = positive_int(folds, "folds", 2)
    if k > n:
        raise ValueError(f"folds: {k} folds need at least {k} rows (one per fold), got {n}")
    return k


def _grid(taus) -> np.ndarray:
    t = np.asarray(taus, dtype=np.float64) if not isinstance(taus, str) else np.array([])
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"taus: expected a non-empty 1-D grid of finite numbers > 0, got {taus!r}")
    return np.unique(t)


def select_prior(Phi, targets, *, loss: str, lam: float, taus, tau_b: float | None = None,
                 fit_bias: bool = True, folds: int = 5, seed: int = 0, structure: str = "auto",
                 method: str = "probit", draws: int = 1000,
                 n_classes: int | None = None) -> PriorSelection:
    """The evidence and the K-fold CV predictive NLL side by side over the grid ``taus``.

    Phi (N, d) float64; targets (N,) labels ("ce") or (N, C) float64 ("squared"); lam > 0
    the MAP's penalty (J's); on the grid tau_w = tau and tau_b = tau (``tau_b`` None) or the
    given ``tau_b``; ``method`` / ``draws`` the CE predictive of the held-out rows. The MAP
    is fitted at lam on all rows (for the evidence) and refit on every fold's training
    rows (module docstring). Returns a ``PriorSelection``."""
    fit_bias = boolean(fit_bias, "fit_bias")
    phi = _float64(Phi, "Phi", 2)
    n = phi.shape[0]
    grid = _grid(taus)
    k = _folds(folds, n)
    tau_from_lam(lam, n)  # lam checked before any fit
    if loss == "ce":
        labels = targets
        if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise ValueError("targets: expected integer labels (N,) for 'ce'")
        c = int(labels.max()) + 1 if n_classes is None else positive_int(n_classes, "n_classes", 2)
    elif loss == "squared":
        _float64(targets, "targets", 2)
        c = targets.shape[1]
    else:
        raise ValueError(f"loss: expected 'ce' or 'squared', got {loss!r}")
    _check_targets(targets, loss, n, c)

    def fit(rows, lam_rows):
        if loss == "ce":
            sol = fit_softmax_regression(phi[rows], targets[rows], lam_rows, fit_bias=fit_bias,
                                         n_classes=c)
            return sol.W, sol.b
        sol = ridge(phi[rows], targets[rows], lam_rows, fit_bias=fit_bias)
        return sol.W, sol.b

    def prior(t):
        if not fit_bias:
            return t, None
        return t, (t if tau_b is None else tau_b)

    everything = np.arange(n)
    W, b = fit(everything, lam)
    base = LastLayerLaplace(W, b, phi, targets, loss=loss, structure=structure,
                            tau_w=grid[0], tau_b=prior(grid[0])[1])
    evidence = np.array([base.with_prior(*prior(t)).log_evidence() for t in grid])
    tau_w0, tau_b0 = prior(float(grid[np.argmax(evidence)]))
    optimum = maximize_evidence(base.with_prior(tau_w0, tau_b0),
                                mode="weights" if tau_b is not None else "scalar")

    order = stream(positive_int(seed, "seed", 0), "laplace-folds").permutation(n)
    edges = fold_edges(n, k)
    nll = np.zeros(len(grid))
    for f in range(k):
        held = np.sort(order[edges[f]:edges[f + 1]])
        train = np.sort(np.concatenate([order[:edges[f]], order[edges[f + 1]:]]))
        try:
            Wf, bf = fit(train, lam * n / len(train))
        except ValueError as err:
            raise ValueError(f"folds: fold {f} of {k} cannot be fitted on its {len(train)} "
                             f"training rows ({err})") from None
        la = LastLayerLaplace(Wf, bf, phi[train], targets[train], loss=loss,
                              structure=structure, tau_w=grid[0], tau_b=prior(grid[0])[1])
        for i, t in enumerate(grid):
            nll[i] += len(held) * la.with_prior(*prior(t)).predictive_nll(
                phi[held], targets[held], method=method, draws=draws, seed=seed)
    cv = nll / n
    return PriorSelection(grid, tau_b if fit_bias else None, evidence,
                          float(grid[np.argmax(evidence)]), optimum, cv,
                          float(grid[np.argmin(cv)]), k, W, b)
