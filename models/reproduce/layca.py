"""``lastlayer reproduce layca``: Carbonnelle & De Vleeschouwer, "On layer-level control of
DNN training and its impact on generalization", on scikit-learn's digits.

* Their Section 3 toy (Fig. 1a): an 11-layer ReLU MLP, 10 training digits per class; one
  hidden layer at a time is trained alone (full-batch SGD, all others frozen at their
  initial values) until the training accuracy is 100 %; held-out accuracy against the
  index of the trained layer, mean over seeds.
* Their Sections 5.2-5.3 (Fig. 2): test accuracy against the layer-wise prioritisation
  alpha in {-0.8, -0.4, 0, 0.4, 0.8}, for SGD with the same layer-wise rate multipliers and
  for Layca (SGD direction); and (Fig. 3) the layer-wise angle deviation curves
  1 - cos(w_t, w_0) at alpha = 0 for both.
* Their Section 6.2 (Fig. 4): adaptive methods (Adam, RMSprop, Adagrad) and their
  non-adaptive equivalents (SGD_AMom, SGD), without and with Layca: test accuracy curves.

Scale (theirs -> ours): MNIST and 784-unit layers -> digits upsampled to 16 x 16 and
256-unit layers (Section 3), and an
8-layer, 64-unit MLP without biases (Sections 5-6) in place of their VGG / ResNet / CNN
with batch normalisation on CIFAR and Tiny ImageNet. Everything goes to ``--out``:
results.h5, report.md and PNG figures. Ledger rows C5-C7 run the same functions smaller.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import Dense, Network, ReLU, optim
from engine import layca as L
from engine.data import Dataset, digits
from engine.training import TrainState, evaluate, init_train_state, train

from .common import (
    Steps, markdown_table, provenance, pyplot, save_figure, write_report, write_results_h5,
)

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
# the adaptive methods' Keras defaults; with Layca, the defaults of engine.layca (3^-3 for
# SGD, RMSprop and Adagrad, 3^-5 for SGD_AMom and Adam).
PLAIN_RATES = {"sgd": 0.1, "sgd_amom": 0.1, "adam": 1e-3, "rmsprop": 1e-3, "adagrad": 1e-2}
METHODS = ("sgd", "sgd_amom", "adam", "rmsprop", "adagrad")
PAIRS = (("adam", "sgd_amom"), ("rmsprop", "sgd"), ("adagrad", "sgd"))  # adaptive, equivalent
LABELS = {"sgd": "SGD", "sgd_amom": "SGD_AMom", "adam": "Adam", "rmsprop": "RMSprop",
          "adagrad": "Adagrad"}


@dataclass(frozen=True)
class Settings:
    seeds: int
    toy_cap: int  # most updates for one toy layer (stops earlier at 100 % training accuracy)
    iterations: int  # updates of every Section 5-6 run
    evaluations: int  # test-accuracy points per Section 6.2 curve
    curve_points: int  # angle-deviation points per Fig. 3 curve

    @classmethod
    def make(cls, quick: bool, seeds: int | None) -> Settings:
        if quick:
            return cls(seeds or 2, 600, 400, 8, 20)
        return cls(seeds or 10, 1500, 800, 16, 40)  # 10 seeds: their Fig. 1a averages 10 runs


@contextmanager
def single_threaded_blas():
    """These matrices are small (at most 1697 x 256): BLAS threads only add synchronisation,
    and thrash when the machine is shared. Limits BLAS to one thread inside the block."""
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    with threadpool_limits(limits=1, user_api="blas"):
        yield


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

    rng = np.random.default_rng([seed, 0x7011])
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


# ---- Sections 5-6: end-to-end training ------------------------------------------------------------
def mlp() -> Network:
    """64 -> 64 -> ... -> 10: ``MLP_DEPTH`` Dense layers without biases (ReLU between)."""
    layers, d_in = [], 64
    for _ in range(MLP_DEPTH - 1):
        layers += [Dense(d_in, MLP_WIDTH, bias=False), ReLU()]
        d_in = MLP_WIDTH
    return Network(layers + [Dense(MLP_WIDTH, 10, bias=False)])


def _direction(method: str) -> optim.GradientTransformation:
    return {"sgd": optim.identity, "sgd_amom": optim.scale_by_ema,
            "adam": optim.scale_by_adam, "rmsprop": optim.scale_by_rms,
            "adagrad": optim.scale_by_adagrad}[method]()


def rule(method: str, use_layca: bool, alpha: float, net: Network,
         iterations: int) -> optim.GradientTransformation:
    """The update rule of one run: ``method``'s direction, the Section 5.1 multipliers for
    ``alpha``, the rate schedule (divided by 10 at ``DECAY_AT``), with or without Layca."""
    params = net.init(np.random.default_rng(0))  # for the structure only
    mask = L.kernel_mask(net, params)
    index = L.kernel_layer_index(mask)
    rate = L.DEFAULT_RATES[method] if use_layca else PLAIN_RATES[method]
    schedule = optim.StepDecay(rate, boundaries=(int(DECAY_AT * iterations),), factor=0.1)
    if use_layca:
        return L.layca(_direction(method), schedule, alpha, mask=mask, layer_index=index)
    return optim.chain(_direction(method),
                       optim.scale_per_tensor(L.per_tensor_multipliers(alpha, index, params)),
                       optim.scale_by_learning_rate(schedule))


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
    mask = L.kernel_mask(net, initial)
    monitor = L.rotation_monitor(initial, mask, L.kernel_layer_index(mask)) if rotation_points else None
    ts = train(net, opt, data, ts, iterations=iterations, batch_size=BATCH, quiet=True,
               eval_every=iterations // evaluations, eval_train=False, monitor=monitor,
               monitor_every=iterations // max(rotation_points, 1))
    final_rotation = np.array(list(L.layer_rotation(ts.params, initial, mask).values()))
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


# ---- the command ------------------------------------------------------------------------------------
def run(out: Path, quick: bool = False, seeds: int | None = None, quiet: bool = False) -> Path:
    """Run everything and write results.h5, report.md and the figures to ``out``."""
    s = Settings.make(quick, seeds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = digits(seed=0)
    total = s.seeds * TOY_HIDDEN + s.seeds * len(ALPHAS) * 2 + 2 + s.seeds * len(METHODS) * 2
    toy = {key: np.zeros((s.seeds, TOY_HIDDEN)) for key in ("test_accuracy", "train_accuracy",
                                                           "updates")}
    sweep = {kind: {key: np.zeros((s.seeds, len(ALPHAS))) for key in ("test_accuracy",
                                                                      "train_accuracy")}
             for kind in ("sgd", "layca")}
    adaptive: dict = {}
    with single_threaded_blas(), Steps(total, quiet, "layca") as steps:
        for seed in range(s.seeds):
            net, toy_set = toy_net(), toy_data(seed)
            params = net.init(np.random.default_rng([seed, 0x1417]))
            for k in range(TOY_HIDDEN):
                with steps.step(f"Section 3 toy, seed {seed}, layer {k}"):
                    result = train_one_layer(net, params, toy_set, k, cap=s.toy_cap, seed=seed)
                for key, value in zip(("test_accuracy", "train_accuracy", "updates"), result):
                    toy[key][seed, k] = value
        for a, alpha in enumerate(ALPHAS):
            for kind in ("sgd", "layca"):
                for seed in range(s.seeds):
                    with steps.step(f"Fig. 2, {kind}, alpha {alpha:g}, seed {seed}"):
                        r = end_to_end("sgd", kind == "layca", alpha, data, seed, s.iterations)
                    for key in ("test_accuracy", "train_accuracy"):
                        sweep[kind][key][seed, a] = r[key]
        curves = {}
        for kind in ("sgd", "layca"):
            with steps.step(f"Fig. 3, {kind} angle deviation"):
                r = end_to_end("sgd", kind == "layca", 0.0, data, 0, s.iterations,
                               rotation_points=s.curve_points)
            curves[kind] = {"iteration": r["rotation_iteration"], "deviation": r["rotation"]}
        for method in METHODS:
            for kind in ("plain", "layca"):
                runs = []
                for seed in range(s.seeds):
                    with steps.step(f"Fig. 4, {LABELS[method]}, {kind}, seed {seed}"):
                        runs.append(end_to_end(method, kind == "layca", 0.0, data, seed,
                                               s.iterations, evaluations=s.evaluations))
                adaptive.setdefault(kind, {})[method] = {
                    "iteration": runs[0]["curve_iteration"],
                    "test_curve": np.stack([r["test_curve"] for r in runs]),
                    "test_accuracy": np.array([r["test_accuracy"] for r in runs]),
                    "train_accuracy": np.array([r["train_accuracy"] for r in runs]),
                    "final_rotation": np.stack([r["final_rotation"] for r in runs]),
                    **({"zero_steps": np.array([r["zero_steps"] for r in runs]),
                        "nonfinite": np.array([r["nonfinite"] for r in runs])}
                       if kind == "layca" else {}),
                }
        seconds = steps.seconds

    results = {"toy": toy, "alpha_sweep": {"alpha": np.array(ALPHAS), **sweep},
               "angle_deviation": curves, "adaptive": adaptive}
    attrs = {"experiment": "layca", "quick": int(quick), "seeds": s.seeds,
             "settings": dataclasses.asdict(s), **provenance()}
    write_results_h5(out / "results.h5", results, attrs)
    _figures(results, out)
    write_report(out / "report.md", _report(results, s, quick, seconds, attrs))
    return out


def _figures(results: dict, out: Path) -> None:
    plt = pyplot()
    toy = results["toy"]
    k = np.arange(TOY_HIDDEN)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    acc = 100 * toy["test_accuracy"]
    ax.errorbar(k, acc.mean(axis=0), yerr=acc.std(axis=0), marker="o", capsize=3)
    ax.set_xticks(k)
    ax.set_xlabel("index of the only trained layer (0 = input side)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("one layer trained alone to 100 % training accuracy (their Fig. 1a)")
    save_figure(fig, out / "fig1a_single_layer.png")

    sweep = results["alpha_sweep"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for kind, label in (("sgd", "SGD"), ("layca", "Layca (SGD direction)")):
        acc = 100 * sweep[kind]["test_accuracy"]
        ax.errorbar(sweep["alpha"], acc.mean(axis=0), yerr=acc.std(axis=0), marker="o",
                    capsize=3, label=label)
    ax.set_xlabel("alpha (< 0: first layers prioritised, > 0: last layers)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("layer-wise prioritisation (their Fig. 2)")
    ax.legend()
    save_figure(fig, out / "fig2_alpha_sweep.png")

    curves = results["angle_deviation"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, (kind, label) in zip(axes, (("layca", "Layca"), ("sgd", "SGD"))):
        dev = curves[kind]["deviation"]
        colours = plt.cm.viridis(np.linspace(0, 1, dev.shape[1]))
        for i in range(dev.shape[1]):
            ax.plot(curves[kind]["iteration"], dev[:, i], color=colours[i], label=f"layer {i}")
        ax.set_title(f"{label}, alpha = 0")
        ax.set_xlabel("update")
    axes[0].set_ylabel("angle deviation 1 - cos(w_t, w_0)")
    axes[1].legend(fontsize=7, ncol=2)
    save_figure(fig, out / "fig3_angle_deviation.png")

    adaptive = results["adaptive"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, kind, title in zip(axes, ("plain", "layca"), ("without Layca", "with Layca")):
        for method in METHODS:
            r = adaptive[kind][method]
            style = "-" if method in ("adam", "rmsprop", "adagrad") else "--"
            ax.plot(r["iteration"], 100 * r["test_curve"].mean(axis=0), style, label=LABELS[method])
        ax.set_title(f"{title} (their Fig. 4)")
        ax.set_xlabel("update")
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend()
    save_figure(fig, out / "fig4_adaptive.png")


def uniformity(deviation: np.ndarray) -> float:
    """min / max over layers of the rotation angle arccos(1 - deviation) since
    initialisation: 1 when every layer rotated as much. (Angles, not the cosine distances
    themselves: a rotation *rate* is an angle per step, and the cosine distance, quadratic
    in small angles, would square every ratio.)"""
    angles = np.arccos(1.0 - np.asarray(deviation))
    return float(angles.min() / angles.max())


def _percent(fractions) -> str:
    """'97.3 ± 0.4': mean ± population std over seeds, in percent."""
    v = 100 * np.asarray(fractions, dtype=np.float64)
    return f"{v.mean():.1f} ± {v.std():.1f}"


def pair_gaps(accuracy: dict) -> dict[tuple[str, str], float]:
    """Mean test accuracy of each adaptive method minus that of its non-adaptive equivalent."""
    return {(a, b): float(accuracy[a].mean() - accuracy[b].mean()) for a, b in PAIRS}


def _report(results: dict, s: Settings, quick: bool, seconds: float, attrs: dict) -> str:
    toy, sweep = results["toy"], results["alpha_sweep"]
    lines = ["# Layca and layer rotation (Carbonnelle & De Vleeschouwer), reproduced by lastlayer",
             "", f"{'Quick run' if quick else 'Full run'}: {s.seeds} seeds, {seconds:.0f} s; "
             f"lastlayer {attrs['lastlayer']}, NumPy {attrs['numpy']}, {attrs['date']}. Numbers "
             "are mean ± std over seeds (in %); raw values in `results.h5`.", "",
             "## Section 3: which layer would you train? (Fig. 1a)", "",
             f"Protocol: {TOY_PER_CLASS} training digits per class (theirs: 10 MNIST images per "
             f"class), the other 1697 digits held out, pixels standardised by one global mean and "
             f"std and repeated into 2 x 2 blocks (16 x 16 = 256 inputs, so that the ten hidden "
             f"layers are all {TOY_WIDTH} x {TOY_WIDTH}, as theirs are 784 x 784 on 28 x 28 MNIST); "
             f"MLP {TOY_HIDDEN} x [Dense {TOY_WIDTH} + ReLU] -> 10, He-normal weights, zero biases "
             f"(theirs: Glorot-uniform, lr 10, 4000 epochs); hidden layer k alone (W and b) "
             f"trained by full-batch SGD, lr {TOY_LR}, until 100 % training accuracy (checked every "
             f"{TOY_CHECK_EVERY} updates, at most {s.toy_cap}); the same initial weights for the "
             f"ten runs of a seed.", ""]
    rows = [[k, _percent(toy["test_accuracy"][:, k]), f"{100 * toy['train_accuracy'][:, k].min():.0f}",
             f"{toy['updates'][:, k].mean():.0f}"] for k in range(TOY_HIDDEN)]
    lines += [markdown_table(["trained layer", "held-out accuracy", "min training accuracy",
                              "updates (mean)"], rows), "",
              "![held-out accuracy against the trained layer](fig1a_single_layer.png)", "",
              _toy_summary(toy), "",
              "## Sections 5.2-5.3: layer-wise prioritisation (Fig. 2) and rotation (Fig. 3)", "",
              f"Protocol: MLP with {MLP_DEPTH} Dense layers of {MLP_WIDTH} units, no biases (their "
              f"Section 4.1), He-normal weights, on digits (1347 / 450), batch {BATCH}, "
              f"{s.iterations} updates, every rate divided by 10 after {DECAY_AT:.0%} of them. SGD: "
              f"lr {PLAIN_RATES['sgd']} times the Section 5.1 multipliers; Layca: the SGD direction, "
              f"rho = 3^-3 times the same multipliers. No batch normalisation (theirs: VGG / ResNet "
              f"/ CNN with it, on CIFAR-10/100 and Tiny ImageNet).", ""]
    rows = [[f"{alpha:g}"] + [_percent(sweep[kind][key][:, a])
                              for kind in ("sgd", "layca") for key in ("test_accuracy", "train_accuracy")]
            for a, alpha in enumerate(ALPHAS)]
    lines += [markdown_table(["alpha", "SGD test", "SGD train", "Layca test", "Layca train"], rows),
              "", "![test accuracy against alpha](fig2_alpha_sweep.png)", "", _sweep_summary(sweep),
              ""]
    curves = results["angle_deviation"]
    rows = [[label] + [f"{v:.3f}" for v in curves[kind]["deviation"][-1]]
            + [f"{uniformity(curves[kind]['deviation'][-1]):.2f}"]
            for kind, label in (("sgd", "SGD"), ("layca", "Layca"))]
    lines += ["Final angle deviation 1 - cos(w_T, w_0) per layer at alpha = 0 (seed 0), and the "
              "uniformity of the rotation: min / max over layers of the angle arccos(cos(w_T, w_0)):",
              "", markdown_table(["rule"] + [f"layer {i}" for i in range(MLP_DEPTH)]
                                 + ["angle min / max"], rows),
              "", "![angle deviation curves](fig3_angle_deviation.png)", "",
              "## Section 6.2: adaptive methods with and without Layca (Fig. 4)", "",
              f"Same MLP and schedule, alpha = 0. Rates without Layca: {_rates(PLAIN_RATES)}; with "
              f"Layca: {_rates(L.DEFAULT_RATES)}.", ""]
    adaptive = results["adaptive"]
    rows = [[LABELS[m]] + [_percent(adaptive[kind][m]["test_accuracy"]) for kind in ("plain", "layca")]
            + [f"{adaptive['layca'][m]['zero_steps'].mean():.0f} / "
               f"{adaptive['layca'][m]['nonfinite'].mean():.0f}"] for m in METHODS]
    lines += [markdown_table(["method", "test, without Layca", "test, with Layca",
                              "Layca zero steps / non-finite entries (mean)"], rows), ""]
    gaps = {kind: pair_gaps({m: adaptive[kind][m]["test_accuracy"] for m in METHODS})
            for kind in ("plain", "layca")}
    rows = [[f"{LABELS[a]} - {LABELS[b]}", f"{100 * gaps['plain'][(a, b)]:+.2f}",
             f"{100 * gaps['layca'][(a, b)]:+.2f}"] for a, b in PAIRS]
    lines += ["Adaptive minus non-adaptive equivalent (percentage points):", "",
              markdown_table(["pair", "without Layca", "with Layca"], rows), "",
              "![test accuracy curves](fig4_adaptive.png)", "",
              "## Notes", "",
              "* Zero steps are Layca steps whose projected base step had norm <= 1e-7 (the "
              "weights are left unchanged; counted per layer and summed). Late in training, "
              "mini-batches that the network classifies with near-zero loss give near-zero "
              "gradients: the SGD direction is the gradient itself, Adagrad's is divided by a "
              "sum that only grows, RMSprop's is tiny once |g| falls far below its eps (1e-7); "
              "Adam's long memory (b2 = 0.999) and SGD_AMom's average keep theirs above the "
              "threshold. The threshold is absolute, so Layca's step does depend on the gradient "
              "scale below it (ledger row C2 holds above it).",
              "* The authors' code rescales after each step to the norm before the step, this one "
              "to the initial norm (identical in exact arithmetic; no drift in floating point).",
              ""]
    return "\n".join(lines)


def _toy_summary(toy: dict) -> str:
    mean = toy["test_accuracy"].mean(axis=0)
    best, worst = int(mean.argmax()), int(mean.argmin())
    reached = int((toy["train_accuracy"] == 1.0).sum())
    rho = spearman(np.arange(TOY_HIDDEN), mean)
    return (f"Best layer {best} ({100 * mean[best]:.1f} %), worst layer {worst} "
            f"({100 * mean[worst]:.1f} %); Spearman correlation of accuracy with the layer index "
            f"{rho:+.2f} (theirs: accuracy degrades with depth, the first layers best). "
            f"{reached} of {toy['train_accuracy'].size} runs reached 100 % training accuracy.")


def _sweep_summary(sweep: dict) -> str:
    alphas = sweep["alpha"]
    mean = {kind: sweep[kind]["test_accuracy"].mean(axis=0) for kind in ("sgd", "layca")}
    first = {kind: 100 * (m[alphas < 0].mean() - m[alphas > 0].mean()) for kind, m in mean.items()}
    above = int((mean["layca"] > mean["sgd"]).sum())
    return (f"Layca's test accuracy is above SGD's at {above} of {len(alphas)} values of alpha "
            f"(theirs: at all, by up to several points); best alpha for Layca "
            f"{alphas[mean['layca'].argmax()]:g} (theirs: 0), for SGD {alphas[mean['sgd'].argmax()]:g}; "
            f"mean over alpha < 0 minus mean over alpha > 0: Layca {first['layca']:+.1f}, SGD "
            f"{first['sgd']:+.1f} points (theirs: prioritising the first layers generalises better).")


def _rates(rates: dict) -> str:
    return ", ".join(f"{LABELS[m]} {rates[m]:.3g}" for m in METHODS)


def spearman(x, y) -> float:
    """Spearman rank correlation (no ties expected: continuous accuracies)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])
