"""Ready-made update rules: a direction transform, optional L2 weight decay, a learning rate.

    opt = adam(1e-3, weight_decay=1e-4, mask=kernels)   # chain(add_weight_decay, scale_by_adam,
                                                        #       scale_by_learning_rate)

The conventions of every rule are tabulated in ``lastlayer.engine.optim``'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable

from .transforms import (
    GradientTransformation, add_weight_decay, chain, identity, scale_by_adagrad, scale_by_adam,
    scale_by_ema, scale_by_learning_rate, scale_by_momentum, scale_by_rms,
)

__all__ = ["sgd", "momentum", "nesterov", "sgd_amom", "adam", "rmsprop", "adagrad", "OPTIMIZERS"]


def _with_decay(direction: GradientTransformation, lr, weight_decay: float, mask):
    parts = [add_weight_decay(weight_decay, mask)] if weight_decay else []
    return chain(*parts, direction, scale_by_learning_rate(lr))


def sgd(lr, weight_decay: float = 0.0, mask=None) -> GradientTransformation:
    """w <- w - lr g."""
    return _with_decay(identity(), lr, weight_decay, mask)


def momentum(lr, beta: float = 0.9, weight_decay: float = 0.0, mask=None):
    return _with_decay(scale_by_momentum(beta), lr, weight_decay, mask)


def nesterov(lr, beta: float = 0.9, weight_decay: float = 0.0, mask=None):
    return _with_decay(scale_by_momentum(beta, nesterov=True), lr, weight_decay, mask)


def sgd_amom(lr, beta: float = 0.9, weight_decay: float = 0.0, mask=None):
    return _with_decay(scale_by_ema(beta), lr, weight_decay, mask)


def adam(lr=1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0, mask=None):
    return _with_decay(scale_by_adam(b1, b2, eps), lr, weight_decay, mask)


def rmsprop(lr=1e-3, decay: float = 0.9, eps: float = 1e-7, weight_decay: float = 0.0, mask=None):
    return _with_decay(scale_by_rms(decay, eps), lr, weight_decay, mask)


def adagrad(lr=1e-2, eps: float = 1e-7, initial_accumulator: float = 0.0,
            weight_decay: float = 0.0, mask=None):
    return _with_decay(scale_by_adagrad(eps, initial_accumulator), lr, weight_decay, mask)


OPTIMIZERS: dict[str, Callable[..., GradientTransformation]] = {
    "sgd": sgd, "momentum": momentum, "nesterov": nesterov, "sgd_amom": sgd_amom,
    "adam": adam, "rmsprop": rmsprop, "adagrad": adagrad,
}
