"""``lastlayer reproduce entame``: Varno et al. (2019), "Efficient Neural Task Adaptation by
Maximum Entropy Initialization", on two transfer tasks built from scikit-learn's digits.

For each task (``protocol.TASKS``) and optimizer (Adam, SGD), every recipe of
``method.RECIPES`` fine-tunes a new head on the pre-trained body for ``epochs`` epochs, over
seeds (each seed: its own head draw and batch order; one pre-trained body per task).

* Table 1 analogue: the share of the error energy that is the estimates' energy ("noise")
  at initialisation, per initialisation;
* Table 3 analogue: the gain in mean test accuracy over the first 10 steps, MEI and MEI + FN
  against base, 95 % intervals and paired tests (from 3 seeds on);
* Tables 4-6 analogue: test accuracy after ``epochs`` epochs for every recipe;
* their Fig. 1 (variance of the features X^L over the first steps) and Table 2 (accuracy
  over steps); a learning-rate and phi_w sweep showing where the gain holds and where it
  vanishes; last-batch against running statistics for FN;
* their Section 6 on real images (images.py, image_report.py): a CNN body pre-trained per
  seed on the MNIST digits 0-4, a new head for 5-9 (base, base + WU, MEI, MEI + FN, linear
  probing then fine-tuning), Adam at their lr and batch: Tables 3-6 and Fig. 1a analogues.

Everything goes to ``--out``: results.h5, report.md and PNG figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lastlayer.engine.losses import error_energy

from ...experiment import (
    MIN_SEEDS, Paired, markdown_table, mean_ci, n_seeds, no_interval, paired, pyplot,
    reproduce, save_figure, seeds_note,
)
from . import image_report, images, protocol
from .method import RECIPES, transplant

MAIN = ("base", "base+wu", "mei", "mei+fn", "fn")  # their plotted variants (and FN)
LRS = (1e-5, 1e-4, 1e-3, 1e-2)
PHI_WS = (0.0, 1e-16, 1e-12, 1e-8, 1e-4, 1e-2)
# their Table 1 (noise share, %) and Table 3 (first-10-step gain, points), two of their rows
PAPER_TABLE1 = {"ResNet50": ("34.60±0.75", "34.66±0.66", "29.64±0.61", "26.11±1.46"),
                "VGG16": ("33.39±1.36", "34.98±0.83", "25.18±0.79", "4.97±1.05")}
PAPER_TABLE3 = {"ResNet50": ("10.86±2.97", "21.81±1.10", "10.19±0.32", "31.29±1.21"),
                "VGG16": ("35.29±2.40", "29.14±0.78", "13.95±0.38", "25.86±0.90")}
PAPER_DATASETS = ("MNIST", "CIFAR10", "CIFAR100", "Caltech101")
# their Tables 4-6, ResNet50: test accuracy (%) of Base, Base+WU, MEI, MEI+FN
PAPER_CONVERGED = {"CIFAR10": ("79.73", "79.74", "85.80", "85.54"),
                   "CIFAR100": ("59.38", "59.44", "61.50", "61.54"),
                   "Caltech101": ("89.69", "90.69", "93.87", "92.15")}


@dataclass(frozen=True)
class Settings:
    seeds: int
    epochs: int  # fine-tuning epochs (their 10 for CIFAR10 / Caltech101, 15 for CIFAR100)
    sweep_seeds: int
    image_seeds: int  # MNIST CNN section: each seed pre-trains its own body
    image_epochs: int  # fine-tuning epochs of the 2,000 target images (theirs 10 on CIFAR10)
    image_curve: int  # joint steps with the test accuracy and X^L's variance after each
    image_pretrain: int = images.PRE_ITERATIONS

    @classmethod
    def make(cls, quick: bool, seeds: int | None) -> Settings:
        """``seeds`` (``--seeds``) sets the seeds of the digits tasks and of the image
        section; by default 24 (their Tables 1 and 3) and 8 (images), 3 and 2 when quick."""
        if quick:
            return cls(seeds or 3, 3, 2, seeds or 2, 2, 16)
        return cls(seeds or 24, 10, 8, seeds or 8, 10, 30)


def run(out: Path, quick: bool = False, seeds: int | None = None, quiet: bool = False,
        execution=None) -> Path:
    """Run everything and write results.h5, report.md and the figures to ``out``; the
    tasks (pre-trainings, one per fine-tuning run and seed, the sweeps) where ``execution``
    says."""
    s = Settings.make(quick, seeds)

    def compute(tasks) -> dict:
        sections = {name: _task(name, s, tasks) for name in protocol.TASKS}
        t = images.task()  # the image section's data, sent to the workers once
        shared, target = tasks.share(t), tasks.share(t.target)
        image_seeds = [_image_seed(seed, s, tasks, shared, target)
                       for seed in range(s.image_seeds)]
        tasks.run()
        results: dict = {}
        for name, assemble in sections.items():
            results[name] = assemble()
            results[name]["paired"] = _tree(_comparisons(results[name]))
        results["mnist"] = images.stack([assemble() for assemble in image_seeds])
        results["mnist"]["paired"] = image_report.tree(results["mnist"])
        return results

    return reproduce("entame", out, s, quick=quick, quiet=quiet, execution=execution,
                     compute=compute,
                     figures=_figures,
                     report=lambda results, seconds, attrs: _report(results, s, quick, seconds,
                                                                    attrs))


def _task(name: str, s: Settings, tasks) -> Callable[[], dict]:
    """Transfer task ``name``: submits its runs, returns their assembly."""
    t = protocol.task(name)
    shared, target = tasks.share(t), tasks.share(t.target)
    body = tasks.submit(f"{name}: pre-training", protocol.pretrain, shared, 0)
    energy = tasks.submit(f"{name}: initial error energy", _initial_noise, body, shared,
                          s.seeds)
    n_steps = s.epochs * -(-len(t.target.x_train) // protocol.BATCH)
    runs = {(opt, recipe, seed): tasks.submit(f"{name}: {opt}, {recipe}, seed {seed}",
                                              protocol.run, body, target, recipe, opt, seed,
                                              n_steps)
            for opt in protocol.OPTIMIZERS for recipe in RECIPES for seed in range(s.seeds)}
    lr = tasks.submit(f"{name}: learning-rate sweep", _lr_sweep, body, target, LRS,
                      s.sweep_seeds)
    phi = tasks.submit(f"{name}: phi_w sweep", _phi_sweep, body, target, PHI_WS, s.sweep_seeds)
    statistics = tasks.submit(f"{name}: last-batch vs running statistics", _statistics, body,
                              target, s.seeds, n_steps)
    variance = tasks.submit(f"{name}: feature variance (Fig. 1)", _feature_variance, body,
                            target, s.seeds)

    def assemble() -> dict:
        by_run: dict = {}
        for opt in protocol.OPTIMIZERS:
            by_run[opt] = {}
            for recipe in RECIPES:
                rs = [runs[opt, recipe, seed].result() for seed in range(s.seeds)]
                by_run[opt][recipe] = {"accuracy": np.stack([r["accuracy"] for r in rs]),
                                       "first": np.array([r["first"] for r in rs]),
                                       "final": np.array([r["final"] for r in rs]),
                                       "warmup": np.array(rs[0]["warmup"])}
        return {"source_accuracy": np.array(body.result().source_accuracy),
                "noise_share": energy.result(), "runs": by_run, "steps": np.array(n_steps),
                "lr_sweep": lr.result(), "phi_sweep": phi.result(),
                "statistics": statistics.result(), "feature_variance": variance.result()}

    return assemble


def _lr_sweep(body, target, lrs: tuple, seeds: int) -> dict:
    """A task: the mean test accuracy over the first steps against the learning rate."""
    return {opt: {r: np.array([[protocol.run(body, target, r, opt, seed, protocol.FIRST_STEPS,
                                             lr=lr)["first"] for seed in range(seeds)]
                               for lr in lrs])
                  for r in ("base", "mei+fn")} for opt in protocol.OPTIMIZERS}


def _phi_sweep(body, target, phi_ws: tuple, seeds: int) -> np.ndarray:
    """A task: the same against MEI's phi_w (Adam, MEI + FN)."""
    return np.array([[protocol.run(body, target, "mei+fn", "adam", seed, protocol.FIRST_STEPS,
                                   phi_w=phi)["first"] for seed in range(seeds)]
                     for phi in phi_ws])


def _statistics(body, target, seeds: int, n_steps: int) -> dict:
    """A task: FN with the last batch's statistics against running statistics."""
    return {st: np.array([protocol.run(body, target, "mei+fn", "adam", seed, n_steps,
                                       statistics=st)["final"] for seed in range(seeds)])
            for st in ("last", "running")}


def _feature_variance(body, target, seeds: int) -> dict:
    """A task: their Fig. 1, the variance of X^L over the first joint steps."""
    return {r: np.stack([protocol.feature_variance_curve(
        body, target, RECIPES[r], "adam", seed, 3 * protocol.FIRST_STEPS, protocol.LR)
        for seed in range(seeds)]) for r in ("base", "mei+fn")}


def _image_seed(seed: int, s: Settings, tasks, t, target) -> Callable[[], dict]:
    """The image section's seed: its own body pre-trained on ``t`` (``images.task()``),
    then every head fine-tuned on ``target`` (its target task); the CNN tasks are the
    run's longest (``cost``: they start first on Dask)."""
    body = tasks.submit(f"MNIST CNN, seed {seed}: pre-training the body", images.pretrain,
                        t, seed, s.image_pretrain, cost=10)
    runs = {name: tasks.submit(f"MNIST CNN, seed {seed}: {name}", images.run, body, target,
                               name, seed, s.image_epochs, s.image_curve, cost=5)
            for name in images.RECIPES}
    return lambda: {"source_accuracy": body.result().source_accuracy,
                    **{name: h.result() for name, h in runs.items()}}


def _comparisons(r: dict) -> dict:
    """The paired comparisons of the report: every optimizer's MEI and MEI + FN against base
    (mean test accuracy over the first steps), and running against last-batch statistics."""
    first = {opt: {recipe: paired(r["runs"][opt]["base"]["first"], r["runs"][opt][recipe]["first"])
                   for recipe in ("mei", "mei+fn")} for opt in protocol.OPTIMIZERS}
    st = r["statistics"]
    return {"first_steps_minus_base": first,
            "running_minus_last": paired(st["last"], st["running"])}


def _tree(node):
    """A nested dict of ``Paired`` as results.h5 groups (``Paired.tree``)."""
    return node.tree() if isinstance(node, Paired) else {k: _tree(v) for k, v in node.items()}


def _initial_noise(body, t, seeds: int) -> dict[str, np.ndarray]:
    """A task: their Table 1 for each head initialisation."""
    return {r: _noise_shares(body, t, r, seeds) for r in ("base", "he-in", "glorot", "mei")}


def _noise_shares(body, t, recipe: str, seeds: int) -> np.ndarray:
    """Their Table 1: the estimates' share of the error energy (eqs. 11-12) of the first
    training batch at initialisation (raw features), per seed."""
    shares = []
    for seed in range(seeds):
        net, params, state = transplant(body.net, body.params, body.state, t.target.n_classes,
                                        RECIPES[recipe], seed)
        x = t.target.x_train[:protocol.BATCH]
        logits = net.forward(params, x, state=state)[0]
        shares.append(error_energy(logits, t.target.y_train[:protocol.BATCH]).noise_share)
    return np.array(shares)


# ---- figures -----------------------------------------------------------------------------------
def _figures(results: dict, out: Path) -> None:
    plt = pyplot()
    tasks = protocol.TASKS
    fig, axes = plt.subplots(len(protocol.OPTIMIZERS), len(tasks), figsize=(10, 7), squeeze=False,
                             layout="constrained")
    for row, opt in enumerate(protocol.OPTIMIZERS):
        for ax, name in zip(axes[row], tasks):
            for k, recipe in enumerate(MAIN):
                acc = 100 * results[name]["runs"][opt][recipe]["accuracy"][:, :protocol.CURVE_STEPS]
                steps = np.arange(1, acc.shape[1] + 1)
                ax.plot(steps, acc.mean(axis=0), color=f"C{k}", label=RECIPES[recipe].label)
                if len(acc) > 1:
                    low, high = np.quantile(acc, [0.1, 0.9], axis=0)
                    ax.fill_between(steps, low, high, color=f"C{k}", alpha=0.15)
            ax.set(title=f"{name}, {opt} lr {protocol.LR:g}", xlabel="joint step",
                   ylabel="test accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, out / "fig_accuracy_steps.png")

    fig, axes = plt.subplots(1, len(tasks), figsize=(10, 3.6), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], tasks):
        for k, recipe in enumerate(("base", "mei+fn")):
            v = results[name]["feature_variance"][recipe]
            steps = np.arange(v.shape[1])
            ax.plot(steps, v.mean(axis=0), color=f"C{2 * k}", label=RECIPES[recipe].label)
            if len(v) > 1:
                ax.fill_between(steps, v.mean(axis=0) - v.std(axis=0),
                                v.mean(axis=0) + v.std(axis=0), color=f"C{2 * k}", alpha=0.2)
        ax.set(title=f"{name}: variance of X^L (their Fig. 1)", xlabel="step",
               ylabel="mean feature variance (test set)")
        ax.legend(fontsize=7)
    save_figure(fig, out / "fig_feature_variance.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for k, name in enumerate(tasks):
        for m, opt in enumerate(protocol.OPTIMIZERS):
            sweep = results[name]["lr_sweep"][opt]
            gain = 100 * (sweep["mei+fn"] - sweep["base"]).mean(axis=1)
            axes[0].plot(LRS, gain, marker="o", linestyle="-" if m == 0 else "--",
                         color=f"C{k}", label=f"{name}, {opt}")
        phi = results[name]["phi_sweep"]
        base = results[name]["lr_sweep"]["adam"]["base"][LRS.index(protocol.LR)]
        axes[1].plot([max(p, 1e-20) for p in PHI_WS], 100 * (phi.mean(axis=1) - base.mean()),
                     marker="o", color=f"C{k}", label=f"{name}, adam")
    axes[0].set(xscale="log", xlabel="learning rate gamma",
                ylabel="MEI + FN - base (points, first 10 steps)", title="where the gain holds")
    axes[1].set(xscale="log", xlabel="phi_w (0 plotted at 1e-20)",
                ylabel="MEI + FN - base (points)", title=f"phi_w sweep, lr {protocol.LR:g}")
    for ax in axes:
        ax.axhline(0, color="k", linewidth=0.5)
        ax.legend(fontsize=7)
    save_figure(fig, out / "fig_sweeps.png")
    image_report.figure(results["mnist"], out)


# ---- report ------------------------------------------------------------------------------------
def _report(results: dict, s: Settings, quick: bool, seconds: float, attrs: dict) -> str:
    lines = ["# ENTAME (Varno et al. 2019), reproduced by lastlayer", "",
             f"{'Quick run' if quick else 'Full run'}: {s.seeds} seeds ({s.sweep_seeds} for the "
             f"sweeps), {s.epochs} fine-tuning epochs, {seconds:.0f} s; lastlayer "
             f"{attrs['lastlayer']}, NumPy {attrs['numpy']}, {attrs['date']}. "
             f"{seeds_note(s.seeds)} The sweeps are means over {n_seeds(s.sweep_seeds)}. Raw "
             "values in `results.h5`.", "", "## Protocol and deviations from the paper", "",
             "* Transfer tasks: an MLP body (64-128-128, ReLU) pre-trained on digits 0-4 and "
             "transferred to 5-9 (C = 5), and pre-trained on all digits and transferred to the "
             "left-right mirrored digits (C = 10); theirs: ImageNet CNNs fine-tuned on MNIST, "
             "CIFAR and Caltech101.",
             f"* Fine-tuning: every layer trains from the first step; batch {protocol.BATCH}, lr "
             f"gamma = {protocol.LR:g} and phi_w = {protocol.PHI_W:g} (theirs), Adam (named by "
             "them for guiding the body) and SGD (what their eqs. 24-27 assume); no data "
             "augmentation. FN's eps is 1e-5 (not given); inference uses the last training "
             "batch's statistics (their 'detached' reading) unless stated.",
             "* Batches: a stream of 64-sample batches. With per-epoch batches the last batch "
             "of an epoch of the mirrored task has 3 samples, and FN's inference statistics "
             "(those of the last training batch) then collapse the test accuracy for one step "
             "(observed: 82 % -> 41 %); running statistics do not.",
             f"* Warm-up and probing steps come before the joint steps: base + WU 1 step, one "
             f"epoch, linear probing {RECIPES['probe'].warmup} steps (their extra head-only "
             "budget).", ""]
    for name in protocol.TASKS:
        lines += _task_report(name, results[name], s)
    lines += image_report.report(results["mnist"], s.image_seeds, s.image_epochs, s.image_curve)
    lines += ["## The paper's numbers", "",
              "Table 1, noise energy over total error energy at initialisation (%):", "",
              markdown_table(["model", *PAPER_DATASETS],
                             [[m, *v] for m, v in PAPER_TABLE1.items()]), "",
              "Table 3, ENTAME minus base, mean test accuracy over the first 10 steps (points):",
              "", markdown_table(["model", *PAPER_DATASETS],
                                 [[m, *v] for m, v in PAPER_TABLE3.items()]), "",
              "Tables 4-6, ResNet50, converged test accuracy (%):", "",
              markdown_table(["dataset", "Base", "Base+WU", "MEI", "MEI+FN"],
                             [[d, *v] for d, v in PAPER_CONVERGED.items()]), "",
              "![accuracy over steps](fig_accuracy_steps.png)", "",
              "![feature variance](fig_feature_variance.png)", "", "![sweeps](fig_sweeps.png)", ""]
    return "\n".join(lines)


def _task_report(name: str, r: dict, s: Settings) -> list[str]:
    noise = [[RECIPES[k].label, mean_ci(100 * v, 1)] for k, v in r["noise_share"].items()]
    lines = [f"## {name}", "", f"Source test accuracy of the body: "
             f"{100 * float(r['source_accuracy']):.1f} %; {int(r['steps'])} joint steps "
             f"({s.epochs} epochs).", "",
             "Table 1 analogue: the estimates' share of the error energy at initialisation "
             "(%):", "", markdown_table(["head", "noise share"], noise), ""]
    comparisons = _comparisons(r)
    tested = s.seeds >= MIN_SEEDS
    rows = [[opt, RECIPES[recipe].label, f"{100 * c.mean:+.2f}"]
            + (c.cells(scale=100) if tested else [])
            for opt, by in comparisons["first_steps_minus_base"].items()
            for recipe, c in by.items()]
    header = (["optimizer", "head", "gain"]
              + (["95 % CI", "t-test p", "Wilcoxon p"] if tested else []))
    lines += ["Table 3 analogue: gain in mean test accuracy over the first 10 joint steps "
              "(points), paired over seeds" + ("" if tested else f" ({no_interval(s.seeds)})")
              + ":", "", markdown_table(header, rows), ""]
    rows = [[RECIPES[k].label, int(r["runs"]["adam"][k]["warmup"])]
            + [mean_ci(100 * r["runs"][opt][k]["final"], 2) for opt in protocol.OPTIMIZERS]
            + [mean_ci(100 * r["runs"]["adam"][k]["first"], 2)] for k in RECIPES]
    lines += ["Tables 4-6 analogue: test accuracy (%) after the joint steps:", "",
              markdown_table(["head", "head-only steps first", "Adam", "SGD",
                              "Adam, first 10 steps"], rows), ""]
    st = r["statistics"]
    c = comparisons["running_minus_last"]
    lines += [f"FN statistics at inference (MEI + FN, Adam): last training batch "
              f"{mean_ci(100 * st['last'], 2)} %, running average {mean_ci(100 * st['running'], 2)} "
              f"% (running - last {100 * c.mean:+.2f} points; {c.interval(100, '+.2f')}).", ""]
    sweep = r["lr_sweep"]
    gains = [[f"{lr:g}"] + [f"{100 * (sweep[o]['mei+fn'][i] - sweep[o]['base'][i]).mean():+.1f}"
                            for o in protocol.OPTIMIZERS] for i, lr in enumerate(LRS)]
    lines += ["Gain of MEI + FN over base (points, first 10 steps) against the learning rate:",
              "", markdown_table(["lr", *protocol.OPTIMIZERS], gains), ""]
    return lines
