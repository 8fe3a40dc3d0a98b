"""The ENTAME experiments on embedded data: two transfer tasks, the pre-trained body, the
fine-tuning runs and their statistics. Used by ``lastlayer reproduce entame``
(reproduce.py) and the ledger rows E1-E6 (claims.py).

Transfer tasks (theirs: ImageNet models fine-tuned on MNIST, CIFAR and Caltech101, which
cannot be used offline):

* ``digits-5to9``: an MLP body 64 -> 128 -> 128 (ReLU) pre-trained on the digits 0-4 of
  scikit-learn's digits, transferred to the digits 5-9 (C = 5);
* ``digits-mirror``: the same body pre-trained on all ten digits, transferred to the
  left-right mirrored digits (C = 10).

Pre-training: Adam, lr 1e-3, batch 64, 600 updates, a Dense head (dropped afterwards);
the source test accuracy must reach 95 % (else the protocol is broken). Fine-tuning: the
body's features (K = 128) feed the new head of a ``method.RECIPES`` entry; every layer
trains from the first step, batch 64, the paper's lr 1e-4 and phi_w = 1e-12 unless a sweep
changes them; SGD (the optimizer their equations 24-27 assume) and Adam (the one they
name for guiding the pre-trained features). Batches are a stream: every batch has 64
samples (``method.fine_tune`` says why).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lastlayer.engine import Dense, MaxEntropy, Network, ReLU, optim
from lastlayer.engine.training import Dataset, TrainState, evaluate, init_train_state, train
from lastlayer.engine.training.data import digits

from .method import RECIPES, fine_tune, transplant

TASKS = ("digits-5to9", "digits-mirror")
WIDTHS = (128, 128)
PRE_LR, PRE_BATCH, PRE_ITERATIONS = 1e-3, 64, 600
SOURCE_ACCURACY = 0.95  # below this the pre-training failed: the protocol is broken
LR, BATCH, PHI_W = 1e-4, 64, 1e-12  # the paper's learning rate and phi_w
FIRST_STEPS = 10  # their Table 3: mean test accuracy over the first 10 steps
CURVE_STEPS = 30  # the test accuracy is recorded after each of the first 30 joint steps
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class Task:
    name: str
    source: Dataset
    target: Dataset


def _subset(data: Dataset, keep, name: str, offset: int = 0) -> Dataset:
    train, test = keep(data.y_train), keep(data.y_test)
    n_classes = int(np.unique(data.y_train[train]).size)
    return Dataset(name, data.x_train[train], data.y_train[train] - offset, data.x_test[test],
                   data.y_test[test] - offset, "classification", n_classes=n_classes,
                   description=f"{data.description}: {name}")


def _mirror(x: np.ndarray) -> np.ndarray:
    """Flip 8 x 8 digits left-right (flattened rows of 64 pixels)."""
    return x.reshape(-1, 8, 8)[:, :, ::-1].reshape(len(x), 64)


def task(name: str) -> Task:
    """The source and target datasets of transfer task ``name`` (one of ``TASKS``)."""
    data = digits(seed=0)
    if name == "digits-5to9":
        return Task(name, _subset(data, lambda y: y < 5, "digits 0-4"),
                    _subset(data, lambda y: y >= 5, "digits 5-9", offset=5))
    if name == "digits-mirror":
        mirrored = Dataset("mirrored digits", _mirror(data.x_train), data.y_train,
                           _mirror(data.x_test), data.y_test, "classification", n_classes=10,
                           description="scikit-learn's digits, mirrored left-right")
        return Task(name, data, mirrored)
    raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {name!r}")


def body_network(n_inputs: int = 64) -> Network:
    layers, d = [], n_inputs
    for width in WIDTHS:
        layers += [Dense(d, width), ReLU()]
        d = width
    return Network(layers)


@dataclass(frozen=True)
class Body:
    net: Network
    params: list
    state: list
    source_accuracy: float


def pretrain(t: Task, seed: int = 0) -> Body:
    """The body pre-trained on the source task (with a Dense head, then dropped)."""
    body = body_network(t.source.n_features)
    net = Network(list(body) + [Dense(WIDTHS[-1], t.source.n_classes)])
    opt = optim.adam(PRE_LR)
    ts = train(net, opt, t.source, init_train_state(net, opt, seed), iterations=PRE_ITERATIONS,
               batch_size=PRE_BATCH, quiet=True, eval_every=10**9, eval_train=False)
    accuracy = evaluate(net, ts.params, ts.net_state, t.source.x_test, t.source.y_test,
                        "classification")["accuracy"]
    k = len(body)
    return Body(body, ts.params[:k], ts.net_state[:k], accuracy)


def optimizer(name: str, lr: float):
    """A function of the trainable mask returning the GradientTransformation."""
    if name == "sgd":
        return lambda mask: optim.sgd(lr)
    if name == "adam":
        return lambda mask: optim.adam(lr)
    raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")


def run(body: Body, target: Dataset, recipe: str, opt: str, seed: int, steps: int, *,
        lr: float = LR, phi_w: float | None = None, statistics: str = "last",
        monitor_features: bool = False) -> dict:
    """Fine-tune ``recipe`` for ``steps`` joint steps. Returns the test accuracy after each
    of the first ``CURVE_STEPS`` steps ("accuracy", up to ``steps`` of them), its mean over
    the first ``FIRST_STEPS``, the accuracy after the last step, the head-only steps done,
    and (``monitor_features``) the variance of the body's features (their Fig. 1: the mean
    over features of the variance over the test set) after every step."""
    r = RECIPES[recipe]
    if phi_w is not None and isinstance(r.init, MaxEntropy):
        r = replace(r, init=MaxEntropy(phi_w=phi_w))
    net, params, state = transplant(body.net, body.params, body.state, target.n_classes, r, seed,
                                    statistics=statistics)
    ts, warmup = fine_tune(net, params, state, target, r, optimizer(opt, lr), steps, seed=seed,
                           batch_size=BATCH, curve_steps=CURVE_STEPS)
    accuracy = np.asarray(ts.history["test_accuracy"])
    curve = accuracy[:CURVE_STEPS]
    out = {"accuracy": curve, "first": float(curve[:FIRST_STEPS].mean()),
           "final": float(accuracy[-1]), "warmup": warmup}
    if monitor_features:
        out["feature_variance"] = feature_variance_curve(body, target, r, opt, seed, steps, lr,
                                                         statistics)
    return out


def feature_variance_curve(body: Body, target: Dataset, recipe, opt: str, seed: int,
                           steps: int, lr: float, statistics: str = "last") -> np.ndarray:
    """Their Fig. 1: the variance of X^L (the body's output on the test set, mean over
    features) before training and after each of ``steps`` joint steps (no warm-up)."""
    net, params, state = transplant(body.net, body.params, body.state, target.n_classes, recipe,
                                    seed, statistics=statistics)
    k = len(body.net)

    def variance(t, p):
        feats = net[:k].forward(p[:k], target.x_test, train=False, state=state[:k])[0]
        return {"feature_variance": float(feats.var(axis=0).mean())}

    opt_fn = optimizer(opt, lr)(None)
    ts = TrainState(params, state, opt_fn.init(params), seed)
    start = variance(0, params)["feature_variance"]
    ts = train(net, opt_fn, target, ts, iterations=steps, batch_size=BATCH, quiet=True,
               eval_every=10**9, eval_train=False, monitor=variance, mode="stream")
    return np.array([start] + list(ts.history["feature_variance"]))
