"""Layers with hand-written forward and backward passes (protocol in ``base``), and the
weight initialisers they draw their parameters with (``initializers``)."""

from . import initializers
from .activations import ReLU, Sigmoid, Tanh
from .base import Layer
from .conv import Conv2D, MaxPool2D
from .dense import Dense
from .dropout import Dropout
from .etf_head import SimplexETFHead
from .fixed_heads import HadamardHead, OrthogonalHead
from .initializers import (
    Constant, GlorotNormal, GlorotUniform, HeNormal, HeUniform, Initializer, MaxEntropy,
    TruncatedNormal,
)
from .normalization import BatchNorm, L2Normalize, ZNormalize
from .reshape import Flatten

__all__ = [
    "initializers",
    "Layer",
    "Dense",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "Conv2D",
    "MaxPool2D",
    "Flatten",
    "BatchNorm",
    "Dropout",
    "L2Normalize",
    "ZNormalize",
    "HadamardHead",
    "OrthogonalHead",
    "SimplexETFHead",
    "Initializer",
    "HeNormal",
    "HeUniform",
    "GlorotNormal",
    "GlorotUniform",
    "TruncatedNormal",
    "Constant",
    "MaxEntropy",
]
