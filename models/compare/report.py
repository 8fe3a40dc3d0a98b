"""The report of ``lastlayer compare``: the table (means with 95 % intervals over seeds),
the paired differences to the baseline with Holm-corrected p-values, results.h5's tree and
the figure.

Comparisons: each strategy minus the baseline of its table (``learned`` for the strategies
trained on the task, ``transfer-base`` for transfer), paired by seed, within one variant
(plain with plain, temperature-scaled with temperature-scaled, Laplace with Laplace). The
p-values are those of the paired t-test (``lastlayer.models.experiment.paired``), Holm-corrected
(Holm 1979) over the family of one table, one metric and one task: with m defined p-values
sorted p_(1) <= ... <= p_(m), p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import experiment
from ..experiment import MIN_SEEDS, Annotated, markdown_table, mean_ci, paired
from .evaluate import ECE_BINS, HEAD_METRICS, VAL_TAUS, VARIANTS
from .strategies import LABELS, STRATEGIES, TRANSFER, TRANSFER_CLASSES

__all__ = ["holm", "comparisons", "stored", "markdown", "figure"]

TESTED = ("error", "nll", "ece")
UNITS = {  # the attributes of every task's group in results.h5: what its numbers are
    "error": "% of the test rows misclassified (paired differences: percentage points)",
    "nll": "mean negative log-likelihood of the test labels (nats)",
    "ece": f"expected calibration error, {ECE_BINS} equal-width confidence bins",
    "brier": "sum over classes of (p - onehot)^2, mean over test rows (range [0, 2])",
    "variants": "plain: softmax; ts: temperature-scaled (T on the validation rows); laplace: "
                "Laplace probit predictive, priors by the evidence; laplace-val: one prior "
                "tau on the validation rows",
    "strategies_paired": "strategy minus learned, paired by seed, the same variant",
    "transfer_paired": "strategy minus transfer-base, paired by seed, the same variant",
    "values": "one per seed, seed k at index k",
}
VARIANT_LABELS = {"plain": "", "ts": " + TS", "laplace": " + Laplace (evidence)",
                  "laplace-val": " + Laplace (validation)"}
VARIANT_NAMES = {"plain": "plain", "ts": "temperature-scaled", "laplace": "Laplace (evidence)",
                 "laplace-val": "Laplace (validation)"}
FIGURE_LABELS = {"learned": "learned (baseline)", "post-sgd": "post-trained SGD",
                 "post-exact": "post-trained exact", "hadamard": "fixed Hadamard",
                 "etf": "fixed simplex ETF", "layca": "Layca", "pof": "PoF after SAM",
                 "transfer-base": "fine-tuned (baseline)", "mei+fn": "ENTAME (MEI+FN)",
                 "lp-ft": "LP-FT"}
TABLES = (("strategies", STRATEGIES, "learned"), ("transfer", TRANSFER, "transfer-base"))


def holm(pvalues) -> list[float | None]:
    """Holm's step-down adjusted p-values (module docstring); None stays None."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    adjusted: list[float | None] = [None] * len(pvalues)
    running, m = 0.0, len(idx)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def comparisons(runs: dict, names, baseline: str) -> dict:
    """{(name, variant): {metric: (Paired, Holm-adjusted p or None)}} for every name but the
    baseline, every variant and every tested metric."""
    keys = [(n, v) for n in names if n != baseline for v in VARIANTS]
    out: dict = {key: {} for key in keys}
    for m in TESTED:
        tests = [paired(runs[baseline][v][m], runs[n][v][m]) for n, v in keys]
        for key, test, p in zip(keys, tests, holm([t.t_p for t in tests])):
            out[key][m] = (test, p)
    return out


def stored(results: dict) -> dict:
    """results.h5: per task, the values per seed of every strategy, variant and metric, the
    updates each strategy made, and the paired comparisons (Holm's p as ``holm_p``)."""
    tree = {}
    for task, r in results.items():
        node = {"updates": {k: np.int64(v) for k, v in r["updates"].items()},
                "sizes": {k: np.int64(v) for k, v in r["sizes"].items()}}
        for table, names, baseline in TABLES:
            node[table] = {n: r[table][n] for n in names}
            cmp = comparisons(r[table], names, baseline)
            node[f"{table}_paired"] = {
                f"{n}{'' if v == 'plain' else '+' + v}": {
                    m: _with_holm(t, p) for m, (t, p) in cmp[(n, v)].items()}
                for n, v in cmp}
        tree[task] = Annotated(node, UNITS | {"classes": int(r["sizes"]["classes"])})
    return tree


def _with_holm(test, p) -> Annotated:
    node = test.tree()
    if p is not None:
        node = Annotated(dict(node.value) | {"holm_p": np.float64(p)}, node.attrs)
    return node


def _table(r: dict, names, n: int) -> str:
    header = ["strategy", "test error (%)", "NLL", f"ECE ({ECE_BINS} bins)", "Brier",
              "lambda_max (head)", "NC1"]
    rows = []
    for name in names:
        for v in VARIANTS:
            vals = r[name][v]
            head = ([mean_ci(r[name]["head"][m], fmt=".3g") for m in HEAD_METRICS]
                    if v == "plain" else ["", ""])
            rows.append([LABELS[name] + VARIANT_LABELS[v], mean_ci(vals["error"], 2),
                         mean_ci(vals["nll"]), mean_ci(vals["ece"]), mean_ci(vals["brier"])]
                        + head)
    return markdown_table(header, rows)


def _collapsed(r: dict, names, n_classes: int) -> str:
    """A sentence naming the runs whose test error is at chance level or worse (>= 100 (1 -
    2 / C) %: training collapsed), kept in every mean and test; "" when there are none."""
    limit = 100.0 * (1 - 2 / n_classes)
    runs = [f"{name} seed {k} ({e:.0f} %)" for name in names
            for k, e in enumerate(r[name]["plain"]["error"]) if e >= limit]
    if not runs:
        return ""
    return (f"Runs that ended near chance level (test error >= {limit:.0f} %: the training "
            f"collapsed, not tuned away): {', '.join(runs)}. They are kept in every mean, "
            "interval and test, which they dominate; NC1 is undefined (not finite) where "
            "every class has the same mean feature.")


def _at_grid_top(r: dict, names) -> str:
    """A sentence counting the runs whose validation-chosen tau is the top of its grid (the
    posterior then shrinks to the MAP head: "laplace-val" equals "plain"), "" if none."""
    top = float(VAL_TAUS[-1])
    runs = [(name, k) for name in names for k, t in enumerate(r[name]["chosen"]["tau_val"])
            if t >= top]
    if not runs:
        return ""
    total = sum(len(r[name]["chosen"]["tau_val"]) for name in names)
    return (f"Laplace (validation): in {len(runs)} of {total} runs the chosen tau is the top "
            f"of its grid ({top:g}), where the posterior has shrunk to the MAP head: those "
            "runs' Laplace (validation) numbers are the plain head's.")


def _notes(r: dict, names, n_classes: int) -> list[str]:
    """The sentences under a table (collapsed runs; priors at the grid's top), each followed
    by a blank line; nothing when there is nothing to say."""
    return [line for text in (_collapsed(r, names, n_classes), _at_grid_top(r, names)) if text
            for line in (text, "")]


def _paired_table(r: dict, names, baseline: str, n: int) -> str:
    cmp = comparisons(r, names, baseline)
    header = ["strategy"]
    for m in TESTED:
        name = "d error (points)" if m == "error" else f"d {m}"
        header += [name, "95 % CI", "Holm p"] if n >= MIN_SEEDS else [name]
    rows, notes = [], {}
    for (name, v), tests in cmp.items():
        row = [LABELS[name] + VARIANT_LABELS[v]]
        for m in TESTED:
            t, p = tests[m]
            row.append(f"{t.mean:+.3g}")
            if n >= MIN_SEEDS:
                mark = "" if t.ci_low is not None and p is not None else notes.setdefault(
                    t.note, f"({len(notes) + 1})")
                row += [t.cells(fmt="+.3g")[0] if t.ci_low is not None else mark,
                        experiment.format_p(p) if p is not None else mark]
        rows.append(row)
    text = markdown_table(header, rows)
    if notes:
        text += "\n\n" + "; ".join(f"{mark} {note}" for note, mark in notes.items()) + "."
    return text


def markdown(results: dict, s, seconds: float, attrs: dict) -> str:
    """report.md: protocol, then per task the table and the paired comparisons."""
    n = s.seeds
    lines = ["# lastlayer compare: every last-layer strategy on the same tasks", "",
             f"{attrs['date']}, lastlayer {attrs['lastlayer']}, "
             f"{'quick' if attrs['quick'] else 'full'} run, {experiment.n_seeds(n)}, "
             f"{experiment.duration(seconds)}.", "",
             experiment.seeds_note(n), "",
             "Protocol (models/compare/strategies.py): every strategy trains the same body "
             "(MLP 64 -> 128 -> 64 on digits; CNN 8-16 + Dense 64 on images) from the same "
             "seed with SGD + momentum 0.9, lr 0.05 / 10 at 50 % and 75 %, weight decay 5e-5, "
             "batch 64. Temperature scaling (TS) is fitted on 10 % of the training rows held "
             "out from every strategy; the Laplace variants are the probit predictive of the "
             "last-layer Laplace (full Hessian of the training CE in the head), with prior "
             "precisions chosen by the Laplace evidence (MAP fixed) or, one tau for weights "
             "and bias, by the NLL on the same validation rows as TS. "
             "lambda_max: the top Hessian eigenvalue of the mean training CE in the head "
             "(W, b); NC1: Tr(Sigma_W Sigma_B^+) / C of the training features. Differences "
             "are each strategy minus the baseline of its table, paired by seed, within one "
             "variant; p-values are paired t-tests, Holm-corrected over each table's "
             "comparisons of one metric.", ""]
    for task, r in results.items():
        b = s.budget(task)
        sizes = r["sizes"]
        lines += [f"## {task}", "",
                  f"{sizes['train']} training rows ({sizes['validation']} more held out for "
                  f"TS), {sizes['test']} test rows; {b.iterations} updates per strategy "
                  f"(post-sgd: + {b.post} head-only; PoF: SAM for {b.iterations}, + {b.post} "
                  "PoF updates).", "", _table(r["strategies"], STRATEGIES, n), "",
                  *_notes(r["strategies"], STRATEGIES, sizes["classes"]),
                  "Paired differences to the learned head (strategy minus baseline, the same "
                  "variant):", "",
                  _paired_table(r["strategies"], STRATEGIES, "learned", n), "",
                  f"### {task}: transfer (classes 0-4 -> 5-9)", "",
                  f"Target: {sizes['target_train']} training rows, {sizes['target_test']} test "
                  f"rows; {b.transfer_steps} fine-tuning updates (LP-FT: + "
                  f"{r['updates']['lp-ft'] - b.transfer_steps} head-only first).", "",
                  _table(r["transfer"], TRANSFER, n), "",
                  *_notes(r["transfer"], TRANSFER, TRANSFER_CLASSES),
                  "Paired differences to fine-tuning with a He head (strategy minus baseline, "
                  "the same variant):", "",
                  _paired_table(r["transfer"], TRANSFER, "transfer-base", n), ""]
    lines += ["![every strategy, every task](fig_compare.png)", ""]
    return "\n".join(lines)


def figure(results: dict, path: Path) -> None:
    """One figure: rows test error, NLL, ECE; a column per task; per strategy and variant
    (plain, TS, the two Laplace priors, side by side) every seed as a small dot and the
    mean as a marker (the intervals are in the table: a run that collapsed would stretch
    a t-interval over the whole axis, while its dot shows it for what it is)."""
    plt = experiment.pyplot()
    tasks = list(results)
    names = STRATEGIES + TRANSFER
    fig, axes = plt.subplots(len(TESTED), len(tasks), figsize=(4.2 * len(tasks) + 1, 9),
                             squeeze=False, sharex=True)
    styles = {"plain": ("o", "C0"), "ts": ("s", "C1"), "laplace": ("^", "C2"),
              "laplace-val": ("v", "C3")}
    for j, task in enumerate(tasks):
        r = results[task]
        for i, m in enumerate(TESTED):
            ax = axes[i][j]
            for off, v in zip((-0.27, -0.09, 0.09, 0.27), VARIANTS):
                marker, color = styles[v]
                for x, name in enumerate(names):
                    vals = r["transfer" if name in TRANSFER else "strategies"][name][v][m]
                    where = x + off + (0.6 if name in TRANSFER else 0.0)
                    ax.plot(np.full(len(vals), where), vals, ".", color=color, ms=3, alpha=0.45)
                    ax.plot([where], [float(np.mean(vals))], marker, color=color, ms=5,
                            label=(VARIANT_NAMES[v] if (i, j, x) == (0, 0, 0) else None))
            ax.axvline(len(STRATEGIES) - 0.2, color="0.7", lw=0.8)
            ax.set_ylabel({"error": "test error (%)", "nll": "test NLL",
                           "ece": f"test ECE ({ECE_BINS} bins)"}[m] if j == 0 else "")
            if i == 0:
                ax.set_title(f"{task} (right of the line: transfer)")
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xticks([x + (0.6 if n in TRANSFER else 0.0) for x, n in enumerate(names)])
        ax.set_xticklabels([FIGURE_LABELS[n] for n in names], rotation=60, ha="right",
                           fontsize=8)
    fig.legend(loc="lower center", ncol=4, fontsize=8, frameon=False,
               title="large markers: the mean over seeds; dots: the seeds")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    experiment.save_figure(fig, path)
