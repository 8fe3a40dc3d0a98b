"""What every exercise's checker shares: the learner's file, loaded under a private module
name; the learner's calls, traced so that an exception names the method and the line of
the learner's file it came from; and one ``Result`` per check, printed as one line.

A check is ``Check(what, run)``: ``run(learner)`` returns an ``Outcome`` (``within`` builds
one from a measured error and its tolerance) or raises ``Failed`` with one sentence saying
which contract the learner's code breaks (a shape, a dtype, a missing name). An exception
inside the learner's code is a ``LearnerError`` (a ``Failed``): "LeakyReLU.backward raised
NotImplementedError: ... (leaky_relu.py, line 61)", never a traceback.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import traceback
import types
import warnings
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from lastlayer.engine.gradcheck import check_layer

__all__ = ["Failed", "LearnerError", "Learner", "loaded", "Outcome", "within", "ok", "Check",
           "Result", "run_checks", "worst", "hinted", "relation", "checked_forward", "Gradients",
           "layer_gradients"]

_NAMES = itertools.count()  # a fresh private module name for every file checked


class Failed(Exception):
    """The learner's code breaks a contract; the message says which, in one sentence."""


class LearnerError(Failed):
    """An exception raised inside the learner's code."""


class Learner:
    """The learner's module and how to call into it."""

    def __init__(self, path: str, module: types.ModuleType):
        self.path, self.module = path, module
        self.filename = module.__file__
        self._memo: dict = {}

    def once(self, key, fn: Callable):
        """``fn()`` run once per key: several checks share one computation (and one
        failure: the same exception is raised to each)."""
        if key not in self._memo:
            try:
                self._memo[key] = (True, fn())
            except Failed as err:
                self._memo[key] = (False, err)
        good, value = self._memo[key]
        if not good:
            raise value
        return value

    def get(self, name: str):
        """The learner's ``name`` (a class or a function), or Failed if the file lacks it."""
        value = getattr(self.module, name, None)
        if value is None:
            raise Failed(f"{self.path} defines no {name} (keep the name the template gives it)")
        return value

    def call(self, where: str, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)``; an exception becomes a LearnerError naming ``where`` and
        the learner's line. NumPy overflows and invalid operations raise, as in the tests."""
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"), \
                    warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                return fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:
            raise LearnerError(self.describe(where, exc)) from None

    def describe(self, where: str, exc: BaseException) -> str:
        """"where raised Type: message (file, line n)", on one line."""
        message = " ".join(str(exc).split())
        message = message if len(message) <= 300 else message[:297] + "..."
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                 if f.filename == self.filename]
        at = f" ({self.path}, line {lines[-1]})" if lines else ""
        return f"{where} raised {type(exc).__name__}{': ' + message if message else ''}{at}"

    def traced(self, layer, name: str):
        """``layer`` with its forward and backward run through ``call``."""
        return _Traced(self, layer, name)


class _Traced:
    def __init__(self, learner: Learner, layer, name: str):
        self._learner, self._layer, self._name = learner, layer, name

    def forward(self, *args, **kwargs):
        return self._learner.call(f"{self._name}.forward", self._layer.forward, *args, **kwargs)

    def backward(self, *args, **kwargs):
        return self._learner.call(f"{self._name}.backward", self._layer.backward, *args, **kwargs)

    def __getattr__(self, attr):
        return getattr(self._layer, attr)

    def __str__(self):
        return str(self._layer)


@contextlib.contextmanager
def loaded(path: str) -> Iterator[Learner]:
    """The learner's file run as a module of a private name (no bytecode is written beside
    it); the module leaves ``sys.modules`` afterwards. Failed if the file does not run."""
    name = f"_lastlayer_exercise_{next(_NAMES)}"
    module = types.ModuleType(name)
    module.__file__ = os.path.abspath(path)
    learner = Learner(path, module)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    try:
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read()
            code = compile(source, module.__file__, "exec")
        except SyntaxError as err:
            raise Failed(f"{path} does not compile: {err.msg} (line {err.lineno})") from None
        except (UnicodeDecodeError, ValueError) as err:
            raise Failed(f"{path} is not a Python source file: {err}") from None
        learner.call(f"importing {path}", exec, code, module.__dict__)
        yield learner
    finally:
        sys.modules.pop(name, None)


# ---- results ----------------------------------------------------------------------------
class Outcome(NamedTuple):
    passed: bool
    detail: str  # what follows ``what`` on the line, from ": " or " is wrong: " on


def within(error: float, tolerance: float, measure: str = "relative error",
           hint: str | None = None, note: str | None = None) -> Outcome:
    """A measured error against its tolerance, then on a pass ``note`` (what was covered),
    on a failure ``hint`` (where the error is largest, what it suggests)."""
    passed = bool(error <= tolerance)  # a NaN fails
    text = f"{measure} {error:.1e} (tolerance {tolerance:.0e})"
    extra = note if passed else hint
    text += f"; {extra}" if extra else ""
    return Outcome(passed, f": {text}" if passed else f" is wrong: {text}")


def ok(detail: str) -> Outcome:
    """A check passed that measures nothing: ``detail`` says what was covered."""
    return Outcome(True, f": {detail}")


class Check(NamedTuple):
    what: str  # "backward: gradient of W"
    run: Callable[[Learner], Outcome]


class Result(NamedTuple):
    what: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.what}{self.detail}"


def run_checks(checks: list[Check], learner: Learner) -> list[Result]:
    results = []
    for check in checks:
        try:
            outcome = check.run(learner)
        except Failed as err:
            outcome = Outcome(False, f": {err}")
        except Exception as err:  # noqa: BLE001 - what the learner returned broke the check
            outcome = Outcome(False, f": could not be checked ({type(err).__name__}: "
                                     f"{' '.join(str(err).split())}); check what your code "
                                     f"returns against the template's docstring")
        results.append(Result(check.what, *outcome))
    return results


def worst(per_case: list[tuple[float, object]]) -> tuple[float, object]:
    """The largest (error, case) of a check's cases (a NaN counts as the largest)."""
    return max(per_case, key=lambda e: np.inf if np.isnan(e[0]) else e[0])


def hinted(where: str, hint: str | None) -> str:
    """A failure's hint: the case where the error is largest, then what it suggests."""
    return "; ".join(s for s in (f"worst for {where}", hint) if s)


# ---- what a wrong array is ------------------------------------------------------------------
def relation(got, want, axis_name: str = "the last axis") -> str | None:
    """How a wrong array relates to the right one when that is simple: a constant factor
    (a missing 1/N, a sign) or the right one reversed along its last axis."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return None
    norm = float(np.linalg.norm(want))
    if norm == 0.0:
        return None
    if float(np.linalg.norm(got)) <= 1e-12 * norm:
        return "yours is zero"
    alpha = float(np.vdot(got, want)) / norm ** 2
    if abs(alpha - 1) > 1e-6 and float(np.linalg.norm(got - alpha * want)) <= 1e-9 * norm:
        return ("yours has the wrong sign" if abs(alpha + 1) < 1e-6
                else f"yours is {alpha:.4g} times the right one")
    if want.ndim and want.shape[-1] > 1:
        flipped = np.flip(want, axis=-1)
        if float(np.linalg.norm(got - flipped)) <= 1e-9 * norm:
            return f"yours is the right one reversed along {axis_name}"
    return None


# ---- a layer's forward and backward, through the engine's gradient check -----------------------
def checked_forward(learner: Learner, layer, name: str, params: dict, x: np.ndarray,
                    y_shape: tuple, train: bool = True):
    """``(y, cache)`` of one traced forward, after checking its contract: a pair, y of the
    expected shape and of x's dtype, x left as it was."""
    x_before = x.copy()
    out = learner.traced(layer, name).forward(params, x, train, state=None,
                                              rng=np.random.default_rng(0))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise Failed(f"{name}.forward must return (y, cache), got {type(out).__name__}")
    y, cache = out
    if not np.array_equal(x, x_before):
        raise Failed(f"{name}.forward modified its input x in place; compute a new array")
    if getattr(y, "shape", None) != y_shape:
        raise Failed(f"{name}.forward returned y of shape {getattr(y, 'shape', None)} for x of "
                     f"shape {x.shape}; expected {y_shape}")
    if y.dtype != x.dtype:
        raise Failed(f"{name}.forward returned {y.dtype} for a {x.dtype} input; nothing is "
                     f"cast (docs/design.md, Protocol 1)")
    return y, cache


class Gradients(NamedTuple):
    errors: dict  # tensor -> relative error of lastlayer.engine.gradcheck.check_layer ("x" first)
    dy: np.ndarray  # an upstream gradient, and what the learner's backward made of it:
    dx: np.ndarray
    grads: dict


def layer_gradients(learner: Learner, layer, name: str, params: dict, x: np.ndarray,
                    y_shape: tuple) -> Gradients:
    """One forward and backward, checked for their contracts (shapes, the keys of the
    gradients, no input modified), then ``lastlayer.engine.gradcheck.check_layer``."""
    _, cache = checked_forward(learner, layer, name, params, x, y_shape)
    dy = np.random.default_rng(1).standard_normal(y_shape)
    dy_before = dy.copy()
    out = learner.traced(layer, name).backward(params, cache, dy)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise Failed(f"{name}.backward must return (dx, grads), got {type(out).__name__}")
    dx, grads = out
    if not np.array_equal(dy, dy_before):
        raise Failed(f"{name}.backward modified dy in place; the layer below may still need it")
    if getattr(dx, "shape", None) != x.shape:
        raise Failed(f"{name}.backward returned dx of shape {getattr(dx, 'shape', None)} for x "
                     f"of shape {x.shape}; dx must have the shape of x")
    if not isinstance(grads, dict) or set(grads) != set(params):
        got = sorted(grads) if isinstance(grads, dict) else type(grads).__name__
        raise Failed(f"{name}.backward returned grads {got}; expected a dict with the keys of "
                     f"params, {sorted(params)}")
    for key, p in params.items():
        if getattr(grads[key], "shape", None) != p.shape:
            raise Failed(f"{name}.backward: the gradient of {key} has shape "
                         f"{getattr(grads[key], 'shape', None)}; {key} has {p.shape}")
    errors = check_layer(learner.traced(layer, name), params, x, train=True)
    return Gradients(errors, dy, dx, grads)
