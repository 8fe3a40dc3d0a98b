"""The post-training paper's experiments (Moreau & Audiffren 2017, Section 4), at the
scale of embedded data: constants, networks, training runs and statistics. Used by
``lastlayer reproduce post-training`` (reproduce.py) and by ledger rows M4-M6 (claims.py).

Table 2 protocol (their Section 4.3 and released code, docs/design.md): a network
d -tanh-> 10 -relu-> 10 -> 1 without output bias, weights truncated normal (std 0.1),
biases 0.1, trained by plain SGD (lr 0.05, batch 50, sequential batches reshuffled at
wrap-around) on the mean squared error + 1e-3 (sum of squared weights and biases);
snapshots at 250, 500 and 750 iterations; at each, the test RMSE of (a) the network as
trained, (b) after 200 post-training SGD steps on the last layer (same lr and batch,
lam = 1e-3), (c) with the optimal last layer (ridge, lam = 1e-3, mean convention).

Table 1 / Figure 3 analogues (classification): a small MLP and CNN on digits, SGD lr 0.05,
batch 64; post-training 100 SGD iterations on the last layer with lam = 1e-2 (theirs for
MNIST); the exact cross-entropy optimum of the last layer (Newton).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from lastlayer.engine import (
    Constant, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Network, ReLU, Tanh, TruncatedNormal,
)
from lastlayer.engine import optim
from lastlayer.engine.losses import softmax_cross_entropy
from lastlayer.engine.solvers import ridge
from lastlayer.engine.training import Dataset, evaluate, init_train_state, train
from lastlayer.engine.training.data import simulated_regression

from .method import feature_dataset, optimal_last_layer, post_train

LAM = 1e-3
LR = 0.05
BATCH = 50
SNAPSHOTS = (250, 500, 750)
POST_STEPS = 200

# Table 1 / Figure 3 analogues (classification on digits)
CLASSIFY_LAM = 1e-2  # their lambda for MNIST / FACES
CLASSIFY_LR = 0.05
CLASSIFY_BATCH = 64
POST_ITERS = 100

# Their Table 2 (RMSE): iterations -> (classic training, post-training, optimal last layer)
PAPER_TABLE2 = {
    "Parkinson": {250: (0.832, 0.434, 0.119), 500: (0.147, 0.147, 0.140), 750: (0.134, 0.132, 0.131)},
    "Simulated": {250: (1.185, 1.117, 1.075), 500: (0.533, 0.450, 0.447), 750: (0.322, 0.300, 0.296)},
}


def regression_net(d_in: int, hidden: tuple[int, int] = (10, 10)) -> Network:
    """d_in -tanh-> h1 -relu-> h2 -> 1, no output bias; the released code's initialisation."""
    w, b = TruncatedNormal(std=0.1), Constant(0.1)
    return Network([
        Dense(d_in, hidden[0], weight_init=w, bias_init=b), Tanh(),
        Dense(hidden[0], hidden[1], weight_init=w, bias_init=b), ReLU(),
        Dense(hidden[1], 1, bias=False, weight_init=w),
    ])


def _test_rmse(net, params, net_state, data: Dataset) -> float:
    return evaluate(net, params, net_state, data.x_test, data.y_test, data.task)["rmse"]


def table2_run(data: Dataset, seed: int, *, hidden=(10, 10), snapshots=SNAPSHOTS,
               post_steps: int = POST_STEPS, lam: float = LAM, lr: float = LR,
               batch: int = BATCH) -> dict[int, tuple[float, float, float]]:
    """One seed of the Table 2 protocol: {iterations: (classic, post-trained, optimal)}."""
    net = regression_net(data.n_features, hidden)
    opt = optim.sgd(lr, weight_decay=lam)  # every tensor: the output layer has no bias
    ts = init_train_state(net, opt, seed)
    out = {}
    for q in snapshots:
        ts = train(net, opt, data, ts, iterations=q, batch_size=batch, mode="stream", quiet=True,
                   eval_every=max(snapshots), eval_train=False)
        phi = feature_dataset(net, ts.params, ts.net_state, data)
        post, _ = post_train(net, ts.params, ts.net_state, data, lam=lam, steps=post_steps,
                             base=optim.sgd(lr), batch_size=batch, seed=seed, phi=phi)
        best = optimal_last_layer(net, ts.params, ts.net_state, data, lam=lam, phi=phi)
        out[q] = tuple(_test_rmse(net, p, ts.net_state, data) for p in (ts.params, post, best))
    return out


def table2(data: Dataset, seeds, **kwargs) -> dict[int, np.ndarray]:
    """{iterations: array (n_seeds, 3)} of (classic, post-trained, optimal) test RMSE."""
    runs = [table2_run(data, s, **kwargs) for s in seeds]
    return {q: np.array([r[q] for r in runs]) for q in runs[0]}


def ordering_holds(table: dict[int, np.ndarray]) -> dict[int, bool]:
    """Their claim (M5) on the means over seeds: optimal <= post-trained <= classic."""
    out = {}
    for q, rows in table.items():
        classic, post, best = rows.mean(axis=0)
        out[q] = bool(best <= post <= classic)
    return out


# ---- M4: gradient post-training converges to the closed form -----------------------------
@dataclass(frozen=True)
class ConvergenceCurve:
    iterations: np.ndarray
    distance: np.ndarray  # ||W_t - W*||_F / ||W*||_F


def convergence_to_closed_form(net: Network, params: list, net_state: list, data: Dataset, *,
                               lam: float, steps: int, base: optim.GradientTransformation,
                               batch_size: int, seed: int = 0, every: int = 1) -> ConvergenceCurve:
    """Post-train the last layer and record its relative distance to the ridge optimum."""
    phi = feature_dataset(net, params, net_state, data)
    w_star = ridge(phi.x_train, phi.y_train, lam, fit_bias=net[-1].bias).W
    scale = float(np.linalg.norm(w_star))

    def distance(t, head_params):
        return {"distance": float(np.linalg.norm(head_params[0]["W"] - w_star)) / scale}

    _, hist = post_train(net, params, net_state, data, lam=lam, steps=steps, base=base,
                         batch_size=batch_size, seed=seed, phi=phi, monitor=distance,
                         monitor_every=every)
    return ConvergenceCurve(np.asarray(hist["monitor_iteration"]), np.asarray(hist["distance"]))


def gd_step_size(phi: np.ndarray, lam: float) -> float:
    """1 / L for full-batch gradient descent on J, L = 2 (lambda_max(Phi^T Phi) / N + lam)
    the largest eigenvalue of its Hessian: the step that converges monotonically."""
    top = np.linalg.eigvalsh(phi.T @ phi / len(phi))[-1]
    return 1.0 / (2 * (top + lam))


# ---- M6 and Table 1: classification networks on digits -------------------------------------
def digits_mlp() -> Network:
    return Network([Dense(64, 256), ReLU(), Dropout(0.3), Dense(256, 10)])


def digits_cnn() -> Network:
    """Their 'small network' at 8x8: conv 5x5 (32 channels), 2x2 max pooling, a hidden
    layer of 512 units with dropout, softmax output."""
    return Network([Conv2D(1, 32, 5, padding=2), ReLU(), MaxPool2D(2), Flatten(),
                    Dense(32 * 4 * 4, 512), ReLU(), Dropout(0.5), Dense(512, 10)])


def step_times(net: Network, data: Dataset, batch_size: int = 64, rounds: int = 20,
               seed: int = 0) -> tuple[float, float]:
    """Median seconds of one full training step (forward + backward of the whole network,
    then an SGD update) and of one post-training step (the same on the last layer alone,
    its features computed once beforehand): claim M6."""
    opt = optim.sgd(0.01)
    params = net.init(np.random.default_rng(seed))
    state = net.init_state()
    x, y = data.x_train[:batch_size], data.y_train[:batch_size]
    rng = np.random.default_rng(seed)
    phi = feature_dataset(net, params, state, data).x_train[:batch_size]
    head = net[-1:]

    def full_step():
        out, caches = net.forward(params, x, train=True, state=state, rng=rng)
        _, dy = softmax_cross_entropy(out, y)
        _, grads = net.backward(params, caches, dy, input_grad=False)
        opt.update(grads, opt_state_full, params)

    def post_step():
        out, caches = head.forward(params[-1:], phi, train=True)
        _, dy = softmax_cross_entropy(out, y)
        _, grads = head.backward(params[-1:], caches, dy, input_grad=False)
        opt.update(grads, opt_state_head, params[-1:])

    opt_state_full, opt_state_head = opt.init(params), opt.init(params[-1:])
    times = {"full": [], "post": []}
    for _ in range(3):
        full_step()
        post_step()
    for _ in range(rounds):
        for name, f in (("full", full_step), ("post", post_step)):
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return float(np.median(times["full"])), float(np.median(times["post"]))


# ---- Table 1 and Figure 3 analogues: classification on digits -----------------------------
def _error(net, params, net_state, data: Dataset) -> float:
    acc = evaluate(net, params, net_state, data.x_test, data.y_test, "classification")["accuracy"]
    return 100.0 * (1.0 - acc)


def table1_run(name: str, data: Dataset, seed: int, stops) -> np.ndarray:
    """(len(stops), 4) test error %: as trained, +100 classic, +100 post-training, optimum."""
    net = digits_mlp() if name == "mlp" else digits_cnn()
    opt = optim.sgd(CLASSIFY_LR)
    ts = init_train_state(net, opt, seed)
    kw = dict(batch_size=CLASSIFY_BATCH, quiet=True, eval_every=10**9)
    rows = []
    for q in stops:
        ts = train(net, opt, data, ts, iterations=q, **kw)
        longer = train(net, opt, data, ts, iterations=q + POST_ITERS, **kw)
        phi = feature_dataset(net, ts.params, ts.net_state, data)
        post, _ = post_train(net, ts.params, ts.net_state, data, lam=CLASSIFY_LAM,
                             steps=POST_ITERS, base=optim.sgd(CLASSIFY_LR),
                             batch_size=CLASSIFY_BATCH, seed=seed, phi=phi)
        best = optimal_last_layer(net, ts.params, ts.net_state, data, lam=CLASSIFY_LAM, phi=phi)
        rows.append([_error(net, ts.params, ts.net_state, data),
                     _error(net, longer.params, longer.net_state, data),
                     _error(net, post, ts.net_state, data),
                     _error(net, best, ts.net_state, data)])
    return np.array(rows)


def error_curve(data: Dataset, seed: int, every: int, end: int) -> dict[str, np.ndarray]:
    """Their Figure 3 protocol on the digits MLP: at iteration q, the test error of the
    network trained q iterations, and of the one trained q - 100 iterations then
    post-trained 100 iterations."""
    net, opt = digits_mlp(), optim.sgd(CLASSIFY_LR)
    ts = init_train_state(net, opt, seed)
    qs = np.arange(POST_ITERS, end + 1, every)
    classic, post = [], []
    snapshots = {}
    for q in sorted(set(qs) | set(qs - POST_ITERS)):
        ts = train(net, opt, data, ts, iterations=int(q), batch_size=CLASSIFY_BATCH, quiet=True,
                   eval_every=10**9)
        snapshots[int(q)] = ts
    for q in qs:
        classic.append(_error(net, snapshots[q].params, snapshots[q].net_state, data))
        base = snapshots[q - POST_ITERS]
        p, _ = post_train(net, base.params, base.net_state, data, lam=CLASSIFY_LAM,
                          steps=POST_ITERS, base=optim.sgd(CLASSIFY_LR), batch_size=CLASSIFY_BATCH,
                          seed=seed)
        post.append(_error(net, p, base.net_state, data))
    return {"iteration": qs, "classic": np.array(classic), "post_training": np.array(post)}


def m4_curves(steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Simulated regression (code recipe), network trained 250 iterations; then the
    distance of the last layer to the ridge optimum during post-training by SGD (the
    protocol's lr 0.05, batch 50) and by full-batch gradient descent (step 1/L)."""
    data = simulated_regression("code", seed=seed)
    net = regression_net(data.n_features)
    opt = optim.sgd(LR, weight_decay=LAM)
    ts = train(net, opt, data, init_train_state(net, opt, seed), iterations=250,
               batch_size=BATCH, mode="stream", quiet=True, eval_every=10**9)
    phi = feature_dataset(net, ts.params, ts.net_state, data)
    sgd = convergence_to_closed_form(net, ts.params, ts.net_state, data, lam=LAM,
                                     steps=steps, base=optim.sgd(LR), batch_size=BATCH,
                                     seed=seed)
    gd = convergence_to_closed_form(net, ts.params, ts.net_state, data, lam=LAM,
                                    steps=steps, base=optim.sgd(gd_step_size(phi.x_train, LAM)),
                                    batch_size=len(data.x_train), seed=seed)
    eig = 2 * (np.linalg.eigvalsh(phi.x_train.T @ phi.x_train / len(phi.x_train)) + LAM)
    return {"iteration": sgd.iterations, "sgd": sgd.distance, "gd": gd.distance,
            "hessian_condition": np.array(eig[-1] / eig[0])}
