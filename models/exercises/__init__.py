"""Exercises with self-checks (``lastlayer exercise``): the registry.

Each exercise is a template, a source file under ``templates/`` whose docstring states the
task (what to implement, the shapes, the formulas, hints) and whose bodies raise
NotImplementedError, and a checker: a list of ``Check`` (``checking.py``) that runs the
learner's copy against the engine's own gradient check and a closed form, one result per
check, naming what is wrong (which gradient, by how much). No solution ships here; the
tests hold them (tests/models/test_exercise.py).

    lastlayer exercise list                        EXERCISES, one line each
    lastlayer exercise start NAME [--out FILE]     copies templates/<template> (never over a file)
    lastlayer exercise check NAME [FILE]           runs the checks: exit 0 all pass, 1 any fails

The templates are read as text, never imported: they import only ``engine`` and NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checking import Check, Failed, Result, loaded, run_checks
from .heads import RIDGE_HEAD, SOFTMAX_CE
from .layers import CONV1D, LEAKY_RELU

__all__ = ["Exercise", "EXERCISES", "TEMPLATES"]

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Exercise:
    name: str  # what `lastlayer exercise start / check` take: "leaky-relu"
    title: str  # its line in `lastlayer exercise list`
    template: str  # file name under templates/, and the default name of the learner's copy
    implement: str  # what the learner writes, for the message of `start`
    checks: tuple[Check, ...]

    @property
    def template_path(self) -> Path:
        return TEMPLATES / self.template

    def check(self, path: str) -> list[Result]:
        """Every check of the learner's file ``path``; one failed result if it does not
        even load (a syntax error, an exception at import)."""
        try:
            with loaded(path) as learner:
                return run_checks(list(self.checks), learner)
        except Failed as err:
            return [Result(f"load {path}", False, f": {err}")]


EXERCISES = {e.name: e for e in (
    Exercise("leaky-relu", "LeakyReLU(slope): an activation layer, forward and backward",
             "leaky_relu.py", "LeakyReLU's output_shape, forward and backward",
             tuple(LEAKY_RELU)),
    Exercise("conv1d", "Conv1D: a 1-D convolution layer with stride and padding, forward and "
             "backward", "conv1d.py", "Conv1D's output_shape, forward and backward",
             tuple(CONV1D)),
    Exercise("ridge-head", "the exact ridge head: the W minimising (1/N) ||Phi W^T - Y||^2 + "
             "lam ||W||^2", "ridge_head.py", "fit(Phi, Y, lam)", tuple(RIDGE_HEAD)),
    Exercise("softmax-ce", "softmax cross-entropy: a loss stable for logits of any size, and "
             "its gradient", "softmax_ce.py", "softmax_cross_entropy(logits, labels)",
             tuple(SOFTMAX_CE)),
)}
