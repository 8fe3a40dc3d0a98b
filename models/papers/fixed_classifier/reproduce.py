"""``lastlayer reproduce fixed-classifier``: Hoffer, Hubara & Soudry 2018 on embedded data.

The same MLP trunk (d -> 256 -> 64, ReLU) ends in one of these heads (64 features,
10 classes: the geometry of their ResNet-56 on CIFAR-10):

* ``learned``: a Dense layer, C N + C trainable numbers (the usual classifier);
* ``orthogonal``: ``OrthogonalHead``, fixed random orthonormal Q, learned alpha and b;
* ``hadamard``: ``HadamardHead``, fixed truncated Hadamard Q, learned alpha and b;
* ``alpha=0.1``, ``alpha=1``, ``alpha=10``: the Hadamard head with alpha fixed.

Experiments, on scikit-learn's digits and on ``lastlayer.engine.training.data.toy_classification``:

* Table 1 analogue: test accuracy, training error and the head's trainable parameters;
* their Figure 1: the learned alpha over training (recorded by ``train``'s monitor hook);
* their Figure 2: training and test error curves, learned vs fixed heads;
* their Figure 3: fixed alpha in {0.1, 1, 10} vs learned alpha;
* their Table 1 on real images (``images``): MNIST 5k, one CNN body, the learned, fixed
  orthogonal and fixed Hadamard heads: test error, paired tests, parameter counts;
* their section "Using a Hadamard matrix": how far the truncated Hadamard rows are from
  orthogonal for the (N, C) of the networks in their Table 1 (ledger row H4).

Everything goes to ``--out``: results.h5, report.md and PNG figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...experiment import markdown_table, mean_ci, pyplot, reproduce, save_figure, seeds_note
from . import images, protocol
from .method import HEADS, VARIANTS


@dataclass(frozen=True)
class Settings:
    seeds: int
    iterations: int
    evaluations: int  # evaluation points per run (curves); divides ``iterations``
    # the image section (MNIST, CNN body, three heads): SGD iterations, test evaluations
    # (divides image_iterations), CNN widths, features N, train / test images used
    image_iterations: int
    image_evaluations: int
    image_channels: tuple[int, ...]
    image_features: int
    image_train: int
    image_test: int

    @classmethod
    def make(cls, quick: bool, seeds: int | None) -> Settings:
        if quick:  # image runs: ~6 s each on one core (600 iterations of ~8 ms)
            return cls(seeds or 2, 800, 8, 600, 6, (8, 16), 64, 4000, 1000)
        return cls(seeds or 5, 3000, 30, 2000, 20, (8, 16), 64, 4000, 1000)


# ---- the command ----------------------------------------------------------------------
def run(out: Path, quick: bool = False, seeds: int | None = None, quiet: bool = False,
        execution=None) -> Path:
    """Run everything and write results.h5, report.md and the figures to ``out``; the
    tasks (one per data set, variant and seed) where ``execution`` says."""
    s = Settings.make(quick, seeds)
    sets = protocol.datasets()

    def compute(tasks) -> dict:
        runs = {(name, variant): [tasks.submit(f"{name}, {variant}, seed {seed}",
                                               protocol.train_variant, shared, variant, seed,
                                               s.iterations, s.evaluations)
                                  for seed in range(s.seeds)]
                for name, shared in ((name, tasks.share(data)) for name, data in sets)
                for variant in VARIANTS}
        geometry = tasks.submit("Hadamard geometry of their networks", protocol.paper_geometry)
        image_data = tasks.share(protocol.image_data(s.image_train, s.image_test))
        image_runs = {variant: [tasks.submit(f"mnist CNN, {variant} head, seed {seed}",
                                             protocol.train_image_variant, image_data, variant,
                                             seed, s.image_iterations, s.image_evaluations,
                                             s.image_channels, s.image_features, cost=12)
                                for seed in range(s.seeds)] for variant in HEADS}
        tasks.run()
        results: dict = {}
        for (name, variant), handles in runs.items():
            results.setdefault(name, {})[variant] = _stacked(handles)
        results["geometry"] = geometry.result()
        results["mnist_cnn"] = {variant: _stacked(h) for variant, h in image_runs.items()}
        return results

    return reproduce("fixed-classifier", out, s, quick=quick, quiet=quiet, execution=execution,
                     compute=compute,
                     stored=lambda r: r | {"mnist_cnn": images.stored(r["mnist_cnn"])},
                     figures=lambda results, where: _figures(results, sets, where),
                     report=lambda results, seconds, attrs: _report(results, sets, s, quick,
                                                                    seconds, attrs))


def _stacked(handles) -> dict:
    """The runs of the seeds, every quantity stacked: (seeds, ...)."""
    runs = [h.result() for h in handles]
    return {k: np.stack([r[k] for r in runs]) for k in runs[0]}


LABELS = {"learned": "learned (Dense)", "orthogonal": "fixed orthogonal", "hadamard": "fixed Hadamard"}


def _label(variant: str) -> str:
    return LABELS.get(variant, f"Hadamard, {variant} fixed")


def _curves(ax, runs: dict, variants) -> None:
    """Mean over seeds: train error dashed, test error solid, one colour per variant, the
    test error's band from the lowest to the highest seed."""
    for k, variant in enumerate(variants):
        r = runs[variant]
        it = r["iteration"][0]
        ax.plot(it, r["train_error"].mean(axis=0), "--", color=f"C{k}")
        ax.plot(it, r["test_error"].mean(axis=0), "-", color=f"C{k}", label=_label(variant))
        if len(r["test_error"]) > 1:
            ax.fill_between(it, r["test_error"].min(axis=0), r["test_error"].max(axis=0),
                            color=f"C{k}", alpha=0.15, linewidth=0)


def _figures(results: dict, sets, out: Path) -> None:
    plt = pyplot()
    names = [name for name, _ in sets]

    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for variant in ("orthogonal", "hadamard"):
            r = results[name][variant]
            for k, curve in enumerate(r["alpha"]):
                ax.plot(r["alpha_iteration"][k], curve, color="C1" if variant == "hadamard" else "C0",
                        alpha=0.7, label=_label(variant) if k == 0 else None)
        ax.set_xscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("learned alpha")
        ax.set_title(f"{name}: alpha over training (their Fig. 1)")
        ax.legend()
    save_figure(fig, out / "fig_alpha.png")

    for filename, variants, title in (
            ("fig_error_curves.png", HEADS, "learned vs fixed heads (their Fig. 2)"),
            ("fig_alpha_sweep.png", ("hadamard",) + VARIANTS[len(HEADS):],
             "fixed vs learned alpha (their Fig. 3)")):
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
        for ax, name in zip(axes[0], names):
            _curves(ax, results[name], variants)
            ax.set_xlabel("iteration")
            ax.set_ylabel("error (%): train dashed, test solid")
            ax.set_title(f"{name}: {title}")
            ax.legend(fontsize=7)
        save_figure(fig, out / filename)
    images.figure(results["mnist_cnn"], out)


def _report(results, sets, s: Settings, quick: bool, seconds: float, attrs) -> str:
    lines = ["# Fix your classifier (Hoffer, Hubara & Soudry 2018), reproduced by lastlayer", "",
             f"{'Quick run' if quick else 'Full run'}: {s.seeds} seeds, {s.iterations} iterations "
             f"per run, {seconds:.0f} s; lastlayer {attrs['lastlayer']}, NumPy {attrs['numpy']}, "
             f"{attrs['date']}. {seeds_note(s.seeds)} Curves are means with a band from the "
             "lowest to the highest seed; raw values in `results.h5`.", "",
             f"Protocol: MLP trunk d -> {protocol.HIDDEN[0]} -> {protocol.HIDDEN[1]} (ReLU), then "
             f"the head; softmax cross-entropy, SGD momentum {protocol.MOMENTUM}, batch "
             f"{protocol.BATCH}, lr {protocol.LR} divided by 10 at 50 % and 75 % of training, "
             f"coupled weight decay {protocol.WEIGHT_DECAY:g} (gradient + 2 lam w) on every "
             f"tensor, the scale alpha included as in their experiments. "
             "Fixed heads: x_hat = x / (||x|| + 1e-8), logits = alpha x_hat Q^T + b; orthogonal: "
             "alpha_0 = 10, b_0 = 0; Hadamard: alpha_0 = 1/sqrt(C), b_0 ~ U(±1/sqrt(C)) (their code). "
             "Errors are measured in inference mode on the whole training and test sets.", "",
             "## Table 1 analogue", ""]
    for name, data in sets:
        rows = []
        for variant in VARIANTS:
            r = results[name][variant]
            if "alpha" in r:
                alpha = mean_ci(r["alpha"][:, -1])
            else:
                alpha = "-" if variant == "learned" else f"{variant.removeprefix('alpha=')} (fixed)"
            rows.append([_label(variant), int(r["head_params"][0]),
                         mean_ci(100 - r["test_error"][:, -1]), mean_ci(r["train_error"][:, -1]),
                         alpha])
        lines += [f"### {data}", "",
                  markdown_table(["head", "trainable parameters", "test accuracy (%)",
                                  "train error (%)", "final alpha"], rows), ""]
    negative = [f"{name} ({int((results[name]['hadamard']['alpha'][:, -1] < 0).sum())}/{s.seeds} seeds)"
                for name, _ in sets if (results[name]["hadamard"]["alpha"][:, -1] < 0).any()]
    lines += ["Observation: the learned alpha of the Hadamard head ends negative on "
              f"{', '.join(negative) if negative else 'no data set'}. Row 0 of H_n is all ones, "
              "and the trunk's features are ReLU outputs, so x_hat >= 0 and q_0 . x_hat = "
              "||x_hat||_1 lies in [1, sqrt(N)] for every sample: class 0 gets a large, "
              "sample-dependent logit that the bias cannot cancel, and a negative alpha is one "
              "way out. (A plausible reading, not tested here; the random orthogonal rows have "
              "no such constant row.)", ""]
    geo = results["geometry"]
    rows = [[net, dset, n_f, n_c, int(geo["n"][k]), f"{geo['measured'][k]:.4f}",
             f"{geo['predicted'][k]:.4f}"]
            for k, (net, dset, n_f, n_c) in enumerate(protocol.PAPER_CONFIGS)]
    lines += ["## Figures", "",
              "![learned alpha](fig_alpha.png)", "",
              "![learned vs fixed heads](fig_error_curves.png)", "",
              "![fixed alpha](fig_alpha_sweep.png)", "",
              "## Truncated Hadamard rows of their networks (claim H4)", "",
              "Their section 'Using a Hadamard matrix' takes the first C rows and N columns of "
              "H_n, n = 2^ceil(log2 max(N, C)), and calls the C rows orthogonal. They are exactly "
              "orthogonal only when 2^ceil(log2 C) divides N; otherwise two rows have cosine up to "
              "the value below (measured through `HadamardHead`'s forward pass, and predicted by the "
              "partial Walsh sums of `predicted_gram_deviation`).", "",
              markdown_table(["network", "data", "N", "C", "n", "max \\|cos\\| measured",
                              "predicted"], rows), "",
              "Notes: the seed text is a summary of the paper whose table and figures are images, "
              "so no paper numbers are quoted in the sections above (the image section below "
              "quotes their Table 1 as published); CIFAR and ImageNet cannot be loaded offline, "
              "and these small problems test the direction of their claims, not their values.", ""]
    return "\n".join(lines + images.section(results["mnist_cnn"], s))
