"""``lastlayer train``: an MLP or a CNN on an embedded dataset, from a plain settings dict.

The settings (``TrainConfig``) are everything that determines the numbers; they are
stored in the checkpoint, so ``--resume`` continues the very same run, and the result is
a function of them alone: the same settings give bit-identical results. The command checks
every flag and file before any work; Ctrl-C or SIGTERM stops after the current iteration,
writes the checkpoint when --save is given and says how to resume (exit 130 / 143).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from rich.table import Table

from lastlayer.engine import Conv2D, Network, optim
from lastlayer.engine.threads import thread_limits
from lastlayer.engine.training import (
    DATASETS, CheckpointError, Dataset, NonFiniteLossError, TrainState, evaluate,
    init_train_state, load, load_checkpoint, save_checkpoint, train,
)
from lastlayer.engine.training import networks
from lastlayer.engine.training.data import batches_per_epoch
from lastlayer.engine.training.io import atomic_write_text
from lastlayer.engine.training.networks import ACTIVATIONS

from ..ledger import json_value
from .common import Files, UsageError, exit_code, graceful_stop


ARCHS = ("mlp", "cnn")
DEFAULT_HIDDEN = {"mlp": (128, 128), "cnn": (128,)}  # dense widths after the convolutions
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "sgd_amom": 0.1, "adam": 1e-3,
              "rmsprop": 1e-3, "adagrad": 1e-2}


@dataclass(frozen=True)
class TrainConfig:
    data: str = "digits"
    arch: str = "mlp"  # "cnn": convolution blocks (``channels``) before the dense layers
    hidden: tuple[int, ...] | None = None  # None: DEFAULT_HIDDEN of the arch
    channels: tuple[int, ...] = (32, 64)  # convolution widths (arch cnn only)
    activation: str = "relu"
    dropout: float = 0.0
    optimizer: str = "adam"
    lr: float | None = None  # None: DEFAULT_LR of the optimizer
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0  # initialisation, batches, dropout
    split_seed: int = 0  # train/test split of the dataset
    mode: str = "epoch"
    dtype: str = "float64"

    def __post_init__(self):
        if self.data not in DATASETS:
            raise ValueError(f"data: expected one of {', '.join(DATASETS)}, got {self.data!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch: expected one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.optimizer not in optim.OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {', '.join(optim.OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected float32 or float64, got {self.dtype!r}")
        hidden = DEFAULT_HIDDEN[self.arch] if self.hidden is None else self.hidden
        object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: expected layer widths >= 1, got {self.hidden}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"channels: expected one or more widths >= 1, got {self.channels}")

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["channels"] = list(self.channels)
        return d


def build_network(data: Dataset, cfg: TrainConfig) -> Network:
    """The network of the settings (lastlayer.engine.training.networks): an MLP, or a CNN whose
    convolution blocks have ``cfg.channels`` widths. ValueError if the data do not fit."""
    if cfg.arch == "cnn":
        return networks.cnn(data, cfg.channels, cfg.hidden, cfg.activation, cfg.dropout)
    return networks.mlp(data, cfg.hidden, cfg.activation, cfg.dropout)


def make_optimizer(cfg: TrainConfig) -> optim.GradientTransformation:
    return optim.OPTIMIZERS[cfg.optimizer](cfg.learning_rate, weight_decay=cfg.weight_decay)


def iterations_for(data: Dataset, cfg: TrainConfig, epochs: float | None,
                   iterations: int | None) -> int:
    """The total budget in iterations: ``iterations``, or ``epochs`` passes over the data."""
    if iterations is not None:
        return iterations
    return math.ceil(epochs * batches_per_epoch(len(data.x_train), cfg.batch_size, cfg.mode))


@dataclass(frozen=True)
class RunResult:
    config: TrainConfig
    data: Dataset
    net: Network
    state: TrainState
    final: dict | None  # {"train": metrics, "test": metrics}; None when stopped early
    seconds: float
    target: int  # the budget in iterations; state.iteration < target when stopped early
    saved_at: tuple[int, ...] = ()  # iterations at which a checkpoint was written


def run(cfg: TrainConfig, *, epochs: float | None = 30, iterations: int | None = None,
        resume: str | None = None, save: str | None = None, save_every: int | None = None,
        should_stop=None, quiet: bool = False) -> RunResult:
    """Train (or resume) and evaluate. ``resume`` must hold a run with the same settings.

    save : checkpoint path, written at the end, every ``save_every`` iterations (counted
        from 0, so a resumed run saves at the same iterations), and when stopped early.
    should_stop : ``lastlayer.engine.training.train``'s hook (the command line's Ctrl-C / SIGTERM
        flag): training ends after the current iteration, the checkpoint is written, and
        the result has ``final`` None and ``state.iteration < target``.
    Splitting a run into pieces changes nothing: it is bit-identical to one piece.
    """
    data = load(cfg.data, seed=cfg.split_seed)
    net = build_network(data, cfg)
    opt = make_optimizer(cfg)
    if resume:
        ts = load_checkpoint(resume, net=net, opt=opt).train_state
    else:
        ts = init_train_state(net, opt, cfg.seed, np.dtype(cfg.dtype))
    total = iterations_for(data, cfg, epochs, iterations)
    ends = [total]
    if save and save_every:
        ends = [*range((ts.iteration // save_every + 1) * save_every, total, save_every), total]
    saved = []
    t0 = time.perf_counter()
    for end in ends:
        ts = train(net, opt, data, ts, iterations=end, batch_size=cfg.batch_size, mode=cfg.mode,
                   quiet=quiet, description=f"train {cfg.data}", should_stop=should_stop)
        if save:
            save_checkpoint(save, net, ts, cfg.to_dict())
            saved.append(ts.iteration)
        if ts.iteration < total and (ts.iteration < end or (should_stop is not None and should_stop())):
            # stopped early (inside this piece, or on a signal that came during the save)
            return RunResult(cfg, data, net, ts, None, time.perf_counter() - t0, total, tuple(saved))
    seconds = time.perf_counter() - t0
    final = {}
    for name, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        x = x.astype(cfg.dtype)
        y = y.astype(cfg.dtype) if data.task == "regression" else y
        final[name] = evaluate(net, ts.params, ts.net_state, x, y, data.task)
        if data.target_scale is not None:  # RMSE in the target's own units as well
            final[name]["rmse_original_units"] = final[name]["rmse"] * float(data.target_scale[0])
    return RunResult(cfg, data, net, ts, final, seconds, total, tuple(saved))


def layer_shapes(net: Network, data: Dataset):
    """(layer, input shape, output shape) of one sample, for every layer of ``net`` on
    ``data``'s inputs."""
    shape = tuple(data.x_train.shape[1:])
    for layer in net:
        out = tuple(layer.output_shape((1, *shape))[1:])
        yield layer, shape, out
        shape = out


def memory_estimate(data: Dataset, cfg: TrainConfig, eval_batch: int = 2048) -> dict:
    """Bytes a run needs at least, before it starts: parameters with their gradients,
    updates and optimizer slots, and the larger of the activations of one training batch
    (forward caches, backward buffers: 4 per value) and of one evaluation chunk of
    ``eval_batch`` rows (outputs and caches: 2 per value). A convolution's cache is its
    im2col matrix, K Ho Wo values a sample. Returns the parts and "total"."""
    net = build_network(data, cfg)
    n_params = sum(math.prod(s) for layer in net for s in layer.param_shapes().values())
    slots = {"adam": 2, "momentum": 1, "nesterov": 1, "sgd_amom": 1, "rmsprop": 1, "adagrad": 1}
    itemsize = np.dtype(cfg.dtype).itemsize
    parameters = itemsize * n_params * (3 + slots.get(cfg.optimizer, 0))
    per_sample = data.n_features
    for layer, shape, out in layer_shapes(net, data):
        per_sample += math.prod(out)
        if isinstance(layer, Conv2D):  # the im2col matrix (K, Ho Wo), K = C_in kh kw
            per_sample += shape[0] * math.prod(layer.kernel_size) * math.prod(out[1:])
    rows = min(eval_batch, len(data.x_train))
    activations = itemsize * per_sample * max(4 * cfg.batch_size, 2 * rows)
    return {"parameters": n_params, "parameter_bytes": parameters,
            "activation_bytes": activations, "total": parameters + activations}


def largest_product_flops(data: Dataset, cfg: TrainConfig) -> float:
    """Flops of the largest matrix product of a training step: 2 B d_in d_out of the widest
    Dense layer, 2 B C_out K Ho Wo of a convolution (its im2col product); what decides the
    thread count (lastlayer.engine.threads)."""
    largest = 0.0
    for layer, _, out in layer_shapes(build_network(data, cfg), data):
        weights = layer.param_shapes().get("W")
        if weights is not None:  # a convolution's product runs over its Ho Wo positions
            positions = math.prod(out[1:]) if isinstance(layer, Conv2D) else 1
            largest = max(largest, 2.0 * math.prod(weights) * positions)
    return cfg.batch_size * largest


def proc_kib(path: str, key: str) -> int | None:
    """Bytes of the ``key: N kB`` line of a Linux /proc file (None elsewhere or if absent)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), None if unknown."""
    available = proc_kib("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def config_of_checkpoint(path: str) -> TrainConfig:
    """The settings a checkpoint was trained with."""
    raw = load_checkpoint(path).config
    try:
        return TrainConfig(**raw)
    except TypeError as err:
        raise ValueError(f"{path}: the checkpoint's settings are not those of `lastlayer train`: {err}") from err


CONFIG_OPTIONS = ("data", "arch", "hidden", "channels", "activation", "dropout", "optimizer", "lr", "weight_decay",
                  "batch_size", "seed", "split_seed", "mode", "dtype")


def config_from_args(args) -> TrainConfig:
    """Settings from the command line; on --resume, those of the checkpoint, and any option
    given explicitly must agree with them (a resumed run keeps its settings)."""
    given = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k) is not None}
    if not args.resume:
        return TrainConfig(**given)
    cfg = config_of_checkpoint(args.resume)
    saved = cfg.to_dict()
    for key, value in given.items():
        value = list(value) if isinstance(value, tuple) else value
        if value != saved[key]:
            was = saved[key] if key != "lr" or saved[key] is not None else \
                f"{cfg.learning_rate:g} (the {cfg.optimizer} default)"
            raise UsageError(f"--{key.replace('_', '-')} {value} differs from the checkpoint's "
                             f"{was}; a resumed run keeps the settings it was started with")
    return cfg


def check_memory(cfg: TrainConfig, data) -> None:
    """Refuse a network that cannot fit, with the estimate, before allocating it."""
    available = available_memory()
    if available is None:
        return
    need = memory_estimate(data, cfg)
    if need["total"] > available:
        raise UsageError(f"--hidden {','.join(map(str, cfg.hidden))}: the run needs about "
                         f"{_bytes(need['total'])} ({need['parameters']:,} parameters with their "
                         f"gradients and optimizer state: {_bytes(need['parameter_bytes'])}; "
                         f"activations: {_bytes(need['activation_bytes'])}), more than the "
                         f"{_bytes(available)} of memory available")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def cmd_train(args, console, dump) -> int:
    if args.save_every is not None and not args.save:
        raise UsageError("--save-every needs --save CKPT (where to write the checkpoints)")
    files = Files()
    files.input(args.resume, "--resume", "checkpoint file")
    files.output(args.save, "--save")
    files.output(args.json, "--json")
    files.distinct(allow=(("--resume", "--save"),))  # continuing a run in place
    try:
        cfg = config_from_args(args)
    except (ValueError, TypeError, CheckpointError) as err:
        raise UsageError(str(err)) from None
    if args.channels is not None and cfg.arch != "cnn":
        raise UsageError(f"--channels: sets the convolution widths of --arch cnn; this run is "
                         f"--arch {cfg.arch}")
    try:
        data = load(cfg.data, seed=cfg.split_seed)
        build_network(data, cfg)  # a CNN on flat data, or too many blocks
    except ValueError as err:
        raise UsageError(f"--arch {cfg.arch} --data {cfg.data}: {err}") from None
    check_memory(cfg, data)

    with graceful_stop() as stop, thread_limits(largest_product_flops(data, cfg)):
        try:
            result = run(cfg, epochs=args.epochs, iterations=args.iterations,
                                   resume=args.resume, save=args.save, save_every=args.save_every,
                                   should_stop=stop, quiet=args.quiet)
        except (ValueError, TypeError, CheckpointError) as e:
            raise UsageError(str(e)) from None
        except NonFiniteLossError as e:
            print(f"lastlayer train: {e}", file=sys.stderr)
            return 1
    ts = result.state
    if result.final is None:  # stopped by a signal
        budget = (f"--iterations {args.iterations}" if args.iterations is not None
                  else f"--epochs {args.epochs:g}")
        where = (f"checkpoint written to {args.save}; continue with: lastlayer train --resume "
                 f"{args.save} {budget} --save {args.save}" + (f" --json {args.json}" if args.json else "")
                 if args.save else "nothing saved (pass --save CKPT to keep the progress)")
        print(f"lastlayer train: stopped by {stop.name} at iteration {ts.iteration} of "
              f"{result.target}; {where}", file=sys.stderr)
        return exit_code(stop.requested)

    data = result.data
    metric = "accuracy" if data.task == "classification" else "rmse"
    console.print(f"{data}; {ts.iteration} iterations in {result.seconds:.1f} s", highlight=False)
    table = Table()
    extra = ("rmse (original units)",) if data.target_scale is not None else ()
    for name in ("set", "loss", metric) + extra:
        table.add_column(name, justify="right" if name != "set" else "left")
    for name in ("train", "test"):
        m = result.final[name]
        row = [name, f"{m['loss']:.6f}", f"{m[metric]:.4f}"]
        if data.target_scale is not None:
            row.append(f"{m['rmse_original_units']:.3f}")
        table.add_row(*row)
    console.print(table)
    if args.save:
        console.print(f"checkpoint written to {args.save}", highlight=False)
    if args.json:
        out = {"config": cfg.to_dict(), "iterations": ts.iteration, "final": result.final,
               "history": {k: [json_value(v) for v in values] for k, values in ts.history.items()}}
        atomic_write_text(args.json, dump(out, {"seconds": result.seconds}))
        console.print(f"results written to {args.json}", highlight=False)
    return 0
