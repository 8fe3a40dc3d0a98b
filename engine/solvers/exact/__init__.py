"""The exact solvers of a linear last layer on frozen features Phi (N, d): the closed form of
the squared loss (``ridge``: primal, dual, SVD, regularisation paths, a streaming Gram
accumulator, kernel ridge and the RKHS norm), the exact optimum of softmax cross-entropy
(``softmax_regression``: Newton, Newton-CG, L-BFGS), the objective's gradient, Hessian and
Hessian-vector products (``curvature``), the top eigenpairs of that Hessian and of any
layer's (``eigen``), and the exact minimum along a direction (``line_search``, PoF's eq. 2).
Each depends on the engine's losses and checks only: these are what the rest is verified
against.
"""

from .curvature import LOSSES, Objective, hessian, hvp, logit_hessians, objective
from .eigen import Eigenpairs, layer_hvp, layer_top_eigenpair, rayleigh_quotient, top_eigenpairs
from .line_search import LineMinimum, LineProfile, line_minimum, released_line_search
from .ridge import (
    GramAccumulator, RankDeficientWarning, RidgeSolution, kernel_ridge, ridge, ridge_gradient,
    ridge_objective, ridge_path, rkhs_norm,
)
from .softmax_regression import SoftmaxSolution, fit_softmax_regression

__all__ = [
    "ridge", "ridge_path", "GramAccumulator", "kernel_ridge", "rkhs_norm", "ridge_objective",
    "ridge_gradient", "RidgeSolution", "RankDeficientWarning",
    "fit_softmax_regression", "SoftmaxSolution",
    "LOSSES", "objective", "hessian", "hvp", "logit_hessians", "Objective",
    "top_eigenpairs", "rayleigh_quotient", "layer_hvp", "layer_top_eigenpair", "Eigenpairs",
    "LineProfile", "LineMinimum", "line_minimum", "released_line_search",
]
