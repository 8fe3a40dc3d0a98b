"""The fixed-classifier experiments at the scale of embedded data: constants, data, the
trunk + head networks, training runs, and the head geometry of the paper's networks. Used by
``lastlayer reproduce fixed-classifier`` (reproduce.py) and ledger rows H4, H7 (claims.py).

The same MLP trunk (d -> 256 -> 64, ReLU) ends in one of the heads of ``method.VARIANTS``
(64 features, 10 classes: the geometry of their ResNet-56 on CIFAR-10), trained by SGD with
momentum 0.9, batch 64, lr 0.05 divided by 10 at 50 % and 75 %, coupled weight decay 5e-5
(gradient + 2 lam w: PyTorch's weight_decay=1e-4) on every tensor, alpha included.

The image experiment (``train_image_variant``, their Table 1 on real images) keeps that
optimiser and puts the heads on one CNN body on ``lastlayer.engine.training.data.mnist`` instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lastlayer.engine import Dense, HadamardHead, Layer, Network, ReLU, optim
from lastlayer.engine.training import Dataset, evaluate, init_train_state, train
from lastlayer.engine.training.data import digits, mnist, toy_classification
from lastlayer.engine.training.networks import cnn

from .method import gram_deviation, hadamard_head_q, head, predicted_gram_deviation

HIDDEN = (256, 64)  # trunk widths; the last is N, the head's input
BATCH = 64
LR = 0.05  # divided by 10 at 50 % and 75 % of the iterations
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-5  # coupled L2, gradient + 2 * 5e-5 w: PyTorch's weight_decay=1e-4

# (network, dataset, N features, C classes) of their Table 1; the ShuffleNet (960
# features, 1000 classes) has C > N: its C rows cannot be orthogonal at all.
PAPER_CONFIGS = (
    ("ResNet-56", "CIFAR-10", 64, 10),
    ("DenseNet-BC-100 (k=12)", "CIFAR-100", 342, 100),
    ("ResNet-50", "ImageNet", 2048, 1000),
    ("DenseNet-169", "ImageNet", 1664, 1000),
    ("ShuffleNet (g=3)", "ImageNet", 960, 1000),
)


def datasets() -> list[tuple[str, Dataset]]:
    """digits (64 pixels, 10 classes) and 10 overlapping Gaussian classes in 20-D."""
    return [("digits", digits(seed=0)),
            ("toy", toy_classification(n_train=1000, n_test=2000, n_classes=10, dim=20,
                                       overlap=1.0, seed=0))]


def network(variant: str, data: Dataset, seed: int = 0) -> Network:
    layers: list[Layer] = []
    width = data.n_features
    for h in HIDDEN:
        layers += [Dense(width, h), ReLU()]
        width = h
    return Network(layers + [head(variant, width, data.n_classes, seed)])


def train_variant(data: Dataset, variant: str, seed: int, iterations: int,
                  evaluations: int) -> dict[str, np.ndarray]:
    """Train the trunk + ``variant`` head: SGD with momentum 0.9, batch 64, lr 0.05 / 10 at
    50 % and 75 %, weight decay on every tensor (alpha included, as in their experiments).

    Returns, as arrays: ``iteration`` (evaluation points), ``train_error`` and
    ``test_error`` (%) at those points, ``head_params`` (trainable numbers of the head) and,
    for heads with a learned alpha, ``alpha`` at every ``iterations / 100``-th iteration
    with its ``alpha_iteration``.
    """
    _check_evaluations(iterations, evaluations)
    net = network(variant, data, seed)
    opt = optimizer(iterations)
    learned_alpha = "alpha" in net[-1].param_shapes()

    def alpha(t, params):
        return {"alpha": float(params[-1]["alpha"][0])}

    ts = train(net, opt, data, init_train_state(net, opt, seed), iterations=iterations,
               batch_size=BATCH, eval_every=iterations // evaluations, quiet=True,
               monitor=alpha if learned_alpha else None,
               monitor_every=max(1, iterations // 100))
    h = ts.history_arrays()
    out = {"iteration": h["eval_iteration"],
           "train_error": 100 * (1 - h["train_accuracy"]),
           "test_error": 100 * (1 - h["test_accuracy"]),
           "head_params": np.array(net[-1:].num_params(ts.params[-1:]))}
    if learned_alpha:
        out["alpha"], out["alpha_iteration"] = h["alpha"], h["monitor_iteration"]
    return out


def _check_evaluations(iterations: int, evaluations: int) -> None:
    if iterations % evaluations:
        raise ValueError(f"evaluations: expected a divisor of iterations = {iterations}, "
                         f"got {evaluations}")


def optimizer(iterations: int) -> optim.GradientTransformation:
    """SGD, momentum 0.9, lr 0.05 / 10 at 50 % and 75 % of ``iterations``, coupled weight
    decay 5e-5 on every tensor (their CIFAR recipe, scaled to these runs)."""
    lr = optim.StepDecay(LR, (iterations // 2, 3 * iterations // 4))
    return optim.momentum(lr, MOMENTUM, weight_decay=WEIGHT_DECAY)


# ---- the image experiment: MNIST, one CNN body, three heads (their Table 1) ---------------
# float32, as their GPU runs: one forward + backward of the CNN costs ~0.6 of float64's.
IMAGE_DTYPE = np.float32


def image_data(n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """``mnist()`` (5,000 real MNIST digits, 28x28, 4,000 train / 1,000 test: a sample
    instead of their CIFAR-10's 50,000 / 10,000 32x32 colour images), or its first
    ``n_train`` / ``n_test`` rows (tests)."""
    data = mnist()
    if n_train is None and n_test is None:
        return data
    return dataclasses.replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
                               x_test=data.x_test[:n_test], y_test=data.y_test[:n_test])


def image_network(variant: str, data: Dataset, channels: tuple[int, ...], features: int,
                  seed: int) -> Network:
    """``cnn(data, channels, hidden=(features,))`` with its last Dense replaced by the head
    of ``variant``: (Conv 3x3 -> ReLU -> MaxPool 2x2) per width, Flatten, Dense(features),
    ReLU, head. Input (B, 1, 28, 28) -> logits (B, 10). Their ResNet-56 ends in 64 global-
    pooled ReLU features; here ``features`` ReLU units of a small CNN (8-16 channels
    instead of their 16-32-64 residual stages)."""
    body = cnn(data, channels=tuple(channels), hidden=(features,))[:-1]
    return Network(list(body) + [head(variant, features, data.n_classes, seed)])


def head_matrix(layer: Layer, params: dict, state: dict | None) -> np.ndarray:
    """The (C, N) matrix a head applies, read back through its forward pass in float64 on
    the unit rows of I_N: a Dense head's W (logits = x W^T + b); a fixed head's Q, as
    (logits - b) / alpha with eps = 1e-300 (so x_hat = I_N exactly). Q is thereby what the
    trained head computes, whatever holds it (the state, or no array at all)."""
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    s64 = {k: np.asarray(v, dtype=np.float64) for k, v in (state or {}).items()}
    eye = np.eye(layer.d_in)
    if isinstance(layer, Dense):
        y, _ = layer.forward(p64, eye)
        return (y - p64["b"]).T
    layer = dataclasses.replace(layer, eps=1e-300)
    alpha = p64["alpha"][0] if layer.learn_alpha else layer.initial_alpha
    y, _ = layer.forward(p64, eye, state=s64 or None)
    return ((y - p64["b"]) / alpha).T


def train_image_variant(data: Dataset, variant: str, seed: int, iterations: int,
                        evaluations: int, channels: tuple[int, ...],
                        features: int) -> dict[str, np.ndarray]:
    """Train ``image_network`` with ``optimizer(iterations)``, batch 64, float32.

    Returns, as arrays: ``iteration`` (evaluation points) and ``test_error`` (%) on the
    whole test set there; ``train_error`` (%) on the whole training set after training
    (one pass, not a curve: training-set passes cost as much as 60 steps each);
    ``net_params``, ``head_params`` (trainable numbers); ``matrix_change``, max |M_T - M_0|
    of the head's matrix (``head_matrix``) after vs before training: 0 to rounding for the
    fixed heads, the change of W for the learned one; ``alpha``, the final alpha of a
    learned-alpha head.
    """
    _check_evaluations(iterations, evaluations)
    net = image_network(variant, data, channels, features, seed)
    opt = optimizer(iterations)
    ts0 = init_train_state(net, opt, seed, IMAGE_DTYPE)
    ts = train(net, opt, data, ts0, iterations=iterations, batch_size=BATCH,
               eval_every=iterations // evaluations, eval_train=False, quiet=True)
    h = ts.history_arrays()
    x_train = np.ascontiguousarray(data.x_train, dtype=IMAGE_DTYPE)
    final = evaluate(net, ts.params, ts.net_state, x_train, data.y_train, data.task)
    before = head_matrix(net[-1], ts0.params[-1], ts0.net_state[-1])
    after = head_matrix(net[-1], ts.params[-1], ts.net_state[-1])
    out = {"iteration": h["eval_iteration"], "test_error": 100 * (1 - h["test_accuracy"]),
           "train_error": np.float64(100 * (1 - final["accuracy"])),
           "net_params": np.int64(net.num_params(ts.params)),
           "head_params": np.int64(net[-1:].num_params(ts.params[-1:])),
           "matrix_change": np.float64(np.abs(after - before).max())}
    if "alpha" in ts.params[-1]:
        out["alpha"] = np.float64(ts.params[-1]["alpha"][0])
    return out


def paper_geometry() -> dict[str, np.ndarray]:
    """For each network of ``PAPER_CONFIGS``: n, and the measured and predicted deviation
    from orthogonality of the truncated Hadamard rows."""
    rows = []
    for _, _, n_features, n_classes in PAPER_CONFIGS:
        measured = gram_deviation(hadamard_head_q(n_features, n_classes))
        rows.append((HadamardHead(n_features, n_classes).n, measured,
                     predicted_gram_deviation(n_features, n_classes)))
    n, measured, predicted = (np.array(col) for col in zip(*rows))
    return {"n": n, "measured": measured, "predicted": predicted}
