"""ENTAME on real images (issue 18): their Section 6 protocol at the scale of the MNIST
sample inside the install. Used by ``lastlayer reproduce entame`` (reproduce.py, section
"MNIST CNN"; report and figure in image_report.py).

Theirs: ImageNet-pre-trained CNNs (ResNet, DenseNet, VGG, Inception) get a new head and are
fine-tuned on MNIST, CIFAR and Caltech101: every layer trains, Adam (their lr 1e-4 and
phi_w = 1e-12 everywhere), batch 256, 24 seeds; their Table 3 is the gain in mean test
accuracy over the first 10 steps, Tables 4-6 the test accuracy after 10 (15) epochs, Fig. 1
the variance of the features X^L over the first steps. Here, per seed:

1. ``pretrain``: ``cnn(digits 0-4, channels=CHANNELS, hidden=HIDDEN)`` (conv 3x3 x 8 ->
   pool -> conv 3x3 x 16 -> pool -> dense 64, ReLU -> dense 5) trained by Adam (lr
   ``PRE_LR``, batch ``PRE_BATCH``) for ``PRE_ITERATIONS`` steps on the 2,000 training images
   of the digits 0-4; the body is everything but the last Dense layer (K = 64 ReLU
   features); its test accuracy on the 500 test images of 0-4 must reach
   ``protocol.SOURCE_ACCURACY``, else the protocol is broken. Deviations: the source task
   is MNIST's digits 0-4, not ImageNet, and the body is a 2-block CNN, not a ResNet; the
   body is pre-trained once per seed (theirs: one ImageNet checkpoint per architecture), so
   the intervals include the body's variation.
2. ``run``: each recipe of ``RECIPES`` (method.RECIPES: base, base + 1 warm-up step, MEI,
   MEI + FN, linear probing then fine-tuning) transplants a new 5-way head for the digits
   5-9 (``method.transplant``, the head's draw keyed by the seed) and fine-tunes every
   layer with Adam at their lr ``protocol.LR`` and phi_w ``protocol.PHI_W``, their batch
   ``BATCH`` = 256, for ``epochs`` epochs of the 2,000 training images of 5-9 (a stream
   of full batches, ``method.fine_tune``); no data augmentation (theirs: random horizontal
   flips, which do not suit digits). The test accuracy on the 500 test images of 5-9 and
   the mean feature variance of X^L on them are recorded after each of the first
   ``curve_steps`` joint steps, the test accuracy again after the budget.

float32 throughout (theirs: GPU float32).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from lastlayer.engine import optim
from lastlayer.engine.training import Dataset, evaluate, init_train_state, train
from lastlayer.engine.training.data import mnist
from lastlayer.engine.training.networks import cnn

from . import protocol
from .method import RECIPES as ALL_RECIPES
from .method import fine_tune, transplant

CHANNELS, HIDDEN = (8, 16), (64,)
PRE_LR, PRE_BATCH, PRE_ITERATIONS = 1e-3, 64, 300
BATCH = 256  # theirs (MNIST, CIFAR)
DTYPE = np.float32
RECIPES = ("base", "base+wu", "mei", "mei+fn", "probe")
TASK = "mnist 0-4 -> 5-9"


@lru_cache(maxsize=1)
def task() -> protocol.Task:
    """Source: the mnist digits 0-4 (2,000 / 500); target: the digits 5-9, labels 0..4
    (2,000 / 500); x (N, 1, 28, 28) float32, the training pixels' mean and std of all ten
    digits (``lastlayer.engine.training.data.mnist``)."""
    d = mnist()
    d = Dataset(d.name, d.x_train.astype(DTYPE), d.y_train, d.x_test.astype(DTYPE), d.y_test,
                d.task, n_classes=d.n_classes, description=d.description)
    return protocol.Task(TASK, protocol._subset(d, lambda y: y < 5, "mnist digits 0-4"),
                         protocol._subset(d, lambda y: y >= 5, "mnist digits 5-9", offset=5))


def pretrain(t: protocol.Task, seed: int, iterations: int = PRE_ITERATIONS) -> protocol.Body:
    """The CNN body pre-trained on ``t.source`` with a Dense head (then dropped); its
    parameters drawn and its batches keyed by ``seed``. With the protocol's ``iterations``
    (or more), raises RuntimeError when the source test accuracy is below
    ``protocol.SOURCE_ACCURACY`` (a broken protocol, not a result); a shortened pre-training
    (the tests' smoke runs) is not held to it."""
    net = cnn(t.source, channels=CHANNELS, hidden=HIDDEN)
    opt = optim.adam(PRE_LR)
    ts = train(net, opt, t.source, init_train_state(net, opt, seed, DTYPE),
               iterations=iterations, batch_size=PRE_BATCH, quiet=True, eval_every=10**9,
               eval_train=False)
    accuracy = evaluate(net, ts.params, ts.net_state, t.source.x_test, t.source.y_test,
                        "classification")["accuracy"]
    if accuracy < protocol.SOURCE_ACCURACY and iterations >= PRE_ITERATIONS:
        raise RuntimeError(f"entame images: the body of seed {seed} reached {accuracy:.3f} "
                           f"test accuracy on {t.source.name} after {iterations} steps, below "
                           f"{protocol.SOURCE_ACCURACY}: the pre-training is broken")
    k = len(net) - 1
    return protocol.Body(net[:k], ts.params[:k], ts.net_state[:k], float(accuracy))


def steps_per_epoch(target: Dataset) -> int:
    return -(-len(target.x_train) // BATCH)


def run(body: protocol.Body, target: Dataset, recipe: str, seed: int, epochs: int,
        curve_steps: int) -> dict:
    """Fine-tune ``recipe`` for ``epochs`` epochs of joint steps. Returns "accuracy"
    (curve_steps,) the test accuracy after joint steps 1..curve_steps; "variance"
    (curve_steps + 1,) the mean over the K features of their variance over the test images
    before the first joint step (after any warm-up) and after each of those steps; "first"
    the mean test accuracy over the first ``protocol.FIRST_STEPS`` joint steps (their Table
    3); "final" the test accuracy after the budget; "warmup" the head-only steps done."""
    total = epochs * steps_per_epoch(target)
    if not protocol.FIRST_STEPS <= curve_steps <= total:
        raise ValueError(f"curve_steps: expected {protocol.FIRST_STEPS} <= curve_steps <= "
                         f"{total} (the joint steps of {epochs} epochs), got {curve_steps}")
    r = ALL_RECIPES[recipe]
    net, params, state = transplant(body.net, body.params, body.state, target.n_classes, r,
                                    seed, input_shape=target.x_train.shape[1:])
    k = len(body.net)

    def variance(p):
        features = net[:k].forward(p[:k], target.x_test, train=False, state=state[:k])[0]
        return float(features.astype(np.float64).var(axis=0).mean())

    make_opt = protocol.optimizer("adam", protocol.LR)
    # the warm-up is head-only: the body (and so X^L) is the pre-trained one until step 1
    start = variance(params)
    ts, warmup = fine_tune(net, params, state, target, r, make_opt, total, seed=seed,
                           batch_size=BATCH, monitor=lambda t, p: {"variance": variance(p)},
                           curve_steps=curve_steps)
    accuracy = np.asarray(ts.history["test_accuracy"], dtype=np.float64)
    curve, final = accuracy[:curve_steps], accuracy[-1]
    return {"accuracy": curve, "variance": np.array([start] + list(ts.history["variance"])),
            "first": float(curve[:protocol.FIRST_STEPS].mean()), "final": float(final),
            "warmup": warmup}


def stack(per_seed: list[dict]) -> dict:
    """per_seed: per seed {"source_accuracy": float, recipe: ``run``'s dict} for every
    recipe of ``RECIPES``. Returns results.h5 group "mnist": per recipe "accuracy"
    (n_seeds, curve_steps), "variance" (n_seeds, curve_steps + 1), "first" and "final"
    (n_seeds,), "warmup" (); and "source_accuracy" (n_seeds,)."""
    out = {"source_accuracy": np.array([s["source_accuracy"] for s in per_seed])}
    for name in RECIPES:
        runs = [s[name] for s in per_seed]
        out[name] = {key: np.array([r[key] for r in runs]) for key in
                     ("accuracy", "variance", "first", "final")}
        out[name]["warmup"] = np.array(runs[0]["warmup"])
    return out

