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
* Their Sections 5.2-5.3 on images (Figs. 2-3): a 4-layer CNN on 5,000 real MNIST digits,
  SGD and Layca at several alphas: angle deviation curves, test accuracy, and its relation
  to the amount and uniformity of rotation (``images``, ``image_report``).

Scale (theirs -> ours): MNIST and 784-unit layers -> digits upsampled to 16 x 16 and
256-unit layers (Section 3), and an
8-layer, 64-unit MLP without biases (Sections 5-6) in place of their VGG / ResNet / CNN
with batch normalisation on CIFAR and Tiny ImageNet. Everything goes to ``--out``:
results.h5, report.md and PNG figures. Ledger rows C5-C7 run the same functions smaller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lastlayer.engine import optim, stream
from lastlayer.engine.training.data import digits

from ...experiment import (
    markdown_table, mean_ci, pyplot, reproduce, save_figure, seeds_note, spearman,
)
from . import image_report, protocol
from .method import METHODS, PAIRS, uniformity


@dataclass(frozen=True)
class Settings:
    seeds: int
    toy_cap: int  # most updates for one toy layer (stops earlier at 100 % training accuracy)
    iterations: int  # updates of every Section 5-6 run
    evaluations: int  # test-accuracy points per Section 6.2 curve
    curve_points: int  # angle-deviation points per Fig. 3 curve
    image_alphas: tuple[float, ...]  # alphas of the CNN on MNIST (0 among them)
    image_iterations: int  # updates of every CNN run
    image_curve_points: int  # angle-deviation points per CNN curve

    @classmethod
    def make(cls, quick: bool, seeds: int | None) -> Settings:
        if quick:
            return cls(seeds or 2, 600, 400, 8, 20, (-0.6, 0.0, 0.6), 300, 10)
        # 10 seeds: their Fig. 1a averages 10 runs
        return cls(seeds or 10, 1500, 800, 16, 40, protocol.ALPHAS, 400, 20)


# ---- the command ------------------------------------------------------------------------------------
def run(out: Path, quick: bool = False, seeds: int | None = None, quiet: bool = False,
        execution=None) -> Path:
    """Run everything and write results.h5, report.md and the figures to ``out``; the
    tasks (one per training run) where ``execution`` says."""
    s = Settings.make(quick, seeds)
    data = digits(seed=0)

    def compute(tasks) -> dict:
        shared = tasks.share(data)
        sections = {"toy": _section3(s, tasks),  # each submits its runs, returns its assembly
                    "alpha_sweep": _alpha_sweep(s, shared, tasks),
                    "angle_deviation": _angle_curves(s, shared, tasks),
                    "adaptive": _adaptive(s, shared, tasks),
                    "images": image_report.submit(s, tasks)}
        tasks.run()
        return {name: assemble() for name, assemble in sections.items()}

    return reproduce("layca", out, s, quick=quick, quiet=quiet, execution=execution,
                     compute=compute, figures=_figures,
                     report=lambda results, seconds, attrs: _report(results, s, quick, seconds,
                                                                    attrs))


def _toy_layer(seed: int, k: int, cap: int) -> tuple[float, float, int]:
    """A task: hidden layer k of seed ``seed``'s toy network trained alone (Fig. 1a)."""
    net, toy_set = protocol.toy_net(), protocol.toy_data(seed)
    params = net.init(stream(seed, "init"))
    return protocol.train_one_layer(net, params, toy_set, k, cap=cap, seed=seed)


def _section3(s: Settings, tasks) -> Callable[[], dict]:
    """Fig. 1a: every hidden layer trained alone, per seed: (seeds, hidden layers) arrays."""
    keys = ("test_accuracy", "train_accuracy", "updates")
    runs = {(seed, k): tasks.submit(f"Section 3 toy, seed {seed}, layer {k}", _toy_layer, seed,
                                    k, s.toy_cap)
            for seed in range(s.seeds) for k in range(protocol.TOY_HIDDEN)}

    def assemble() -> dict:
        toy = {key: np.zeros((s.seeds, protocol.TOY_HIDDEN)) for key in keys}
        for (seed, k), h in runs.items():
            for key, value in zip(keys, h.result()):
                toy[key][seed, k] = value
        return toy

    return assemble


def _alpha_sweep(s: Settings, data, tasks) -> Callable[[], dict]:
    """Fig. 2: final accuracies against alpha, SGD and Layca: (seeds, alphas) arrays."""
    runs = {(a, kind, seed): tasks.submit(f"Fig. 2, {kind}, alpha {alpha:g}, seed {seed}",
                                          protocol.end_to_end, "sgd", kind == "layca", alpha,
                                          data, seed, s.iterations)
            for a, alpha in enumerate(protocol.ALPHAS) for kind in ("sgd", "layca")
            for seed in range(s.seeds)}

    def assemble() -> dict:
        sweep = {kind: {key: np.zeros((s.seeds, len(protocol.ALPHAS)))
                        for key in ("test_accuracy", "train_accuracy")} for kind in ("sgd", "layca")}
        for (a, kind, seed), h in runs.items():
            for key in ("test_accuracy", "train_accuracy"):
                sweep[kind][key][seed, a] = h.result()[key]
        return {"alpha": np.array(protocol.ALPHAS), **sweep}

    return assemble


def _angle_curves(s: Settings, data, tasks) -> Callable[[], dict]:
    """Fig. 3: the angle deviation of every layer during training at alpha = 0 (seed 0)."""
    runs = {kind: tasks.submit(f"Fig. 3, {kind} angle deviation", protocol.end_to_end, "sgd",
                               kind == "layca", 0.0, data, 0, s.iterations,
                               rotation_points=s.curve_points) for kind in ("sgd", "layca")}

    def assemble() -> dict:
        return {kind: {"iteration": h.result()["rotation_iteration"],
                       "deviation": h.result()["rotation"]} for kind, h in runs.items()}

    return assemble


def _adaptive(s: Settings, data, tasks) -> Callable[[], dict]:
    """Fig. 4: every method without ("plain") and with Layca, test curves over seeds."""
    runs = {(method, kind): [tasks.submit(
        f"Fig. 4, {protocol.LABELS[method]}, {kind}, seed {seed}", protocol.end_to_end, method,
        kind == "layca", 0.0, data, seed, s.iterations, evaluations=s.evaluations)
        for seed in range(s.seeds)] for method in METHODS for kind in ("plain", "layca")}

    def assemble() -> dict:
        adaptive: dict = {}
        for (method, kind), handles in runs.items():
            done = [h.result() for h in handles]
            summary = {"iteration": done[0]["curve_iteration"]}
            for key in ("test_curve", "test_accuracy", "train_accuracy", "final_rotation") + (
                    ("zero_steps", "nonfinite") if kind == "layca" else ()):
                summary[key] = np.stack([np.asarray(r[key]) for r in done])
            adaptive.setdefault(kind, {})[method] = summary
        return adaptive

    return assemble


def _figures(results: dict, out: Path) -> None:
    plt = pyplot()
    toy = results["toy"]
    k = np.arange(protocol.TOY_HIDDEN)
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
            ax.plot(r["iteration"], 100 * r["test_curve"].mean(axis=0), style,
                    label=protocol.LABELS[method])
        ax.set_title(f"{title} (their Fig. 4)")
        ax.set_xlabel("update")
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend()
    save_figure(fig, out / "fig4_adaptive.png")
    image_report.figures(results["images"], out)


def _percent(fractions) -> str:
    """'97.3 ± 0.4': percent, mean and 95 % t-interval half-width (``mean_ci``)."""
    return mean_ci(100 * np.asarray(fractions, dtype=np.float64), digits=1)


def _report(results: dict, s: Settings, quick: bool, seconds: float, attrs: dict) -> str:
    lines = ["# Layca and layer rotation (Carbonnelle & De Vleeschouwer), reproduced by lastlayer",
             "", f"{'Quick run' if quick else 'Full run'}: {s.seeds} seeds, {seconds:.0f} s; "
             f"lastlayer {attrs['lastlayer']}, NumPy {attrs['numpy']}, {attrs['date']}. "
             f"Accuracies are in %. {seeds_note(s.seeds)} Raw values in `results.h5`.", ""]
    lines += _report_section3(results["toy"], s)
    lines += _report_sections5(results["alpha_sweep"], results["angle_deviation"], s)
    lines += _report_section6(results["adaptive"])
    lines += image_report.report(results["images"], s)
    lines += ["## Notes", "",
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


def _report_section3(toy: dict, s: Settings) -> list[str]:
    width = protocol.TOY_WIDTH
    lines = ["## Section 3: which layer would you train? (Fig. 1a)", "",
             f"Protocol: {protocol.TOY_PER_CLASS} training digits per class (theirs: 10 MNIST "
             f"images per class), the other 1697 digits held out, pixels standardised by one "
             f"global mean and std and repeated into 2 x 2 blocks (16 x 16 = 256 inputs, so that "
             f"the ten hidden layers are all {width} x {width}, as theirs are 784 x 784 on "
             f"28 x 28 MNIST); MLP {protocol.TOY_HIDDEN} x [Dense {width} + ReLU] -> 10, He-normal "
             f"weights, zero biases (theirs: Glorot-uniform, lr 10, 4000 epochs); hidden layer k "
             f"alone (W and b) trained by full-batch SGD, lr {protocol.TOY_LR}, until 100 % "
             f"training accuracy (checked every {protocol.TOY_CHECK_EVERY} updates, at most "
             f"{s.toy_cap}); the same initial weights for the ten runs of a seed.", ""]
    rows = [[k, _percent(toy["test_accuracy"][:, k]),
             f"{100 * toy['train_accuracy'][:, k].min():.0f}", f"{toy['updates'][:, k].mean():.0f}"]
            for k in range(protocol.TOY_HIDDEN)]
    return lines + [markdown_table(["trained layer", "held-out accuracy", "min training accuracy",
                                    "updates (mean)"], rows), "",
                    "![held-out accuracy against the trained layer](fig1a_single_layer.png)", "",
                    _toy_summary(toy), ""]


def _report_sections5(sweep: dict, curves: dict, s: Settings) -> list[str]:
    lines = ["## Sections 5.2-5.3: layer-wise prioritisation (Fig. 2) and rotation (Fig. 3)", "",
             f"Protocol: MLP with {protocol.MLP_DEPTH} Dense layers of {protocol.MLP_WIDTH} units, "
             f"no biases (their Section 4.1), He-normal weights, on digits (1347 / 450), batch "
             f"{protocol.BATCH}, {s.iterations} updates, every rate divided by 10 after "
             f"{protocol.DECAY_AT:.0%} of them. SGD: lr {protocol.PLAIN_RATES['sgd']} times the "
             f"Section 5.1 multipliers; Layca: the SGD direction, rho = 3^-3 times the same "
             f"multipliers. No batch normalisation (theirs: VGG / ResNet / CNN with it, on "
             f"CIFAR-10/100 and Tiny ImageNet).", ""]
    rows = [[f"{alpha:g}"] + [_percent(sweep[kind][key][:, a]) for kind in ("sgd", "layca")
                              for key in ("test_accuracy", "train_accuracy")]
            for a, alpha in enumerate(protocol.ALPHAS)]
    lines += [markdown_table(["alpha", "SGD test", "SGD train", "Layca test", "Layca train"], rows),
              "", "![test accuracy against alpha](fig2_alpha_sweep.png)", "", _sweep_summary(sweep),
              ""]
    rows = [[label] + [f"{v:.3f}" for v in curves[kind]["deviation"][-1]]
            + [f"{uniformity(curves[kind]['deviation'][-1]):.2f}"]
            for kind, label in (("sgd", "SGD"), ("layca", "Layca"))]
    return lines + ["Final angle deviation 1 - cos(w_T, w_0) per layer at alpha = 0 (seed 0), and "
                    "the uniformity of the rotation: min / max over layers of the angle "
                    "arccos(cos(w_T, w_0)):", "",
                    markdown_table(["rule"] + [f"layer {i}" for i in range(protocol.MLP_DEPTH)]
                                   + ["angle min / max"], rows),
                    "", "![angle deviation curves](fig3_angle_deviation.png)", ""]


def _report_section6(adaptive: dict) -> list[str]:
    labels = protocol.LABELS
    lines = ["## Section 6.2: adaptive methods with and without Layca (Fig. 4)", "",
             f"Same MLP and schedule, alpha = 0. Rates without Layca: "
             f"{_rates(protocol.PLAIN_RATES)}; with Layca: {_rates(optim.DEFAULT_RATES)}.", ""]
    rows = [[labels[m]] + [_percent(adaptive[kind][m]["test_accuracy"])
                           for kind in ("plain", "layca")]
            + [f"{adaptive['layca'][m]['zero_steps'].mean():.0f} / "
               f"{adaptive['layca'][m]['nonfinite'].mean():.0f}"] for m in METHODS]
    lines += [markdown_table(["method", "test, without Layca", "test, with Layca",
                              "Layca zero steps / non-finite entries (mean)"], rows), ""]
    gaps = {kind: protocol.pair_gaps({m: adaptive[kind][m]["test_accuracy"] for m in METHODS})
            for kind in ("plain", "layca")}
    rows = [[f"{labels[a]} - {labels[b]}", f"{100 * gaps['plain'][(a, b)]:+.2f}",
             f"{100 * gaps['layca'][(a, b)]:+.2f}"] for a, b in PAIRS]
    return lines + ["Adaptive minus non-adaptive equivalent (percentage points):", "",
                    markdown_table(["pair", "without Layca", "with Layca"], rows), "",
                    "![test accuracy curves](fig4_adaptive.png)", ""]


def _toy_summary(toy: dict) -> str:
    mean = toy["test_accuracy"].mean(axis=0)
    best, worst = int(mean.argmax()), int(mean.argmin())
    reached = int((toy["train_accuracy"] == 1.0).sum())
    rho = spearman(np.arange(protocol.TOY_HIDDEN), mean)
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
            f"{alphas[mean['layca'].argmax()]:g} (theirs: 0), for SGD "
            f"{alphas[mean['sgd'].argmax()]:g}; "
            f"mean over alpha < 0 minus mean over alpha > 0: Layca {first['layca']:+.1f}, SGD "
            f"{first['sgd']:+.1f} points (theirs: prioritising the first layers generalises better).")


def _rates(rates: dict) -> str:
    return ", ".join(f"{protocol.LABELS[m]} {rates[m]:.3g}" for m in METHODS)
