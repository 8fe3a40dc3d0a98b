"""lastlayer's engine: hand-written layers, losses, networks and gradient checks.

No autodiff: every layer has an explicit forward and backward pass (see
``engine.layers.base`` for the protocol). Arrays are NumPy or CuPy; the engine takes its
array module from its inputs (``engine.backend``) and contains no device-specific code.
"""

from . import backend, gradcheck, initializers, losses
from .initializers import Constant, GlorotNormal, GlorotUniform, HeNormal, HeUniform, TruncatedNormal
from .layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    HadamardHead,
    L2Normalize,
    Layer,
    MaxPool2D,
    OrthogonalHead,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import softmax_cross_entropy, squared_error
from .network import Network

__all__ = [
    "backend", "gradcheck", "initializers", "losses",
    "Layer", "Dense", "ReLU", "Tanh", "Sigmoid", "Conv2D", "MaxPool2D", "Flatten",
    "BatchNorm", "Dropout", "L2Normalize", "HadamardHead", "OrthogonalHead",
    "Network",
    "softmax_cross_entropy", "squared_error",
    "HeNormal", "HeUniform", "GlorotNormal", "GlorotUniform", "TruncatedNormal", "Constant",
]
