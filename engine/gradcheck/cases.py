"""The gradient-check cases of every layer, loss and a whole network.

Each case is one central-difference check in float64 (batch 1, odd spatial sizes, stride 2,
padding, training and inference modes, ...); its ``row`` groups it with the other cases of
the same layer. ``worst_error(cases)`` is the largest relative error over the cases and
all their tensors (input and parameters; see ``lastlayer.engine.gradcheck.central`` for the
measure). Inputs keep a margin from the kinks of ReLU and max pooling, so the central
difference never straddles one.

The cases are data (``LAYER_CASES``, ``LOSS_CASES``, ``network_case``) so that the tests
can run each one separately and name it when it fails, and the claims ledger
(``lastlayer verify``, rows G-*) reports one row per group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    HadamardHead,
    L2Normalize,
    MaxPool2D,
    OrthogonalHead,
    ReLU,
    Sigmoid,
    SimplexETFHead,
    Tanh,
    ZNormalize,
)
from ..losses import softmax_cross_entropy, squared_error
from ..network import Network
from .central import check_layer, check_loss, check_network

LAYER_TOL = 1e-7
NETWORK_TOL = 1e-6


# ---- inputs ------------------------------------------------------------------------
def normal(rng, shape):
    return rng.standard_normal(shape)


def away_from_zero(rng, shape, margin=0.1):
    """Standard normal values pushed out of (-margin, margin): no ReLU kink within reach."""
    z = rng.standard_normal(shape)
    return np.sign(z) * (margin + np.abs(z))


def distinct(rng, shape):
    """A shuffled grid of values 1/size apart: every pooling window has a unique maximum
    with a gap far larger than the finite-difference step."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2) / size * 4


# ---- cases -------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerCase:
    row: str  # ledger ID, e.g. "G-Conv2D"
    name: str  # what this case exercises
    layer: object
    x_shape: tuple
    make_x: Callable = normal
    train: bool = True
    random_params: bool = True  # replace the initial params by N(0, 1) draws (gamma != 1, ...)
    random_state: bool = False  # give a stateful layer non-trivial running statistics

    def run(self, seed: int = 0) -> dict[str, float]:
        rng = np.random.default_rng(seed)
        params = self.layer.init(rng)
        if self.random_params:
            params = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        state = self.layer.init_state()
        if self.random_state:
            state = {"mean": rng.standard_normal(self.layer.num_features),
                     "var": rng.uniform(0.5, 2.0, self.layer.num_features)}
        x = self.make_x(rng, self.x_shape)
        return check_layer(self.layer, params, x, train=self.train, state=state, seed=seed)


LAYER_CASES = [
    LayerCase("G-Dense", "batch 4, 5 -> 3", Dense(5, 3), (4, 5)),
    LayerCase("G-Dense", "batch 1, 7 -> 2, no bias", Dense(7, 2, bias=False), (1, 7)),
    LayerCase("G-ReLU", "(4, 6)", ReLU(), (4, 6), away_from_zero),
    LayerCase("G-ReLU", "batch 1, (1, 3, 5, 5)", ReLU(), (1, 3, 5, 5), away_from_zero),
    LayerCase("G-Tanh", "(4, 6)", Tanh(), (4, 6)),
    LayerCase("G-Tanh", "batch 1, (1, 2, 3, 3)", Tanh(), (1, 2, 3, 3)),
    LayerCase("G-Sigmoid", "(4, 6)", Sigmoid(), (4, 6)),
    LayerCase("G-Sigmoid", "batch 1, large |x| (scale 8)", Sigmoid(), (1, 9),
              lambda rng, shape: 8 * rng.standard_normal(shape)),
    LayerCase("G-Conv2D", "3x3, stride 1, no padding, (2, 3, 7, 6)",
              Conv2D(3, 4, 3), (2, 3, 7, 6)),
    LayerCase("G-Conv2D", "3x3, stride 2, padding 1, batch 1, odd (1, 2, 5, 7)",
              Conv2D(2, 3, 3, stride=2, padding=1), (1, 2, 5, 7)),
    LayerCase("G-Conv2D", "2x3, stride (2, 1), padding (0, 1), no bias, (2, 1, 8, 5)",
              Conv2D(1, 2, (2, 3), stride=(2, 1), padding=(0, 1), bias=False), (2, 1, 8, 5)),
    LayerCase("G-Conv2D", "5x5, stride 2, padding 2, (2, 2, 9, 9)",
              Conv2D(2, 2, 5, stride=2, padding=2), (2, 2, 9, 9)),
    LayerCase("G-MaxPool2D", "2x2, odd (2, 3, 7, 5): last row and column dropped",
              MaxPool2D(2), (2, 3, 7, 5), distinct),
    LayerCase("G-MaxPool2D", "3x3, stride 2 (overlapping), batch 1, (1, 2, 7, 7)",
              MaxPool2D(3, stride=2), (1, 2, 7, 7), distinct),
    LayerCase("G-MaxPool2D", "2x3, stride (1, 2), (2, 1, 6, 7)",
              MaxPool2D((2, 3), stride=(1, 2)), (2, 1, 6, 7), distinct),
    LayerCase("G-Flatten", "(3, 2, 4, 5)", Flatten(), (3, 2, 4, 5)),
    LayerCase("G-BatchNorm", "1-D, training, (5, 4)", BatchNorm(4), (5, 4)),
    LayerCase("G-BatchNorm", "1-D, training, batch 2", BatchNorm(3), (2, 3)),
    LayerCase("G-BatchNorm", "1-D, inference, batch 1", BatchNorm(4), (1, 4),
              train=False, random_state=True),
    LayerCase("G-BatchNorm", "2-D, training, (2, 3, 5, 5)", BatchNorm(3), (2, 3, 5, 5)),
    LayerCase("G-BatchNorm", "2-D, training, batch 1, odd (1, 2, 3, 5)", BatchNorm(2),
              (1, 2, 3, 5)),
    LayerCase("G-BatchNorm", "2-D, inference, (2, 3, 4, 3)", BatchNorm(3), (2, 3, 4, 3),
              train=False, random_state=True),
    LayerCase("G-Dropout", "p = 0.5, training, (4, 6)", Dropout(0.5), (4, 6)),
    LayerCase("G-Dropout", "p = 0.3, training, batch 1, (1, 2, 3, 3)", Dropout(0.3),
              (1, 2, 3, 3)),
    LayerCase("G-Dropout", "p = 0.5, inference (identity)", Dropout(0.5), (3, 4), train=False),
    LayerCase("G-L2Normalize", "(4, 6)", L2Normalize(), (4, 6)),
    LayerCase("G-L2Normalize", "batch 1, tiny rows (norm ~1e-3)", L2Normalize(), (1, 5),
              lambda rng, shape: 1e-3 * rng.standard_normal(shape)),
    LayerCase("G-ZNormalize", "training, (6, 4)", ZNormalize(4), (6, 4)),
    # with 2 samples x_bar is +-1 up to eps (its gradient ~ eps): inputs of scale 1e-3 keep
    # the batch variance near eps, where the gradient is O(1/sqrt(eps)) and well measured
    LayerCase("G-ZNormalize", "training, batch 2, scale 1e-3 (eps matters)", ZNormalize(3),
              (2, 3), lambda rng, shape: 1e-3 * rng.standard_normal(shape)),
    LayerCase("G-ZNormalize", "inference, batch 1", ZNormalize(4), (1, 4), train=False,
              random_state=True),
    LayerCase("G-ZNormalize", "training, running statistics, features of scale 1e3",
              ZNormalize(3, statistics="running"), (5, 3),
              lambda rng, shape: 1e3 * rng.standard_normal(shape)),
    # the fixed heads: Q is fixed, so x (through the L2 normalisation), alpha and b are checked
    LayerCase("G-HadamardHead", "fwht, 6 -> 3 (N < n), (4, 6)", HadamardHead(6, 3, method="fwht"),
              (4, 6)),
    LayerCase("G-HadamardHead", "dense +-1 rows, 8 -> 8 (N = n), batch 1",
              HadamardHead(8, 8, method="dense"), (1, 8)),
    LayerCase("G-HadamardHead", "fwht, C > N (3 -> 4), fixed alpha, rows of norm ~1e-3",
              HadamardHead(3, 4, method="fwht", learn_alpha=False, alpha_init=2.0), (2, 3),
              lambda rng, shape: 1e-3 * rng.standard_normal(shape)),
    LayerCase("G-OrthogonalHead", "7 -> 4, Q from the state, (3, 7)", OrthogonalHead(7, 4, seed=2),
              (3, 7)),
    LayerCase("G-OrthogonalHead", "C = N (4 -> 4), batch 1, rows of norm ~1e-3",
              OrthogonalHead(4, 4), (1, 4), lambda rng, shape: 1e-3 * rng.standard_normal(shape)),
    LayerCase("G-OrthogonalHead", "fixed alpha, 5 -> 2, (2, 5)",
              OrthogonalHead(5, 2, learn_alpha=False), (2, 5)),
    # the simplex ETF: W fixed, features not normalised; x, the scale s and b are checked
    LayerCase("G-SimplexETFHead", "hadamard (fwht), 8 -> 5, learned scale and bias, (3, 8)",
              SimplexETFHead(8, 5, method="hadamard", learn_scale=True, bias=True), (3, 8)),
    LayerCase("G-SimplexETFHead", "hadamard (fwht), 16 -> 3, fixed scale, no bias, batch 1",
              SimplexETFHead(16, 3, method="hadamard", scale_init=2.0), (1, 16)),
    LayerCase("G-SimplexETFHead", "orthogonal, 7 -> 4, learned scale and bias, batch 1",
              SimplexETFHead(7, 4, method="orthogonal", learn_scale=True, bias=True, seed=1),
              (1, 7)),
    LayerCase("G-SimplexETFHead", "orthogonal, d = C - 1 (9 -> 10), bias only, (2, 9)",
              SimplexETFHead(9, 10, method="orthogonal", bias=True), (2, 9)),
    LayerCase("G-SimplexETFHead", "orthogonal, 6 -> 3, learned scale, no bias, (4, 6)",
              SimplexETFHead(6, 3, method="orthogonal", learn_scale=True), (4, 6)),
]


@dataclass(frozen=True)
class LossCase:
    row: str
    name: str
    loss: Callable
    shape: tuple
    targets: str  # "labels", "probabilities" or "real"
    scale: float = 1.0  # logits / predictions are scale * N(0, 1)

    def run(self, seed: int = 0) -> float:
        rng = np.random.default_rng(seed)
        n, c = self.shape
        pred = self.scale * rng.standard_normal(self.shape)
        if self.targets == "labels":
            t = rng.integers(0, c, n)
        elif self.targets == "probabilities":
            t = rng.dirichlet(np.ones(c), n)
        else:
            t = rng.standard_normal(self.shape)
        return check_loss(self.loss, pred, t)


LOSS_CASES = [
    LossCase("G-SoftmaxCE", "labels, (5, 4)", softmax_cross_entropy, (5, 4), "labels"),
    LossCase("G-SoftmaxCE", "labels, batch 1, (1, 3)", softmax_cross_entropy, (1, 3), "labels"),
    LossCase("G-SoftmaxCE", "probability targets, (4, 5)", softmax_cross_entropy, (4, 5),
             "probabilities"),
    LossCase("G-SoftmaxCE", "labels, logits of scale 30", softmax_cross_entropy, (6, 4),
             "labels", scale=30.0),
    LossCase("G-SquaredError", "real targets, (5, 3)", squared_error, (5, 3), "real"),
    LossCase("G-SquaredError", "labels as one-hot, batch 1, (1, 4)", squared_error, (1, 4),
             "labels"),
]


def network_case(seed: int = 0) -> dict[str, float]:
    """Conv2D -> BatchNorm -> ReLU -> MaxPool2D -> Flatten -> Dense -> Dropout(train) ->
    Dense -> cross-entropy, checked w.r.t. the input and all 9 parameter tensors."""
    rng = np.random.default_rng(seed)
    net = Network([
        Conv2D(2, 4, 3, padding=1), BatchNorm(4), ReLU(), MaxPool2D(2), Flatten(),
        Dense(4 * 3 * 3, 8), Dropout(0.25), Dense(8, 3),
    ])
    params = net.init(rng)
    params[1] = {"gamma": rng.uniform(0.5, 1.5, 4), "beta": rng.standard_normal(4)}
    x = rng.standard_normal((4, 2, 7, 7))  # odd spatial size: pooling drops a row/column
    labels = rng.integers(0, 3, 4)
    return check_network(net, params, x, softmax_cross_entropy, labels, train=True,
                         state=net.init_state(), seed=seed)


def znormalize_network_case(seed: int = 0) -> dict[str, float]:
    """Dense -> ReLU -> ZNormalize (training: batch statistics) -> Dense -> cross-entropy,
    ENTAME's head on z-normalised features, w.r.t. the input and all 4 parameter tensors."""
    rng = np.random.default_rng(seed)
    net = Network([Dense(5, 6), ReLU(), ZNormalize(6), Dense(6, 3)])
    params = net.init(rng)
    x = away_from_zero(rng, (7, 5))
    return check_network(net, params, x, softmax_cross_entropy, rng.integers(0, 3, 7),
                         train=True, state=net.init_state(), seed=seed)


NETWORK_CASES = (network_case, znormalize_network_case)
NETWORK_DESCRIPTION = ("networks Conv2D(pad 1) > BatchNorm > ReLU > MaxPool2D > Flatten > Dense > "
                       "Dropout(train) > Dense > softmax CE (batch 4, 2x7x7 input) and Dense > "
                       "ReLU > ZNormalize(train) > Dense > softmax CE (batch 7): max rel. error")


# ---- groups -------------------------------------------------------------------------
def case_groups() -> dict[str, list]:
    """The layer and loss cases grouped by ``row`` (one group per layer / loss), in order."""
    groups: dict[str, list] = {}
    for case in LAYER_CASES + LOSS_CASES:
        groups.setdefault(case.row, []).append(case)
    return groups


def worst_error(cases) -> float:
    """The largest relative error over the cases (every tensor of every case)."""
    return max(_worst(case.run()) for case in cases)


def _worst(value) -> float:
    return max(value.values()) if isinstance(value, dict) else value
