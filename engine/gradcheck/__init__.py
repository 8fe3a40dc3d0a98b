"""Gradient checks: central differences in float64 (``central``) and the cases that check
every layer, loss and a whole network of the engine (``cases``)."""

from . import cases
from .central import check_layer, check_loss, check_network, numerical_gradient, relative_error

__all__ = ["cases", "relative_error", "numerical_gradient", "check_layer", "check_loss",
           "check_network"]
