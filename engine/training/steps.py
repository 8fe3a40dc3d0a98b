"""Gradient steps: how one training iteration turns a mini-batch into gradients.

``lastlayer.engine.training.train`` draws the mini-batch of iteration t (a pure function of the seed
and t), hands it to a *gradient step*, and applies the optimizer to the gradients it
returns. The default step is plain back-propagation; SAM (here) and PoF
(``lastlayer.models.papers.pof``) are steps too, so they reuse the loop's batching, evaluation,
history, checkpoints and determinism instead of a second training loop.

A gradient step is any callable ::

    step(net, params, net_state, batch, loss, mask) -> StepResult

* ``batch`` (``Batch``): the mini-batch x (N, ...), y, the iteration t, the run's seed, and
  the whole training set (x_all, y_all, already cast to the parameters' dtype) for steps
  that draw further batches of their own, always from a named stream keyed by (seed, t).
* ``mask``: the trainable mask (frozen tensors get no gradient), or None.
* ``StepResult``: the mini-batch loss recorded in the history (None when the loss or the
  output is not finite: the loop then skips the step or raises), the gradients for the
  optimizer, the forward caches whose running statistics update the network state, and a
  dict of extra per-iteration numbers appended to the history under their names. A step
  returns the same info keys at every iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from .._checks import check_mask, real_number
from ..backend import array_module
from ..network import Mask, Network
from ..optim.tree import tree_flatten
from ..streams import stream

__all__ = ["Batch", "StepResult", "GradientStep", "plain_gradient", "sam_gradient",
           "finite_loss"]


class Batch(NamedTuple):
    x: Any  # (N, ...) inputs of iteration t
    y: Any  # (N,) labels or (N, outputs) targets
    t: int  # iteration, counted from 0
    seed: int  # the run's seed: with t, the whole random state of the iteration
    x_all: Any  # the training inputs, for steps that draw batches of their own
    y_all: Any


class StepResult(NamedTuple):
    loss: float | None  # the mini-batch loss for the history; None: not finite
    grads: list | None  # gradients (structure of params, frozen tensors left out)
    caches: list | None  # caches of the forward pass that updates running statistics
    info: dict[str, float]  # extra per-iteration history


GradientStep = Callable[[Network, list, list, Batch, Callable, "Mask | None"], StepResult]


def finite_loss(loss: Callable, out, y):
    """(loss as a host float, dout), or None when the output or the loss is NaN / infinite.
    On CuPy the loss is a 0-d device array; it is read once here (the check reads it anyway)."""
    if not array_module(out).isfinite(out).all():
        return None
    value, dout = loss(out, y)
    value = float(value)
    return (value, dout) if math.isfinite(value) else None


def plain_gradient(net: Network, params: list, net_state: list, batch: Batch, loss: Callable,
                   mask: Mask | None) -> StepResult:
    """Back-propagation on the mini-batch, in training mode; the dropout masks of iteration t
    come from the stream ("dropout", t)."""
    rng = stream(batch.seed, "dropout", batch.t)
    out, caches = net.forward(params, batch.x, train=True, state=net_state, rng=rng)
    value = finite_loss(loss, out, batch.y)
    if value is None:
        return StepResult(None, None, None, {})
    batch_loss, dout = value
    _, grads = net.backward(params, caches, dout, mask=mask, input_grad=False)
    return StepResult(batch_loss, grads, caches, {})


def sam_gradient(rho: float = 0.05, perturb: Mask | None = None) -> GradientStep:
    """Sharpness-aware minimisation (Foret et al. 2021) as a gradient step.

    With g the mini-batch gradient at w over the perturbed tensors, the step returns the
    gradient at w + eps, eps = rho g / ||g|| (one global norm over those tensors, the
    original SAM), computed on the same mini-batch with the same dropout masks; the
    optimizer then applies it at w. The running statistics and the recorded loss are those
    of the first (unperturbed) pass; the info ``sam_radius`` is ||eps|| (rho, or 0 when
    g = 0).

    rho : > 0, the radius of the perturbation (their default 0.05).
    perturb : the tensors to perturb (a mask like the parameters); None: the trainable ones
        (the loop's mask, or every tensor). SAM on the feature extractor only is
        ``sam_gradient(rho, perturb=feature_mask)`` with the same mask as training mask.
    """
    rho = real_number(rho, "rho", minimum=0, open_minimum=True)  # NumPy scalars too

    def step(net, params, net_state, batch, loss, mask):
        if perturb is not None:
            check_mask(perturb, params, name="perturb")
        first = plain_gradient(net, params, net_state, batch, loss, _first_pass_mask(perturb, mask))
        if first.loss is None:
            return StepResult(None, None, None, {"sam_radius": math.nan})
        g = first.grads
        if perturb is not None:
            g = [{k: v for k, v in d.items() if perturb[i][k]} for i, d in enumerate(g)]
        norm = math.sqrt(sum(float((v * v).sum()) for v in tree_flatten(g)))
        if norm == 0.0:
            eps = 0.0
            shifted = params
        else:
            eps = rho
            scale = rho / norm
            shifted = [{k: (w + scale * g[i][k]) if k in g[i] else w for k, w in p.items()}
                       for i, p in enumerate(params)]
        second = plain_gradient(net, shifted, net_state, batch, loss, mask)
        if second.loss is None:
            return StepResult(None, None, None, {"sam_radius": math.nan})
        return StepResult(first.loss, second.grads, first.caches, {"sam_radius": eps})

    return step


def _first_pass_mask(perturb: Mask | None, mask: Mask | None) -> Mask | None:
    """The tensors whose gradient the first SAM pass needs: the trainable and the perturbed
    ones (None: every tensor)."""
    if perturb is None or mask is None:
        return mask if perturb is None else None
    return [{k: bool(on or mask[i][k]) for k, on in layer.items()} for i, layer in enumerate(perturb)]
