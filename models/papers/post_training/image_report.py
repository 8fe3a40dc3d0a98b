"""The image section of ``lastlayer reproduce post-training`` (images.py): its results.h5
tree, its report section (their Table 1 MNIST rows beside ours) and its figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...experiment import markdown_table, mean_ci, paired, pyplot, save_figure
from . import images


def comparisons(err: np.ndarray) -> dict:
    """err (n_seeds, 5) test error % of (a)-(e): the paired comparisons (c) - (b) and
    (d) - (a) over seeds (``lastlayer.models.experiment.paired``)."""
    return {"post_minus_classic": paired(err[:, 1], err[:, 2]),
            "optimum_minus_trained": paired(err[:, 0], err[:, 3])}


def tree(runs: list[dict], stops) -> dict:
    """results.h5 group "images": per stopping point q, "error" (n_seeds, 5) [COLUMNS],
    "objective" (n_seeds, 3) J of (a), (c), (d), "distance" (n_seeds, K), and the paired
    comparisons (percentage points)."""
    out = {}
    for i, q in enumerate(stops):
        err = np.array([r["error"][i] for r in runs])
        out[str(q)] = {"error": err, "objective": np.array([r["objective"][i] for r in runs]),
                       "distance": np.array([r["distance"][i] for r in runs]),
                       "paired": {k: v.tree() for k, v in comparisons(err).items()}}
    return out


def report(results: dict, stops, post_iters: int, n_seeds: int) -> list[str]:
    """The report's section on MNIST, as lines of markdown."""
    res = results["images"]
    k = post_iters
    lines = ["## Images: MNIST CNN, test error (%) (their Table 1, MNIST rows)", "",
             f"Protocol: {n_seeds} seeds; `lastlayer.engine.training.data.mnist` (5,000 real MNIST digits, "
             "4,000 train / 1,000 test, instead of their 55,000 / 10,000); CNN conv 3x3 x 8 -> "
             "pool -> conv 3x3 x 16 -> pool -> fc 64 -> dropout 0.5 -> 10 (theirs: conv 5x5 x "
             "32, pool, fc 512, dropout); SGD lr 0.05, batch 64, float64, stopped at "
             f"{', '.join(map(str, stops))} iterations (theirs 1,000 / 2,000 / 5,000). From each "
             f"stopping point: (a) as trained, (b) + {k} classic iterations, (c) + {k} "
             f"post-training SGD iterations on the last layer (lam = {images.LAM:g}, theirs), "
             "(d) the exact minimiser of the post-training objective (eq. 4, softmax "
             "cross-entropy, Newton), (e) the exact ridge last layer (squared loss on one-hot "
             "targets, eq. 8 with N lam, same lam), predicting the largest output.", ""]
    rows = [[q] + [mean_ci(res[str(q)]["error"][:, j], 2) for j in range(5)] for q in stops]
    lines += [markdown_table(["iterations", "(a) as trained", f"(b) + {k} classic",
                              f"(c) + {k} post-training", "(d) exact CE optimum",
                              "(e) exact ridge"], rows), ""]
    rows = []
    for q in stops:
        c = comparisons(res[str(q)]["error"])
        a, b = c["post_minus_classic"], c["optimum_minus_trained"]
        rows.append([q, f"{a.mean:+.2f}", a.interval(fmt="+.2f"), f"{b.mean:+.2f}",
                     b.interval(fmt="+.2f")])
    lines += ["Paired by seed (percentage points; negative: fewer errors):", "",
              markdown_table(["iterations", "(c) - (b)", "(c) - (b): interval",
                              "(d) - (a)", "(d) - (a): interval"], rows), ""]
    rows = [[q if net == "small" else f"{q} (large net)", f"{a[0]:.1f} ({a[1]:g})",
             f"{p[0]:.1f} ({p[1]:g})", f"{a[0] - p[0]:.1f}"]
            for net, table in images.PAPER_TABLE1_MNIST.items() for q, (a, p) in table.items()]
    lines += ["Their Table 1, MNIST rows (mean (std) error %, small network unless marked; "
              "no exact-optimum column there):", "",
              markdown_table(["iterations", "paper: as trained", "paper: + 100 post-training",
                              "paper: drop"], rows), ""]
    objective = np.array([res[str(q)]["objective"].mean(axis=0) for q in stops])
    holds = bool(np.all(objective[:, 2] <= objective[:, 1]) and np.all(objective[:, 2] <= objective[:, 0]))
    first = [float(res[str(q)]["distance"][:, 0].mean()) for q in stops]
    distance = [float(res[str(q)]["distance"][:, -1].mean()) for q in stops]
    lines += [f"Training objective J (mean over seeds) of (a), (c), (d): "
              + "; ".join(f"{q}: {o[0]:.4f}, {o[1]:.4f}, {o[2]:.4f}" for q, o in zip(stops, objective))
              + f" ({'the exact optimum is lowest at every stopping point' if holds else '**the exact optimum is not lowest**'}). "
              "The relative distance ||W_t - W*|| / ||W*|| of the SGD post-trained kernel to the "
              f"exact CE optimum, after 1 and after {k} steps (mean over seeds): "
              + ", ".join(f"{a:.3f} -> {d:.3f} (from {q})" for a, d, q in zip(first, distance, stops))
              + ".", "", "![distance to the exact last layer](fig_mnist_distance.png)", ""]
    return lines


def figure(results: dict, out: Path) -> None:
    """fig_mnist_distance.png: ||W_t - W*|| / ||W*|| against post-training step, one line
    per stopping point (mean over seeds, band min-max)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for q, node in results["images"].items():
        d = node["distance"]
        t = np.arange(1, d.shape[1] + 1)
        line, = ax.semilogy(t, d.mean(axis=0), label=f"trained {q} iterations")
        if len(d) > 1:
            ax.fill_between(t, d.min(axis=0), d.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("post-training SGD step t (lr 0.05, batch 64)")
    ax.set_ylabel("||W_t - W*||_F / ||W*||_F")
    ax.set_title("MNIST CNN: last layer vs its exact CE optimum (mean, min-max over seeds)")
    ax.legend()
    save_figure(fig, out / "fig_mnist_distance.png")
