"""Gradient transformations in the style of optax: pairs of pure functions.

A ``GradientTransformation`` is ``(init, update)``, and optionally ``update_in_place``::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)            # params + updates
    # or, where a transform provides it (Layca's fused step):
    state = opt.update_in_place(grads, state, params)  # params' arrays updated in place

``update_in_place`` is the same step written to the parameters' own arrays, without
materialising the updates; it is what ``lastlayer.engine.training.train`` uses when it is not None
(on its own copy of the parameters). ``update`` stays the pure reference for tests.

State is explicit and typed (a NamedTuple per transform) and never mutated: ``update``
returns a new one. Gradients may leave tensors out (``Network.backward(mask=...)`` omits
frozen ones): those tensors get no update and their state is carried over unchanged
(``tree_carry_over``). The update rules and their conventions are tabulated in
``lastlayer.engine.optim``'s docstring.

The ``scale_by_*`` transforms produce a base rule's *step direction* before the learning
rate (what Layca rotates); ``scale_by_learning_rate`` multiplies by -lr(t). Masks and
per-tensor constants are explicit trees with the structure of the parameters, checked by
``lastlayer.engine._checks.check_mask``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .._checks import check_mask, decay_rate, positive_number
from ..backend import array_module
from .schedules import ConstantSchedule, Schedule
from .tree import tree_carry_over, tree_map, tree_merge, tree_select

__all__ = [
    "GradientTransformation", "chain", "identity", "add_weight_decay", "scale_by_momentum",
    "scale_by_ema", "scale_by_adam", "scale_by_rms", "scale_by_adagrad",
    "scale_by_learning_rate", "scale_per_tensor", "masked",
    "EmptyState", "CountState", "MomentumState", "EmaState", "AdamState", "RmsState",
    "AdagradState", "MaskedState",
]


class GradientTransformation(NamedTuple):
    init: Callable[[Any], Any]  # params -> state
    update: Callable[[Any, Any, Any], tuple[Any, Any]]  # (grads, state, params) -> (updates, state)
    # (grads, state, params) -> state, writing params + updates into params' arrays; None
    # where the transform has no in-place form (then the caller applies ``update``)
    update_in_place: Callable[[Any, Any, Any], Any] | None = None


# ---- states ------------------------------------------------------------------------
class EmptyState(NamedTuple):
    pass


class CountState(NamedTuple):
    count: int  # number of updates done so far


class MomentumState(NamedTuple):
    velocity: Any  # tree like params


class EmaState(NamedTuple):
    ema: Any  # tree like params


class AdamState(NamedTuple):
    count: int
    mu: Any  # EMA of g
    nu: Any  # EMA of g^2


class RmsState(NamedTuple):
    nu: Any  # EMA of g^2


class AdagradState(NamedTuple):
    sum_of_squares: Any


class MaskedState(NamedTuple):
    inner: Any


def _zeros_like(params):
    return tree_map(lambda p: array_module(p).zeros_like(p), params)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` in order; the state is the tuple of their states."""

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params):
        if len(state) != len(transforms):
            raise ValueError(f"state: expected a tuple of {len(transforms)} states, got {len(state)}")
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return GradientTransformation(init, update)


# ---- building blocks ---------------------------------------------------------------
def identity() -> GradientTransformation:
    """The direction of plain SGD: the gradient itself (d = g)."""
    return GradientTransformation(lambda params: EmptyState(), lambda g, s, p: (g, s))


def add_weight_decay(weight_decay: float, mask=None) -> GradientTransformation:
    """g <- g + 2 lam w on the tensors where ``mask`` is True (all if None)."""
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")

    def update(grads, state, params):
        if mask is None:
            return tree_map(lambda g, w: g + (2 * weight_decay) * w, grads, params), state
        check_mask(mask, grads, tree_name="the gradients", exact=False)
        return tree_map(lambda g, w, m: g + (2 * weight_decay) * w if m else g,
                        grads, params, mask), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale_by_momentum(beta: float = 0.9, nesterov: bool = False) -> GradientTransformation:
    """Heavy ball v <- beta v + g, d = v; or Nesterov d = g + beta v (PyTorch's form)."""
    decay_rate(beta, "beta")

    def update(grads, state, params):
        v = tree_map(lambda g, v: beta * v + g, grads, state.velocity)
        d = tree_map(lambda g, v: g + beta * v, grads, v) if nesterov else v
        return d, MomentumState(tree_carry_over(state.velocity, v))

    return GradientTransformation(lambda params: MomentumState(_zeros_like(params)), update)


def scale_by_ema(beta: float = 0.9) -> GradientTransformation:
    """m <- beta m + (1 - beta) g, d = m: the Layca paper's SGD_AMom (no bias correction)."""
    decay_rate(beta, "beta")

    def update(grads, state, params):
        m = tree_map(lambda g, m: beta * m + (1 - beta) * g, grads, state.ema)
        return m, EmaState(tree_carry_over(state.ema, m))

    return GradientTransformation(lambda params: EmaState(_zeros_like(params)), update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam (Kingma & Ba 2015, Algorithm 1): d = m_hat / (sqrt(v_hat) + eps)."""
    decay_rate(b1, "b1")
    decay_rate(b2, "b2")
    positive_number(eps, "eps")

    def init(params):
        return AdamState(0, _zeros_like(params), _zeros_like(params))

    def update(grads, state, params):
        t = state.count + 1
        mu = tree_map(lambda g, m: b1 * m + (1 - b1) * g, grads, state.mu)
        nu = tree_map(lambda g, v: b2 * v + (1 - b2) * (g * g), grads, state.nu)
        c1, c2 = 1 - b1**t, 1 - b2**t  # bias corrections
        d = tree_map(lambda m, v: (m / c1) / (array_module(v).sqrt(v / c2) + eps), mu, nu)
        return d, AdamState(t, tree_carry_over(state.mu, mu), tree_carry_over(state.nu, nu))

    return GradientTransformation(init, update)


def scale_by_rms(decay: float = 0.9, eps: float = 1e-7) -> GradientTransformation:
    """RMSprop (Tieleman & Hinton 2012): v <- rho v + (1 - rho) g^2, d = g / (sqrt(v) + eps)."""
    decay_rate(decay, "decay")
    positive_number(eps, "eps")

    def update(grads, state, params):
        nu = tree_map(lambda g, v: decay * v + (1 - decay) * (g * g), grads, state.nu)
        d = tree_map(lambda g, v: g / (array_module(v).sqrt(v) + eps), grads, nu)
        return d, RmsState(tree_carry_over(state.nu, nu))

    return GradientTransformation(lambda params: RmsState(_zeros_like(params)), update)


def scale_by_adagrad(eps: float = 1e-7, initial_accumulator: float = 0.0) -> GradientTransformation:
    """Adagrad (Duchi et al. 2011): a <- a + g^2, d = g / (sqrt(a) + eps)."""
    positive_number(eps, "eps")
    if not initial_accumulator >= 0:
        raise ValueError(f"initial_accumulator: expected >= 0, got {initial_accumulator}")

    def init(params):
        return AdagradState(tree_map(lambda p: array_module(p).full_like(p, initial_accumulator),
                                     params))

    def update(grads, state, params):
        acc = tree_map(lambda g, a: a + g * g, grads, state.sum_of_squares)
        d = tree_map(lambda g, a: g / (array_module(a).sqrt(a) + eps), grads, acc)
        return d, AdagradState(tree_carry_over(state.sum_of_squares, acc))

    return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate: float | Schedule) -> GradientTransformation:
    """d <- -lr(t) d, with lr a constant or a schedule of the update count."""
    schedule = learning_rate if isinstance(learning_rate, Schedule) else ConstantSchedule(learning_rate)

    def update(grads, state, params):
        lr = schedule(state.count)
        return tree_map(lambda d: (-lr) * d, grads), CountState(state.count + 1)

    return GradientTransformation(lambda params: CountState(0), update)


def scale_per_tensor(multipliers) -> GradientTransformation:
    """d <- c d with a per-tensor constant c: ``multipliers`` is a tree of floats with the
    structure of params (e.g. Layca's layer-wise rates, or 0.1 for one layer)."""

    def update(grads, state, params):
        check_mask(multipliers, grads, name="multipliers", tree_name="the gradients", exact=False)
        return tree_map(lambda d, c: c * d, grads, multipliers), state

    return GradientTransformation(lambda params: EmptyState(), update)


def masked(inner: GradientTransformation, mask) -> GradientTransformation:
    """Apply ``inner`` only to tensors where ``mask`` is True; pass the others through
    unchanged. (To freeze tensors, leave them out of the gradients instead.)"""

    def init(params):
        return MaskedState(inner.init(tree_select(params, mask)))

    def update(grads, state, params):
        check_mask(mask, grads, tree_name="the gradients", exact=False)
        inner_updates, inner_state = inner.update(tree_select(grads, mask), state.inner,
                                                  tree_select(params, mask))
        return tree_merge(tree_select(grads, mask, False), inner_updates), MaskedState(inner_state)

    return GradientTransformation(init, update)
