"""``lastlayer reproduce pof``: Sato et al. (ICML 2022), "PoF: Post-Training of Feature
Extractor for Improving Generalization", on generated data, scikit-learn's digits and
real MNIST images.

From one pre-trained checkpoint per seed (``protocol.pretrain``: the classifier at the
exact optimum of the training objective), the same number of steps of every method of
``protocol.METHODS``: continued SGD on all parameters, SGD on phi only (PoF with gamma =
0), SAM on phi and on all parameters, PoF with the exact search, with the released
scheme, with gamma fixed at 2, and PoF followed by an exact refit of the classifier. Then:

* Table 1 analogue: test error and loss, mean and 95 % interval over seeds (from 3 seeds
  on), the paper's numbers beside; PoF against SGD on phi, paired over seeds;
* their Fig. 5: the top classifier-space Hessian eigenvalue on training and test data, and
  the histograms of g_B^T H_D g_B / ||g_B||^2 over mini-batches;
* their Figs. 1c and 1d: Delta L per weight layer along each layer's sharpest training
  direction, and the loss landscape along the last layer's;
* their Fig. 2a (which Hessian eigenvector mini-batch gradients align with, beside a
  Gaussian model) and Fig. 2b (xi* on training and test batches);
* their Fig. 6: the size of the classifier perturbation of PoF, SAM's radius and SGD's
  update size; their Fig. 4: test error during post-training;
* MNIST CNN (``images``, ``image_section``): SAM pre-training, then PoF against continued
  SAM and PoF with gamma = 0 from the same checkpoint: test error and lambda_max of the
  classifier-space Hessian on train and test data (their Table 1 and Fig. 5), paired by seed.

Everything goes to ``--out``: results.h5, report.md and PNG figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...experiment import (
    Annotated, Paired, markdown_table, mean_ci, n_seeds, paired, pyplot, reproduce,
    save_figure, seeds_note,
)
from . import image_section, protocol

LABELS = {"sgd-all": "continued SGD (all parameters)", "sgd-phi": "SGD on phi (PoF, gamma = 0)",
          "sam-phi": "SAM on phi", "sam-all": "SAM on all parameters",
          "pof": "PoF (exact search, gamma ~ U[0, 2])", "pof-released": "PoF (released scheme)",
          "pof-gamma2": "PoF (gamma = 2)", "pof-refit": "PoF, then the classifier refitted"}

# Their Table 1, test error (%): SGD / SAM after 200 and 250 epochs, SAM then PoF after
# 210 and 250 epochs, on WideResNet-28-10 (mean ± std over their runs).
PAPER_TABLE1 = {
    "SGD (200 epochs)": ("3.22±0.14", "18.23±0.35", "1.67±0.03", "4.60±0.11"),
    "SGD (250 epochs)": ("3.14±0.13", "18.40±0.35", "1.67±0.03", "4.63±0.14"),
    "SAM (200 epochs)": ("2.50±0.07", "16.27±0.09", "1.64±0.04", "4.14±0.09"),
    "SAM (250 epochs)": ("2.53±0.08", "16.32±0.20", "1.63±0.03", "4.12±0.05"),
    "SAM, then PoF (210 epochs)": ("2.41±0.02", "16.07±0.15", "1.60±0.04", "4.25±0.05"),
    "SAM, then PoF (250 epochs)": ("2.41±0.06", "16.60±0.05", "1.55±0.02", "4.35±0.07"),
}
PAPER_DATASETS = ("CIFAR-10", "CIFAR-100", "SVHN", "Fashion-MNIST")
DATASETS = ("toy", "digits")
PROBE_SIZE = 32
COMPARED = ("test_error", "test_loss", "eig_train", "eig_test")  # PoF minus SGD on phi
XI_NAN = "NaN: the batch's loss profile along -g_hat has no minimum, so xi* is undefined"


@dataclass(frozen=True)
class Settings:
    seeds: int
    steps: int  # post-training updates of every method
    evaluations: int  # test-error points per run (Fig. 4)
    probes: int  # mini-batches of the Figs. 2, 5 and 6 histograms
    image_pretrain: int  # MNIST CNN (image_section): SAM pre-training steps
    image_steps: int  # steps of each method after it
    image_train_eval: int  # training digits of the train-set measurements (a fixed subset)
    image_probes: int  # mini-batches of the MNIST Fig. 5 estimate

    @classmethod
    def make(cls, quick: bool, seeds: int | None) -> Settings:
        if quick:
            return cls(seeds or 2, 200, 4, 100, 300, 60, 1000, 100)
        return cls(seeds or 10, 600, 12, 400, 600, 150, 1000, 400)


def run(out: Path, quick: bool = False, seeds: int | None = None, quiet: bool = False,
        execution=None) -> Path:
    """Run everything and write results.h5, report.md and the figures to ``out``; the
    tasks (per seed a pre-training, then one per method; the analysis) where ``execution``
    says."""
    s = Settings.make(quick, seeds)

    def compute(tasks) -> dict:
        sections = {name: _compare(name, s, tasks) for name in DATASETS}
        analysis = _analysis(s, tasks)
        images = image_section.submit(s, tasks)
        tasks.run()
        results: dict = {}
        for name, assemble in sections.items():
            results[name] = assemble()
            results[name]["pof_minus_sgd_phi"] = {
                key: c.tree() for key, c in _pof_vs_sgd(results[name]["metrics"]).items()}
        results["analysis"] = analysis()
        results["mnist"] = images()
        return results

    def stored(results: dict) -> dict:  # xi's NaN entries say what they mean
        xi = {on: Annotated(v, {"nan": XI_NAN}) for on, v in results["analysis"]["xi"].items()}
        return {**results, "analysis": {**results["analysis"], "xi": xi}}

    return reproduce("pof", out, s, quick=quick, quiet=quiet, execution=execution,
                     compute=compute, stored=stored, figures=_figures,
                     report=lambda results, seconds, attrs: _report(results, s, quick, seconds,
                                                                    attrs))


HISTORY = ("xi", "gamma", "perturbation", "rejected", "batch_loss")
KEEP_HISTORY = ("pof", "pof-gamma2", "sgd-phi")  # methods whose seed-0 history is kept


def _pretrained(name: str, net, data, seed: int) -> dict:
    """A task: the pre-trained network of ``seed`` and its measurements."""
    return {"start": (start := protocol.pretrain(name, data, seed)),
            "measured": protocol.measure(net, start, data)}


def _post_trained(method: str, net, pretrained: dict, data, steps: int, seed: int,
                  evaluations: int) -> dict:
    """A task: ``method`` from the pre-trained network of ``seed``: its measurements, its
    test-error curve (%) and, for seed 0 of KEEP_HISTORY, PoF's per-iteration history."""
    ts = protocol.post_train(method, net, pretrained["start"], data, steps, seed,
                             evaluations=evaluations)
    history = ({k: np.asarray(v, dtype=np.float64) for k, v in ts.history.items()
                if k in HISTORY} if seed == 0 and method in KEEP_HISTORY else None)
    return {"measured": protocol.measure(net, ts, data),
            "curve": 100 * (1 - np.asarray(ts.history["test_accuracy"])), "history": history}


def _compare(name: str, s: Settings, tasks) -> Callable[[], dict]:
    """Every method and seed on ``name``, submitted; returns their assembly (measurements,
    test-error curves, PoF's seed-0 per-iteration history)."""
    data = protocol.dataset(name, 0)
    net, shared = protocol.network(name, data), tasks.share(data)
    starts, runs = [], {m: [] for m in protocol.METHODS}
    for seed in range(s.seeds):
        starts.append(start := tasks.submit(f"{name}, seed {seed}: pre-training", _pretrained,
                                            name, net, shared, seed))
        for method in protocol.METHODS:
            runs[method].append(tasks.submit(f"{name}, seed {seed}: {method}", _post_trained,
                                             method, net, start, shared, s.steps, seed,
                                             s.evaluations))

    def assemble() -> dict:
        rows: dict[str, dict[str, list]] = {m: {} for m in ("start",) + protocol.METHODS}
        history: dict = {}
        for seed in range(s.seeds):  # in the order of the serial loop: rows, then history
            _append(rows["start"], starts[seed].result()["measured"])
            for method in protocol.METHODS:
                r = runs[method][seed].result()
                _append(rows[method], r["measured"])
                if r["history"] is not None:
                    history[method] = r["history"]
        return {"metrics": {m: {k: np.array(v) for k, v in d.items()} for m, d in rows.items()},
                "curves": {m: np.stack([h.result()["curve"] for h in hs])
                           for m, hs in runs.items()},
                "curve_iteration": np.arange(1, s.evaluations + 1) * max(1, s.steps // s.evaluations),
                "history": history}

    return assemble


def _pof_vs_sgd(metrics: dict) -> dict[str, Paired]:
    """PoF minus SGD on phi, paired over seeds, for every quantity of COMPARED."""
    return {key: paired(metrics["sgd-phi"][key], metrics["pof"][key]) for key in COMPARED}


def _append(store: dict, values: dict) -> None:
    for key, value in values.items():
        store.setdefault(key, []).append(value)


SHARPNESS_POINTS = 41  # odd: t = 0 is the middle point of the Fig. 1c-d landscapes


def _sharpness(net, models: dict, data) -> dict:
    """A task: Figs. 1c, 1d, the per-layer sharpness after SGD on phi and after PoF."""
    offsets = np.linspace(-1.0, 1.0, SHARPNESS_POINTS)
    return {m: protocol.layer_sharpness(net, ts, data, offsets) for m, ts in models.items() if m != "start"}


def _alignment(net, start, data, probes: int) -> dict:
    """A task: Figs. 2a, 2b, the gradient alignment and xi* of the pre-trained network."""
    return {"alignment": protocol.gradient_alignment(net, start, data, probes, PROBE_SIZE, 10,
                                                     seed=5),
            "xi": {on: protocol.search_distances(net, start, data, on, probes, PROBE_SIZE, 0)
                   for on in ("train", "test")}}


def _curvature(net, models: dict, data, probes: int) -> dict:
    """A task: Figs. 5, 6, the curvature along mini-batch gradients and SGD's step sizes."""
    grads, _ = protocol.batch_gradients(net, models["start"], data.x_train, data.y_train, probes,
                                        protocol.POST_BATCH, 7)
    return {"rayleigh": {m: {on: protocol.rayleigh_of_batches(net, ts, data, on, probes,
                                                              PROBE_SIZE, 6)
                             for on in ("train", "test")} for m, ts in models.items()},
            "sgd_step": protocol.POST_LR * np.linalg.norm(grads, axis=1)}


def _models(start, sgd, pof) -> dict:  # a task: the three networks of the analysis
    return {"start": start, "sgd-phi": sgd, "pof": pof}


def _analysis(s: Settings, tasks) -> Callable[[], dict]:
    """The toy model of seed 0 before post-training, after SGD on phi and after PoF:
    their Figs. 1c-d, 2a-b, 5 and the SGD update sizes of Fig. 6. Submits the tasks,
    returns their assembly."""
    data = protocol.toy_data(0)
    net = protocol.network("toy", data)
    shared = tasks.share(data)
    start = tasks.submit("toy analysis: pre-training", protocol.pretrain, "toy", shared, 0)
    sgd, pof = (tasks.submit(f"toy analysis: {m}", protocol.post_train, m, net, start, shared,
                             s.steps, 0) for m in ("sgd-phi", "pof"))
    models = tasks.submit("toy analysis: the three networks", _models, start, sgd, pof)
    sharpness = tasks.submit("Figs. 1c, 1d: per-layer sharpness", _sharpness, net, models, shared)
    alignment = tasks.submit("Figs. 2a, 2b: gradient alignment, xi*", _alignment, net, start,
                             shared, s.probes)
    curvature = tasks.submit("Figs. 5, 6: curvature along mini-batch gradients, step sizes",
                             _curvature, net, models, shared, s.probes)
    return lambda: {"sharpness": sharpness.result(), **alignment.result(), **curvature.result()}


# ---- figures -----------------------------------------------------------------------------------
def _figures(results: dict, out: Path) -> None:
    plt = pyplot()
    toy, analysis = results["toy"], results["analysis"]
    colours = {"sgd-phi": "C0", "pof": "C1", "start": "C7"}

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    sharp = analysis["sharpness"]
    layers = np.arange(1, len(sharp["pof"]["delta_loss"]) + 1)
    for k, m in enumerate(("sgd-phi", "pof")):
        axes[0].bar(layers + (k - 0.5) * 0.38, sharp[m]["delta_loss"], 0.38, color=colours[m],
                    label=LABELS[m])
        axes[1].plot(sharp[m]["offsets"], sharp[m]["train_landscape"], color=colours[m],
                     label=f"{LABELS[m]}, training set")
        axes[1].plot(sharp[m]["offsets"], sharp[m]["test_landscape"], "--", color=colours[m],
                     label=f"{LABELS[m]}, test set")
    axes[0].set(xlabel="weight layer", ylabel="Delta L (test)", xticks=layers,
                title="Delta L along each layer's sharpest direction (their Fig. 1c)")
    axes[1].set(xlabel="distance along the top Hessian eigenvector, last layer",
                ylabel="mean cross-entropy", title="loss landscape, last layer (their Fig. 1d)")
    for ax in axes:
        ax.legend(fontsize=7)
    save_figure(fig, out / "fig1cd_layer_sharpness.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    align = analysis["alignment"]
    index = np.arange(1, len(align["measured"]) + 1)
    axes[0].bar(index - 0.2, align["measured"], 0.4, label="measured mini-batches")
    axes[0].bar(index + 0.2, align["predicted"], 0.4, label="Gaussian model of g_B")
    axes[0].set(xlabel="eigenvalue index i (1 = largest)", ylabel="share of mini-batches",
                xticks=index, title="argmax_i |v_i . g_B| (their Fig. 2a)")
    axes[0].legend()
    for on in ("train", "test"):
        xi = analysis["xi"][on]
        axes[1].hist(xi[np.isfinite(xi)], bins=30, alpha=0.6, density=True, label=f"{on} batches")
    axes[1].set(xlabel="xi* (eq. 2)", ylabel="density", title="xi* per mini-batch (their Fig. 2b)")
    axes[1].legend()
    save_figure(fig, out / "fig2_minibatch_statistics.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True, layout="constrained")
    for ax, on in zip(axes, ("train", "test")):
        for m in ("start", "sgd-phi", "pof"):
            values = analysis["rayleigh"][m][on]
            ax.hist(values, bins=30, alpha=0.5, color=colours.get(m), label=LABELS.get(m, "before"))
        ax.set(xlabel="g_B^T H_D g_B / ||g_B||^2", title=f"{on} set (their Fig. 5)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mini-batches")
    save_figure(fig, out / "fig5_hessian_components.png")

    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    pof = toy["history"]["pof-gamma2"]["perturbation"]
    sizes = {"PoF, gamma = 2: ||gamma xi* g_hat||": pof[pof > 0],
             f"SGD: ||lr g_B|| (lr {protocol.POST_LR:g})": analysis["sgd_step"]}
    bins = np.logspace(np.log10(min(v.min() for v in sizes.values())) - 0.3,
                       np.log10(max(v.max() for v in sizes.values())) + 0.3, 50)
    for label, values in sizes.items():
        ax.hist(values, bins=bins, alpha=0.6, label=label)
    ax.axvline(protocol.SAM_RHO, color="k", linestyle="--", label=f"SAM: rho = {protocol.SAM_RHO}")
    ax.set(xscale="log", xlabel="size of the classifier-space perturbation / step",
           ylabel="iterations", title="perturbation sizes (their Fig. 6)")
    ax.legend(fontsize=7)
    save_figure(fig, out / "fig6_perturbation_sizes.png")

    fig, axes = plt.subplots(1, len(DATASETS), figsize=(5 * len(DATASETS), 3.6), squeeze=False,
                             layout="constrained")
    axes = axes[0]
    for ax, name in zip(axes, DATASETS):
        r = results[name]
        for k, m in enumerate(protocol.METHODS):
            curve = r["curves"][m]
            mean = curve.mean(axis=0)
            ax.plot(r["curve_iteration"], mean, color=f"C{k}", label=LABELS[m])
            if len(curve) > 1:
                low, high = np.quantile(curve, [0.1, 0.9], axis=0)
                ax.fill_between(r["curve_iteration"], low, high, color=f"C{k}", alpha=0.12)
        ax.set(xlabel="post-training step", ylabel="test error (%)",
               title=f"{name}: post-training (their Fig. 4)")
    axes[-1].legend(fontsize=6)
    save_figure(fig, out / "fig4_test_error.png")
    image_section.figures(results["mnist"], out)


# ---- report ----------------------------------------------------------------------------------
def _report(results: dict, s: Settings, quick: bool, seconds: float, attrs: dict) -> str:
    lines = ["# PoF (Sato et al., ICML 2022), reproduced by lastlayer", "",
             f"{'Quick run' if quick else 'Full run'}: {s.seeds} seeds, {s.steps} post-training "
             f"steps per method, {seconds:.0f} s; lastlayer {attrs['lastlayer']}, NumPy "
             f"{attrs['numpy']}, {attrs['date']}. {seeds_note(s.seeds)} Raw values in "
             f"`results.h5`.", "", "## Protocol and deviations from the paper", "",
             *_deviations(), "", "## Table 1 analogue", ""]
    for name in DATASETS:
        lines += _table(name, results[name]["metrics"], s)
    rows = [[label] + list(values) for label, values in PAPER_TABLE1.items()]
    lines += ["The paper's Table 1 (test error %, WideResNet-28-10; mean ± std over their "
              "runs):", "", markdown_table(["method", *PAPER_DATASETS], rows), "",
              "![test error during post-training](fig4_test_error.png)", ""]
    lines += _analysis_report(results["analysis"], results["toy"]["history"])
    lines += image_section.report(results["mnist"], s)
    return "\n".join(lines)


def _deviations() -> list[str]:
    return [
        "* Data and networks: their CIFAR-10/100, SVHN and Fashion-MNIST with WideResNet-28-10 "
        "cannot be used offline; here a generated toy task (their Fig. 1 uses one; the recipe "
        "is ours, in `protocol.py`) with a 5-weight-layer tanh MLP, and scikit-learn's digits "
        "with a 64-128-128-10 tanh MLP. No data augmentation.",
        f"* Pre-training: Nesterov SGD, lr {protocol.PRE_LR}, batch {protocol.PRE_BATCH}, "
        f"coupled weight decay {protocol.LAM:g}; then the classifier is replaced by the exact "
        "optimum of the training objective on the frozen features, so that (phi0, theta0) is a "
        "minimum in classifier space, as PoF assumes (theirs: SAM for 200 epochs, classifier as "
        "left by SAM).",
        f"* Post-training: the same {protocol.POST_BATCH}-sample batches (their |B~|) and "
        f"Nesterov lr {protocol.POST_LR:g} for every method (theirs: 3e-5 for PoF); PoF's "
        "line-search batch 32, gamma ~ U[0, 2] (theirs); the released scheme uses their code's "
        f"main batch {protocol.RELEASED_BATCH} and line-search batch 256 with replacement; SAM "
        f"rho = {protocol.SAM_RHO}.",
        "* PoF's line search is exact (relative accuracy 1e-12), computed on features in "
        "inference mode; batches whose profile has no minimum are redrawn. Models are "
        "evaluated with (phi*, theta0), as theirs.",
    ]


def _table(name: str, metrics: dict, s: Settings) -> list[str]:
    rows = []
    for m in ("start",) + protocol.METHODS:
        r = metrics[m]
        rows.append([LABELS.get(m, "pre-trained checkpoint (start)"),
                     mean_ci(r["test_error"], 2), mean_ci(r["test_loss"], 4),
                     mean_ci(r["eig_train"], 4), mean_ci(r["eig_test"], 4),
                     mean_ci(r["phi_norm"], 3)])
    lines = [f"### {name}", "", markdown_table(
        ["method", "test error (%)", "test loss", "top eigenvalue, train", "top eigenvalue, test",
         "||phi||"], rows), ""]
    cmp = _pof_vs_sgd(metrics)
    notes = {c.note for c in cmp.values()}
    if len(notes) == 1 and "" not in notes:  # one reason for all: said once
        text = "; ".join(f"{key} {c.mean:+.4g}" for key, c in cmp.items()) + f" ({notes.pop()})"
    else:
        text = "; ".join(f"{key} {c.mean:+.4g} ({c.interval()})" for key, c in cmp.items())
    lines += [f"PoF minus SGD on phi, mean over {n_seeds(s.seeds)}, paired by seed: {text}.", ""]
    return lines


def _analysis_report(analysis: dict, history: dict) -> list[str]:
    align, xi = analysis["alignment"], analysis["xi"]
    found = {on: v[np.isfinite(v)] for on, v in xi.items()}
    if all(len(v) for v in found.values()):
        ratio = (f"the median xi* of test batches is "
                 f"{np.median(found['test']) / np.median(found['train']):.2f} times that of "
                 "training batches")
    else:
        ratio = "no median ratio: " + ", ".join(f"no {on} batch has a minimum"
                                                 for on, v in found.items() if not len(v))
    sharp = analysis["sharpness"]
    rows = [[LABELS[m]] + [f"{v:.4g}" for v in sharp[m]["delta_loss"]] for m in ("sgd-phi", "pof")]
    pof = history["pof"]
    return [
        "## Curvature and mini-batch statistics (toy, seed 0)", "",
        "Delta L (their Fig. 1c): for every weight layer, the test loss that a move of at most 1 "
        "along the top eigenvector of the layer's training Hessian block recovers:", "",
        markdown_table(["after"] + [f"layer {i + 1}" for i in range(len(rows[0]) - 1)], rows), "",
        "![Delta L and the last layer's landscape](fig1cd_layer_sharpness.png)", "",
        f"Fig. 2a: {100 * align['measured'][0]:.1f} % of mini-batch gradients align best with the "
        f"top eigenvector of H_D (the Gaussian model of g_B predicts {100 * align['predicted'][0]:.1f} "
        f"%); the per-sample gradient covariance over the Hessian along the top 10 eigenvectors: "
        + ", ".join(f"{v:.2f}" for v in align["fisher_over_hessian"]) + ".", "",
        f"Fig. 2b: {ratio} (theirs: about 2, the basis of gamma ~ U[0, 2]).", "",
        "![mini-batch statistics](fig2_minibatch_statistics.png)", "",
        "![Hessian components](fig5_hessian_components.png)", "",
        f"PoF's history (seed 0): median xi* {np.median(pof['xi']):.3g}, median perturbation "
        f"{np.median(pof['perturbation']):.3g}, {int(pof['rejected'].sum())} line-search "
        "batches discarded.", "", "![perturbation sizes](fig6_perturbation_sizes.png)", ""]
