"""Exact solvers for a linear last layer on frozen features Phi (N, d).

* ``ridge``: the closed form of the squared loss (primal, dual, SVD; regularisation paths;
  a streaming Gram accumulator; kernel ridge; the RKHS norm).
* ``softmax_regression``: the exact optimum of softmax cross-entropy (Newton with the exact
  Hessian, Newton-CG on Hessian-vector products, L-BFGS).
* ``curvature``: objective, gradient, Hessian and Hessian-vector products of the last layer.
* ``eigen``: top eigenpairs of that Hessian (dense and Lanczos), Rayleigh quotients, and
  Hessian-vector products of any layer of a network by central differences.
* ``neural_collapse``: NC1-NC4 and the CDNV of features and a head (Papyan et al. 2020),
  in memory or streamed in one pass of stable class statistics, on Dask too.
* ``calibration``: NLL, Brier, ECE / MCE (equal-width and equal-mass bins), and
  temperature scaling by the exact 1-D minimisation of the held-out NLL.
* ``laplace``: the exact last-layer Laplace posterior (full, Kronecker for the squared
  loss, K-FAC for large C d), its predictive, evidence and prior selection.
* ``line_search``: the exact minimum of a last-layer loss along a direction (PoF's eq. 2).
* ``estimators``: ``ExactRidgeHead`` / ``ExactSoftmaxHead``, scikit-learn estimators for
  the exact head on a user's features, lambda by K-fold / LOO / GCV, data in memory,
  streamed from .npy / .npz / .h5 / .zarr files (``sources``), or summed on a Dask
  cluster (``runners``); the pieces in ``ridge_cv`` and ``softmax_streamed``.

All use the objective J(W, b) = (1/N) sum_i loss(W Phi_i + b, y_i) + lam ||W||_F^2 of
docs/claims.md (the bias is not penalised).
"""

from .calibration import (
    CalibrationError, CalibrationWarning, ReliabilityBins, Temperature, TemperatureProfile,
    apply_temperature, brier, ece, fit_temperature, mce, nll, temperature_profile,
)
from .curvature import Objective, hessian, hvp, logit_hessians, objective
from .eigen import Eigenpairs, layer_hvp, layer_top_eigenpair, rayleigh_quotient, top_eigenpairs
from .laplace import LastLayerLaplace, squared_loss_mode, tau_from_lam
from .laplace_select import EvidenceOptimum, PriorSelection, maximize_evidence, select_prior
from .line_search import LineMinimum, LineProfile, line_minimum, released_line_search
from .neural_collapse import NeuralCollapse, neural_collapse
from .ridge import (
    GramAccumulator, RankDeficientWarning, RidgeSolution, kernel_ridge, ridge, ridge_gradient,
    ridge_objective, ridge_path, rkhs_norm,
)
from .softmax_regression import SoftmaxSolution, fit_softmax_regression
from .sources import ArraySource, open_source

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
