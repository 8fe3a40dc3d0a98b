"""lastlayer: a NumPy/CuPy reference engine for research on the last layer of neural networks.

One import name, three layers, imports pointing down::

    lastlayer.models    the five papers, their claims ledger, the studies and the command line
    lastlayer.engine    hand-written layers, losses, optimisers, training, exact solvers
    lastlayer.kernels   compiled kernels (Numba on the CPU, Numba-CUDA on a GPU)

The names a user needs most are re-exported here: the layers and ``Network``, the losses,
``fwht``, the exact solvers (``ridge``, ``fit_softmax_regression``), the exact heads as
scikit-learn estimators (``ExactRidgeHead``, ``ExactSoftmaxHead``, ``evaluate_head``:
loaded on first use, since scikit-learn takes ~0.8 s to import), ``LastLayerLaplace``, the
calibration scores with temperature scaling, the neural-collapse metrics and the named
random streams. Everything else lives in its subpackage, e.g.
``lastlayer.engine.solvers.laplace`` or ``lastlayer.models.papers.pof``.
"""

__version__ = "0.1.0"

from .engine import (
    BatchNorm, Conv2D, Dense, Dropout, Flatten, HadamardHead, L2Normalize, Layer, MaxPool2D,
    Network, OrthogonalHead, ReLU, Sigmoid, SimplexETFHead, Tanh, ZNormalize,
    softmax_cross_entropy, squared_error, stream,
)
from .engine.solvers import (
    LastLayerLaplace, NeuralCollapse, apply_temperature, brier, ece, fit_softmax_regression,
    fit_temperature, kernel_ridge, mce, neural_collapse, nll, ridge, ridge_path,
)
from .kernels import fwht

__all__ = [
    "Network", "Layer", "Dense", "ReLU", "Tanh", "Sigmoid", "Conv2D", "MaxPool2D", "Flatten",
    "BatchNorm", "Dropout", "L2Normalize", "ZNormalize", "HadamardHead", "OrthogonalHead",
    "SimplexETFHead", "softmax_cross_entropy", "squared_error",
    "fwht",
    "ridge", "ridge_path", "kernel_ridge", "fit_softmax_regression",
    "ExactRidgeHead", "ExactSoftmaxHead", "evaluate_head",
    "LastLayerLaplace",
    "nll", "brier", "ece", "mce", "fit_temperature", "apply_temperature",
    "neural_collapse", "NeuralCollapse",
    "stream",
]

_ESTIMATORS = ("ExactRidgeHead", "ExactSoftmaxHead", "evaluate_head")


def __getattr__(name: str):
    if name in _ESTIMATORS:
        from .engine.solvers import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ESTIMATORS))
