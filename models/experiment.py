"""What every paper reproduction shares: an output folder with an HDF5 results file, a
markdown report and PNG figures, all written atomically; a progress bar; BLAS thread
pinning for small matrices; summary statistics over seeds."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine.training.io import atomic_path, atomic_write_text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results_h5(path: Path, tree: dict, attrs: dict) -> None:
    """Write a nested dict of arrays (keys become groups / datasets) atomically."""
    import h5py

    def write(group, node):
        for key, value in node.items():
            if isinstance(value, dict):
                write(group.create_group(str(key)), value)
            else:
                group.create_dataset(str(key), data=np.asarray(value))

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
        write(f, tree)


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
    import dataclasses

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


class Steps:
    """A rich progress bar over named units of work (or silence when quiet)."""

    def __init__(self, total: int, quiet: bool, title: str):
        self.bar = None
        self.t0 = time.perf_counter()
        if not quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
            from rich.progress import TimeElapsedColumn

            self.bar = Progress(TextColumn(f"{title} " + "{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn())
            self.task = self.bar.add_task("", total=total)

    @contextmanager
    def step(self, description: str):
        if self.bar is not None:
            self.bar.update(self.task, description=description)
        yield
        if self.bar is not None:
            self.bar.advance(self.task)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def write_report(path: Path, text: str) -> None:
    atomic_write_text(path, text)


@contextmanager
def single_threaded_blas():
    """Limit BLAS to one thread inside the block. For the small matrices of the paper
    experiments (at most a few thousand x a few hundred) BLAS threads only add
    synchronisation, and thrash when the machine is shared."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def spearman(x, y) -> float:
    """Spearman rank correlation (no ties expected: continuous accuracies)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


class Paired(NamedTuple):
    """A paired comparison of two methods over seeds: b - a."""

    mean: float  # mean of the differences
    ci_low: float  # 95 % t-interval of the mean difference (NaN with fewer than 2 seeds)
    ci_high: float
    t_p: float  # two-sided paired t-test p-value (NaN with fewer than 2 seeds)
    wilcoxon_p: float  # two-sided exact Wilcoxon signed-rank p-value (NaN if all equal)
    n: int


def paired(a, b) -> Paired:
    """Compare b with a, paired by seed: mean difference, 95 % CI, t-test and exact
    Wilcoxon signed-rank test (both two-sided)."""
    import scipy.stats

    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = len(d)
    if n < 2:
        return Paired(float(d.mean()) if n else math.nan, math.nan, math.nan, math.nan, math.nan, n)
    sem = float(d.std(ddof=1)) / math.sqrt(n)
    half = float(scipy.stats.t.ppf(0.975, n - 1)) * sem
    t_p = float(scipy.stats.ttest_rel(b, a).pvalue) if sem > 0 else (1.0 if d.mean() == 0 else 0.0)
    w_p = math.nan
    if np.any(d != 0):
        w_p = float(scipy.stats.wilcoxon(d, method="exact" if n <= 50 else "auto").pvalue)
    return Paired(float(d.mean()), float(d.mean()) - half, float(d.mean()) + half, t_p, w_p, n)


CI_NOTE = "mean over seeds, ± the half-width of its 95 % t-interval (shown from 3 seeds on)"


def mean_ci(values, digits: int = 3) -> str:
    """'0.123 ± 0.004': the mean and the half-width of its 95 % t-interval over seeds; the
    mean alone below 3 seeds (an interval from 2 values says little)."""
    import scipy.stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 3:
        return f"{v.mean():.{digits}f}"
    half = float(scipy.stats.t.ppf(0.975, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return f"{v.mean():.{digits}f} ± {half:.{digits}f}"
