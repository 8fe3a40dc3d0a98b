"""The fixed-classifier experiments at the scale of embedded data: constants, data, the
trunk + head networks, training runs, and the head geometry of the paper's networks. Used by
``lastlayer reproduce fixed-classifier`` (reproduce.py) and ledger rows H4, H7 (claims.py).

The same MLP trunk (d -> 256 -> 64, ReLU) ends in one of the heads of ``method.VARIANTS``
(64 features, 10 classes: the geometry of their ResNet-56 on CIFAR-10), trained by SGD with
momentum 0.9, batch 64, lr 0.05 divided by 10 at 50 % and 75 %, coupled weight decay 5e-5
(gradient + 2 lam w: PyTorch's weight_decay=1e-4) on every tensor, alpha included.
"""

from __future__ import annotations

import numpy as np

from engine import Dense, HadamardHead, Layer, Network, ReLU, optim
from engine.training import Dataset, init_train_state, train
from engine.training.data import digits, toy_classification

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
    if iterations % evaluations:
        raise ValueError(f"evaluations: expected a divisor of iterations = {iterations}, "
                         f"got {evaluations}")
    net = network(variant, data, seed)
    lr = optim.StepDecay(LR, (iterations // 2, 3 * iterations // 4))
    opt = optim.momentum(lr, MOMENTUM, weight_decay=WEIGHT_DECAY)
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
