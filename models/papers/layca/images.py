"""The Layca paper's image experiment (their Sections 5.2-5.3, Figs. 2-3) on real MNIST
digits with a CNN: SGD and Layca (SGD direction) at several layer-wise prioritisations
alpha, the angle deviation of every kernel layer during training, the final test
accuracy, and how it relates to the amount and uniformity of the layers' rotation.

Scale (theirs -> ours), each deviation acting where written below: CIFAR-10/100 and Tiny
ImageNet -> the 5,000-digit MNIST sample of ``lastlayer.engine.training.data.mnist`` (4,000 / 1,000,
instead of MNIST's 60,000); a 25-layer VGG / ResNet-32 / 11-layer CNN with batch
normalisation -> a 4-kernel-layer CNN without batch normalisation (conv 8 - conv 16 -
dense 64 - dense 10, no biases, as their Section 4.1 and Appendix A.2 recommend); 13
values of alpha -> ``Settings.image_alphas``; hundreds of epochs -> a few; float32.
"""

from __future__ import annotations

import numpy as np

from lastlayer.engine import Conv2D, Dense, Flatten, MaxPool2D, Network, ReLU, optim
from lastlayer.engine.training import Dataset, evaluate, init_train_state, train

from . import protocol

CHANNELS = (8, 16)  # theirs: VGG-style widths 64..512; the CNN 32-64, 4-8 x dearer
HIDDEN = 64  # one hidden Dense layer before the last layer
METHODS = ("sgd", "layca")  # SGD with the Section 5.1 multipliers; Layca with the SGD direction
TRAIN_SUBSET = 1000  # training accuracy on the first 1,000 training images (every class:
#                      mnist's rows are in one fixed shuffled order), not all 4,000: cheaper
DTYPE = np.float32  # theirs: float32 (Keras / TensorFlow), as here


def network() -> Network:
    """(N, 1, 28, 28) -> (N, 10): Conv2D 1->8 3x3, ReLU, MaxPool 2x2 (26 -> 13), Conv2D
    8->16 3x3, ReLU, MaxPool 2x2 (11 -> 5), Flatten (400), Dense 400->64, ReLU, Dense 64->10.
    No biases anywhere (their Section 4.1: rotation concerns the kernels; Appendix A.2 #5:
    remove biases). He-normal kernels. L = 4 kernel layers, index 0 on the input side."""
    c1, c2 = CHANNELS
    return Network([Conv2D(1, c1, 3, bias=False), ReLU(), MaxPool2D(2),
                    Conv2D(c1, c2, 3, bias=False), ReLU(), MaxPool2D(2), Flatten(),
                    Dense(c2 * 25, HIDDEN, bias=False), ReLU(), Dense(HIDDEN, 10, bias=False)])


def n_kernel_layers() -> int:
    """L: the layers whose kernel Layca rotates (every Conv2D and Dense)."""
    return sum(isinstance(layer, (Conv2D, Dense)) for layer in network())


def run(method: str, alpha: float, data: Dataset, seed: int, iterations: int,
        curve_points: int) -> dict:
    """One CNN run from the seed's initialisation (stream "init"; mini-batches keyed by the
    seed): ``protocol.rule`` (batch ``protocol.BATCH``, every rate / 10 after
    ``protocol.DECAY_AT`` of the updates; SGD lr ``protocol.PLAIN_RATES['sgd']`` times the
    Section 5.1 multipliers, Layca rho = 3^-3 times the same multipliers).

    Returns test_accuracy (all 1,000 test images, once at the end), train_accuracy (the
    first ``TRAIN_SUBSET`` training images), final_rotation (L,) the angle deviation
    1 - cos(w_T, w_0) per kernel layer, rotation (curve_points, L) the same during
    training at rotation_iteration (curve_points,), and for Layca the zero steps and
    non-finite step entries met (sums over layers; 0 for SGD)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    net = network()
    opt = protocol.rule("sgd", method == "layca", alpha, net, iterations)
    ts = init_train_state(net, opt, seed, DTYPE)
    initial = ts.params
    mask = optim.kernel_mask(net, initial)
    monitor = optim.rotation_monitor(initial, mask, optim.kernel_layer_index(mask))
    ts = train(net, opt, data, ts, iterations=iterations, batch_size=protocol.BATCH,
               quiet=True, eval_every=iterations, eval_train=False, monitor=monitor,
               monitor_every=max(1, iterations // curve_points))
    n_layers = n_kernel_layers()
    rotation = np.stack([ts.history[f"rotation_{i}"] for i in range(n_layers)], axis=1)
    train_acc = evaluate(net, ts.params, ts.net_state, data.x_train[:TRAIN_SUBSET].astype(DTYPE),
                         data.y_train[:TRAIN_SUBSET], "classification")["accuracy"]
    counts = (0, 0)
    if method == "layca":
        counts = tuple(sum(v for d in tree for v in d.values())
                       for tree in (ts.opt_state.zero_steps, ts.opt_state.nonfinite))
    return {"test_accuracy": float(ts.history["test_accuracy"][-1]),
            "train_accuracy": float(train_acc),
            "final_rotation": np.array(list(optim.layer_rotation(ts.params, initial,
                                                                 mask).values())),
            "rotation_iteration": np.asarray(ts.history["monitor_iteration"]),
            "rotation": rotation, "zero_steps": counts[0], "nonfinite": counts[1]}


def angles(deviation) -> np.ndarray:
    """Rotation angle in degrees, arccos(1 - deviation), elementwise (any shape)."""
    return np.degrees(np.arccos(1.0 - np.asarray(deviation, dtype=np.float64)))


def spearman_per_seed(accuracy: np.ndarray, measure: np.ndarray) -> np.ndarray:
    """Spearman correlation, per seed, between the test accuracy and a rotation measure over
    the settings (every method x alpha). accuracy, measure: (seeds, settings) -> (seeds,).
    Ranks with ties averaged (scipy.stats.spearmanr); NaN where a seed's values are all
    equal (no ranking)."""
    import scipy.stats

    out = np.full(len(accuracy), np.nan)
    for s, (a, m) in enumerate(zip(accuracy, measure)):
        if np.ptp(a) > 0 and np.ptp(m) > 0:
            out[s] = scipy.stats.spearmanr(a, m).statistic
    return out
