"""The image section of ``lastlayer reproduce layca`` (their Sections 5.2-5.3, Figs. 2-3, on
a CNN and real MNIST digits; protocol in ``images``): the runs, the figures and the
report's section. results.h5 keys under ``images/``:

* ``alpha`` (A,); ``rotation_iteration`` (P,);
* ``sgd/``, ``layca/``: ``test_accuracy``, ``train_accuracy``, ``zero_steps``,
  ``nonfinite`` (seeds, A); ``final_rotation`` (seeds, A, L); ``rotation`` (seeds, A, P, L),
  the angle deviation 1 - cos(w_t, w_0) of kernel layer l (0 = input side);
* ``spearman/angle``, ``spearman/uniformity`` (seeds,): per seed, the Spearman correlation
  over the 2A settings between test accuracy and the mean rotation angle over layers, or
  its uniformity (min / max angle over layers);
* ``paired/alpha0``: Layca - SGD at alpha = 0; ``paired/best``: Layca at its best alpha -
  SGD at its best (test accuracy, paired by seed; ``lastlayer.models.experiment.Paired``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from lastlayer.engine.training.data import mnist

from ...experiment import format_p, markdown_table, mean_ci, paired, pyplot, save_figure
from . import images, protocol
from .method import uniformity

LABELS = {"sgd": "SGD", "layca": "Layca"}
# Their numbers (Sections 5.2-5.3 and abstract; CIFAR-10/100, Tiny ImageNet): Layca beats
# SGD with the same rate tuning, "up to 10 %" test error; its best alpha is 0 on all three
# tasks; high and uniform layer rotation goes with good generalisation (Fig. 3).
THEIRS_GAP = "Layca better on all three tasks, by up to 10 points of test error"


def submit(s, tasks) -> Callable[[], dict]:
    """Every (method, alpha, seed) run of ``images.run`` as a task; returns the assembly of
    the section: the runs and the statistics over them."""
    alphas = tuple(s.image_alphas)
    if 0.0 not in alphas:
        raise ValueError(f"image_alphas: expected 0 among them (SGD's tuned setting), got {alphas}")
    data = tasks.share(mnist())
    runs = {(method, j, seed): tasks.submit(
        f"CNN on MNIST, {LABELS[method]}, alpha {alpha:g}, seed {seed}", images.run, method,
        alpha, data, seed, s.image_iterations, s.image_curve_points, cost=4)
        for method in images.METHODS for j, alpha in enumerate(alphas) for seed in range(s.seeds)}
    return lambda: _assemble(s, alphas, {key: h.result() for key, h in runs.items()})


def _assemble(s, alphas: tuple, runs: dict) -> dict:
    """The section's results.h5 tree from its runs {(method, alpha index, seed): run}."""
    n, a, L = s.seeds, len(alphas), images.n_kernel_layers()
    out: dict = {"alpha": np.array(alphas)}
    for method in images.METHODS:
        r = {k: np.zeros((n, a)) for k in ("test_accuracy", "train_accuracy", "zero_steps",
                                           "nonfinite")}
        r["final_rotation"] = np.zeros((n, a, L))
        curves = []
        for j in range(a):
            for seed in range(n):
                run = runs[method, j, seed]
                for key in ("test_accuracy", "train_accuracy", "zero_steps", "nonfinite"):
                    r[key][seed, j] = run[key]
                r["final_rotation"][seed, j] = run["final_rotation"]
                curves.append(run["rotation"])
                out["rotation_iteration"] = run["rotation_iteration"]
        r["rotation"] = np.stack(curves).reshape(a, n, *curves[0].shape).swapaxes(0, 1)
        out[method] = r
    acc = np.concatenate([out[m]["test_accuracy"] for m in images.METHODS], axis=1)
    rot = np.concatenate([out[m]["final_rotation"] for m in images.METHODS], axis=1)
    out["spearman"] = {
        "angle": images.spearman_per_seed(acc, images.angles(rot).mean(axis=2)),
        "uniformity": images.spearman_per_seed(acc, _uniformity(rot))}
    zero = alphas.index(0.0)
    best = {m: int(out[m]["test_accuracy"].mean(axis=0).argmax()) for m in images.METHODS}
    out["paired"] = {
        "alpha0": paired(out["sgd"]["test_accuracy"][:, zero],
                         out["layca"]["test_accuracy"][:, zero]).tree(),
        "best": paired(out["sgd"]["test_accuracy"][:, best["sgd"]],
                       out["layca"]["test_accuracy"][:, best["layca"]]).tree()}
    return out


def _uniformity(rotation: np.ndarray) -> np.ndarray:
    """(..., L) angle deviations -> (...) min / max angle over layers (``method.uniformity``)."""
    flat = rotation.reshape(-1, rotation.shape[-1])
    return np.array([uniformity(d) for d in flat]).reshape(rotation.shape[:-1])


def figures(r: dict, out: Path) -> None:
    plt = pyplot()
    alphas, it = r["alpha"], r["rotation_iteration"]
    fig, axes = plt.subplots(2, len(alphas), figsize=(3.2 * len(alphas), 5.6), sharex=True,
                             sharey=True, squeeze=False)
    L = r["layca"]["rotation"].shape[-1]
    colours = plt.cm.viridis(np.linspace(0, 0.9, L))
    names = ["conv 1", "conv 2", "dense 1", "dense 2 (last)"] if L == 4 else range(L)
    for row, method in enumerate(("layca", "sgd")):
        dev = r[method]["rotation"].mean(axis=0)  # (A, P, L), mean over seeds
        for j, alpha in enumerate(alphas):
            ax = axes[row, j]
            for l in range(L):
                ax.plot(it, dev[j, :, l], color=colours[l], label=str(names[l]))
            ax.set_title(f"{LABELS[method]}, alpha = {alpha:g}", fontsize=9)
            if row == 1:
                ax.set_xlabel("update")
        axes[row, 0].set_ylabel("angle deviation 1 - cos(w_t, w_0)")
    axes[0, -1].legend(fontsize=7, title="kernel layer", title_fontsize=7)
    fig.suptitle("CNN on MNIST (5k): layer-wise angle deviation curves, mean over seeds "
                 "(their Fig. 3)", fontsize=10)
    save_figure(fig, out / "fig_images_angle_deviation.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method, marker in (("sgd", "s"), ("layca", "o")):
        acc = 100 * r[method]["test_accuracy"]
        left.errorbar(alphas, acc.mean(axis=0), yerr=acc.std(axis=0), marker=marker, capsize=3,
                      label=LABELS[method])
        angle = images.angles(r[method]["final_rotation"]).mean(axis=2).mean(axis=0)
        unif = _uniformity(r[method]["final_rotation"]).mean(axis=0)
        sc = right.scatter(angle, acc.mean(axis=0), c=unif, cmap="plasma", vmin=0, vmax=1,
                           marker=marker, s=60, edgecolors="k", label=LABELS[method])
        for x, y, alpha in zip(angle, acc.mean(axis=0), alphas):
            right.annotate(f"{alpha:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                           fontsize=7)
    left.set_xlabel("alpha (< 0: first layers prioritised, > 0: last layers)")
    left.set_ylabel("test accuracy (%)  (bars: std over seeds)")
    left.set_title("test accuracy against alpha (their Fig. 2)")
    left.legend()
    right.set_xlabel("final rotation angle, mean over layers (degrees)")
    right.set_ylabel("test accuracy (%), mean over seeds")
    right.set_title("accuracy against rotation (labels: alpha)")
    for handle in getattr(right.legend(), "legend_handles", []):
        handle.set_facecolor("white")
    fig.colorbar(sc, ax=right, label="uniformity: min / max layer angle")
    save_figure(fig, out / "fig_images_accuracy.png")


def _pct(values) -> str:
    return mean_ci(100 * np.asarray(values, dtype=np.float64), digits=1)


def _tree_stats(tree) -> tuple[float, str]:
    """(mean in points, '95 % CI [...], t-test p = ...' or the reason there is none)."""
    v, attrs = tree.value, tree.attrs
    if "ci_low" in v:
        return 100 * float(v["mean"]), (f"95 % CI [{100 * float(v['ci_low']):+.2f}, "
                                        f"{100 * float(v['ci_high']):+.2f}], t-test p = "
                                        f"{format_p(float(v['t_p']))}")
    return 100 * float(v["mean"]), attrs.get("undefined", "")


def report(r: dict, s) -> list[str]:
    alphas = r["alpha"]
    L = r["layca"]["final_rotation"].shape[-1]
    lines = ["## Image experiment: a CNN on real MNIST digits (Sections 5.2-5.3, Figs. 2-3)", "",
             f"Protocol: `lastlayer.engine.training.data.mnist()`, 4000 training / 1000 test images "
             f"(a 5k sample of MNIST instead of their CIFAR-10/100 and Tiny ImageNet); CNN "
             f"conv {images.CHANNELS[0]} - conv {images.CHANNELS[1]} (3x3, ReLU, 2x2 max "
             f"pooling) - dense {images.HIDDEN} - dense 10, {L} kernel layers, no biases and no "
             f"batch normalisation (theirs: 11-25-layer CNNs / ResNet-32 with it), He-normal "
             f"kernels, float32; batch {protocol.BATCH}, {s.image_iterations} updates "
             f"({s.image_iterations * protocol.BATCH / 4000:.1f} epochs; theirs: hundreds), "
             f"every rate divided by 10 after {protocol.DECAY_AT:.0%} of them. SGD: lr "
             f"{protocol.PLAIN_RATES['sgd']} times the Section 5.1 multipliers of alpha; Layca: "
             f"SGD direction, rho = 3^-3 times the same multipliers. alpha in "
             f"{{{', '.join(f'{a:g}' for a in alphas)}}} (theirs: 13 values). Test accuracy on "
             f"all 1000 test images; training accuracy on the first {images.TRAIN_SUBSET} "
             f"training images.", ""]
    header = (["rule", "alpha", "test", "train"] + [f"angle layer {l} (deg)" for l in range(L)]
              + ["uniformity", "zero steps / non-finite"])
    rows = []
    for method in ("sgd", "layca"):
        m = r[method]
        ang = images.angles(m["final_rotation"]).mean(axis=0)
        unif = _uniformity(m["final_rotation"])
        for j, alpha in enumerate(alphas):
            rows.append([LABELS[method], f"{alpha:g}", _pct(m["test_accuracy"][:, j]),
                         _pct(m["train_accuracy"][:, j])] + [f"{x:.1f}" for x in ang[j]]
                        + [mean_ci(unif[:, j], digits=2),
                           f"{m['zero_steps'][:, j].mean():.0f} / {m['nonfinite'][:, j].mean():.0f}"])
    lines += [markdown_table(header, rows), "",
              "Angles: arccos(1 - angle deviation) at the end, mean over seeds; uniformity: min / "
              "max of the layers' angles (1: every layer rotated as much).", "",
              "![angle deviation curves of the CNN](fig_images_angle_deviation.png)", "",
              "![test accuracy against alpha and against rotation](fig_images_accuracy.png)", ""]
    return lines + _claims(r) + [""]


def _claims(r: dict) -> list[str]:
    alphas = r["alpha"]
    mean = {m: r[m]["test_accuracy"].mean(axis=0) for m in ("sgd", "layca")}
    best = {m: float(alphas[mean[m].argmax()]) for m in mean}
    rho_a, rho_u = r["spearman"]["angle"], r["spearman"]["uniformity"]
    gap0, text0 = _tree_stats(r["paired"]["alpha0"])
    gapb, textb = _tree_stats(r["paired"]["best"])
    verdict = {
        "rotation": _holds(rho_a, f"Spearman {np.nanmean(rho_a):+.2f}",
                           "higher accuracy with more rotation (their Fig. 3)"),
        "uniform": _holds(rho_u, f"Spearman {np.nanmean(rho_u):+.2f}",
                          "higher accuracy with more uniform rotation (their Fig. 3)"),
        "alpha0": _holds_gap(r["paired"]["alpha0"], f"{gap0:+.2f} points", THEIRS_GAP),
        "best": (f"holds at this scale: Layca's best alpha is 0 (theirs: 0)" if best["layca"] == 0
                 else f"does not appear at this scale: ours {best['layca']:g} vs paper 0")}
    return ["Claims tested (their Figs. 2-3: larger and more uniform layer rotation generalises "
            "better; Layca beats SGD; Layca's best alpha is 0):", "",
            f"* Spearman correlation, per seed over the {2 * len(alphas)} settings (rule x alpha), "
            f"between test accuracy and the mean final rotation angle: {mean_ci(rho_a, 2)}; "
            f"{verdict['rotation']}.",
            f"* The same with the uniformity of the rotation: {mean_ci(rho_u, 2)}; "
            f"{verdict['uniform']}.",
            f"* Layca - SGD at alpha = 0, test accuracy paired by seed: {gap0:+.2f} points, "
            f"{text0}; {verdict['alpha0']}.",
            f"* Layca at its best alpha ({best['layca']:g}) - SGD at its best ({best['sgd']:g}): "
            f"{gapb:+.2f} points, {textb} (the best alphas are chosen on these same test "
            f"accuracies: optimistic for both).",
            f"* Best alpha for Layca: {verdict['best']}."]


def _holds(rho: np.ndarray, ours: str, claim: str) -> str:
    """Holds when the mean correlation is positive and, from 3 seeds on, above 0 beyond
    the 95 % interval."""
    v = rho[np.isfinite(rho)]
    if len(v) == 0:
        return f"undefined at this scale (no seed ranks its settings): {claim}"
    low = _low(v)
    if v.mean() > 0 and (low is None or low > 0):
        untested = " (mean only, untested)" if low is None else ""
        return f"holds at this scale{untested}: ours {ours}, paper: {claim}"
    return f"does not appear at this scale: ours {ours} vs paper: {claim}"


def _holds_gap(tree, ours: str, claim: str) -> str:
    v = tree.value
    if float(v["mean"]) > 0 and ("ci_low" not in v or float(v["ci_low"]) > 0):
        untested = " (mean only, untested)" if "ci_low" not in v else ""
        return f"holds at this scale{untested}: ours {ours} vs paper: {claim}"
    return f"does not appear at this scale: ours {ours} vs paper: {claim}"


def _low(v: np.ndarray) -> float | None:
    """Lower end of the 95 % t-interval of the mean, None below 3 values or without spread."""
    import scipy.stats

    if len(v) < 3 or np.ptp(v) == 0:
        return None
    return float(v.mean() - scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
