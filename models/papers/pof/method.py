"""PoF: post-training of the feature extractor against perturbed classifiers (Sato et al.,
ICML 2022, Algorithm 1), as a gradient step of ``lastlayer.engine.training.train``.

Start from (phi0, theta0) at a minimum of the training loss L_D; theta = the weight and
bias of the last Dense layer (the classifier), held at theta0 throughout (the model is
evaluated with (phi*, theta0)). Iteration t:

1. draw a line-search mini-batch B (paper: |B| = 32) from the stream ("pof-search", t, a);
2. g = dL_B(phi_t, theta)/dtheta at theta0 (the unregularised mean cross-entropy),
   g_hat = g / ||g||                                                               (eq. 3)
3. xi* = argmin_{xi >= 0} L_B(phi_t, theta0 - xi g_hat)                            (eq. 2)
   found exactly (``lastlayer.engine.solvers.line_minimum``, relative accuracy 1e-12); a profile
   without a minimum is discarded and B drawn again (attempt a + 1), as their Section 4
   suggests for asymmetric landscapes;
4. B~ is the training loop's own mini-batch of iteration t; gamma ~ U[0, gamma_max] from
   the stream ("pof-gamma", t) (their default range [0, 2]; a fixed gamma is an option);
5. the gradient of L_B~(phi, theta0 - gamma xi* g_hat) w.r.t. phi, with g_hat and xi* held
   constant (eq. 5), goes to the optimizer (theirs: Nesterov momentum 0.9, weight decay
   5e-4 in PyTorch's convention, i.e. ``add_weight_decay(2.5e-4)`` here).

With gamma = 0 the step is exactly plain back-propagation on phi with the head frozen
(ledger row P4). The step reports, per iteration: ``xi`` (xi*, a Euclidean distance in
classifier space), ``gamma``, ``perturbation`` (||gamma xi* g_hat|| = gamma xi*),
``rejected`` (line-search batches discarded) and ``search_loss`` (L_B at theta0).

Choices where the paper is silent, stated where they act: the line-search features are
computed in inference mode (dropout off, running statistics: a deterministic profile);
after ``max_redraws`` discarded batches in a row the iteration uses xi* = 0 (a plain step),
which the history shows as ``rejected = max_redraws``.

The released code (DensoITLab/PoF-v1) differs, and ``search="released"`` reproduces its
search: the unnormalised gradient g, a step doubled from 1 until L_B exceeds L_B(theta0)
(capped), then the best of 16 equally spaced points up to that bound
(``lastlayer.engine.solvers.released_line_search``); their line-search batch is 256 drawn with
replacement (``replacement=True``) and their main batch 64; their gamma range is never
defined. Their script never updates the feature extractor; this module follows the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lastlayer.engine import Dense, Network, stream
from lastlayer.engine._checks import is_integer, is_real
from lastlayer.engine.losses import softmax_cross_entropy
from lastlayer.engine.solvers import LineProfile, line_minimum, released_line_search
from lastlayer.engine.training import Batch, StepResult, plain_gradient

__all__ = ["PoF", "classifier_index", "feature_mask", "Perturbation", "perturbation",
           "pof_step"]


@dataclass(frozen=True)
class PoF:
    """Settings of PoF's step (module docstring)."""

    gamma_max: float = 2.0  # gamma ~ U[0, gamma_max] (their Section 4.1: [0, 2])
    gamma: float | None = None  # a fixed gamma instead of the draw
    search_batch: int = 32  # |B| (paper: 32; released code: 256)
    search: str = "exact"  # "exact" (eq. 2) or "released" (the authors' grid scheme)
    replacement: bool = False  # draw B with replacement (the released code does)
    max_redraws: int = 10  # discarded line-search batches before falling back to xi* = 0
    split: int = -1  # index of the classifier layer (a Dense layer, the network's last)

    def __post_init__(self):
        for name in ("gamma_max", "gamma"):
            value = getattr(self, name)
            if value is None and name == "gamma":
                continue
            if not (is_real(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))  # NumPy scalars become Python numbers
        for name in ("search_batch", "max_redraws"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.search not in ("exact", "released"):
            raise ValueError(f"search: expected 'exact' or 'released', got {self.search!r}")
        if not is_integer(self.split):
            raise ValueError(f"split: expected an integer layer index, got {self.split!r}")
        object.__setattr__(self, "split", int(self.split))

    def draw_gamma(self, seed: int, t: int) -> float:
        """gamma of iteration t: fixed, or U[0, gamma_max] from the stream ("pof-gamma", t)."""
        if self.gamma is not None:
            return float(self.gamma)
        return float(stream(seed, "pof-gamma", t).uniform(0.0, self.gamma_max))


def classifier_index(net: Network, split: int) -> int:
    """The index of the classifier layer: ``split`` (negative counts from the end) must
    name the network's last layer, a Dense layer; everything before it is phi."""
    if not is_integer(split) or not -len(net) <= split < len(net):
        raise ValueError(f"split: expected a layer index in [{-len(net)}, {len(net)}), got "
                         f"{split!r}")
    k = split % len(net)
    if k == 0:
        raise ValueError("split: the classifier cannot be layer 0: PoF needs a feature "
                         "extractor before it")
    if k != len(net) - 1 or not isinstance(net[k], Dense):
        raise ValueError(f"split: PoF's classifier must be the network's last layer and a "
                         f"Dense layer; layer {k} is {net[k]} of {len(net)} layers")
    return k


def feature_mask(net: Network, params: list, split: int = -1) -> list[dict]:
    """The trainable mask of PoF: every tensor of phi, none of the classifier."""
    k = classifier_index(net, split)
    return net.trainable_mask(params, frozen_layers=[k])


class Perturbation(NamedTuple):
    xi: float  # xi*: the distance to the 1-D minimum along -g_hat (0 if none was found)
    direction: dict  # g_hat as a dict like the classifier's params (unit norm)
    rejected: int  # line-search batches discarded
    search_loss: float  # L_B(theta0) of the batch that was kept (NaN if none)
    evaluations: int  # profile evaluations of the kept search


def perturbation(net: Network, params: list, net_state: list, batch: Batch, config: PoF,
                 k: int) -> Perturbation:
    """Steps 1-3: draw B, compute g_hat and xi* (eq. 2, 3), redrawing B when its profile
    has no minimum."""
    body = net[:k]
    head = params[k]
    n = len(batch.x_all)
    size = min(config.search_batch, n) if not config.replacement else config.search_batch
    for attempt in range(config.max_redraws):
        rng = stream(batch.seed, "pof-search", batch.t, attempt)
        idx = rng.choice(n, size=size, replace=config.replacement)
        phi_b, _ = body.forward(params[:k], batch.x_all[idx], train=False, state=net_state[:k])
        y_b = batch.y_all[idx]
        W, b = head["W"], head.get("b")
        z = phi_b @ W.T + (b if b is not None else 0.0)
        value, dz = softmax_cross_entropy(z, y_b)
        g = {"W": dz.T @ phi_b}  # (C, d)
        if b is not None:
            g["b"] = dz.sum(axis=0)  # (C,)
        norm = math.sqrt(sum(float((v * v).sum()) for v in g.values()))
        if not (math.isfinite(norm) and norm > 0):
            continue  # a batch the classifier already fits exactly gives no direction
        if config.search == "exact":
            unit = {key: v / norm for key, v in g.items()}
            found = line_minimum(LineProfile(phi_b, y_b, W, b, unit["W"], unit.get("b")))
            if found.status == "minimum":
                return Perturbation(found.xi, unit, attempt, value, found.evaluations)
        else:
            s, status, count = released_line_search(LineProfile(phi_b, y_b, W, b, g["W"],
                                                                g.get("b")))
            unit = {key: v / norm for key, v in g.items()}
            return Perturbation(s * norm, unit, attempt, value, count)
    zero = {key: np.zeros_like(v) for key, v in head.items()}
    return Perturbation(0.0, zero, config.max_redraws, math.nan, 0)


def pof_step(net: Network, config: PoF = PoF()):
    """PoF's gradient step for ``lastlayer.engine.training.train(..., step=pof_step(net, config),
    mask=feature_mask(net, params))`` (module docstring). The loss recorded per iteration
    is L_B~ at the perturbed classifier, the one the step descends."""
    k = classifier_index(net, config.split)

    def step(net_, params, net_state, batch, loss, mask):
        found = perturbation(net_, params, net_state, batch, config, k)
        gamma = config.draw_gamma(batch.seed, batch.t)
        shift = gamma * found.xi
        info = {"xi": found.xi, "gamma": gamma, "perturbation": shift,
                "rejected": float(found.rejected), "search_loss": found.search_loss}
        if shift == 0.0:
            perturbed = params  # exactly the plain step (gamma = 0, or no minimum found)
        else:
            head = {key: w - shift * found.direction[key] for key, w in params[k].items()}
            perturbed = params[:k] + [head] + params[k + 1:]
        result = plain_gradient(net_, perturbed, net_state, batch, loss, mask)
        if result.grads is not None:
            result.grads[k] = {}  # theta0 never moves, whatever the mask says
        return StepResult(result.loss, result.grads, result.caches, info)

    return step
