"""The last-layer strategies of ``lastlayer compare``, each a training run on one task.

Every strategy starts from the same body (the task's network minus its last layer, drawn
from the stream ("init", seed)) and the same budget of ``iterations`` mini-batch updates of
batch 64, with one recipe: SGD with momentum 0.9, learning rate ``LR`` divided by 10 at 50 %
and 75 %, coupled weight decay ``LAM`` on every tensor (J's lam ||W||^2 of docs/claims.md;
PyTorch's weight_decay = 2 LAM). Where a strategy needs more (post-training, PoF), the extra
updates are stated and counted.

=================  ==============================================================================
learned            the baseline: a Dense head trained with the body
post-sgd           learned, then ``post`` head-only SGD updates on the frozen features at the
                   training's initial rate LR (Moreau & Audiffren 2017's post-training)
post-exact         learned, then the head replaced by the exact optimum of J on the features
                   (their eq. 4; Newton, ``lastlayer.engine.solvers.fit_softmax_regression``)
hadamard           a fixed Hadamard head (Hoffer et al. 2018; ``lastlayer.engine.HadamardHead``)
etf                a fixed simplex-ETF head (Zhu et al. 2021; ``lastlayer.engine.layers.SimplexETFHead``)
layca              Layca around SGD (Carbonnelle & De Vleeschouwer; rate ``optim.DEFAULT_RATES``)
pof                SAM (rho 0.05) for the budget, then ``post`` PoF updates of the feature
                   extractor (Sato et al. 2022; the exact line search, gamma ~ U[0, 2])
=================  ==============================================================================

Transfer (a separate table): a body pre-trained on the source half of the classes (0-4)
with the learned recipe, a new head for the target half (5-9, relabelled 0-4) on
``TARGET_PER_CLASS`` training samples a class, and ``transfer_steps`` fine-tuning updates of
everything (ENTAME's protocol, Varno et al. 2019):

=================  ==============================================================================
transfer-base      the baseline: a He fan-out head, fine-tuned (their "Base")
mei+fn             ENTAME: maximum-entropy head on z-normalised features
lp-ft              linear probing (``entame.method.PROBE_STEPS`` head-only updates) then
                   fine-tuning (Kumar et al. 2022)
=================  ==============================================================================
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from lastlayer.engine import Dense, HadamardHead, Network, optim
from lastlayer.engine.solvers import fit_softmax_regression
from lastlayer.engine.training import Dataset, init_train_state, sam_gradient, train
from lastlayer.engine.training.networks import cnn, mlp

from ..papers.entame.method import RECIPES, fine_tune, transplant
from ..papers.layca.method import update_rule
from ..papers.pof.method import PoF, feature_mask, pof_step
from ..papers.post_training.method import features, post_train

__all__ = ["STRATEGIES", "TRANSFER", "LABELS", "Trained", "Budget", "network", "run",
           "run_transfer", "split_validation", "source_target", "pretrain_source", "prepared",
           "head_features", "TRANSFER_CLASSES"]

STRATEGIES = ("learned", "post-sgd", "post-exact", "hadamard", "etf", "layca", "pof")
TRANSFER = ("transfer-base", "mei+fn", "lp-ft")
LABELS = {"learned": "learned head (baseline)", "post-sgd": "post-trained (SGD)",
          "post-exact": "post-trained (exact)", "hadamard": "fixed Hadamard",
          "etf": "fixed simplex ETF", "layca": "Layca", "pof": "PoF after SAM",
          "transfer-base": "fine-tuned, He head (transfer baseline)",
          "mei+fn": "ENTAME (MEI + FN)", "lp-ft": "LP-FT"}
RECIPE = {"transfer-base": "base", "mei+fn": "mei+fn", "lp-ft": "probe"}

BATCH = 64
LR = 0.05
MOMENTUM = 0.9
LAM = 5e-5  # coupled L2 of every tensor, and the lam of the exact head's J
SAM_RHO = 0.05
TRANSFER_LR = 0.01
TARGET_PER_CLASS = 20
TRANSFER_CLASSES = 5  # source: classes 0-4; target: 5-9, relabelled 0-4
VALIDATION_FRACTION = 0.1  # of the training set, held out for temperature scaling


@dataclasses.dataclass(frozen=True)
class Budget:
    iterations: int  # updates of every from-scratch strategy (and of the source body)
    post: int  # extra updates of post-sgd (head only) and pof (feature extractor)
    transfer_steps: int  # fine-tuning updates of the transfer strategies


class Trained(NamedTuple):
    """A trained network and the data it is evaluated on (the target task for transfer)."""

    net: Network
    params: list
    state: list
    data: Dataset
    updates: int  # every update done, extra ones included


def network(data: Dataset, head: str = "dense", n_classes: int | None = None,
            seed: int = 0) -> Network:
    """The task's body and a head. Flat inputs (digits): MLP d -> 128 -> 64, ReLU; images
    (mnist 28x28, mnist1d 1x40): ``cnn(channels=(8, 16), hidden=(64,))``. 64 features in
    every case. ``head``: "dense", "hadamard" or "etf"."""
    c = n_classes or data.n_classes
    arch = mlp(data, hidden=(128, 64)) if data.x_train.ndim == 2 else cnn(
        data, channels=(8, 16), hidden=(64,))
    body = list(arch)[:-1]
    if head == "dense":
        last = Dense(64, c)
    elif head == "hadamard":
        last = HadamardHead(64, c)
    elif head == "etf":
        from lastlayer.engine.layers import SimplexETFHead

        last = SimplexETFHead(64, c, seed=seed)
    else:
        raise ValueError(f"head: expected dense, hadamard or etf, got {head!r}")
    return Network(body + [last])


def dtype_of(data: Dataset):
    """float32 for images (the CNN's convolutions cost ~0.6 of float64's), float64 else."""
    return np.float32 if data.x_train.ndim == 4 else np.float64


def prepared(data: Dataset) -> Dataset:
    """``data`` with its inputs in ``dtype_of(data)``, cast once, explicitly, here."""
    dt = dtype_of(data)
    return dataclasses.replace(data, x_train=np.ascontiguousarray(data.x_train, dtype=dt),
                               x_test=np.ascontiguousarray(data.x_test, dtype=dt))


def head_features(trained: "Trained", x: np.ndarray) -> np.ndarray:
    """The input of the last layer, float64 (N, 64), in inference mode: the post-training
    paper's ``features``, in batches of 500 (a CNN's im2col of 4096 images is ~0.8 GB)."""
    return features(trained.net, trained.params, trained.state, x, batch_size=500).astype(
        np.float64)


def _schedule(iterations: int) -> optim.Schedule:
    return optim.StepDecay(LR, (iterations // 2, 3 * iterations // 4))


def _train(net, opt, data, seed, iterations, **kwargs):
    ts = init_train_state(net, opt, seed, dtype_of(data))
    return train(net, opt, data, ts, iterations=iterations, batch_size=BATCH, quiet=True,
                 eval_every=10**9, eval_train=False, **kwargs)


def run(strategy: str, data: Dataset, seed: int, budget: Budget,
        learned: Trained | None = None) -> Trained:
    """Train ``strategy`` (one of ``STRATEGIES``) on ``data`` from seed ``seed``. post-sgd
    and post-exact continue ``learned`` (the baseline's run of the same seed), which is
    trained here when not given."""
    n = budget.iterations
    if strategy in ("post-sgd", "post-exact"):
        base = learned or run("learned", data, seed, budget)
        if strategy == "post-exact":  # the exact optimum of J on float64 features
            sol = fit_softmax_regression(head_features(base, data.x_train), data.y_train, LAM,
                                         n_classes=data.n_classes)
            dt = base.params[-1]["W"].dtype
            head = {"W": sol.W.astype(dt), "b": sol.b.astype(dt)}
            return base._replace(params=base.params[:-1] + [head])
        params, _ = post_train(base.net, base.params, base.state, data, lam=LAM,
                               steps=budget.post, base=optim.sgd(LR), seed=seed)
        return base._replace(params=params, updates=base.updates + budget.post)
    if strategy in ("learned", "hadamard", "etf"):
        net = network(data, {"learned": "dense"}.get(strategy, strategy), seed=seed)
        opt = optim.momentum(_schedule(n), MOMENTUM, weight_decay=LAM)
        ts = _train(net, opt, data, seed, n)
        return Trained(net, ts.params, ts.net_state, data, n)
    if strategy == "layca":
        net = network(data)
        rate = optim.StepDecay(optim.DEFAULT_RATES["sgd"], (n // 2, 3 * n // 4))
        ts = _train(net, update_rule("sgd", True, 0.0, net, rate), data, seed, n)
        return Trained(net, ts.params, ts.net_state, data, n)
    if strategy == "pof":
        net = network(data)
        opt = optim.momentum(_schedule(n), MOMENTUM, weight_decay=LAM)
        ts = _train(net, opt, data, seed, n, step=sam_gradient(SAM_RHO))
        mask = feature_mask(net, ts.params)
        post_opt = optim.momentum(LR / 100, MOMENTUM, weight_decay=LAM, mask=mask)
        ts = dataclasses.replace(ts, opt_state=post_opt.init(ts.params))
        ts = train(net, post_opt, data, ts, iterations=n + budget.post, batch_size=BATCH,
                   quiet=True, eval_every=10**9, eval_train=False, mask=mask,
                   step=pof_step(net, PoF()))
        return Trained(net, ts.params, ts.net_state, data, n + budget.post)
    raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")


def split_validation(data: Dataset, seed: int = 0) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """(data without its validation rows, x_val, y_val): the last ``VALIDATION_FRACTION`` of
    a fixed permutation of the training rows (stream ("split", seed, 1)), never trained on;
    temperature scaling is fitted there."""
    from lastlayer.engine import stream

    n = len(data.x_train)
    order = stream(seed, "split", 1).permutation(n)
    n_val = int(round(VALIDATION_FRACTION * n))
    keep, val = np.sort(order[:n - n_val]), np.sort(order[n - n_val:])
    rest = dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])
    return rest, data.x_train[val], data.y_train[val]


def source_target(data: Dataset) -> tuple[Dataset, Dataset]:
    """The transfer tasks: classes 0-4 (all their rows) and classes 5-9 relabelled 0-4 (the
    first ``TARGET_PER_CLASS`` training rows of each class; every test row)."""
    def part(lo: int, per_class: int | None = None) -> Dataset:
        tr = [np.flatnonzero(data.y_train == v)[:per_class]
              for v in range(lo, lo + TRANSFER_CLASSES)]
        tr = np.sort(np.concatenate(tr))
        te = np.flatnonzero((data.y_test >= lo) & (data.y_test < lo + TRANSFER_CLASSES))
        return dataclasses.replace(data, name=f"{data.name}[{lo}-{lo + TRANSFER_CLASSES - 1}]",
                                   x_train=data.x_train[tr], y_train=data.y_train[tr] - lo,
                                   x_test=data.x_test[te], y_test=data.y_test[te] - lo,
                                   n_classes=TRANSFER_CLASSES)

    return part(0), part(TRANSFER_CLASSES, TARGET_PER_CLASS)


def pretrain_source(source: Dataset, seed: int, budget: Budget) -> Trained:
    """The learned recipe on the source classes: the body every transfer strategy starts from."""
    return run("learned", source, seed, budget)


def run_transfer(strategy: str, body: Trained, target: Dataset, seed: int,
                 budget: Budget) -> Trained:
    """A new head on ``body``'s features for ``target``, then ``budget.transfer_steps``
    updates of everything (plus LP-FT's head-only probing steps)."""
    if strategy not in TRANSFER:
        raise ValueError(f"strategy: expected one of {', '.join(TRANSFER)}, got {strategy!r}")
    recipe = RECIPES[RECIPE[strategy]]
    shape = tuple(target.x_train.shape[1:])
    net, params, state = transplant(body.net[:-1], body.params[:-1], body.state[:-1],
                                    target.n_classes, recipe, seed, input_shape=shape)

    def opt(mask):
        return optim.momentum(TRANSFER_LR, MOMENTUM, weight_decay=LAM, mask=mask)

    ts, head_only = fine_tune(net, params, state, target, recipe, opt, budget.transfer_steps,
                              seed=seed, eval_every=10**9)
    return Trained(net, ts.params, ts.net_state, target, budget.transfer_steps + head_only)
