"""Optimizers as pairs of pure functions, in the style of optax, and Layca.

A ``GradientTransformation`` is ``(init, update)``::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)            # params + updates

``params``, ``grads`` and ``updates`` are trees (a network's list of dicts of arrays).
State is explicit and typed (a NamedTuple per transform) and never mutated: ``update``
returns a new one. Gradients may leave tensors out (``Network.backward(mask=...)`` omits
frozen ones): those tensors get no update and their optimizer state is carried over
unchanged.

Every rule is built from small transforms chained left to right, e.g. Adam with L2
weight decay on the kernels only is::

    chain(add_weight_decay(1e-4, mask=kernels), scale_by_adam(), scale_by_learning_rate(1e-3))

Modules: ``transforms`` (the building blocks), ``rules`` (ready-made rules),
``schedules`` (learning-rate schedules), ``tree`` (tree algebra), ``layca`` (Layca, a
transform around any base direction, and the layer-rotation measures).

Conventions (t counts updates from 1; g is the gradient after weight decay):

======================  =====================================================  =========
rule                    direction d_t                                          defaults
======================  =====================================================  =========
sgd                     g                                                      -
momentum (heavy ball)   v <- beta v + g;  d = v                                 beta 0.9
nesterov                v <- beta v + g;  d = g + beta v                        beta 0.9
sgd_amom                m <- beta m + (1 - beta) g;  d = m  (no bias correction) beta 0.9
adam                    m, v EMAs of g, g^2; d = m_hat / (sqrt(v_hat) + eps)     0.9, 0.999, 1e-8
rmsprop                 v <- rho v + (1 - rho) g^2;  d = g / (sqrt(v) + eps)    rho 0.9, eps 1e-7
adagrad                 a <- a + g^2;  d = g / (sqrt(a) + eps)                  a_0 = 0, eps 1e-7
======================  =====================================================  =========

with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t). SGD_AMom is the rule of the Layca
paper's code (``m <- 0.9 m - 0.1 g``, applied as w <- w + lr m): the same up to the sign
convention. RMSprop and Adagrad follow Keras (which the Layca paper used); note that
PyTorch's RMSprop defaults to rho = 0.99, eps = 1e-8.

Weight decay here is the coupled L2 penalty: ``add_weight_decay(lam)`` adds
d(lam ||w||^2)/dw = 2 lam w to the gradient (the objective J of docs/claims.md uses
lam ||W||_F^2). PyTorch's ``weight_decay=wd`` adds wd w: it is ``add_weight_decay(wd / 2)``.
"""

from . import layca, rules, schedules, transforms, tree
# the Layca transform itself is lastlayer.engine.optim.layca.layca: the module keeps the name "layca"
from .layca import (
    DEFAULT_RATES, LAYCA_OPTIMIZERS, LaycaState, kernel_layer_index, kernel_mask, layca_adagrad, layca_adam, layca_rmsprop, layca_sgd, layca_sgd_amom, layer_rotation,
    per_tensor_multipliers, rate_multipliers, rotation_angle, rotation_monitor,
)
from .rules import OPTIMIZERS, adagrad, adam, momentum, nesterov, rmsprop, sgd, sgd_amom
from .schedules import ConstantSchedule, ExponentialDecay, Schedule, StepDecay
from .transforms import (
    AdagradState, AdamState, CountState, EmaState, EmptyState, GradientTransformation,
    MaskedState, MomentumState, RmsState, add_weight_decay, chain, identity, masked,
    scale_by_adagrad, scale_by_adam, scale_by_ema, scale_by_learning_rate, scale_by_momentum,
    scale_by_rms, scale_per_tensor,
)
from .tree import apply_updates, tree_flatten, tree_map, tree_paths, tree_unflatten

__all__ = [
    "layca", "rules", "schedules", "transforms", "tree",
    "GradientTransformation", "chain", "apply_updates", "identity", "masked",
    "add_weight_decay", "scale_by_momentum", "scale_by_ema", "scale_by_adam", "scale_by_rms",
    "scale_by_adagrad", "scale_by_learning_rate", "scale_per_tensor",
    "EmptyState", "CountState", "MomentumState", "EmaState", "AdamState", "RmsState",
    "AdagradState", "MaskedState",
    "sgd", "momentum", "nesterov", "sgd_amom", "adam", "rmsprop", "adagrad", "OPTIMIZERS",
    "Schedule", "ConstantSchedule", "StepDecay", "ExponentialDecay",
    "tree_map", "tree_flatten", "tree_unflatten", "tree_paths",
    "LaycaState", "layca_sgd", "layca_sgd_amom", "layca_adam", "layca_rmsprop", "layca_adagrad",
    "LAYCA_OPTIMIZERS", "DEFAULT_RATES", "rate_multipliers", "per_tensor_multipliers",
    "kernel_mask", "kernel_layer_index", "layer_rotation", "rotation_angle", "rotation_monitor",
]
