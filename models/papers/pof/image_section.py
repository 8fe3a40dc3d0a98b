"""The MNIST CNN section of ``lastlayer reproduce pof`` (their Table 1 and Fig. 5; the
protocol is ``images``): the runs over seeds, the results.h5 tree, the figures and the
report section. Used by reproduce.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...experiment import (
    MIN_SEEDS, Paired, markdown_table, mean_ci, n_seeds, paired, pyplot, save_figure,
)
from . import images, protocol

LABELS = {"start": "SAM checkpoint (start)", "pof": "SAM, then PoF (gamma ~ U[0, 2])",
          "sam": "SAM, continued (all parameters)",
          "pof-gamma0": "SAM, then PoF with gamma = 0 (SGD on phi)"}
COLOURS = {"start": "C7", "pof": "C1", "sam": "C0", "pof-gamma0": "C2"}
ROWS = ("start",) + images.METHODS
SCALARS = ("test_error", "test_loss", "train_error", "train_loss", "eig_train", "eig_test",
           "rayleigh_train", "rayleigh_test")
COMPARED = ("test_error", "test_loss", "eig_train", "eig_test", "rayleigh_train",
            "rayleigh_test")
BASELINES = {"sam": "pof_minus_sam", "pof-gamma0": "pof_minus_gamma0", "start": "pof_minus_start"}

# Their Table 1 (test error %, WideResNet-28-10, mean ± std over their runs): SAM at 250
# epochs against SAM then PoF at 210 and 250 epochs.
PAPER = {"CIFAR-10": ("2.53±0.08", "2.41±0.02", "2.41±0.06"),
         "CIFAR-100": ("16.32±0.20", "16.07±0.15", "16.60±0.05"),
         "SVHN": ("1.63±0.03", "1.60±0.04", "1.55±0.02"),
         "Fashion-MNIST": ("4.12±0.05", "4.25±0.05", "4.35±0.07")}


def _pretrained(net, d, seed: int, iterations: int, train_eval: int, probes: int) -> dict:
    """A task: seed ``seed``'s SAM pre-training and ``images.measure`` of it."""
    start = images.pretrain(net, d, seed, iterations)
    return {"start": start, "measured": images.measure(net, start, d, train_eval, probes, seed)}


def _post_trained(method: str, net, pretrained: dict, d, steps: int, seed: int,
                  train_eval: int, probes: int) -> dict:
    """A task: ``method`` from seed ``seed``'s pre-trained network, measured; PoF's
    per-iteration xi*, gamma (for the seed-0 figure)."""
    ts = images.post_train(method, net, pretrained["start"], d, steps, seed)
    history = ({k: np.asarray(ts.history[k], dtype=np.float64)
                for k in ("xi", "gamma", "perturbation", "rejected")} if method == "pof" else None)
    return {"measured": images.measure(net, ts, d, train_eval, probes, seed), "history": history}


def submit(s, tasks) -> Callable[[], dict]:
    """Every seed: SAM pre-training, then each method of ``images.METHODS`` for
    ``s.image_steps`` steps (one task each); ``images.measure`` of the four models. Returns
    the assembly of the results.h5 tree: metrics[row][key] (seeds,), the paired comparisons
    of PoF with each baseline, the Fig. 5 estimates of seed 0 and PoF's xi*, gamma of seed 0."""
    d = images.data()
    net = images.network(d)
    shared = tasks.share(d)
    runs = []
    for seed in range(s.seeds):
        # the CNN tasks are the run's longest (cost: they start first on Dask)
        start = tasks.submit(f"mnist, seed {seed}: SAM pre-training", _pretrained, net, shared,
                             seed, s.image_pretrain, s.image_train_eval, s.image_probes,
                             cost=10)
        runs.append({"start": start} | {
            method: tasks.submit(f"mnist, seed {seed}: {method}", _post_trained, method, net,
                                 start, shared, s.image_steps, seed, s.image_train_eval,
                                 s.image_probes, cost=5) for method in images.METHODS})

    def assemble() -> dict:
        rows: dict[str, dict[str, list]] = {m: {} for m in ROWS}
        fig5: dict = {}
        for seed, handles in enumerate(runs):
            for name, h in handles.items():
                _keep(rows, fig5, name, seed, h.result()["measured"])
        history = runs[0]["pof"].result()["history"]
        start = runs[-1]["start"].result()["start"]
        metrics = {m: {k: np.array(v) for k, v in r.items()} for m, r in rows.items()}
        out = {"metrics": metrics, "fig5_seed0": fig5, "pof_history_seed0": history,
               "parameters": {"classifier": np.int64(sum(v.size for v in start.params[-1].values())),
                              "phi": np.int64(sum(v.size for p in start.params[:-1]
                                                  for v in p.values()))}}
        for base, key in BASELINES.items():
            out[key] = {k: c.tree() for k, c in comparisons(metrics, base).items()}
        return out

    return assemble


def _keep(rows: dict, fig5: dict, name: str, seed: int, values: dict) -> None:
    for key in SCALARS:
        rows[name].setdefault(key, []).append(values[key])
    if seed == 0:
        fig5[name] = {on: values[f"rayleigh_{on}_all"] for on in ("train", "test")}


def comparisons(metrics: dict, base: str) -> dict[str, Paired]:
    """PoF minus ``base``, paired by seed, for every quantity of COMPARED."""
    return {k: paired(metrics[base][k], metrics["pof"][k]) for k in COMPARED}


# ---- figures ------------------------------------------------------------------------------------
def figures(results: dict, out: Path) -> None:
    """fig_mnist_table1.png (test error and lambda_max per method, every seed) and
    fig_mnist_fig5.png (their Fig. 5: histograms of the estimates, seed 0)."""
    plt = pyplot()
    metrics = results["metrics"]
    n = len(metrics["pof"]["test_error"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    x = np.arange(len(ROWS))
    errors = np.array([metrics[m]["test_error"] for m in ROWS])  # (rows, seeds)
    axes[0].plot(x, errors, color="0.75", lw=0.8, zorder=1)  # one line per seed: pairs
    for i, m in enumerate(ROWS):
        axes[0].scatter(np.full(n, i), errors[i], color=COLOURS[m], s=14, zorder=2)
        axes[0].errorbar(i + 0.15, errors[i].mean(), yerr=_half_width(errors[i]), fmt="D",
                         color=COLOURS[m], capsize=4, label=LABELS[m], zorder=3)
    axes[0].set(xticks=x, xticklabels=["start", "PoF", "SAM", "PoF, gamma=0"],
                ylabel="test error (%)", title=f"MNIST CNN 8-16-32: test error, {n_seeds(n)} "
                f"(their Table 1){_bars(n)}")
    axes[0].legend(fontsize=7)
    for j, on in enumerate(("train", "test")):
        values = np.array([metrics[m][f"eig_{on}"] for m in ROWS])
        axes[1].bar(x + (j - 0.5) * 0.38, values.mean(axis=1), 0.38,
                    yerr=[_half_width(v) for v in values], capsize=3, color=f"C{j + 3}",
                    label=f"{on} set", alpha=0.8)
    axes[1].set(xticks=x, xticklabels=["start", "PoF", "SAM", "PoF, gamma=0"],
                ylabel="lambda_max of the classifier-space Hessian (per unit^2 of theta)",
                title=f"top Hessian eigenvalue, mean CE (their Fig. 5 quantity){_bars(n)}")
    axes[1].legend(fontsize=7)
    save_figure(fig, out / "fig_mnist_table1.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True, layout="constrained")
    estimates = results["fig5_seed0"]
    for ax, on in zip(axes, ("train", "test")):
        every = np.concatenate([estimates[m][on] for m in ROWS])
        bins = np.linspace(every.min(), every.max(), 31)
        for m in ROWS:
            ax.hist(estimates[m][on], bins=bins, alpha=0.45, color=COLOURS[m], label=LABELS[m])
        ax.set(xlabel="g_B^T H_D g_B / ||g_B||^2 (|B| = 32)",
               title=f"MNIST CNN, {on} set, seed 0 (their Fig. 5)")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("mini-batches")
    save_figure(fig, out / "fig_mnist_fig5.png")


def _half_width(v: np.ndarray) -> float:
    import scipy.stats

    if len(v) < MIN_SEEDS:
        return 0.0
    return float(scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def _bars(n: int) -> str:
    return "\nbars: 95 % t-interval over seeds" if n >= MIN_SEEDS else "\n(no interval below 3 seeds)"


# ---- report -------------------------------------------------------------------------------------
def report(results: dict, s) -> list[str]:
    metrics, n = results["metrics"], s.seeds
    rows = [[LABELS[m], mean_ci(metrics[m]["test_error"], 2), mean_ci(metrics[m]["test_loss"], 4),
             mean_ci(metrics[m]["train_error"], 2), mean_ci(metrics[m]["eig_train"], 4),
             mean_ci(metrics[m]["eig_test"], 4), mean_ci(metrics[m]["rayleigh_train"], 4),
             mean_ci(metrics[m]["rayleigh_test"], 4)] for m in ROWS]
    params = results["parameters"]
    lines = [
        "## MNIST CNN: SAM, then PoF against continued SAM and gamma = 0 (their Table 1, Fig. 5)",
        "",
        f"* Data and network: MNIST's 5,000-digit sample (4,000 train / 1,000 test) instead of "
        f"their CIFAR/SVHN/Fashion-MNIST; `cnn(mnist, channels={images.CHANNELS}, "
        f"hidden={images.HIDDEN})` ({int(params['phi'])} parameters in phi, "
        f"{int(params['classifier'])} in the classifier) instead of WideResNet-28-10; no "
        "augmentation.",
        f"* Pre-training: SAM (rho {protocol.SAM_RHO}) on all parameters, {s.image_pretrain} steps "
        f"of batch {images.PRE_BATCH}, Nesterov lr {images.PRE_LR} constant, weight decay "
        f"{protocol.LAM:g} (theirs: 200 epochs, lr 0.1 decayed); the classifier as SAM left it.",
        f"* Then {s.image_steps} steps of each method from that checkpoint, batch "
        f"{images.POST_BATCH} (theirs 256), Nesterov lr {protocol.POST_LR:g} (theirs 3e-5): PoF "
        "(exact line search, batch 32, gamma ~ U[0, 2]); SAM continued; PoF with gamma = 0 (no "
        "classifier perturbation: SGD on phi, the control; not in the paper).",
        f"* lambda_max: the top eigenvalue of the classifier-space Hessian of the mean CE "
        f"(Lanczos, exact), on the first {s.image_train_eval} training digits and on the test "
        f"set; Fig. 5 estimate: the median over {s.image_probes} mini-batches of 32 of "
        "g_B^T H_D g_B / ||g_B||^2 (their estimator; their histograms use 400).", "",
        markdown_table(["model", "test error (%)", "test loss", "train error (%, subset)",
                        "lambda_max, train", "lambda_max, test", "Fig. 5 median, train",
                        "Fig. 5 median, test"], rows), "",
        "![MNIST: test error and lambda_max](fig_mnist_table1.png)", "",
        "![MNIST: their Fig. 5](fig_mnist_fig5.png)", ""]
    lines += _paired_table(metrics, n)
    paper_rows = [[name, *values] for name, values in PAPER.items()]
    lines += ["The paper's Table 1 (test error %, WideResNet-28-10, mean ± std of their runs):",
              "", markdown_table(["data set", "SAM (250 epochs)", "SAM, then PoF (210)",
                                  "SAM, then PoF (250)"], paper_rows), "",
              "Their Fig. 5 (CIFAR-10, SAM at 200 epochs against PoF 10 epochs later): the peak "
              "of the estimate's histogram \"roughly reduced by a factor of two\" on training and "
              "test sets.", "", *_claims(metrics, n), ""]
    return lines


def _paired_table(metrics: dict, n: int) -> list[str]:
    defined = n >= MIN_SEEDS
    header = ["PoF minus", "quantity", "mean difference"]
    header += ["95 % CI", "t-test p", "Wilcoxon p"] if defined else []
    rows = []
    for base in ("sam", "pof-gamma0", "start"):
        for key, c in comparisons(metrics, base).items():
            rows.append([LABELS[base], key, f"{c.mean:+.4g}"] + (c.cells(fmt="+.4g") if defined
                                                                 else []))
    note = "" if defined else f" ({comparisons(metrics, 'sam')['test_error'].note})"
    return [f"PoF minus each baseline, paired by seed over {n_seeds(n)}{note}:", "",
            markdown_table(header, rows), ""]


def _claims(metrics: dict, n: int) -> list[str]:
    """One line per claim: holds, or "does not appear at this scale", with both numbers."""
    vs_sam, vs_g0 = comparisons(metrics, "sam"), comparisons(metrics, "pof-gamma0")
    vs_start = comparisons(metrics, "start")

    def ratio(key: str) -> float:
        return float(metrics["pof"][key].mean() / metrics["start"][key].mean())

    return [
        "Their claims at this scale:", "",
        _verdict("PoF's test error below continued SAM's (their Table 1)", vs_sam["test_error"],
                 "pp", "CIFAR-10 -0.12 pp (2.41 vs 2.53), SVHN -0.03 pp; Fashion-MNIST +0.13 pp "
                 "(PoF worse)"),
        _verdict("PoF's test error below the gamma = 0 control's (not in the paper)",
                 vs_g0["test_error"], "pp", "no such control"),
        _verdict("PoF lowers the Fig. 5 estimate on training data (against the SAM checkpoint)",
                 vs_start["rayleigh_train"], "", f"about halved; ours: x {ratio('rayleigh_train'):.3g}"),
        _verdict("PoF lowers the Fig. 5 estimate on test data (against the SAM checkpoint)",
                 vs_start["rayleigh_test"], "", f"about halved; ours: x {ratio('rayleigh_test'):.3g}"),
        _verdict("PoF's lambda_max on test data below continued SAM's", vs_sam["eig_test"], "",
                 "reduced (Fig. 5)"),
        _verdict("PoF's lambda_max on test data below the gamma = 0 control's",
                 vs_g0["eig_test"], "", "no such control"),
    ]


def _verdict(claim: str, c: Paired, unit: str, theirs: str) -> str:
    ours = f"{c.mean:+.3g}{(' ' + unit) if unit else ''}"
    if c.ci_high is None:
        return f"* {claim}: not tested ({c.note}); ours {ours} vs paper {theirs}."
    where = f"{ours}, 95 % CI [{c.ci_low:+.3g}, {c.ci_high:+.3g}]"
    if c.ci_high < 0:
        return f"* {claim}: holds: ours {where} vs paper {theirs}."
    return f"* {claim}: does not appear at this scale: ours {where} vs paper {theirs}."
