"""The training loop: seeded mini-batches, explicit state, history as arrays.

Everything that changes while training is one ``TrainState`` (parameters, running
statistics, optimizer state, iteration, history); ``train`` takes one and returns the
next, and ``lastlayer.engine.training.checkpoint`` saves and restores it.

Randomness is counter-based: the mini-batch of iteration t is ``batch_indices(n, B, t,
seed, mode)`` and the dropout masks of iteration t come from a generator keyed by
(seed, t). The random state at iteration t is therefore (seed, t) itself, and training
resumed from a checkpoint at iteration t replays exactly the draws of an uninterrupted
run: the resumed parameters are bit-identical.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._checks import float_dtype, positive_int
from ..backend import array_module, to_device
from ..memory import keep_freed_memory
from .data import Dataset, batch_indices
from .steps import Batch, GradientStep, plain_gradient
from ..losses import softmax_cross_entropy, squared_error
from ..network import Mask, Network
from ..optim.transforms import GradientTransformation
from ..optim.tree import apply_updates, tree_flatten, tree_map
from ..streams import stream

__all__ = ["TrainState", "NonFiniteLossError", "init_train_state", "train", "evaluate",
           "default_loss"]


class NonFiniteLossError(FloatingPointError):
    """The loss (or the network output) became NaN or infinite."""

    def __init__(self, iteration: int, what: str):
        self.iteration = iteration
        super().__init__(f"iteration {iteration}: {what} is not finite; training stopped "
                         f"(lower the learning rate, or pass on_nonfinite='skip' to skip such steps)")


@dataclass(frozen=True)
class TrainState:
    """Explicit training state. ``history`` maps a name to a list of floats:

    * ``batch_loss``: the mini-batch loss of every iteration (NaN for a skipped step);
    * ``eval_iteration``: iterations after which an evaluation ran, and for each of them
      ``train_loss``, ``test_loss`` and ``train_accuracy`` / ``test_accuracy``
      (classification) or ``train_rmse`` / ``test_rmse`` (regression);
    * ``skipped``: iterations whose step was skipped as non-finite.
    """

    params: list
    net_state: list
    opt_state: Any
    seed: int = 0  # with the iteration, the whole random state (see the module docstring)
    iteration: int = 0
    history: dict[str, list] = field(default_factory=dict)

    def history_arrays(self) -> dict[str, np.ndarray]:
        """The history as NumPy arrays (iterations as int64, values as float64)."""
        ints = ("eval_iteration", "skipped", "monitor_iteration")
        return {k: np.asarray(v, dtype=np.int64 if k in ints else np.float64)
                for k, v in self.history.items()}


def init_train_state(net: Network, opt: GradientTransformation, seed: int = 0,
                     dtype=np.float64) -> TrainState:
    """Fresh parameters (drawn from a generator keyed by ``seed``), state and history.
    The seed stays in the state: it also keys the mini-batches and dropout masks."""
    params = net.init(stream(seed, "init"), float_dtype(dtype))
    return TrainState(params, net.init_state(dtype), opt.init(params), seed, 0, {})


def default_loss(task: str) -> Callable:
    """Softmax cross-entropy for classification, squared error for regression."""
    if task == "classification":
        return softmax_cross_entropy
    if task == "regression":
        return squared_error
    raise ValueError(f"task: expected 'classification' or 'regression', got {task!r}")


def evaluate(net: Network, params: list, net_state: list, x: np.ndarray, y: np.ndarray,
             task: str, loss: Callable | None = None, batch_size: int = 2048) -> dict[str, float]:
    """Loss over the whole set (inference mode) and accuracy or RMSE.

    RMSE is sqrt of the mean squared error over all samples and outputs (in the units
    of ``y``). Evaluated in chunks of ``batch_size``; the loss is the sample-weighted mean.
    """
    loss = loss or default_loss(task)
    n = len(x)
    total_loss, correct, sq = 0.0, 0, 0.0
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out, _ = net.forward(params, xb, train=False, state=net_state)
        value, _ = loss(out, yb)
        total_loss += float(value) * len(xb)  # a host float (a CuPy loss is a 0-d array)
        if task == "classification":
            correct += int((out.argmax(axis=1) == yb).sum())
        else:
            sq += float(((out - yb) ** 2).sum())
    metrics = {"loss": total_loss / n}
    if task == "classification":
        metrics["accuracy"] = correct / n
    else:
        metrics["rmse"] = math.sqrt(sq / y.size)
    return metrics


def train(net: Network, opt: GradientTransformation, data: Dataset, ts: TrainState, *,
          iterations: int, batch_size: int = 64, mode: str = "epoch",
          eval_every: int | None = None, mask: Mask | None = None, loss: Callable | None = None,
          on_nonfinite: str = "raise", quiet: bool = False, description: str = "training",
          eval_train: bool = True, monitor: Callable[[int, list], dict] | None = None,
          monitor_every: int = 1, step: GradientStep = plain_gradient,
          should_stop: Callable[[], bool] | None = None) -> TrainState:
    """Train until ``iterations`` updates have been done in total (counting those already
    in ``ts``); return the new state.

    Parameters
    ----------
    opt : applied with ``opt.update_in_place`` where it has one (Layca's fused step), on
        a copy of ``ts.params`` made once per call, else with ``update`` + ``apply_updates``;
        ``ts`` is never modified.
    data : the training and evaluation arrays (NumPy, as ``lastlayer.engine.training.data`` makes
        them); copied once per call to the device of ``ts.params`` (NumPy or CuPy: move
        the state with ``lastlayer.engine.backend.to_device`` to train on a GPU) and cast once to
        the parameters' dtype.
    batch_size, mode : mini-batching (``lastlayer.engine.training.data.batch_indices``, keyed by ``ts.seed``).
    eval_every : evaluate after every ``eval_every``-th iteration (default: once per
        epoch); iterations where this happens do not depend on where a run was split.
    mask : trainable mask; frozen tensors get no gradient and no update.
    on_nonfinite : "raise" (default) stops with ``NonFiniteLossError`` naming the
        iteration; "skip" leaves the parameters unchanged for that step and goes on.
    eval_train : also evaluate on the training set (one extra pass over it).
    monitor : ``monitor(t, params) -> {name: value}`` called after every ``monitor_every``-th
        iteration t (counted from 1) with the current parameters; its values are appended
        to the history under their names, and t under ``monitor_iteration`` (e.g. the
        distance to a closed form, or a layer rotation).
    step : how a mini-batch becomes gradients (``lastlayer.engine.training.steps``): plain
        back-propagation by default, ``sam_gradient(rho)`` for SAM, PoF's step. The extra
        numbers a step reports are appended to the history under their names (NaN at a
        skipped step).
    should_stop : called after every iteration; when it returns True, training stops there
        and the state at that iteration is returned (``iteration`` says how far it got), as
        if ``iterations`` had been that number: resuming from it continues bit-identically.
        The command line passes a flag set by Ctrl-C / SIGTERM.

    Before the first step, glibc's allocator is set to keep freed memory for the next step
    (``lastlayer.engine.memory.keep_freed_memory``): for the rest of the process, not only
    this call; ``LASTLAYER_MALLOC=system`` leaves it alone.
    """
    positive_int(batch_size, "batch_size")
    if on_nonfinite not in ("raise", "skip"):
        raise ValueError(f"on_nonfinite: expected 'raise' or 'skip', got {on_nonfinite!r}")
    if iterations < ts.iteration:
        raise ValueError(f"iterations: the state is already at iteration {ts.iteration}, "
                         f"asked to train until {iterations}")
    loss = loss or default_loss(data.task)
    dtype = _params_dtype(ts.params)
    # The data follow the parameters: on the device of ts.params (NumPy or CuPy), copied
    # there once per call; y_train / y_test are int labels or, for regression, cast.
    xp = array_module(*tree_flatten(ts.params))
    x_train = xp.ascontiguousarray(to_device(data.x_train, xp), dtype=dtype)
    x_test = xp.ascontiguousarray(to_device(data.x_test, xp), dtype=dtype)
    y_train, y_test = to_device(data.y_train, xp), to_device(data.y_test, xp)
    if data.task == "regression":
        y_train, y_test = y_train.astype(dtype), y_test.astype(dtype)
    n = len(x_train)
    if eval_every is None:
        eval_every = -(-n // batch_size)
    positive_int(eval_every, "eval_every")

    params, net_state, opt_state = ts.params, ts.net_state, ts.opt_state
    in_place = opt.update_in_place is not None
    if in_place:  # the optimizer writes into the parameters: into the loop's own copy
        params = tree_map(lambda a: a.copy(), params)
    history = {k: list(v) for k, v in ts.history.items()}
    for key in ("batch_loss", "eval_iteration", "skipped"):
        history.setdefault(key, [])
    positive_int(monitor_every, "monitor_every")
    if monitor is not None:
        history.setdefault("monitor_iteration", [])
    keep_freed_memory()  # each step's arrays reuse the last step's memory (engine.memory)

    def run_eval(t: int) -> None:
        history["eval_iteration"].append(t)
        sets = [("train", x_train, y_train)] if eval_train else []
        for name, x, y in sets + [("test", x_test, y_test)]:
            for metric, value in evaluate(net, params, net_state, x, y, data.task, loss).items():
                history.setdefault(f"{name}_{metric}", []).append(value)

    # Overflow is detected below, by value, and reported with its iteration: NumPy's own
    # overflow warnings would only repeat it without saying where.
    with _progress(quiet, description, iterations, ts.iteration) as progress, \
            np.errstate(over="ignore", invalid="ignore"):
        for t in range(ts.iteration, iterations):
            idx = batch_indices(n, batch_size, t, ts.seed, mode)  # (B,) host indices
            if xp is not np:
                idx = xp.asarray(idx)  # B integers to the device: the batch is gathered there
            batch = Batch(x_train[idx], y_train[idx], t, ts.seed, x_train, y_train)
            result = step(net, params, net_state, batch, loss, mask)
            if result.loss is None:
                if on_nonfinite == "raise":
                    raise NonFiniteLossError(t, "the loss")
                history["batch_loss"].append(math.nan)
                history["skipped"].append(t)
            else:
                if in_place:
                    opt_state = opt.update_in_place(result.grads, opt_state, params)
                else:
                    updates, opt_state = opt.update(result.grads, opt_state, params)
                    params = apply_updates(params, updates)
                net_state = net.update_state(net_state, result.caches)
                history["batch_loss"].append(result.loss)
            for key, value in result.info.items():
                history.setdefault(key, []).append(value)
            done = t + 1
            if done % eval_every == 0:  # a pure function of t: resuming changes nothing
                run_eval(done)
            if monitor is not None and done % monitor_every == 0:
                history["monitor_iteration"].append(done)
                for key, value in monitor(done, params).items():
                    history.setdefault(key, []).append(value)
            progress.advance(history)
            if should_stop is not None and done < iterations and should_stop():
                return replace(ts, params=params, net_state=net_state, opt_state=opt_state,
                               iteration=done, history=history)

    return replace(ts, params=params, net_state=net_state, opt_state=opt_state,
                   iteration=max(iterations, ts.iteration), history=history)


def _params_dtype(params: list):
    """The float dtype of the parameters (float64 for a network without any)."""
    leaves = tree_flatten(params)
    return leaves[0].dtype if leaves else np.dtype(np.float64)


class _progress:
    """Progress of the loop: a rich progress bar (iteration, loss, last test metric) on a
    terminal; in a pipe or a log, one line at the first evaluation and then at each further
    1 % of the budget (at most ~101 lines, flushed: a log shows how far a run got, and a
    caller can wait for the first line); nothing when quiet."""

    def __init__(self, quiet: bool, description: str, total: int, start: int):
        self.bar = None
        self.description, self.total, self.start = description, total, start
        self.every = max(1, (total - start) // 200)  # at most ~200 redraws
        self.count = 0
        self.logged = -1  # the last percentage logged
        self.log = not quiet and not sys.stdout.isatty()
        if not quiet and not self.log:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
            from rich.progress import TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task(description, total=total, completed=start, info="")
        self.t0 = time.perf_counter()

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    @staticmethod
    def _info(history: dict, sep: str) -> str:
        info = f"loss {history['batch_loss'][-1]:.4f}"
        for key in ("test_accuracy", "test_rmse"):
            if history.get(key):
                info += f"{sep}{key} {history[key][-1]:.4f}"
        return info

    def advance(self, history: dict) -> None:
        self.count += 1
        if self.log:
            done = self.start + self.count
            percent = 100 * (done - self.start) // max(1, self.total - self.start)
            if history.get("eval_iteration") and percent > self.logged:
                self.logged = percent
                print(f"{self.description}: iteration {done}/{self.total}, "
                      f"{self._info(history, ', ')}, {time.perf_counter() - self.t0:.1f} s",
                      flush=True)
            return
        if self.bar is None or self.count % self.every:
            return
        self.bar.update(self.task, advance=self.every, info=self._info(history, "  "))

    def __exit__(self, exc_type, exc, tb):
        if self.bar is not None:
            if exc_type is None:
                self.bar.update(self.task, completed=self.bar.tasks[0].total)
            self.bar.stop()
        return False
