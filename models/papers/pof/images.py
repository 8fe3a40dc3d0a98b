"""PoF on real images (issue 18): their Table 1 and Fig. 5 protocol at MNIST scale. Used
by ``lastlayer reproduce pof`` (reproduce.py, section "MNIST CNN").

Their Section 4.1: WideResNet-28-10 trained with SAM (rho 0.05) for 200 epochs, then PoF
post-trains the feature extractor for 10 or 50 epochs (batch 256, lr 3e-5, Nesterov),
against SAM continued to 250 epochs; Table 1 reports test error, Fig. 5 histograms of the
top classifier-space Hessian component estimated from 400 mini-batch gradients (train and
test), "roughly reduced by a factor of two" by PoF. Here, per seed:

1. pre-training (``pretrain``): ``cnn(mnist, channels=(8, 16), hidden=(32,))`` (deviation:
   a 2-block CNN with a 32-wide ReLU feature layer instead of WideResNet-28-10; MNIST's
   5,000-digit sample, 4,000 train / 1,000 test, instead of CIFAR-10's 60,000; no data
   augmentation), all parameters with SAM (``lastlayer.engine.training.sam_gradient``, rho 0.05),
   Nesterov 0.9, lr ``PRE_LR`` = 0.01 constant (theirs: 0.1 decayed 5 times; the MLPs'
   ``protocol.PRE_LR`` = 0.05 leaves this CNN at 47 % test error after 300 steps, 0.01
   at 4.7 %, measured at seed 0), batch 64,
   coupled weight decay ``protocol.LAM``; the classifier is left as SAM left it (theirs;
   the digits section of the reproduction refits it exactly instead);
2. from that checkpoint, the same number of steps of each of ``METHODS``: "pof" (the
   paper's step, ``method.pof_step``, gamma ~ U[0, 2], line-search batch 32), "sam"
   (SAM continued on all parameters, their Table 1 baseline) and "pof-gamma0" (PoF with
   gamma = 0: no classifier-space perturbation, i.e. SGD on phi with the head frozen,
   bit-identical to it by ledger row P4; a control the paper does not run). Every method:
   Nesterov 0.9, lr ``protocol.POST_LR`` (theirs 3e-5), batch ``POST_BATCH`` = 128
   (theirs 256), the same mini-batches (keyed by the seed);
3. ``measure``: test error and loss on the 1,000 test digits; train error and loss and the
   Hessian quantities on a fixed training subset (its first ``n_train`` rows, the set's
   fixed shuffled order); lambda_max, the top eigenvalue of the Hessian of the mean CE in
   classifier space (weights and bias, exact: Lanczos on exact Hessian-vector products)
   on that subset and on the test set; and their Fig. 5 estimate, g_B^T H_D g_B / ||g_B||^2
   for mini-batch gradients g_B of 32 rows (stream "probe"), H_D on the same set.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from lastlayer.engine import Network, optim, stream
from lastlayer.engine.losses import softmax_cross_entropy
from lastlayer.engine.solvers import rayleigh_quotient, top_eigenpairs
from lastlayer.engine.training import Dataset, TrainState, init_train_state, sam_gradient, train
from lastlayer.engine.training.data import mnist
from lastlayer.engine.training.networks import cnn

from . import protocol
from .method import PoF, feature_mask, pof_step

CHANNELS, HIDDEN = (8, 16), (32,)  # the CNN (module docstring)
PRE_LR, PRE_BATCH, POST_BATCH = 0.01, 64, 128
PROBE_SIZE = 32  # |B| of the Fig. 5 estimate (their mini-batches for it are not sized)
METHODS = ("pof", "sam", "pof-gamma0")


@lru_cache(maxsize=1)
def data() -> Dataset:
    """``lastlayer.engine.training.data.mnist()``: x (N, 1, 28, 28) float64, 4,000 / 1,000."""
    return mnist()


def network(d: Dataset) -> Network:
    """(Conv 3x3 -> ReLU -> MaxPool 2x2) x (8, 16), Flatten, Dense(400, 32) -> ReLU = phi,
    then the classifier Dense(32, 10): 330 parameters in classifier space."""
    return cnn(d, channels=CHANNELS, hidden=HIDDEN)


def pretrain(net: Network, d: Dataset, seed: int, iterations: int) -> TrainState:
    """SAM on all parameters from the initialisation of ``seed`` (step 1 of the module
    docstring): the checkpoint every method of ``METHODS`` starts from."""
    opt = optim.nesterov(PRE_LR, 0.9, weight_decay=protocol.LAM)
    return train(net, opt, d, init_train_state(net, opt, seed), iterations=iterations,
                 batch_size=PRE_BATCH, step=sam_gradient(protocol.SAM_RHO), quiet=True,
                 eval_every=10**9, eval_train=False)


def post_train(method: str, net: Network, start: TrainState, d: Dataset, steps: int,
               seed: int) -> TrainState:
    """``steps`` updates of ``method`` (one of ``METHODS``) from ``start`` (never
    modified), a fresh Nesterov state, mini-batches keyed by ``seed``."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if method == "sam":
        mask, step = None, sam_gradient(protocol.SAM_RHO)
    else:
        mask = feature_mask(net, start.params)
        step = pof_step(net, PoF() if method == "pof" else PoF(gamma=0.0))
    opt = optim.nesterov(protocol.POST_LR, 0.9, weight_decay=protocol.LAM, mask=mask)
    ts = TrainState(start.params, start.net_state, opt.init(start.params), seed)
    return train(net, opt, d, ts, iterations=steps, batch_size=POST_BATCH, mask=mask,
                 step=step, quiet=True, eval_every=10**9, eval_train=False)


def rayleigh_estimates(phi: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray,
                       batches: int, size: int, rng) -> np.ndarray:
    """Their Fig. 5 estimate of the top Hessian component: g_B^T H_D g_B / ||g_B||^2 for
    ``batches`` mini-batch gradients g_B (rows of (phi, y) drawn without replacement from
    ``rng``), H_D of the mean CE on all of (phi, y). phi (N, d), y (N,), W (C, d), b (C,)
    -> (batches,)."""
    out = []
    for _ in range(batches):
        idx = rng.choice(len(phi), size, replace=False)
        _, dz = softmax_cross_entropy(phi[idx] @ W.T + b, y[idx])  # (B, C), includes 1/B
        g = np.concatenate([(dz.T @ phi[idx]).reshape(-1), dz.sum(axis=0)])
        out.append(rayleigh_quotient(W, b, phi, y, g))
    return np.array(out)


def measure(net: Network, ts: TrainState, d: Dataset, n_train: int, probes: int,
            seed: int) -> dict[str, object]:
    """Step 3 of the module docstring. Scalars: test_error and train_error (%), test_loss,
    train_loss, eig_train, eig_test (lambda_max), rayleigh_train, rayleigh_test (the medians
    of the Fig. 5 estimates); arrays (probes,): rayleigh_train_all, rayleigh_test_all."""
    head = ts.params[-1]
    W, b = head["W"], head["b"]
    out: dict[str, object] = {}
    for on, x, y in (("train", d.x_train[:n_train], d.y_train[:n_train]),
                     ("test", d.x_test, d.y_test)):
        phi = protocol.features(net, ts.params, ts.net_state, x)  # (N, 32)
        z = phi @ W.T + b
        out[f"{on}_loss"] = float(softmax_cross_entropy(z, y)[0])
        out[f"{on}_error"] = 100.0 * float(np.mean(z.argmax(axis=1) != y))
        out[f"eig_{on}"] = float(top_eigenpairs(W, b, phi, y, 0.0, "ce", k=1).values[0])
        r = rayleigh_estimates(phi, y, W, b, probes, PROBE_SIZE,
                               stream(seed, "probe", 8 if on == "train" else 9))
        out[f"rayleigh_{on}_all"] = r
        out[f"rayleigh_{on}"] = float(np.median(r)) if len(r) else math.nan
    return out
