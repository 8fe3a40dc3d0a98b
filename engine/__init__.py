"""lastlayer's engine: reusable mechanisms with hand-written derivatives, grouped by concern.

* ``layers``: layers with explicit forward and backward passes (protocol in
  ``lastlayer.engine.layers.base``), the fixed Hadamard / orthogonal / simplex-ETF heads,
  weight initialisers;
* ``losses``: losses returning (value, gradient); ``network``: a stack of layers that
  splits into a feature extractor and a head;
* ``optim``: optimizers as (init, update) pairs, schedules, tree algebra, Layca;
* ``solvers``: exact last-layer solvers (ridge, softmax regression), their curvature and
  line search; neural collapse, calibration; the last-layer Laplace; the exact heads as
  scikit-learn estimators; the file and Dask plumbing they stream through;
* ``training``: the training loop, embedded datasets, checkpoints, atomic files;
* ``gradcheck``: central-difference checks and the cases that check every layer;
* ``streams``: named, counter-based random streams; ``backend``: NumPy or CuPy.

No autodiff: every layer has an explicit forward and backward pass. Arrays are NumPy or
CuPy; the engine takes its array module from its inputs (``lastlayer.engine.backend``) and
contains no device-specific code. Imports point down: ``engine`` imports ``kernels``, never
``models``.
"""

from . import backend, gradcheck, layers, losses, optim, solvers, streams, training
from .layers import (
    BatchNorm,
    Constant,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlorotNormal,
    GlorotUniform,
    HadamardHead,
    HeNormal,
    HeUniform,
    L2Normalize,
    MaxEntropy,
    Layer,
    MaxPool2D,
    OrthogonalHead,
    ReLU,
    Sigmoid,
    SimplexETFHead,
    Tanh,
    TruncatedNormal,
    ZNormalize,
    initializers,
)
from .losses import softmax_cross_entropy, squared_error
from .network import Network
from .solvers import fit_softmax_regression, kernel_ridge, ridge, ridge_path, rkhs_norm
from .streams import stream

__all__ = [
    "backend", "gradcheck", "initializers", "layers", "losses", "optim", "solvers", "streams",
    "training",
    "Layer", "Dense", "ReLU", "Tanh", "Sigmoid", "Conv2D", "MaxPool2D", "Flatten",
    "BatchNorm", "Dropout", "L2Normalize", "ZNormalize", "HadamardHead", "OrthogonalHead",
    "SimplexETFHead", "Network",
    "softmax_cross_entropy", "squared_error",
    "HeNormal", "HeUniform", "GlorotNormal", "GlorotUniform", "TruncatedNormal", "Constant",
    "MaxEntropy",
    "ridge", "ridge_path", "kernel_ridge", "rkhs_norm", "fit_softmax_regression",
    "stream",
]
