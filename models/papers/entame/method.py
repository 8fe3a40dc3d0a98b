"""ENTAME (Varno et al. 2019, "Efficient Neural Task Adaptation by Maximum Entropy
Initialization"): transplant a new classifier onto a pre-trained feature extractor and
fine-tune everything, with the new head initialised for maximum entropy.

The method (their Section 5, Fig. 2b):

* maximum-entropy initialisation (MEI, eq. 21): W ~ N(0, phi_w), phi_w = gamma^2 lambda^2
  / C^2 (``lastlayer.engine.MaxEntropy``; the paper's experiments use phi_w = 1e-12), b = 0: every
  logit is ~0, so y_hat ~ 1/C, the loss is ln C and the error back-propagated into the
  features, delta^{L-1} = delta^L W (eq. 8), is ~sqrt(phi_w) small: stalled until the first
  update makes W ~ gamma E_N[(y - 1/C) x_bar] (eq. 25);
* feature normalisation (FN, eq. 20): the features are z-normalised over the batch without
  learnable parameters (``lastlayer.engine.ZNormalize``; inference uses the last training batch's
  statistics, the paper's "detached" ones, or a running average).

Nothing is frozen: all layers train from the first step; the stall of the body is an effect
the paper argues for, not an enforced freeze. The base head of their experiments is He
initialisation in fan-out mode, N(0, 2 / C) (``HeNormal(mode="fan_out")``), on the raw
features. The variants compared (``RECIPES``):

======================  ======================================================================
base                    He fan-out, raw features (their "Base")
base+wu                 base, one head-only step first (their "Base+WU")
base+wu-epoch           base, one epoch of head-only steps first
mei                     maximum entropy, raw features (their "MEI")
mei+fn                  maximum entropy on z-normalised features (ENTAME, their "MEI+FN")
fn                      He fan-out on z-normalised features (their "FN", omitted from their plots)
he-in, glorot, zero     He fan-in, Glorot-normal, all-zero heads (the usual alternatives),
(+fn)                   each with and without feature normalisation
probe                   linear probing (head-only training, ``PROBE_STEPS``) then fine-tuning
======================  ======================================================================

Warm-up and probing steps come before the common budget of joint steps and are counted
separately (their extra head-only budget is stated in every report).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lastlayer.engine import (
    Constant, Dense, GlorotNormal, HeNormal, MaxEntropy, Network, ZNormalize, stream,
)
from lastlayer.engine._checks import is_integer
from lastlayer.engine.layers import Initializer
from lastlayer.engine.training import Dataset, TrainState, train

__all__ = ["Recipe", "RECIPES", "head", "transplant", "fine_tune", "PROBE_STEPS"]

PROBE_STEPS = 50  # head-only steps of linear probing before fine-tuning


@dataclass(frozen=True)
class Recipe:
    """How a new head is made and trained."""

    init: Initializer  # the new classifier's weights (biases start at 0)
    fn: bool = False  # z-normalise the features fed to it
    warmup: int | str = 0  # head-only steps before joint training; "epoch": one epoch
    label: str = ""


RECIPES: dict[str, Recipe] = {
    "base": Recipe(HeNormal(mode="fan_out"), label="base (He fan-out)"),
    "base+wu": Recipe(HeNormal(mode="fan_out"), warmup=1, label="base + 1 warm-up step"),
    "base+wu-epoch": Recipe(HeNormal(mode="fan_out"), warmup="epoch",
                            label="base + 1 warm-up epoch"),
    "mei": Recipe(MaxEntropy(), label="MEI"),
    "mei+fn": Recipe(MaxEntropy(), fn=True, label="MEI + FN (ENTAME)"),
    "fn": Recipe(HeNormal(mode="fan_out"), fn=True, label="FN alone (He fan-out)"),
    "he-in": Recipe(HeNormal(), label="He fan-in"),
    "he-in+fn": Recipe(HeNormal(), fn=True, label="He fan-in + FN"),
    "glorot": Recipe(GlorotNormal(), label="Glorot"),
    "glorot+fn": Recipe(GlorotNormal(), fn=True, label="Glorot + FN"),
    "zero": Recipe(Constant(0.0), label="zero"),
    "zero+fn": Recipe(Constant(0.0), fn=True, label="zero + FN"),
    "probe": Recipe(HeNormal(mode="fan_out"), warmup=PROBE_STEPS,
                    label=f"linear probing ({PROBE_STEPS} steps), then fine-tuning"),
}


def head(recipe: Recipe, n_features: int, n_classes: int, *,
         statistics: str = "last") -> list:
    """The new layers: [ZNormalize] + Dense(K, C) with ``recipe``'s initialiser, b = 0."""
    if not is_integer(n_classes) or n_classes < 2:
        raise ValueError(f"C: a classifier needs at least 2 classes, got {n_classes!r}")
    norm = [ZNormalize(n_features, statistics=statistics)] if recipe.fn else []
    return norm + [Dense(n_features, n_classes, weight_init=recipe.init, bias_init=Constant(0.0))]


def transplant(body: Network, body_params: list, body_state: list, n_classes: int,
               recipe: Recipe, seed: int, *, statistics: str = "last",
               input_shape: tuple[int, ...] | None = None):
    """(network, params, state): the pre-trained ``body`` (its last layer's output are the
    features, K of them) with a new head; the head's parameters drawn from the stream
    ("entame-head", seed) in the body's floating dtype. ``input_shape``: one sample's shape,
    e.g. (1, 28, 28) for a CNN body; by default (d_in,) of an MLP body's first Dense layer.
    The body's arrays are shared, never modified."""
    shape = body.output_shape((1, *(input_shape or _input_shape(body))))
    if len(shape) != 2:
        raise ValueError(f"body: expected (N, K) features, got output shape {shape}")
    layers = head(recipe, shape[1], n_classes, statistics=statistics)
    new = Network(layers)
    net = Network(list(body) + layers)
    dtype = next((p.dtype for d in body_params for p in d.values()), np.float64)
    params = list(body_params) + new.init(stream(seed, "entame-head"), dtype)
    return net, params, list(body_state) + new.init_state(dtype)


def _input_shape(body: Network) -> tuple[int, ...]:
    first = body[0]
    if isinstance(first, Dense):
        return (first.d_in,)
    raise ValueError(f"body: the first layer is {first}, not Dense: pass input_shape, one "
                     "sample's shape (e.g. (1, 28, 28))")


def fine_tune(net: Network, params: list, net_state: list, data: Dataset, recipe: Recipe,
              optimizer, steps: int, *, seed: int, batch_size: int = 64,
              eval_every: int = 1, mode: str = "stream", monitor=None,
              curve_steps: int | None = None) -> tuple[TrainState, int]:
    """Warm-up (head-only, ``recipe.warmup`` steps) then ``steps`` joint steps of
    ``optimizer`` (a function of the trainable mask returning a GradientTransformation;
    a fresh state for each phase). Returns (the state after the joint steps, the number of
    head-only steps done). The joint phase's history has the test accuracy every
    ``eval_every`` steps, and ``monitor(t, params)``'s values after every joint step
    (``lastlayer.engine.training.train``'s monitor). With ``curve_steps`` < ``steps``, both happen
    only over the first ``curve_steps`` joint steps, and the test accuracy once more after
    the last: the same run (one optimizer state, one batch stream) evaluated less often.

    Batches are a stream by default (``lastlayer.engine.training.data.batch_indices``): every batch
    has ``batch_size`` samples. With per-epoch batches the last batch of an epoch can be
    tiny (3 samples for the mirrored digits), and FN's inference statistics, those of the
    last training batch, then come from 3 samples: the test accuracy collapses for a step
    (observed 82 % -> 41 %)."""
    warmup = recipe.warmup
    if warmup == "epoch":
        warmup = -(-len(data.x_train) // batch_size)
    n_body = len(net) - (2 if recipe.fn else 1)
    if warmup:
        mask = net.trainable_mask(params, frozen_layers=range(n_body))
        opt = optimizer(mask)
        ts = TrainState(params, net_state, opt.init(params), seed)
        ts = train(net, opt, data, ts, iterations=warmup, batch_size=batch_size, mask=mask,
                   quiet=True, eval_every=10**9, eval_train=False, mode=mode)
        params, net_state = ts.params, ts.net_state
    opt = optimizer(None)
    ts = TrainState(params, net_state, opt.init(params), seed, iteration=warmup)
    curve = steps if curve_steps is None else min(curve_steps, steps)
    ts = train(net, opt, data, ts, iterations=warmup + curve, batch_size=batch_size,
               quiet=True, eval_every=eval_every, eval_train=False, mode=mode, monitor=monitor)
    if curve < steps:  # evaluated once: the only multiple of warmup + steps left is itself
        ts = train(net, opt, data, ts, iterations=warmup + steps, batch_size=batch_size,
                   quiet=True, eval_every=warmup + steps, eval_train=False, mode=mode)
    return ts, warmup
