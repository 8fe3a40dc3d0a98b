"""The image section of ``lastlayer reproduce entame`` (images.py): its paired comparisons,
report section (their Tables 3-6 and Fig. 1a beside ours) and figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...experiment import MIN_SEEDS, markdown_table, mean_ci, no_interval, paired, pyplot, save_figure
from . import images, protocol
from .method import PROBE_STEPS
from .method import RECIPES as ALL_RECIPES

COMPARED = ("mei", "mei+fn", "probe")  # each against base, paired by seed
# their Table 3, MNIST column: MEI + FN minus base, mean test accuracy over the first 10
# steps (points, 95 % CI over 24 seeds), one row per ImageNet architecture
PAPER_TABLE3_MNIST = {"ResNet50": "10.86±2.97", "ResNet152": "4.52±1.90",
                      "DenseNet121": "12.61±1.55", "DenseNet201": "17.90±1.85",
                      "VGG16": "35.29±2.40", "VGG19": "33.04±1.69", "InceptionV3": "9.17±1.38"}


def comparisons(r: dict) -> dict:
    """Per compared recipe: "first" (mean test accuracy over the first 10 joint steps) and
    "final" (after the budget), recipe - base, paired over seeds (``paired``); and
    "variance_jump": base - MEI + FN of ``variance_jump`` (their Fig. 1a: the base head's
    sudden change of X^L's variance, which MEI + FN avoids), as a fraction."""
    out = {name: {key: paired(r["base"][key], r[name][key]) for key in ("first", "final")}
           for name in COMPARED}
    return out | {"variance_jump": paired(variance_jump(r["mei+fn"]["variance"]),
                                          variance_jump(r["base"]["variance"]))}


def tree(r: dict) -> dict:
    """The comparisons as results.h5 groups (``Paired.tree``)."""
    c = comparisons(r)
    return ({name: {key: p.tree() for key, p in c[name].items()} for name in COMPARED}
            | {"variance_jump": c["variance_jump"].tree()})


def figure(r: dict, out: Path) -> None:
    """fig_images.png: test accuracy over the first joint steps per recipe (mean, band of
    the seeds' 10-90 % quantiles) and the relative change of X^L's mean variance over them
    (their Fig. 1a)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for k, name in enumerate(images.RECIPES):
        variance = np.asarray(r[name]["variance"], dtype=np.float64)
        change = 100 * (variance / variance[:, :1] - 1)  # each seed's body has its own scale
        for ax, v, start in ((axes[0], 100 * np.asarray(r[name]["accuracy"]), 1),
                             (axes[1], change, 0)):
            steps = np.arange(start, start + v.shape[1])
            ax.plot(steps, v.mean(axis=0), color=f"C{k}", label=ALL_RECIPES[name].label)
            if len(v) > 1:
                low, high = np.quantile(v, [0.1, 0.9], axis=0)
                ax.fill_between(steps, low, high, color=f"C{k}", alpha=0.15)
    axes[0].set(title=f"{images.TASK}: fine-tuning a CNN body (Adam, lr {protocol.LR:g})",
                xlabel="joint step", ylabel="test accuracy (%)")
    axes[1].set(title="variance of X^L on the test images (their Fig. 1a)", xlabel="joint step",
                ylabel="change of the mean feature variance (%)")
    axes[0].legend(fontsize=7)
    save_figure(fig, out / "fig_images.png")


def variance_jump(variance) -> np.ndarray:
    """variance (n_seeds, steps + 1) -> (n_seeds,): per seed the largest relative change
    of X^L's mean variance from its value before the first joint step (a fraction)."""
    v = np.asarray(variance, dtype=np.float64)
    return np.abs(v[:, 1:] - v[:, :1]).max(axis=1) / v[:, 0]


def verdict(c, claim: str, unit: str = "points") -> str:
    """'holds' / 'does not appear' / 'reversed' from a paired comparison (a difference of
    fractions, shown x 100) whose claim is that it is positive."""
    said = f"{100 * c.mean:+.2f} {unit}"
    if c.ci_low is None:
        return f"{claim}: {said}, {c.note}"
    if c.ci_low > 0:
        return f"{claim}: holds ({said}, {c.interval(100, '+.2f')})"
    if c.ci_high < 0:
        return f"{claim}: reversed, DIFFERS-FROM-PAPER ({said}, {c.interval(100, '+.2f')})"
    return (f"{claim}: does not appear at this scale, DIFFERS-FROM-PAPER ({said}, "
            f"{c.interval(100, '+.2f')})")


def report(r: dict, seeds: int, epochs: int, curve_steps: int) -> list[str]:
    """The report's section on MNIST, as lines of markdown."""
    t = images.task()
    total = epochs * images.steps_per_epoch(t.target)
    lines = [f"## Images: a CNN body on MNIST, {images.TASK} (their Section 6, Tables 3-6)", "",
             f"Protocol: {seeds} seeds, each its own body: `cnn` conv 3x3 x "
             f"{images.CHANNELS[0]} -> pool -> conv 3x3 x {images.CHANNELS[1]} -> pool -> dense "
             f"{images.HIDDEN[0]} (ReLU, the K = {images.HIDDEN[0]} features) pre-trained by "
             f"Adam (lr {images.PRE_LR:g}, batch {images.PRE_BATCH}, {images.PRE_ITERATIONS} "
             f"steps) on the {len(t.source.x_train):,} training images of the mnist digits 0-4 "
             f"(source test accuracy {mean_ci(100 * r['source_accuracy'], 1)} %), then a new "
             f"5-way head for the digits 5-9 and every layer fine-tuned: Adam at their lr "
             f"{protocol.LR:g}, phi_w {protocol.PHI_W:g} and batch {images.BATCH}, "
             f"{epochs} epochs = {total} joint steps on {len(t.target.x_train):,} training "
             f"images, test accuracy on {len(t.target.x_test)} test images after each of the "
             f"first {curve_steps} steps and after the budget; float32. Deviations: the body is "
             "a 2-block CNN pre-trained on five MNIST digits, not an ImageNet ResNet / VGG; no "
             "horizontal flips; the linear probe's head-only steps "
             f"({PROBE_STEPS}, at the same lr) come before the joint steps (an LP-FT control "
             "the paper does not run).", ""]
    rows = [[ALL_RECIPES[n].label, int(r[n]["warmup"]), mean_ci(100 * r[n]["first"], 2),
             mean_ci(100 * r[n]["final"], 2)] for n in images.RECIPES]
    lines += ["Test accuracy (%): the mean over the first 10 joint steps (Table 3's measure) "
              f"and after the {total} joint steps (Tables 4-6's):", "",
              markdown_table(["head", "head-only steps first", "first 10 steps",
                              f"after {epochs} epochs"], rows), ""]
    c = comparisons(r)
    tested = seeds >= MIN_SEEDS
    rows = [[ALL_RECIPES[n].label, key, f"{100 * c[n][key].mean:+.2f}"]
            + (c[n][key].cells(scale=100) if tested else [])
            for n in COMPARED for key in ("first", "final")]
    header = (["head - base", "measure", "difference (points)"]
              + (["95 % CI", "t-test p", "Wilcoxon p"] if tested else []))
    lines += ["Paired by seed against base (He fan-out), points"
              + ("" if tested else f" ({no_interval(seeds)})") + ":", "",
              markdown_table(header, rows), "",
              "Their Table 3, MNIST column (MEI + FN - base, first 10 steps, points, 24 seeds): "
              + ", ".join(f"{m} {v}" for m, v in PAPER_TABLE3_MNIST.items())
              + ". Their MNIST converged accuracies are not tabulated (Tables 4-6 are CIFAR10, "
              "CIFAR100, Caltech101: MEI and MEI + FN 0.4-6 points above base for ResNet50).", ""]
    v0, v1 = (100 * variance_jump(r[n]["variance"]) for n in ("base", "mei+fn"))
    lines += ["Claims at this scale:", "",
              "* " + verdict(c["mei+fn"]["first"], "ENTAME (MEI + FN) starts faster than base "
                             "(Table 3)"),
              "* " + verdict(c["mei"]["first"], "MEI alone starts faster than base"),
              "* " + verdict(c["mei+fn"]["final"], f"MEI + FN is ahead after {epochs} epochs "
                             "(Tables 4-6)"),
              "* " + verdict(c["variance_jump"], "The base head changes the features' "
                             "variance more than MEI + FN (their Fig. 1a)", unit="% points")
              + f"; the largest relative change of X^L's mean variance over the first "
              f"{curve_steps} steps is {mean_ci(v0, 1)} % under base and {mean_ci(v1, 1)} % "
              "under MEI + FN (their Fig. 1a: a sudden change under base)", "",
              "![MNIST CNN fine-tuning](fig_images.png)", ""]
    return lines
