"""Optimizers as pairs of pure functions, in the style of optax.

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

The ``scale_by_*`` transforms produce the base rule's *step direction* before the
learning rate (what Layca rotates); ``scale_by_learning_rate`` multiplies by -lr(t).

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
d(lam ||w||^2)/dw = 2 lam w to the gradient (CLAIMS.md's J uses lam ||W||_F^2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .backend import array_module
from .tree import tree_map

__all__ = [
    "GradientTransformation", "chain", "apply_updates", "identity",
    "add_weight_decay", "scale_by_momentum", "scale_by_ema", "scale_by_adam", "scale_by_rms",
    "scale_by_adagrad", "scale_by_learning_rate", "scale_per_tensor", "masked",
    "sgd", "momentum", "nesterov", "sgd_amom", "adam", "rmsprop", "adagrad", "OPTIMIZERS",
    "ConstantSchedule", "StepDecay", "ExponentialDecay", "Schedule",
]


class GradientTransformation(NamedTuple):
    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], tuple[Any, Any]]


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


# ---- tree helpers ------------------------------------------------------------------
def _zeros_like(params):
    return tree_map(lambda p: array_module(p).zeros_like(p), params)


def _carry_over(old: Any, new: Any) -> Any:
    """``old`` with the leaves present in ``new`` replaced: state of frozen tensors (absent
    from the gradients) is carried over unchanged."""
    if isinstance(old, dict):
        return {k: _carry_over(v, new[k]) if k in new else v for k, v in old.items()}
    if isinstance(old, (list, tuple)):
        return type(old)(_carry_over(o, n) for o, n in zip(old, new, strict=True))
    return new


def apply_updates(params, updates):
    """``params + updates`` for every tensor in ``updates``; others are returned as they are.
    New arrays are allocated: the input params are never modified."""
    if isinstance(params, dict):
        return {k: apply_updates(v, updates[k]) if k in updates else v for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return type(params)(apply_updates(p, u) for p, u in zip(params, updates, strict=True))
    return params + updates


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
def _check_mask_covers(mask, grads):
    """A mask must name every tensor of the gradients (masks are explicit, not defaults)."""
    tree_map(lambda g, m: None, grads, mask)


def add_weight_decay(weight_decay: float, mask=None) -> GradientTransformation:
    """g <- g + 2 lam w on the tensors where ``mask`` is True (all if None)."""
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")

    def update(grads, state, params):
        if mask is None:
            return tree_map(lambda g, w: g + (2 * weight_decay) * w, grads, params), state
        _check_mask_covers(mask, grads)
        return tree_map(lambda g, w, m: g + (2 * weight_decay) * w if m else g,
                        grads, params, mask), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale_by_momentum(beta: float = 0.9, nesterov: bool = False) -> GradientTransformation:
    """Heavy ball v <- beta v + g, d = v; or Nesterov d = g + beta v (PyTorch's form)."""
    _check_decay(beta, "beta")

    def update(grads, state, params):
        v = tree_map(lambda g, v: beta * v + g, grads, state.velocity)
        d = tree_map(lambda g, v: g + beta * v, grads, v) if nesterov else v
        return d, MomentumState(_carry_over(state.velocity, v))

    return GradientTransformation(lambda params: MomentumState(_zeros_like(params)), update)


def scale_by_ema(beta: float = 0.9) -> GradientTransformation:
    """m <- beta m + (1 - beta) g, d = m: the Layca paper's SGD_AMom (no bias correction)."""
    _check_decay(beta, "beta")

    def update(grads, state, params):
        m = tree_map(lambda g, m: beta * m + (1 - beta) * g, grads, state.ema)
        return m, EmaState(_carry_over(state.ema, m))

    return GradientTransformation(lambda params: EmaState(_zeros_like(params)), update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam (Kingma & Ba 2015, Algorithm 1): d = m_hat / (sqrt(v_hat) + eps)."""
    _check_decay(b1, "b1")
    _check_decay(b2, "b2")
    _check_positive(eps, "eps")

    def init(params):
        return AdamState(0, _zeros_like(params), _zeros_like(params))

    def update(grads, state, params):
        t = state.count + 1
        mu = tree_map(lambda g, m: b1 * m + (1 - b1) * g, grads, state.mu)
        nu = tree_map(lambda g, v: b2 * v + (1 - b2) * (g * g), grads, state.nu)
        c1, c2 = 1 - b1**t, 1 - b2**t  # bias corrections
        d = tree_map(lambda m, v: (m / c1) / (array_module(v).sqrt(v / c2) + eps), mu, nu)
        return d, AdamState(t, _carry_over(state.mu, mu), _carry_over(state.nu, nu))

    return GradientTransformation(init, update)


def scale_by_rms(decay: float = 0.9, eps: float = 1e-7) -> GradientTransformation:
    """RMSprop (Tieleman & Hinton 2012): v <- rho v + (1 - rho) g^2, d = g / (sqrt(v) + eps)."""
    _check_decay(decay, "decay")
    _check_positive(eps, "eps")

    def update(grads, state, params):
        nu = tree_map(lambda g, v: decay * v + (1 - decay) * (g * g), grads, state.nu)
        d = tree_map(lambda g, v: g / (array_module(v).sqrt(v) + eps), grads, nu)
        return d, RmsState(_carry_over(state.nu, nu))

    return GradientTransformation(lambda params: RmsState(_zeros_like(params)), update)


def scale_by_adagrad(eps: float = 1e-7, initial_accumulator: float = 0.0) -> GradientTransformation:
    """Adagrad (Duchi et al. 2011): a <- a + g^2, d = g / (sqrt(a) + eps)."""
    _check_positive(eps, "eps")
    if not initial_accumulator >= 0:
        raise ValueError(f"initial_accumulator: expected >= 0, got {initial_accumulator}")

    def init(params):
        return AdagradState(tree_map(lambda p: array_module(p).full_like(p, initial_accumulator),
                                     params))

    def update(grads, state, params):
        acc = tree_map(lambda g, a: a + g * g, grads, state.sum_of_squares)
        d = tree_map(lambda g, a: g / (array_module(a).sqrt(a) + eps), grads, acc)
        return d, AdagradState(_carry_over(state.sum_of_squares, acc))

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
        _check_mask_covers(multipliers, grads)
        return tree_map(lambda d, c: c * d, grads, multipliers), state

    return GradientTransformation(lambda params: EmptyState(), update)


def masked(inner: GradientTransformation, mask) -> GradientTransformation:
    """Apply ``inner`` only to tensors where ``mask`` is True; pass the others through
    unchanged. (To freeze tensors, leave them out of the gradients instead.)"""

    def select(tree, keep: bool):
        return _select(tree, mask, keep)

    def init(params):
        return MaskedState(inner.init(select(params, True)))

    def update(grads, state, params):
        _check_mask_covers(mask, grads)
        inner_updates, inner_state = inner.update(select(grads, True), state.inner,
                                                  select(params, True))
        return _merge(select(grads, False), inner_updates), MaskedState(inner_state)

    return GradientTransformation(init, update)


def _select(tree, mask, keep: bool):
    """The part of ``tree`` whose mask entries equal ``keep``."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if isinstance(v, (dict, list, tuple)):
                out[k] = _select(v, mask[k], keep)
            elif bool(mask[k]) == keep:
                out[k] = v
        return out
    if isinstance(tree, (list, tuple)):
        return type(tree)(_select(v, m, keep) for v, m in zip(tree, mask, strict=True))
    return tree


def _merge(a, b):
    if isinstance(a, dict):
        return {**a, **{k: _merge(a[k], v) if k in a else v for k, v in b.items()}}
    if isinstance(a, (list, tuple)):
        return type(a)(_merge(x, y) for x, y in zip(a, b, strict=True))
    return b


def _check_decay(value: float, name: str) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name}: expected a decay rate in [0, 1), got {value}")


def _check_positive(value: float, name: str) -> None:
    if not value > 0:
        raise ValueError(f"{name}: expected > 0, got {value}")


# ---- schedules ---------------------------------------------------------------------
class Schedule:
    """A learning rate as a function of the number of updates done so far."""

    def __call__(self, count: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class ConstantSchedule(Schedule):
    lr: float

    def __post_init__(self):
        _check_positive(self.lr, "lr")

    def __call__(self, count):
        return self.lr


@dataclass(frozen=True)
class StepDecay(Schedule):
    """lr * factor^k after k of the ``boundaries`` (update counts) have been passed."""

    lr: float
    boundaries: tuple[int, ...]
    factor: float = 0.1

    def __post_init__(self):
        _check_positive(self.lr, "lr")
        b = tuple(int(x) for x in self.boundaries)
        if list(b) != sorted(b) or any(x < 0 for x in b):
            raise ValueError(f"boundaries: expected increasing counts >= 0, got {self.boundaries}")
        object.__setattr__(self, "boundaries", b)

    def __call__(self, count):
        return self.lr * self.factor ** sum(count >= b for b in self.boundaries)


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """lr * rate^(count / steps), or rate^floor(count / steps) with ``staircase``."""

    lr: float
    rate: float
    steps: int
    staircase: bool = False

    def __post_init__(self):
        _check_positive(self.lr, "lr")
        _check_positive(self.rate, "rate")
        if self.steps < 1:
            raise ValueError(f"steps: expected >= 1, got {self.steps}")

    def __call__(self, count):
        p = count // self.steps if self.staircase else count / self.steps
        return self.lr * self.rate**p


# ---- ready-made rules --------------------------------------------------------------
def _with_decay(direction: GradientTransformation, lr, weight_decay: float, mask):
    parts = [add_weight_decay(weight_decay, mask)] if weight_decay else []
    return chain(*parts, direction, scale_by_learning_rate(lr))


def identity() -> GradientTransformation:
    """The direction of plain SGD: the gradient itself (d = g)."""
    return GradientTransformation(lambda params: EmptyState(), lambda g, s, p: (g, s))


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

