"""What every paper reproduction shares: the run itself (``reproduce``: settings, output
folder, progress, results, figures, report, once for all five papers); an HDF5 results
file, a markdown report and PNG figures, all written atomically; a progress bar; BLAS
thread pinning for small matrices; summary statistics over seeds. (The progress display is
``progress.Steps``; tasks and where they run, ``tasks``.)

Statistics over seeds (``paired``, ``mean_ci``, ``seeds_note``): intervals and p-values
only from MIN_SEEDS = 3 seeds on, and not for differences without variance; an undefined
statistic is None with the reason beside it, printed as that reason, and left out of
results.h5 with the reason in an attribute (UNDEFINED_CONVENTION). No report prints "nan"
for an undefined value, nor a p-value of 0."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lastlayer.engine.training.io import atomic_path, atomic_write_text

from .progress import Steps, duration  # noqa: F401  (re-exported: the papers' reports use them)
from .tasks import Execution, Tasks

MIN_SEEDS = 3  # intervals and p-values over seeds from this many on
P_FLOOR = 1e-10


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Annotated(NamedTuple):
    """A node of a results.h5 tree with HDF5 attributes: an array (a dataset) or a dict (a
    group)."""

    value: object
    attrs: dict


UNDEFINED_CONVENTION = (
    f"A statistic that is undefined (an interval or a test over fewer than {MIN_SEEDS} seeds, a "
    "t-test of differences without variance) is not written: its group's attribute 'undefined' "
    "says why. A dataset holding NaN has an attribute 'nan' saying what a NaN entry means.")
NAN_AS_COMPUTED = ("NaN: the computation gave no finite number (e.g. a diverged run); no "
                   "value of this dataset is undefined by design")


def write_results_h5(path: Path, tree: dict, attrs: dict) -> None:
    """Write a nested dict of arrays (keys become groups / datasets; an ``Annotated`` node
    carries attributes) atomically, following UNDEFINED_CONVENTION (recorded in the file's
    attribute "undefined_values"): a dataset holding NaN without a "nan" attribute gets
    NAN_AS_COMPUTED."""
    import h5py

    def attribute(value):
        return value if isinstance(value, (int, float, str, np.number)) else json.dumps(value)

    def write(group, key, node):
        extra = {}
        if isinstance(node, Annotated):
            node, extra = node.value, dict(node.attrs)
        if isinstance(node, dict):
            target = group.create_group(str(key))
            for k, v in node.items():
                write(target, k, v)
        else:
            array = np.asarray(node)
            target = group.create_dataset(str(key), data=array)
            if array.dtype.kind in "fc" and np.isnan(array).any():
                extra.setdefault("nan", NAN_AS_COMPUTED)
        for k, v in extra.items():
            target.attrs[k] = attribute(v)

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in {**attrs, "undefined_values": UNDEFINED_CONVENTION}.items():
            f.attrs[key] = attribute(value)
        for key, value in tree.items():
            write(f, key, value)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=200, bbox_inches="tight")
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_attributes(experiment: str, quick: bool, settings) -> dict:
    """The attributes of a reproduction's results.h5: its name, quick or full, the settings
    (a dataclass) and the provenance."""
    return {"experiment": experiment, "quick": int(quick), "seeds": settings.seeds,
            "settings": dataclasses.asdict(settings), **provenance()}


def version() -> str:
    """The installed lastlayer version ("unknown" when run from a source tree)."""
    from importlib import metadata

    try:
        return metadata.version("lastlayer")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def provenance() -> dict:
    return {"lastlayer": version(), "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def write_report(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def reproduce(experiment: str, out: Path, settings, *, quick: bool, quiet: bool,
              compute: Callable[[Tasks], dict], figures: Callable[[dict, Path], None],
              report: Callable[[dict, float, dict], str],
              stored: Callable[[dict], dict] | None = None,
              execution: Execution | None = None) -> Path:
    """The run of ``lastlayer reproduce EXPERIMENT``, the same for every paper: make ``out``;
    ``compute(tasks)`` submits the run's tasks to ``tasks`` (``lastlayer.models.tasks``: run
    where ``execution`` says, one BLAS / Numba thread each, progress counted in tasks), calls
    ``tasks.run()`` and assembles the results from the handles; then write ``results.h5``
    (``stored(results)`` where the file keeps another tree, e.g. with attributes), the
    figures (``figures(results, out)``) and ``report.md`` (``report(results, seconds,
    attrs)``, attrs those of results.h5: ``run_attributes``). Returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identity = {"experiment": experiment, "quick": bool(quick),
                "settings": dataclasses.asdict(settings), "lastlayer": version()}
    tasks = Tasks(execution, identity=identity, title=experiment, quiet=quiet)
    with single_threaded_blas():
        results = compute(tasks)
    attrs = run_attributes(experiment, quick, settings)
    write_results_h5(out / "results.h5", stored(results) if stored else results, attrs)
    figures(results, out)
    write_report(out / "report.md", report(results, tasks.seconds, attrs))
    return out


@contextmanager
def single_threaded_blas():
    """One BLAS and one Numba thread inside the block (``lastlayer.engine.threads``). For the small
    matrices of the paper experiments (at most a few thousand x a few hundred) more threads
    only add synchronisation, and thrash when the machine is shared."""
    from lastlayer.engine.threads import thread_limits

    with thread_limits(threads=1):
        yield


# ---- statistics over seeds ---------------------------------------------------------------------
# Intervals and tests come from MIN_SEEDS seeds on: a t-interval from 2 values spans
# +-12.7 standard errors and says little, and from 1 value it does not exist. Below that,
# and where the differences have no variance, the statistic is undefined: `Paired` holds
# None and says why in `note`, the report prints the reason instead of a number, and
# results.h5 leaves the dataset out and says why in its group's attribute "undefined"
# (UNDEFINED_CONVENTION). A p-value is never printed as 0 (`format_p`: below P_FLOOR, an
# underflow included, it is printed as "< 1e-10").
def n_seeds(n: int) -> str:
    """'1 seed', '2 seeds'."""
    return f"{n} seed{'' if n == 1 else 's'}"


def no_interval(n: int) -> str:
    """Why a summary over n < MIN_SEEDS seeds has no interval and no test."""
    return f"n = {n_seeds(n)}: no interval or test (needs >= {MIN_SEEDS})"


def seeds_note(n: int) -> str:
    """The sentence of a report that says what its numbers over n seeds are."""
    if n == 1:
        return f"Numbers are the values of the one seed; {no_interval(n)}."
    if n < MIN_SEEDS:
        return f"Numbers are means over the {n} seeds, without spread; {no_interval(n)}."
    return (f"Numbers are means over {n} seeds, ± the half-width of their 95 % t-interval; "
            "paired comparisons give the 95 % t-interval of the mean difference and two-sided "
            "p-values.")


def format_p(p: float) -> str:
    """A p-value with two significant digits; below P_FLOOR (an underflow included)
    "< 1e-10", never "0"."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p-value: expected a number in [0, 1], got {p!r}")
    return f"< {P_FLOOR:g}" if p < P_FLOOR else f"{p:.2g}"


def spearman(x, y) -> float:
    """Spearman rank correlation (no ties expected: continuous accuracies)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


class Paired(NamedTuple):
    """A paired comparison of two methods over seeds: b - a. A statistic that is undefined
    is None, and ``note`` says why ("" when every field is defined)."""

    mean: float  # mean of the differences
    ci_low: float | None  # 95 % t-interval of the mean difference
    ci_high: float | None
    t_p: float | None  # two-sided paired t-test p-value
    wilcoxon_p: float | None  # two-sided exact Wilcoxon signed-rank p-value
    n: int
    note: str = ""

    def interval(self, scale: float = 1.0, fmt: str = ".3g") -> str:
        """'95 % CI [lo, hi], t-test p = 0.012', or the reason there is none."""
        if self.ci_low is None or self.t_p is None:
            return self.note
        return (f"95 % CI [{scale * self.ci_low:{fmt}}, {scale * self.ci_high:{fmt}}], t-test "
                f"p = {format_p(self.t_p)}")

    def cells(self, scale: float = 1.0, fmt: str = "+.2f") -> list[str]:
        """Table cells: the 95 % CI, the t-test's p and Wilcoxon's p, each the reason where
        undefined (a table over fewer than MIN_SEEDS seeds leaves these columns out)."""
        ci = (f"[{scale * self.ci_low:{fmt}}, {scale * self.ci_high:{fmt}}]"
              if self.ci_low is not None else self.note)
        return [ci, format_p(self.t_p) if self.t_p is not None else self.note,
                format_p(self.wilcoxon_p) if self.wilcoxon_p is not None else self.note]

    def tree(self) -> Annotated:
        """The comparison as a results.h5 group: the defined statistics as datasets, n as an
        attribute, and the attribute "undefined" saying why any is left out."""
        values = {k: getattr(self, k) for k in ("mean", "ci_low", "ci_high", "t_p", "wilcoxon_p")}
        attrs = {"n": self.n} | ({"undefined": self.note} if self.note else {})
        return Annotated({k: np.float64(v) for k, v in values.items() if v is not None}, attrs)


def paired(a, b) -> Paired:
    """Compare b with a, paired by seed: mean difference, 95 % t-interval of it, paired
    t-test and exact Wilcoxon signed-rank test (both two-sided). Undefined (None, with the
    reason in ``note``): everything but the mean below MIN_SEEDS seeds or when a difference
    is not finite; the interval and the t-test when the differences are all equal (to
    rounding); Wilcoxon's test too when they are all 0."""
    import scipy.stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"paired: expected two equal-length 1-D arrays of values per seed, got "
                         f"shapes {a.shape} and {b.shape}")
    d = b - a
    n, mean = len(d), float(d.mean())
    bad = int((~np.isfinite(d)).sum())
    if bad:
        return Paired(mean, None, None, None, None, n, f"not finite at {bad} of {n} seeds: no "
                      "interval or test")
    if n < MIN_SEEDS:
        return Paired(mean, None, None, None, None, n, no_interval(n))
    rounding = 16 * np.finfo(np.float64).eps * float(np.maximum(np.abs(a), np.abs(b)).max())
    if float(np.ptp(d)) <= rounding:  # zero variance: the t statistic is 0/0 or infinite
        if not np.any(d != 0):
            return Paired(mean, None, None, None, None, n, f"all {n} differences are 0: no "
                          "interval or test (degenerate)")
        w_p = float(scipy.stats.wilcoxon(d, method="exact" if n <= 50 else "auto").pvalue)
        return Paired(mean, None, None, None, w_p, n, f"all {n} differences equal ({mean:+.4g}): "
                      "zero variance, no t-interval or t-test (degenerate)")
    sem = float(d.std(ddof=1)) / math.sqrt(n)
    half = float(scipy.stats.t.ppf(0.975, n - 1)) * sem
    t_p = float(2 * scipy.stats.t.sf(abs(mean) / sem, n - 1))
    w_p = float(scipy.stats.wilcoxon(d, method="exact" if n <= 50 else "auto").pvalue)
    return Paired(mean, mean - half, mean + half, t_p, w_p, n)


def mean_ci(values, digits: int = 3, fmt: str | None = None) -> str:
    """'0.123 ± 0.004': the mean over seeds and the half-width of its 95 % t-interval; the
    mean alone below MIN_SEEDS seeds (the report says so: ``seeds_note``), and
    '0.123 (all 3 equal)' when the seeds agree exactly; 'not finite (1 of 3 seeds)' when
    a value is NaN or infinite. ``digits`` decimals, or the format ``fmt`` (e.g. ".3g" for
    values that span decades) for both numbers."""
    import scipy.stats

    fmt = fmt or f".{digits}f"
    v = np.asarray(values, dtype=np.float64)
    bad = int((~np.isfinite(v)).sum())
    if bad:
        return f"not finite ({bad} of {n_seeds(len(v))})"
    if len(v) < MIN_SEEDS:
        return f"{v.mean():{fmt}}"
    if not np.any(v != v[0]):
        return f"{v.mean():{fmt}} (all {len(v)} equal)"
    half = float(scipy.stats.t.ppf(0.975, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return f"{v.mean():{fmt}} ± {half:{fmt}}"
