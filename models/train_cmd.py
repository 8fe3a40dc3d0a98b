"""``lastlayer train``: flags and files checked before any work, then models/train_run.py.

Ctrl-C or SIGTERM stops after the current iteration, writes the checkpoint when --save is
given and says how to resume (exit 130 / 143).
"""

from __future__ import annotations

import sys

from rich.table import Table

from engine.threads import thread_limits
from engine.training import CheckpointError, NonFiniteLossError, load
from engine.training.io import atomic_write_text

from . import train_run
from .cli_checks import Files, UsageError
from .ledger import json_value
from .signals import exit_code, graceful_stop

CONFIG_OPTIONS = ("data", "arch", "hidden", "channels", "activation", "dropout", "optimizer", "lr", "weight_decay",
                  "batch_size", "seed", "split_seed", "mode", "dtype")


def config_from_args(args) -> train_run.TrainConfig:
    """Settings from the command line; on --resume, those of the checkpoint, and any option
    given explicitly must agree with them (a resumed run keeps its settings)."""
    given = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k) is not None}
    if not args.resume:
        return train_run.TrainConfig(**given)
    cfg = train_run.config_of_checkpoint(args.resume)
    saved = cfg.to_dict()
    for key, value in given.items():
        value = list(value) if isinstance(value, tuple) else value
        if value != saved[key]:
            was = saved[key] if key != "lr" or saved[key] is not None else \
                f"{cfg.learning_rate:g} (the {cfg.optimizer} default)"
            raise UsageError(f"--{key.replace('_', '-')} {value} differs from the checkpoint's "
                             f"{was}; a resumed run keeps the settings it was started with")
    return cfg


def check_memory(cfg: train_run.TrainConfig, data) -> None:
    """Refuse a network that cannot fit, with the estimate, before allocating it."""
    available = train_run.available_memory()
    if available is None:
        return
    need = train_run.memory_estimate(data, cfg)
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
        train_run.build_network(data, cfg)  # a CNN on flat data, or too many blocks
    except ValueError as err:
        raise UsageError(f"--arch {cfg.arch} --data {cfg.data}: {err}") from None
    check_memory(cfg, data)

    with graceful_stop() as stop, thread_limits(train_run.largest_product_flops(data, cfg)):
        try:
            result = train_run.run(cfg, epochs=args.epochs, iterations=args.iterations,
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
