"""Exact solvers for a linear last layer on frozen features Phi (N, d).

* ``ridge``: the closed form of the squared loss (primal, dual, SVD; regularisation paths;
  a streaming Gram accumulator; kernel ridge; the RKHS norm).
* ``softmax_regression``: the exact optimum of softmax cross-entropy (Newton with the exact
  Hessian, Newton-CG on Hessian-vector products, L-BFGS).
* ``curvature``: objective, gradient, Hessian and Hessian-vector products of the last layer.
* ``eigen``: top eigenpairs of that Hessian (dense and Lanczos), Rayleigh quotients, and
  Hessian-vector products of any layer of a network by central differences.
* ``line_search``: the exact minimum of a last-layer loss along a direction (PoF's eq. 2).

All use the objective J(W, b) = (1/N) sum_i loss(W Phi_i + b, y_i) + lam ||W||_F^2 of
docs/claims.md (the bias is not penalised).
"""

from .curvature import Objective, hessian, hvp, logit_hessians, objective
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
    "objective", "hessian", "hvp", "logit_hessians", "Objective",
    "top_eigenpairs", "rayleigh_quotient", "layer_hvp", "layer_top_eigenpair", "Eigenpairs",
    "LineProfile", "LineMinimum", "line_minimum", "released_line_search",
]
