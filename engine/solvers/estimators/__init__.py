"""Exact last layers on a user's features as scikit-learn estimators: ``ExactRidgeHead``
(the squared loss's closed form) and ``ExactSoftmaxHead`` (softmax cross-entropy by Newton),
lambda by K-fold / LOO / GCV, optionally with their Laplace posterior (``heads``, whose
docstring is the reference); their scores on held-out data (``evaluate``); the checks they
run before any pass (``checks``); the sufficient statistics of the ridge CV (``ridge_cv``)
and the softmax head's Newton-CG on chunk sums (``softmax_streamed``). Data in memory, in
files or on a Dask cluster (``..streaming``). Importing this package imports scikit-learn.
"""

from .checks import (
    LAM_ROWS_MAX, LAPLACE_FEATURES_MAX, LAPLACE_PRIORS, as_source, check_cv, check_laplace,
    check_lams,
)
from .evaluate import ECE_BINS, evaluate_head
from .heads import ExactRidgeHead, ExactSoftmaxHead

__all__ = ["ExactRidgeHead", "ExactSoftmaxHead", "evaluate_head", "as_source", "check_lams",
           "check_cv", "check_laplace", "LAM_ROWS_MAX", "LAPLACE_PRIORS", "LAPLACE_FEATURES_MAX",
           "ECE_BINS"]
