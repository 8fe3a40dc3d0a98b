"""The PoF experiments at the scale of generated and embedded data: the toy recipe, the
networks, pre-training, the post-training methods compared at equal step budgets, and the
measurements (classifier-space curvature, losses, norms). Used by ``lastlayer reproduce
pof`` (reproduce.py) and the ledger rows P1-P6 (claims.py).

Toy task (their Fig. 1: "an artificially generated toy dataset" and "an MLP with 5 weight
layers"; the recipe is not given, this one is ours): inputs x ~ N(0, I_10); a fixed random
teacher, 10 -tanh-> 32 -> 4 logits scaled to standard deviation 6, labels drawn from
softmax(teacher logits) (so the classes overlap and the Bayes error is not 0: the test loss
has a minimum of its own, away from the training one); 2048 training and 4096 test points.
The student is 10 -> 64 -> 64 -> 64 -> 64 -> 4 with tanh (smooth, so curvature is defined
everywhere). Digits: 64 -> 128 -> 128 -> 10 with tanh.

Pre-training: Nesterov momentum 0.9, lr 0.05, batch 64, 1500 updates, coupled weight decay
lam = 1e-3 (PyTorch's 2e-3), then the classifier is replaced by the exact minimiser of
J(theta) = L_D(phi0, theta) + lam ||W||^2 on the pre-trained features
(``lastlayer.engine.solvers.fit_softmax_regression``), so that theta0 is a minimum in classifier space
to rounding, as PoF assumes ("(phi0, theta0) ... locally minimized"). The paper instead
post-trains the classifier SAM left after 200 epochs.

Post-training (every method the same number of steps from the same checkpoint): Nesterov
0.9, lr 1e-3 (1/50 of the pre-training rate; the paper's 3e-5 is 1/5 of its last SGD rate),
batch 256 (the paper's |B~|), weight decay lam on what trains; PoF's
line-search batch 32 and gamma ~ U[0, 2] (the paper's); SAM's rho 0.05.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from lastlayer.engine import Dense, Network, Tanh, optim, stream
from lastlayer.engine.losses import softmax_cross_entropy
from lastlayer.engine.solvers import (
    LineMinimum, LineProfile, fit_softmax_regression, hvp, layer_top_eigenpair, line_minimum,
    objective, rayleigh_quotient, top_eigenpairs,
)
from lastlayer.engine.solvers.exact.eigen import pack
from lastlayer.engine.training import (
    Dataset, TrainState, evaluate, init_train_state, sam_gradient, train,
)
from lastlayer.engine.training.data import digits

from .method import PoF, feature_mask, pof_step

TOY_DIM, TOY_CLASSES, TOY_TRAIN, TOY_TEST = 10, 4, 2048, 4096
TEACHER_WIDTH, TEACHER_SCALE = 32, 6.0
TOY_WIDTHS = (64, 64, 64, 64)  # hidden widths: 5 weight layers with the output layer
DIGITS_WIDTHS = (128, 128)

PRE_LR, PRE_BATCH, LAM = 0.05, 64, 1e-3
PRE_ITERATIONS = {"toy": 1500, "digits": 1500}
POST_LR, POST_BATCH, SAM_RHO = 1e-3, 256, 0.05
RELEASED_BATCH = 64  # the released code's main batch (its line-search batch is 256)

METHODS = ("sgd-all", "sgd-phi", "sam-phi", "sam-all", "pof", "pof-released", "pof-gamma2",
           "pof-refit")

# ---- data and networks ------------------------------------------------------------------
def toy_data(seed: int = 0) -> Dataset:
    """The toy task of the module docstring (train 1024, test 4096), drawn from the stream
    ("pof-data") of ``seed``."""
    rng = stream(seed, "pof-data")
    w1 = rng.standard_normal((TEACHER_WIDTH, TOY_DIM)) / np.sqrt(TOY_DIM)
    w2 = rng.standard_normal((TOY_CLASSES, TEACHER_WIDTH)) / np.sqrt(TEACHER_WIDTH)
    x = rng.standard_normal((TOY_TRAIN + TOY_TEST, TOY_DIM))
    logits = np.tanh(x @ w1.T) @ w2.T
    logits *= TEACHER_SCALE / logits.std()
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (rng.random(len(x))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    y = np.minimum(y, TOY_CLASSES - 1).astype(np.int64)  # u above a rounded cumsum: last class
    return Dataset("pof-toy", x[:TOY_TRAIN], y[:TOY_TRAIN], x[TOY_TRAIN:], y[TOY_TRAIN:],
                   "classification", n_classes=TOY_CLASSES,
                   description="PoF toy: labels drawn from a random tanh teacher's softmax")


def dataset(name: str, seed: int = 0) -> Dataset:
    if name == "toy":
        return toy_data(seed)
    if name == "digits":
        return digits(seed=0)
    raise ValueError(f"name: expected 'toy' or 'digits', got {name!r}")


def mlp(data: Dataset, widths: tuple[int, ...]) -> Network:
    """d -> widths (tanh) -> C: a Dense classifier on top of a tanh feature extractor."""
    layers, d = [], data.n_features
    for width in widths:
        layers += [Dense(d, width), Tanh()]
        d = width
    return Network(layers + [Dense(d, data.n_classes)])


def network(name: str, data: Dataset) -> Network:
    return mlp(data, TOY_WIDTHS if name == "toy" else DIGITS_WIDTHS)


# ---- pre-training -----------------------------------------------------------------------
def features(net: Network, params: list, net_state: list, x) -> np.ndarray:
    """phi(x): the output of every layer before the classifier, in inference mode."""
    return net[:-1].forward(params[:-1], x, train=False, state=net_state[:-1])[0]


def refit_classifier(net: Network, ts: TrainState, data: Dataset) -> TrainState:
    """``ts`` with the classifier replaced by the exact minimiser of J on its features."""
    phi = features(net, ts.params, ts.net_state, data.x_train)
    sol = fit_softmax_regression(phi, data.y_train, LAM, n_classes=data.n_classes)
    return replace(ts, params=ts.params[:-1] + [{"W": sol.W, "b": sol.b}])


def pretrain(name: str, data: Dataset, seed: int, iterations: int | None = None) -> TrainState:
    """The checkpoint every post-training method starts from (module docstring)."""
    net = network(name, data)
    opt = optim.nesterov(PRE_LR, 0.9, weight_decay=LAM)
    ts = train(net, opt, data, init_train_state(net, opt, seed),
               iterations=iterations or PRE_ITERATIONS[name], batch_size=PRE_BATCH, quiet=True,
               eval_every=10**9, eval_train=False)
    return refit_classifier(net, ts, data)


# ---- post-training -------------------------------------------------------------------------
def post_train(method: str, net: Network, start: TrainState, data: Dataset, steps: int,
               seed: int, *, evaluations: int = 1) -> TrainState:
    """``steps`` updates of ``method`` (one of ``METHODS``) from ``start``, whose parameters
    are reused and never modified. History: PoF's per-iteration numbers, the test metrics
    at ``evaluations`` points."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    phi_only = feature_mask(net, start.params)
    mask, step, batch = phi_only, None, POST_BATCH
    if method == "sgd-all":
        mask = None
    elif method == "sam-phi":
        step = sam_gradient(SAM_RHO, perturb=phi_only)
    elif method == "sam-all":
        mask, step = None, sam_gradient(SAM_RHO)
    elif method in ("pof", "pof-refit"):
        step = pof_step(net, PoF())
    elif method == "pof-released":
        step = pof_step(net, PoF(search="released", search_batch=256, replacement=True))
        batch = RELEASED_BATCH
    elif method == "pof-gamma2":
        step = pof_step(net, PoF(gamma=2.0))
    opt = optim.nesterov(POST_LR, 0.9, weight_decay=LAM, mask=mask)
    ts = TrainState(start.params, start.net_state, opt.init(start.params), seed)
    kwargs = {"step": step} if step is not None else {}
    ts = train(net, opt, data, ts, iterations=steps, batch_size=batch, mask=mask, quiet=True,
               eval_every=max(1, steps // evaluations), eval_train=False, **kwargs)
    return refit_classifier(net, ts, data) if method == "pof-refit" else ts


# ---- measurements ----------------------------------------------------------------------------
def top_eigenvalue(net: Network, params: list, net_state: list, x, y) -> float:
    """The largest eigenvalue of the classifier-space Hessian of the (unregularised) mean
    CE on (x, y), weights and bias (exact: Lanczos on exact Hessian-vector products)."""
    phi = features(net, params, net_state, x)
    head = params[-1]
    return float(top_eigenpairs(head["W"], head.get("b"), phi, y, 0.0, "ce", k=1).values[0])


def measure(net: Network, ts: TrainState, data: Dataset) -> dict[str, float]:
    """Test error (%), test and train loss, the top classifier-space Hessian eigenvalue on
    train and test data, ||phi|| (the feature extractor's parameters) and the RMS norm of
    the training features."""
    params, state = ts.params, ts.net_state
    test = evaluate(net, params, state, data.x_test, data.y_test, "classification")
    train_metrics = evaluate(net, params, state, data.x_train, data.y_train, "classification")
    phi = features(net, params, state, data.x_train)
    return {
        "test_error": 100.0 * (1.0 - test["accuracy"]),
        "test_loss": test["loss"],
        "train_loss": train_metrics["loss"],
        "train_error": 100.0 * (1.0 - train_metrics["accuracy"]),
        "eig_train": top_eigenvalue(net, params, state, data.x_train, data.y_train),
        "eig_test": top_eigenvalue(net, params, state, data.x_test, data.y_test),
        "phi_norm": float(np.sqrt(sum(float((v * v).sum()) for p in params[:-1]
                                      for v in p.values()))),
        "feature_rms": float(np.sqrt((phi * phi).sum(axis=1).mean())),
    }


def batch_gradients(net: Network, ts: TrainState, x, y, batches: int, size: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Classifier-space gradients of ``batches`` mini-batches of ``size`` drawn without
    replacement from (x, y) with the stream ("probe"): (batches, P) in the order of
    ``lastlayer.engine.solvers.exact.eigen.pack``, and the per-sample gradients (N, P) of the whole set."""
    phi = features(net, ts.params, ts.net_state, x)
    head = ts.params[-1]
    z = phi @ head["W"].T + head["b"]
    _, dz = softmax_cross_entropy(z, y)
    dz = dz * len(x)  # per-sample gradients of the logits, (N, C)
    per_sample = np.concatenate([(dz[:, :, None] * phi[:, None, :]).reshape(len(x), -1), dz],
                                axis=1)  # (N, C d + C)
    rng = stream(seed, "probe")
    rows = [per_sample[rng.choice(len(x), size, replace=False)].mean(axis=0)
            for _ in range(batches)]
    return np.array(rows), per_sample


def rayleigh_of_batches(net: Network, ts: TrainState, data: Dataset, on: str, batches: int,
                        size: int, seed: int) -> np.ndarray:
    """PoF's estimate of the top curvature (their Fig. 5): g_B^T H_D g_B / ||g_B||^2 for
    mini-batch gradients g_B of the set ``on`` ("train" or "test"), H_D on the same set."""
    x, y = (data.x_train, data.y_train) if on == "train" else (data.x_test, data.y_test)
    grads, _ = batch_gradients(net, ts, x, y, batches, size, seed)
    phi = features(net, ts.params, ts.net_state, x)
    head = ts.params[-1]
    return np.array([rayleigh_quotient(head["W"], head["b"], phi, y, g) for g in grads])


def head_vector(ts: TrainState) -> np.ndarray:
    head = ts.params[-1]
    return pack(head["W"], head.get("b"))


def gradient_alignment(net: Network, ts: TrainState, data: Dataset, batches: int, size: int,
                       top: int, seed: int) -> dict[str, np.ndarray]:
    """Their Fig. 2a: for ``batches`` mini-batches of ``size`` (training set, stream
    ("probe", seed)), the index (0 = the largest eigenvalue) of argmax_i |v_i^T g_B| over
    the ``top`` exact eigenvectors of H_D, as a histogram (shares); beside it what a
    Gaussian model predicts: g_B ~ N(grad L_D, Sigma (1 - (B - 1)/(N - 1)) / B) with Sigma
    the per-sample gradient covariance (sampling without replacement), by 200 000 draws.
    Also the variances of the projections v_i^T g_B (measured, with bootstrap standard
    errors, and predicted) and v_i^T Sigma v_i / lambda_i."""
    grads, per_sample = batch_gradients(net, ts, data.x_train, data.y_train, batches, size, seed)
    phi = features(net, ts.params, ts.net_state, data.x_train)
    head = ts.params[-1]
    pairs = top_eigenpairs(head["W"], head["b"], phi, data.y_train, 0.0, "ce", k=top,
                           method="dense")
    v = pairs.vectors  # (P, top)
    projections = grads @ v  # (batches, top)
    measured = np.bincount(np.abs(projections).argmax(axis=1), minlength=top)
    n = len(per_sample)
    mean = per_sample.mean(axis=0) @ v
    centred = (per_sample - per_sample.mean(axis=0)) @ v  # (N, top)
    sigma = centred.T @ centred / n
    cov = sigma * (1 - (size - 1) / (n - 1)) / size
    draws = stream(seed, "probe", 2).multivariate_normal(mean, cov, size=200_000, method="eigh")
    predicted = np.bincount(np.abs(draws).argmax(axis=1), minlength=top) / len(draws)
    rng = stream(seed, "probe", 3)
    boot = np.array([projections[rng.integers(0, batches, batches)].var(axis=0, ddof=1)
                     for _ in range(1000)])
    return {"measured": measured / batches, "predicted": predicted, "eigenvalues": pairs.values,
            "variance": projections.var(axis=0, ddof=1), "predicted_variance": np.diag(cov).copy(),
            "variance_se": boot.std(axis=0), "fisher_over_hessian": np.diag(sigma) / pairs.values}


class Search(NamedTuple):
    """One line-search problem of eq. 2: a mini-batch, its direction and the exact search."""

    phi: np.ndarray  # (B, d) the mini-batch's features
    y: np.ndarray  # (B,) labels, or (B, C) targets for the squared loss
    g_hat: dict  # {"W": (C, d), "b": (C,)}: g / ||g|| (eq. 3)
    norm: float  # ||g||
    profile: LineProfile  # the loss along theta0 - xi g_hat
    found: LineMinimum  # xi* (eq. 2)


def searches(phi, y, W, b, batches: int, size: int, rng, loss: str = "ce") -> list[Search]:
    """``batches`` line-search problems on mini-batches of ``size`` rows of (phi, y) drawn
    without replacement from ``rng``, the classifier at (W, b)."""
    out = []
    for _ in range(batches):
        idx = rng.choice(len(phi), size, replace=False)
        obj = objective(W, b, phi[idx], y[idx], 0.0, loss)
        norm = float(np.sqrt((obj.grad_W ** 2).sum() + (obj.grad_b ** 2).sum()))
        g_hat = {"W": obj.grad_W / norm, "b": obj.grad_b / norm}
        profile = LineProfile(phi[idx], y[idx], W, b, g_hat["W"], g_hat["b"], loss)
        out.append(Search(phi[idx], y[idx], g_hat, norm, profile, line_minimum(profile)))
    return out


def search_distances(net: Network, ts: TrainState, data: Dataset, on: str, batches: int,
                     size: int, seed: int) -> np.ndarray:
    """Their Fig. 2b: xi*_B of ``batches`` mini-batches of ``size`` of the set ``on``
    ("train" or "test"); NaN for a batch whose profile has no minimum."""
    x, y = (data.x_train, data.y_train) if on == "train" else (data.x_test, data.y_test)
    phi = features(net, ts.params, ts.net_state, x)
    head = ts.params[-1]
    rng = stream(seed, "probe", 4 if on == "train" else 5)
    return np.array([s.found.xi if s.found.status == "minimum" else np.nan
                     for s in searches(phi, y, head["W"], head["b"], batches, size, rng)])


def mirror_statistics(problems: list[Search]) -> dict[str, np.ndarray]:
    """Per problem with a minimum: the gap (L_B(2 xi*) - L_B(0)) in units of the dip
    L_B(0) - L_B(xi*) (0 for a quadratic profile: gamma = 2 is the mirror point), and the
    true mirror factor gamma_m with L_B(gamma_m xi*) = L_B(0) (inf if never)."""
    gaps, factors = [], []
    for s in problems:
        if s.found.status != "minimum":
            continue
        f0, xi = s.profile.value(0.0), s.found.xi
        gaps.append((s.profile.value(2 * xi) - f0) / (f0 - s.found.value))
        hi = 2.0
        while s.profile.value(hi * xi) < f0 and hi < 2.0**30:
            hi *= 2.0
        lo = 1.0
        for _ in range(100 if hi < 2.0**30 else 0):  # bisection on the rising side
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if s.profile.value(mid * xi) < f0 else (lo, mid)
        factors.append(0.5 * (lo + hi) if hi < 2.0**30 else math.inf)
    return {"gap": np.array(gaps), "factor": np.array(factors)}


def effective_loss_table(problems: list[Search], W, b, phi, y, lam: float, gammas,
                         loss: str = "ce") -> dict[str, np.ndarray]:
    """Per problem with a minimum, at every gamma: the exact increment
    J(theta0 - gamma xi* g_hat) - J(theta0) of the training objective J = L_D + lam ||W||^2,
    eq. 9's second-order term gamma^2 xi*^2 / 2 g_hat^T H_D g_hat, eq. 10's
    gamma^2 L_B(theta0) (g_hat^T H_D g_hat) / (g_hat^T H_B g_hat), and eq. 10 with
    L_B(theta0) - min_xi L_B in place of L_B(theta0) (the derivation for a quadratic
    profile whose minimum is not 0)."""
    gammas = np.asarray(gammas, dtype=np.float64)
    j0 = objective(W, b, phi, y, lam, loss).value
    rows = {"exact": [], "eq9": [], "eq10": [], "eq10_corrected": []}
    for s in problems:
        if s.found.status != "minimum":
            continue
        gw, gb = s.g_hat["W"], s.g_hat["b"]
        curvature_d = _quadratic_form(W, b, phi, y, lam, gw, gb, loss)
        curvature_b = _quadratic_form(W, b, s.phi, s.y, 0.0, gw, gb, loss)
        lb0, xi = s.profile.value(0.0), s.found.xi
        rows["exact"].append([objective(W - a * gw, b - a * gb, phi, y, lam, loss).value - j0
                              for a in gammas * xi])
        rows["eq9"].append(gammas**2 * xi**2 / 2 * curvature_d)
        rows["eq10"].append(gammas**2 * lb0 * curvature_d / curvature_b)
        rows["eq10_corrected"].append(gammas**2 * (lb0 - s.found.value) * curvature_d
                                      / curvature_b)
    return {"gamma": gammas, **{k: np.array(v) for k, v in rows.items()}}


def _quadratic_form(W, b, phi, y, lam, v_w, v_b, loss) -> float:
    hv_w, hv_b = hvp(W, b, phi, y, lam, v_w, v_b, loss=loss)
    return float((v_w * hv_w).sum() + (v_b * hv_b).sum())


def landscape(net: Network, ts: TrainState, x, y, layer: int, direction: dict,
              offsets: np.ndarray) -> np.ndarray:
    """The mean CE on (x, y) along params[layer] + t * direction, t in ``offsets`` (their
    Figs. 1c, 1d; inference mode)."""
    out = []
    for t in offsets:
        params = list(ts.params)
        params[layer] = {k: w + t * direction[k] for k, w in ts.params[layer].items()}
        logits, _ = net.forward(params, x, train=False, state=ts.net_state)
        out.append(float(softmax_cross_entropy(logits, y)[0]))
    return np.array(out)


def layer_sharpness(net: Network, ts: TrainState, data: Dataset,
                    offsets: np.ndarray) -> dict[str, np.ndarray]:
    """Their Fig. 1c: for every weight layer, the top eigenvector v of the training-loss
    Hessian block of its parameters (Lanczos on central-difference Hessian-vector
    products), and Delta L = L_test(w) - min_t L_test(w + t v) over ``offsets``: how much
    test loss a move along the sharpest training direction recovers. Also the training and
    test landscapes along v of the last layer (their Fig. 1d)."""
    layers = [i for i, p in enumerate(ts.params) if p]
    delta, eig, train_curve, test_curve = [], [], None, None
    for i in layers:
        value, v = layer_top_eigenpair(net, ts.params, ts.net_state, data.x_train, data.y_train,
                                       softmax_cross_entropy, i)
        test = landscape(net, ts, data.x_test, data.y_test, i, v, offsets)
        centre = test[len(offsets) // 2]
        delta.append(centre - test.min())
        eig.append(value)
        if i == layers[-1]:
            train_curve = landscape(net, ts, data.x_train, data.y_train, i, v, offsets)
            test_curve = test
    return {"delta_loss": np.array(delta), "eigenvalue": np.array(eig),
            "offsets": offsets, "train_landscape": train_curve, "test_landscape": test_curve}
