"""Layca (Carbonnelle & De Vleeschouwer, "On layer-level control of DNN training and its
impact on generalization"): the paper's procedure at the level of a network.

The transform itself, its layer-wise rates and the layer-rotation measures are engine
mechanisms (``lastlayer.engine.optim.layca``). This module puts them together as the paper does:
Layca around a base rule's direction, with the kernels chosen by layer type and the
Section 5.1 multipliers for alpha; the plain rule with the same multipliers (their SGD
baseline of Fig. 2); and their Fig. 3 summary of how uniformly the layers rotate.
"""

from __future__ import annotations

import numpy as np

from lastlayer.engine import Network, optim
from lastlayer.engine.optim.layca import layca

METHODS = ("sgd", "sgd_amom", "adam", "rmsprop", "adagrad")
PAIRS = (("adam", "sgd_amom"), ("rmsprop", "sgd"), ("adagrad", "sgd"))  # adaptive, equivalent


def direction(method: str) -> optim.GradientTransformation:
    """The base rule's step direction before the learning rate (what Layca rotates)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return {"sgd": optim.identity, "sgd_amom": optim.scale_by_ema,
            "adam": optim.scale_by_adam, "rmsprop": optim.scale_by_rms,
            "adagrad": optim.scale_by_adagrad}[method]()


def update_rule(method: str, use_layca: bool, alpha: float, net: Network,
                rate: float | optim.Schedule) -> optim.GradientTransformation:
    """``method``'s direction with the Section 5.1 multipliers for ``alpha`` on every
    kernel (the W of each Dense / Conv2D, by layer type): Layca (Algorithm 1) with global
    rate ``rate`` when ``use_layca``, else the plain rule w <- w - rate * multiplier * d."""
    params = net.init(np.random.default_rng(0))  # for the structure only
    mask = optim.kernel_mask(net, params)
    index = optim.kernel_layer_index(mask)
    if use_layca:
        return layca(direction(method), rate, alpha, mask=mask, layer_index=index)
    return optim.chain(direction(method),
                       optim.scale_per_tensor(optim.per_tensor_multipliers(alpha, index, params)),
                       optim.scale_by_learning_rate(rate))


def uniformity(deviation: np.ndarray) -> float:
    """min / max over layers of the rotation angle arccos(1 - deviation) since
    initialisation: 1 when every layer rotated as much. (Angles, not the cosine distances
    themselves: a rotation *rate* is an angle per step, and the cosine distance, quadratic
    in small angles, would square every ratio.)"""
    angles = np.arccos(1.0 - np.asarray(deviation))
    return float(angles.min() / angles.max())
