"""``lastlayer features CHECKPOINT [--data D] --out F.h5``: a trained network's penultimate
features, ready for ``lastlayer head fit``.

The network of the checkpoint is split before its last layer, ``net.split(-1)``: the body's
output phi (N, d) on the train and test parts of the data set is written with the labels
(or targets) and what the network's own last layer scores there, so that

    lastlayer head fit F.h5:train/features --labels F.h5:train/labels --loss ce ...
    lastlayer head eval HEAD.h5 F.h5:test/features --labels F.h5:test/labels

post-trains the network exactly (Moreau & Audiffren 2017, end to end) and prints the exact
head's test error beside the network's own.

The file (HDF5, written atomically): for each part ``train`` and ``test``, datasets
``features`` (N, d) in the network's dtype and ``labels`` (N,) int64 (classification) or
``targets`` (N, outputs) float64, and group attributes ``network_loss``,
``network_accuracy`` (or ``network_rmse``), ``rows``; file attributes ``format``
("lastlayer-features"), ``checkpoint``, ``data``, ``iteration``, ``head`` (the last
layer's description, JSON), ``lastlayer``.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from lastlayer.engine.threads import thread_limits
from lastlayer.engine.training import CheckpointError, evaluate, load, load_checkpoint
from lastlayer.engine.training.architecture import describe
from lastlayer.engine.training.data import DATASETS, DataError
from lastlayer.engine.training.io import atomic_path

from .common import Files, UsageError
from ..experiment import version

FORMAT = "lastlayer-features"
CHUNK = 256  # rows per forward pass: a CNN's im2col columns stay in the caches


def network_scores(path: str, group: str) -> dict | None:
    """The network's own metrics on a part of a features file (its group's
    ``network_*`` attributes), or None if ``path`` is not one written by this command."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT or group not in f:
                return None
            return {k.removeprefix("network_"): float(v) for k, v in f[group].attrs.items()
                    if k.startswith("network_")}
    except (OSError, KeyError):
        return None


def _features(body, params, net_state, x: np.ndarray, dtype) -> np.ndarray:
    """phi = body(x) in chunks of CHUNK rows (inference mode). x (N, ...) -> (N, d)."""
    out = None
    for start in range(0, len(x), CHUNK):
        phi, _ = body.forward(params, x[start:start + CHUNK].astype(dtype), train=False,
                              state=net_state)
        if out is None:
            out = np.empty((len(x), *phi.shape[1:]), dtype=phi.dtype)
        out[start:start + len(phi)] = phi
    return out.reshape(len(x), -1)


def cmd_features(args, console) -> int:
    files = Files()
    files.input(args.checkpoint, "CHECKPOINT", "checkpoint file")
    files.output(args.out, "--out")
    files.distinct()
    try:
        ck = load_checkpoint(args.checkpoint)
    except CheckpointError as err:
        raise UsageError(f"CHECKPOINT {err}") from None
    name = args.data if args.data is not None else ck.config.get("data")
    if name not in DATASETS:
        raise UsageError(f"--data: the checkpoint does not say which data set it was trained on "
                         f"(its settings hold data={name!r}); give one of {', '.join(DATASETS)}")
    try:
        data = load(name, seed=int(ck.config.get("split_seed", 0)) if args.data is None else 0)
    except (ValueError, DataError) as err:
        raise UsageError(f"--data {name}: {err}") from None
    net, ts = ck.net, ck.train_state
    try:
        outputs = net.output_shape((1, *data.x_train.shape[1:]))[1:]
    except ValueError as err:
        raise UsageError(f"--data {name}: inputs {tuple(data.x_train.shape[1:])} do not fit the "
                         f"network of {args.checkpoint}: {err}") from None
    if outputs != (data.n_outputs,):
        raise UsageError(f"--data {name}: {data.n_outputs} outputs, but the network of "
                         f"{args.checkpoint} has {outputs}")
    if "W" not in net[-1].param_shapes():
        raise UsageError(f"CHECKPOINT {args.checkpoint}: its last layer {net[-1]} has no weights "
                         f"to post-train")
    body = net[:-1]
    dtype = np.asarray(ts.params[-1]["W"]).dtype
    d = math.prod(body.output_shape((1, *data.x_train.shape[1:]))[1:])
    flops = 2.0 * CHUNK * max(math.prod(s) for layer in net for s in layer.param_shapes().values())

    t0 = time.perf_counter()
    parts = {}
    with thread_limits(flops):
        for part, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
            if not args.quiet:
                print(f"features: {part}, {len(x):,} rows -> {d} features ...", file=sys.stderr,
                      flush=True)
            phi = _features(body, ts.params[:-1], ts.net_state[:-1], x, dtype)
            target = y if data.task == "classification" else y.astype(dtype)
            own = evaluate(net, ts.params, ts.net_state, x.astype(dtype), target, data.task,
                           batch_size=CHUNK)
            parts[part] = (phi, y, own)
    seconds = time.perf_counter() - t0

    import h5py

    with atomic_path(args.out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({"format": FORMAT, "checkpoint": str(args.checkpoint), "data": name,
                        "iteration": ts.iteration, "head": json.dumps(describe(net[-1:])),
                        "lastlayer": version()})
        for part, (phi, y, own) in parts.items():
            g = f.create_group(part)
            g.create_dataset("features", data=phi)
            g.create_dataset("labels" if data.task == "classification" else "targets", data=y)
            g.attrs["rows"] = len(phi)
            for k, v in own.items():
                g.attrs[f"network_{k}"] = v

    metric = "accuracy" if data.task == "classification" else "rmse"
    console.print(f"{data}; features of {args.checkpoint} (iteration {ts.iteration}, "
                  f"{d} per row) in {seconds:.1f} s", highlight=False)
    for part, (_, _, own) in parts.items():
        console.print(f"  {part}: the network's own last layer: loss {own['loss']:.6f}, "
                      f"{metric} {own[metric]:.4f}", highlight=False)
    labels = "labels" if data.task == "classification" else "targets"
    loss = "ce" if data.task == "classification" else "squared"
    console.print(f"written to {args.out}; post-train it exactly with: lastlayer head fit "
                  f"{args.out}:train/features --{labels} {args.out}:train/{labels} --loss {loss} "
                  f"--lam-grid 1e-6:1e-1:12 --cv 5 --bias --out HEAD.h5", highlight=False)
    return 0
