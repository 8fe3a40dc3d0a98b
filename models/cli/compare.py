"""``lastlayer compare``: every last-layer strategy on the same tasks, seeds and budgets.

The study itself is ``lastlayer.models.compare`` (strategies, evaluation, report); this
module is its command: the ``--tasks`` flag type, and the run written like a reproduction
(``reproduce.py``: the same output folder rules, manifest and interrupt handling).
"""

from __future__ import annotations

import argparse

from .reproduce import cmd_reproduce

__all__ = ["cmd_compare", "task_list"]


def cmd_compare(args, console) -> int:
    """The study of ``lastlayer.models.compare``, written like a reproduction."""
    from ..compare import study

    args.experiment = "compare"

    def run(stage, *, quick, seeds, quiet, execution):
        return study.run(stage, quick=quick, seeds=seeds, quiet=quiet, tasks=args.tasks,
                         execution=execution)

    return cmd_reproduce(args, console, run)


def task_list(text: str) -> tuple[str, ...]:
    """--tasks: comma-separated names of ``lastlayer.models.compare.study.TASKS``, each once."""
    from ..compare.study import TASKS

    names = tuple(t.strip() for t in text.split(","))
    bad = [t for t in names if t not in TASKS]
    if bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct names from {','.join(TASKS)} separated by commas, got {text!r}")
    return names
