"""The image section of ``lastlayer reproduce fixed-classifier``: their Table 1 on real
images (MNIST 5k, one CNN body, a learned, a fixed orthogonal and a fixed Hadamard head):
the results tree, the report section and the figure. Runs come from
``protocol.train_image_variant``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...experiment import MIN_SEEDS, markdown_table, mean_ci, paired, pyplot, save_figure
from .method import HEADS

LABELS = {"learned": "learned (Dense)", "orthogonal": "fixed orthogonal", "hadamard": "fixed Hadamard"}
FIXED = ("orthogonal", "hadamard")
CHANCE_ERROR = 80.0  # % test error: 10 classes, a collapsed run sits at ~90 %

# Their Table 1 (validation top-1 accuracy %, learned vs fixed; total parameters of the
# network; % of them in the fixed classifier), transcribed from the published paper
# (arXiv:1801.04540): the seed text holds the table only as an image.
PAPER_TABLE1 = (
    ("ResNet-56", "CIFAR-10", 93.03, 93.14, 855_770, 0.08),
    ("DenseNet-BC-100 (k=12)", "CIFAR-100", 77.73, 77.67, 800_032, 4.15),
    ("ResNet-50", "ImageNet", 75.3, 75.3, 25_557_032, 8.01),
    ("DenseNet-169", "ImageNet", 76.2, 76.0, 14_149_480, 11.76),
    ("ShuffleNet (g=3)", "ImageNet", 65.9, 65.4, 1_826_555, 52.56),
)


def comparisons(runs: dict) -> dict:
    """Paired by seed, fixed head minus learned head: final test and train error (points)."""
    return {v: {k: paired(runs["learned"][k][:, -1] if k == "test_error" else runs["learned"][k],
                          runs[v][k][:, -1] if k == "test_error" else runs[v][k])
                for k in ("test_error", "train_error")} for v in FIXED}


def stored(runs: dict) -> dict:
    """The results.h5 group ``mnist_cnn``: every head's runs and the paired comparisons."""
    tree = {v: dict(runs[v]) for v in HEADS}
    tree["paired"] = {v: {k: c.tree() for k, c in cmp.items()}
                      for v, cmp in comparisons(runs).items()}
    return tree


def section(runs: dict, s) -> list[str]:
    """The report's image section: protocol, our table, the paired tests, theirs."""
    n = s.seeds
    cmp = comparisons(runs)
    body = int(runs["learned"]["net_params"][0] - runs["learned"]["head_params"][0])
    rows = []
    for v in HEADS:
        r = runs[v]
        removed = 100 * (runs["learned"]["head_params"][0] - r["head_params"][0]) / runs["learned"]["net_params"][0]
        rows.append([LABELS[v], mean_ci(r["test_error"][:, -1], 2), mean_ci(r["train_error"], 2),
                     int(r["net_params"][0]), int(r["head_params"][0]), f"{removed:.2f}",
                     mean_ci(r["alpha"], 2) if "alpha" in r else "-"])
    lines = ["## Their Table 1 on real images: MNIST, one CNN body, three heads", "",
             f"Data: `mnist()`, 5,000 real MNIST digits (a sample instead of their CIFAR-10 "
             f"and ImageNet), {s.image_train} train / {s.image_test} test images used. Network: "
             f"CNN {'-'.join(map(str, s.image_channels))} (Conv 3x3, ReLU, MaxPool 2x2 per width; "
             f"instead of their ResNet-56 / DenseNet), Flatten, Dense {s.image_features} + ReLU "
             f"({s.image_features} features, as their ResNet-56), then the head; float32. The "
             f"same optimiser as above (SGD momentum, lr /10 at 50 % and 75 %), "
             f"{s.image_iterations} iterations of batch 64, {n} seeds; seed k draws the same "
             "body initialisation and mini-batches for the three heads. Test error on the "
             "whole test set; train error on the whole training set after training.", "",
             markdown_table(["head", "test error (%)", "train error (%)", "trainable params "
                             "(network)", "of which head", "% removed by fixing", "final alpha"],
                            rows), "",
             f"Parameter counts: body {body} = convolutions + Dense; learned head C N + C = "
             f"10 x {s.image_features} + 10; fixed heads C + 1 (alpha, b).", "",
             "Final test error (%) per seed: " + "; ".join(
                 f"{LABELS[v]} " + ", ".join(f"{e:.1f}" for e in runs[v]["test_error"][:, -1])
                 for v in HEADS) + ".", ""]
    chance = [f"{LABELS[v]} seed {k}" for v in HEADS
              for k, e in enumerate(runs[v]["test_error"][:, -1]) if e >= CHANCE_ERROR]
    if chance:
        lines += [f"Runs that ended at chance level (test error >= {CHANCE_ERROR:g} %: training "
                  f"collapsed, not tuned away): {', '.join(chance)}. They are kept in every "
                  "mean, interval and test above, which they dominate.", ""]
    header = ["fixed head", "quantity", "mean difference (points)"]
    crow = []
    for v in FIXED:
        for k in ("test_error", "train_error"):
            c = cmp[v][k]
            row = [LABELS[v], k.replace("_", " "), f"{c.mean:+.2f}"]
            crow.append(row + (c.cells() if n >= MIN_SEEDS else []))
    if n >= MIN_SEEDS:
        header += ["95 % CI", "t-test p", "Wilcoxon p"]
    lines += ["Paired by seed, fixed minus learned (their claim: no loss of test accuracy; "
              "their Fig. 2: a higher training error):", "", markdown_table(header, crow), ""]
    lines += [_verdict(cmp, n), ""]
    lines += ["Their Table 1 (validation accuracy %, as published; 'fixed' is their fixed "
              "classifier):", "",
              markdown_table(["network", "data", "learned", "fixed", "parameters",
                              "% fixed parameters"],
                             [[a, b, f"{c:.2f}", f"{d:.2f}", f"{e:,}", f"{f:.2f}"]
                              for a, b, c, d, e, f in PAPER_TABLE1]), "",
              "![test error of the three heads](fig_mnist_heads.png)", ""]
    return lines


def _verdict(cmp: dict, n: int) -> str:
    """One sentence per fixed head: does the CI of the test-error difference exclude 0?"""
    if n < MIN_SEEDS:
        return (f"With {n} seed(s) no interval is computed, so whether the difference excludes "
                "0 is not tested here (run with --seeds 3 or more).")
    out = []
    for v in FIXED:
        c = cmp[v]["test_error"]
        if c.ci_low is None:
            out.append(f"{LABELS[v]}: {c.note}.")
            continue
        if c.ci_low > 0:
            verdict = ("the CI excludes 0 on the side of a LOSS of accuracy: their 'no loss' "
                       "does not hold at this scale")
        elif c.ci_high < 0:
            verdict = "the CI excludes 0 on the side of a GAIN: no loss, as they claim"
        else:
            verdict = ("the CI contains 0: no loss of accuracy detected at this scale (their "
                       "ResNet-56 / CIFAR-10: +0.11 points of accuracy)")
        out.append(f"{LABELS[v]} minus learned, test error (points): "
                   f"{c.interval(fmt='+.2f')}; {verdict}.")
    return " ".join(out)


def figure(runs: dict, out: Path) -> None:
    """fig_mnist_heads.png: test error over training (mean, band lowest-highest seed), and
    the final test error of every seed per head."""
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    for k, v in enumerate(HEADS):
        r = runs[v]
        it, err = r["iteration"][0], r["test_error"]
        ax.plot(it, err.mean(axis=0), "-o", ms=3, color=f"C{k}", label=LABELS[v])
        if len(err) > 1:
            ax.fill_between(it, err.min(axis=0), err.max(axis=0), color=f"C{k}", alpha=0.15,
                            linewidth=0)
        final = err[:, -1]
        bx.scatter(np.full(len(final), k) + np.linspace(-0.1, 0.1, len(final)), final,
                   color=f"C{k}", s=14)
        bx.hlines(final.mean(), k - 0.25, k + 0.25, color=f"C{k}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plt.matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(plt.matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("iteration (batch 64)")
    ax.set_ylabel("test error (%)")
    ax.set_title("MNIST 5k, CNN: learned vs fixed heads (their Fig. 2)")
    ax.legend()
    bx.set_xticks(range(len(HEADS)), ["learned\n(Dense)", "fixed\northogonal", "fixed\nHadamard"],
                  fontsize=8)
    bx.set_ylabel("final test error (%)")
    bx.set_title("per seed (dots) and mean (bar)")
    save_figure(fig, out / "fig_mnist_heads.png")
