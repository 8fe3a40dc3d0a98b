"""Exact solvers for a linear last layer on frozen features Phi (N, d), and what is built on
them, one package per concern (imports point down the list):

* ``exact``: the closed forms and exact optima (ridge, softmax regression), the objective's
  curvature, its top eigenpairs, the exact line search (PoF's eq. 2).
* ``streaming``: where a streamed solver's rows come from (arrays, .npy / .npz / .h5 /
  .zarr files) and where its chunk sums run (this process or a Dask cluster).
* ``diagnostics``: neural collapse (NC1-NC4, CDNV), calibration (NLL, Brier, ECE / MCE) and
  temperature scaling.
* ``laplace``: the exact last-layer Laplace posterior, its predictive, evidence and prior
  selection.
* ``estimators``: ``ExactRidgeHead`` / ``ExactSoftmaxHead``, scikit-learn estimators for the
  exact head on a user's features (lambda by K-fold / LOO / GCV), and ``evaluate_head``;
  loaded on first use (scikit-learn takes ~0.8 s to import).

All use the objective J(W, b) = (1/N) sum_i loss(W Phi_i + b, y_i) + lam ||W||_F^2 of
docs/claims.md (the bias is not penalised). The names below are re-exported from the
subpackages, so ``from lastlayer.engine.solvers import ridge`` works as before.
"""

from .diagnostics import (
    CalibrationError, CalibrationWarning, NeuralCollapse, ReliabilityBins, Temperature,
    TemperatureProfile, apply_temperature, brier, ece, fit_temperature, mce, neural_collapse, nll,
    temperature_profile,
)
from .exact import (
    Eigenpairs, GramAccumulator, LineMinimum, LineProfile, Objective, RankDeficientWarning,
    RidgeSolution, SoftmaxSolution, fit_softmax_regression, hessian, hvp, kernel_ridge,
    layer_hvp, layer_top_eigenpair, line_minimum, logit_hessians, objective, rayleigh_quotient,
    released_line_search, ridge, ridge_gradient, ridge_objective, ridge_path, rkhs_norm,
    top_eigenpairs,
)
from .laplace import (
    EvidenceOptimum, LastLayerLaplace, PriorSelection, maximize_evidence, select_prior,
    squared_loss_mode, tau_from_lam,
)
from .streaming import ArraySource, open_source

__all__ = [
    "ridge", "ridge_path", "GramAccumulator", "kernel_ridge", "rkhs_norm", "ridge_objective",
    "ridge_gradient", "RidgeSolution", "RankDeficientWarning",
    "fit_softmax_regression", "SoftmaxSolution",
    "objective", "hessian", "hvp", "logit_hessians", "Objective",
    "top_eigenpairs", "rayleigh_quotient", "layer_hvp", "layer_top_eigenpair", "Eigenpairs",
    "LineProfile", "LineMinimum", "line_minimum", "released_line_search",
    "ExactRidgeHead", "ExactSoftmaxHead", "evaluate_head", "ArraySource", "open_source",
    "neural_collapse", "NeuralCollapse",
    "nll", "brier", "ece", "mce", "fit_temperature", "apply_temperature", "temperature_profile",
    "Temperature", "TemperatureProfile", "CalibrationError", "ReliabilityBins",
    "CalibrationWarning",
    "LastLayerLaplace", "tau_from_lam", "squared_loss_mode", "maximize_evidence", "select_prior",
    "EvidenceOptimum", "PriorSelection",
]


def __getattr__(name: str):
    """The estimators import scikit-learn (~0.8 s): loaded on first use, not with the engine."""
    if name in ("ExactRidgeHead", "ExactSoftmaxHead", "evaluate_head"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"ExactRidgeHead", "ExactSoftmaxHead", "evaluate_head"})
