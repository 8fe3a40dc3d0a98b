"""The study of ``lastlayer compare``: every strategy of ``strategies`` on the same tasks,
networks, budgets and seeds, measured by ``evaluate``; results.h5, report.md and
fig_compare.png through ``lastlayer.models.experiment.reproduce``.

Seed k draws, for every strategy alike, the body's initialisation and the mini-batches
(streams ("init", k) and ("epoch", k) of the training loop), so that differences to the
baseline are paired by seed. The validation rows of temperature scaling are the same for
every strategy and seed (``strategies.split_validation``, split seed 0).

The work is one task per (data set, seed, strategy), and per (data set, seed) the source
body the transfer strategies start from (``lastlayer.models.tasks``): post-sgd and
post-exact continue the learned strategy's task of the same seed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lastlayer.engine.training.data import load

from .. import experiment
from ..tasks import Execution, Tasks
from . import report
from .evaluate import HEAD_METRICS, METRICS, VARIANTS, measure
from .strategies import (
    LAM, STRATEGIES, TRANSFER, TRANSFER_CLASSES, Budget, prepared, pretrain_source,
    run as run_strategy, run_transfer, source_target, split_validation,
)

__all__ = ["Settings", "TASKS", "settings_for", "run"]

TASKS = ("digits", "mnist1d", "mnist")


@dataclasses.dataclass(frozen=True)
class Settings:
    tasks: tuple[str, ...]
    seeds: int
    budgets: tuple[tuple[str, Budget], ...]  # (task, budget) for every task of ``tasks``

    def budget(self, task: str) -> Budget:
        return dict(self.budgets)[task]


FULL_BUDGETS = {"digits": Budget(2000, 200, 300), "mnist1d": Budget(2000, 200, 300),
                "mnist": Budget(1000, 100, 200)}
QUICK_BUDGETS = {"digits": Budget(600, 60, 100), "mnist1d": Budget(400, 40, 100),
                 "mnist": Budget(200, 20, 50)}
FULL_SEEDS, QUICK_SEEDS = 5, 3
# a rough guess of one task's seconds on one core, per data set: it orders the tasks on
# Dask (the CNN on mnist's 28x28 images first), never changes a number
COST = {"digits": 1.0, "mnist1d": 2.0, "mnist": 10.0}
CHOSEN = ("temperature", "tau_w", "tau_b", "tau_val")  # what ``evaluate.measure`` chose


def settings_for(quick: bool, seeds: int | None = None,
                 tasks: tuple[str, ...] | None = None) -> Settings:
    """The full study (digits, mnist1d and mnist; 5 seeds) or --quick (digits and mnist1d,
    3 seeds, shorter budgets: a smoke run that still has intervals and tests)."""
    if tasks is None:
        tasks = ("digits", "mnist1d") if quick else TASKS
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks: expected some of {', '.join(TASKS)}, got {', '.join(tasks)!r}")
    budgets = QUICK_BUDGETS if quick else FULL_BUDGETS
    return Settings(tuple(tasks), seeds or (QUICK_SEEDS if quick else FULL_SEEDS),
                    tuple((t, budgets[t]) for t in tasks))


def _empty(names) -> dict:
    """Per name, variant (and "head", "chosen") and metric: a list, one value per seed done
    (grown seed by seed: nothing is allocated for seeds that never run)."""
    return {name: {v: {m: [] for m in METRICS} for v in VARIANTS}
            | {"head": {m: [] for m in HEAD_METRICS}} | {"chosen": {m: [] for m in CHOSEN}}
            for name in names}


def _store(into: dict, measured: dict) -> None:
    for group, values in measured.items():
        for m, v in values.items():
            into[group][m].append(v)


def _arrays(runs: dict) -> dict:
    return {name: {group: {m: np.asarray(v, dtype=np.float64) for m, v in values.items()}
                   for group, values in groups.items()} for name, groups in runs.items()}


def compute(s: Settings, tasks: Tasks) -> dict:
    """{task: {"strategies": {name: {variant: {metric: (seeds,)}}}, "transfer": {...},
    "updates": {name: int}, "sizes": {...}}}. One task per (data set, seed, strategy), and
    per (data set, seed) the source body the transfer strategies start from."""
    submitted = {}
    for task in s.tasks:
        data, x_val, y_val = split_validation(prepared(load(task)))
        source, target = source_target(data)
        budget = s.budget(task)
        x_tv, y_tv = _target_validation(data, x_val, y_val)
        d, xv, yv = tasks.share(data), tasks.share(x_val), tasks.share(y_val)
        tg, xt, yt = tasks.share(target), tasks.share(x_tv), tasks.share(y_tv)
        seeds, cost = [], COST[task]
        for k in range(s.seeds):
            runs = {"learned": tasks.submit(f"{task} seed {k}: learned", _strategy, "learned",
                                            d, xv, yv, k, budget, cost=cost)}
            for name in STRATEGIES[1:]:
                base = runs["learned"] if name in ("post-sgd", "post-exact") else None
                runs[name] = tasks.submit(f"{task} seed {k}: {name}", _strategy, name, d, xv, yv,
                                          k, budget, base, cost=cost)
            body = tasks.submit(f"{task} seed {k}: source body", _source_body,
                                tasks.share(source), k, budget, cost=cost)
            for name in TRANSFER:
                runs[name] = tasks.submit(f"{task} seed {k}: {name}", _transfer, name, body, tg,
                                          xt, yt, k, budget, cost=cost / 2)
            seeds.append(runs)
        submitted[task] = (seeds, {"classes": data.n_classes, "train": len(data.x_train),
                                   "validation": len(x_val), "test": len(data.x_test),
                                   "target_train": len(target.x_train),
                                   "target_test": len(target.x_test)})
    tasks.run()
    results = {}
    for task, (seeds, sizes) in submitted.items():
        runs, transfer = _empty(STRATEGIES), _empty(TRANSFER)
        for handles in seeds:
            for name, h in handles.items():
                _store((runs if name in STRATEGIES else transfer)[name], h.result()["measured"])
        updates = {name: h.result()["updates"] for name, h in seeds[0].items()}
        results[task] = {"strategies": _arrays(runs), "transfer": _arrays(transfer),
                         "updates": updates, "sizes": sizes}
    return results


def _strategy(name: str, data, x_val, y_val, seed: int, budget: Budget, learned=None) -> dict:
    """A task: ``name`` trained on ``data`` from ``seed`` (post-sgd and post-exact continue
    ``learned``, the result of this task for "learned" and the same seed) and measured on
    the validation rows. The learned network comes back without its data (the caller has
    it) for the strategies that continue it."""
    base = None if learned is None else learned["trained"]._replace(data=data)
    trained = run_strategy(name, data, seed, budget, base)
    out = {"measured": measure(trained, x_val, y_val, LAM), "updates": trained.updates}
    if name == "learned":
        out["trained"] = trained._replace(data=None)
    return out


def _source_body(source, seed: int, budget: Budget):
    """A task: the body every transfer strategy of ``seed`` starts from (without its data)."""
    return pretrain_source(source, seed, budget)._replace(data=None)


def _transfer(name: str, body, target, x_val, y_val, seed: int, budget: Budget) -> dict:
    """A task: transfer strategy ``name`` from ``body`` to ``target``, measured on the
    target classes' validation rows."""
    trained = run_transfer(name, body, target, seed, budget)
    return {"measured": measure(trained, x_val, y_val, LAM), "updates": trained.updates}


def _target_validation(data, x_val, y_val):
    """The validation rows of the target classes (5-9, relabelled 0-4)."""
    keep = y_val >= TRANSFER_CLASSES
    return x_val[keep], y_val[keep] - TRANSFER_CLASSES


def run(out: Path, *, quick: bool = False, seeds: int | None = None, quiet: bool = False,
        tasks: tuple[str, ...] | None = None, execution: Execution | None = None) -> Path:
    """``lastlayer compare``: results.h5, report.md and fig_compare.png in ``out``, the
    tasks run where ``execution`` says (``lastlayer.models.tasks``; default: serially)."""
    s = settings_for(quick, seeds, tasks)
    return experiment.reproduce(
        "compare", out, s, quick=quick, quiet=quiet, execution=execution,
        compute=lambda pool: compute(s, pool),
        figures=lambda results, folder: report.figure(results, folder / "fig_compare.png"),
        report=lambda results, seconds, attrs: report.markdown(results, s, seconds, attrs),
        stored=report.stored)
