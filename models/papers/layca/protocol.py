"""The Layca paper's experiments on scikit-learn's digits: constants, data, networks,
training runs and statistics. Used by ``lastlayer reproduce layca`` (reproduce.py) and by
ledger rows C5-C7 (claims.py), which run the same functions smaller.

Scale (theirs -> ours): MNIST and 784-unit layers -> digits upsampled to 16 x 16 and
256-unit layers (Section 3), and an 8-layer, 64-unit MLP without biases (Sections 5-6) in
place of their VGG / ResNet / CNN with batch normalisation on CIFAR and Tiny ImageNet.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lastlayer.engine import Dense, Network, ReLU, optim, stream
from lastlayer.engine.training import Dataset, TrainState, evaluate, init_train_state, train
from lastlayer.engine.training.data import digits

from .method import PAIRS, update_rule

# ---- protocol constants -------------------------------------------------------------------
TOY_PER_CLASS = 10  # training digits per class (their Section 3: 10 MNIST images per class)
TOY_UPSAMPLE = 2  # 8x8 digits -> 16x16 (pixels repeated): 256 inputs, like the 256 units
TOY_WIDTH = 256  # units of every hidden layer (theirs: 784 = 28 x 28, the MNIST inputs)
TOY_HIDDEN = 10  # hidden layers: the candidates for training alone
TOY_LR = 0.5  # full-batch SGD (theirs: lr 10 with Glorot-uniform weights, 4000 epochs)
TOY_CHECK_EVERY = 25  # updates between training-accuracy checks

ALPHAS = (-0.8, -0.4, 0.0, 0.4, 0.8)
MLP_DEPTH, MLP_WIDTH = 8, 64  # Sections 5-6: 8 kernel layers, no biases (their Section 4.1)
BATCH = 64
DECAY_AT = 0.75  # every rate is divided by 10 after 75 % of the updates
# Rates without Layca: SGD's by a coarse search at alpha = 0 (as their Section 5.1 does),
# the adaptive methods' Keras defaults; with Layca, the defaults of lastlayer.engine.optim.layca (3^-3 for
# SGD, RMSprop and Adagrad, 3^-5 for SGD_AMom and Adam).
PLAIN_RATES = {"sgd": 0.1, "sgd_amom": 0.1, "adam": 1e-3, "rmsprop": 1e-3, "adagrad": 1e-2}
LABELS = {"sgd": "SGD", "sgd_amom": "SGD_AMom", "adam": "Adam", "rmsprop": "RMSprop",
          "adagrad": "Adagrad"}


# ---- Section 3: one layer trained alone ---------------------------------------------------------
def toy_data(seed: int) -> Dataset:
    """10 training digits per class drawn with ``seed`` from the training split of digits;
    every other digit (1697) is held out. Pixels are standardised by one global mean and
    std of the training split, as their MNIST preprocessing does (not per pixel), and each
    is repeated into a 2 x 2 block, so that the first layer has as many inputs as units
    (their hidden layers are "equivalent up to parameter initialization").
    x: (100, 256) train, (1697, 256) held out."""
    full = digits(seed=0, images=True, standardize=False)  # x: (N, 1, 8, 8)
    mean, std = full.x_train.mean(), full.x_train.std()

    def prepare(x):  # (n, 1, 8, 8) -> (n, 256)
        block = np.ones((1, 1, TOY_UPSAMPLE, TOY_UPSAMPLE))
        return np.kron((x - mean) / std, block).reshape(len(x), -1)

    rng = stream(seed, "layca-toy")
    chosen = np.concatenate([rng.choice(np.flatnonzero(full.y_train == c), TOY_PER_CLASS,
                                        replace=False) for c in range(10)])
    rest = np.setdiff1d(np.arange(len(full.y_train)), chosen)
    x_out = np.concatenate([full.x_train[rest], full.x_test])
    y_out = np.concatenate([full.y_train[rest], full.y_test])
    return Dataset("digits-10-per-class", prepare(full.x_train[chosen]), full.y_train[chosen],
                   prepare(x_out), y_out, "classification", n_classes=10,
                   description="10 digits per class for training, the rest held out")


def toy_net() -> Network:
    """256 -> 256 -> ... -> 256 -> 10: ten identical hidden Dense + ReLU layers (He-normal
    weights, zero biases), then a Dense output layer. Hidden layer k is network layer 2k."""
    layers = []
    for _ in range(TOY_HIDDEN):
        layers += [Dense(TOY_WIDTH, TOY_WIDTH), ReLU()]
    return Network(layers + [Dense(TOY_WIDTH, 10)])


def train_one_layer(net: Network, params: list, data: Dataset, k: int, *, cap: int,
                    seed: int = 0) -> tuple[float, float, int]:
    """Train hidden layer k (its W and b) alone by full-batch SGD (lr ``TOY_LR``) until the
    training accuracy is 100 % (checked every ``TOY_CHECK_EVERY`` updates) or ``cap``
    updates. Returns (held-out accuracy, training accuracy, updates done).

    The frozen layers below k see fixed inputs, so their output is computed once and the
    network above is trained on it: the same updates as training the whole network with
    every other tensor frozen, without recomputing the frozen prefix at every step."""
    j = 2 * k
    below, above = net[:j], net[j:]
    data = dataclasses.replace(data, x_train=below.forward(params[:j], data.x_train)[0],
                               x_test=below.forward(params[:j], data.x_test)[0])
    opt = optim.sgd(TOY_LR)
    mask = above.trainable_mask(params[j:], frozen_layers=range(1, len(above)))
    ts = TrainState(params[j:], above.init_state(), opt.init(params[j:]), seed)
    train_acc = 0.0
    while ts.iteration < cap and train_acc < 1.0:
        ts = train(above, opt, data, ts, iterations=min(ts.iteration + TOY_CHECK_EVERY, cap),
                   batch_size=len(data.x_train), mask=mask, quiet=True, eval_every=cap + 1)
        train_acc = _accuracy(above, ts, data.x_train, data.y_train)
    return _accuracy(above, ts, data.x_test, data.y_test), train_acc, ts.iteration


def _accuracy(net: Network, ts: TrainState, x, y) -> float:
    return evaluate(net, ts.params, ts.net_state, x, y, "classification")["accuracy"]


def mlp() -> Network:
    """64 -> 64 -> ... -> 10: ``MLP_DEPTH`` Dense layers without biases (ReLU between)."""
    layers, d_in = [], 64
    for _ in range(MLP_DEPTH - 1):
        layers += [Dense(d_in, MLP_WIDTH, bias=False), ReLU()]
        d_in = MLP_WIDTH
    return Network(layers + [Dense(MLP_WIDTH, 10, bias=False)])


def rule(method: str, use_layca: bool, alpha: float, net: Network,
         iterations: int) -> optim.GradientTransformation:
    """The update rule of one run: ``method``'s direction, the Section 5.1 multipliers for
    ``alpha``, the rate schedule (divided by 10 at ``DECAY_AT``), with or without Layca."""
    rate = optim.DEFAULT_RATES[method] if use_layca else PLAIN_RATES[method]
    schedule = optim.StepDecay(rate, boundaries=(int(DECAY_AT * iterations),), factor=0.1)
    return update_rule(method, use_layca, alpha, net, schedule)


def end_to_end(method: str, use_layca: bool, alpha: float, data: Dataset, seed: int,
               iterations: int, *, evaluations: int = 1, rotation_points: int = 0) -> dict:
    """Train ``mlp()`` from the seed's initialisation. Returns the final test and training
    accuracy, the test-accuracy curve (``evaluations`` points), the angle deviation of every
    kernel layer at the end ((L,)) and at ``rotation_points`` points ((points, L)), and, with
    Layca, the numbers of zero steps and of non-finite step entries met (their sums over
    layers)."""
    net = mlp()
    opt = rule(method, use_layca, alpha, net, iterations)
    ts = init_train_state(net, opt, seed)
    initial = ts.params
    mask = optim.kernel_mask(net, initial)
    monitor = None
    if rotation_points:
        monitor = optim.rotation_monitor(initial, mask, optim.kernel_layer_index(mask))
    ts = train(net, opt, data, ts, iterations=iterations, batch_size=BATCH, quiet=True,
               eval_every=iterations // evaluations, eval_train=False, monitor=monitor,
               monitor_every=iterations // max(rotation_points, 1))
    final_rotation = np.array(list(optim.layer_rotation(ts.params, initial, mask).values()))
    out = {
        "test_accuracy": ts.history["test_accuracy"][-1],
        "train_accuracy": _accuracy(net, ts, data.x_train, data.y_train),
        "curve_iteration": np.asarray(ts.history["eval_iteration"]),
        "test_curve": np.asarray(ts.history["test_accuracy"]),
        "final_rotation": final_rotation,  # (L,), input side first
    }
    if rotation_points:
        out["rotation_iteration"] = np.asarray(ts.history["monitor_iteration"])
        out["rotation"] = np.stack([ts.history[f"rotation_{i}"]
                                    for i in range(len(final_rotation))], axis=1)
    if use_layca:
        out["zero_steps"] = sum(v for d in ts.opt_state.zero_steps for v in d.values())
        out["nonfinite"] = sum(v for d in ts.opt_state.nonfinite for v in d.values())
    return out


def pair_gaps(accuracy: dict) -> dict[tuple[str, str], float]:
    """Mean test accuracy of each adaptive method minus that of its non-adaptive equivalent."""
    return {(a, b): float(accuracy[a].mean() - accuracy[b].mean()) for a, b in PAIRS}
