"""HDF5 checkpoints of a training run: written atomically, verified when read.

Layout of a checkpoint file (format "lastlayer-checkpoint", version 1)::

    /                 attrs: format, format_version, architecture (JSON), config (JSON),
                             seed, iteration, checksum (SHA-256 of everything below)
    /params/<i>/<name>      layer i's parameter arrays
    /net_state/<i>/<name>   layer i's running statistics
    /opt_state/<path>       optimizer state leaves (arrays and counters), by tree path
    /history/<name>         1-D arrays of the training history

Saving writes a temporary file and renames it over the destination, so an interrupted
save leaves the previous checkpoint intact. Loading reads everything into memory,
recomputes the checksum, rebuilds the network from its description, checks every shape
and dtype against the network and the optimizer, and only then returns: a truncated,
corrupt, foreign or mismatched file raises ``CheckpointError`` and nothing half-loaded
is ever returned.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .architecture import build, describe
from .io import atomic_path
from ..network import Network
from ..optim.transforms import GradientTransformation
from ..optim.tree import tree_paths, tree_unflatten
from .loop import TrainState

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint"]

FORMAT = "lastlayer-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The file is not a valid checkpoint, or not one of this network / optimizer."""


@dataclass(frozen=True)
class Checkpoint:
    net: Network
    train_state: TrainState  # opt_state is None unless an optimizer was given to load
    config: dict  # the run's settings, as saved


def _groups(net_tree: list, prefix: str) -> list[tuple[str, np.ndarray]]:
    return [(f"{prefix}/{path}", np.asarray(leaf)) for path, leaf in tree_paths(net_tree)]


def _entries(ts: TrainState) -> list[tuple[str, np.ndarray]]:
    """Every dataset of the file as (path, array), in a fixed order."""
    entries = _groups(ts.params, "params") + _groups(ts.net_state, "net_state")
    for path, leaf in tree_paths(ts.opt_state):
        if isinstance(leaf, (bool, np.bool_)) or not isinstance(leaf, (int, float, np.ndarray, np.generic)):
            raise TypeError(f"opt_state: leaf {path!r} of type {type(leaf).__name__} cannot be saved")
        entries.append((f"opt_state/{path}", np.asarray(leaf)))
    for key, values in ts.history_arrays().items():
        entries.append((f"history/{key}", values))
    return entries


def _checksum(entries, attrs: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(attrs):
        h.update(f"{key}={attrs[key]}\n".encode())
    for path, arr in sorted(entries, key=lambda e: e[0]):
        arr = np.ascontiguousarray(arr)
        h.update(f"{path}:{arr.dtype.str}:{arr.shape}\n".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, net: Network, ts: TrainState,
                    config: dict | None = None) -> None:
    """Write ``ts`` (and the network's description and the run ``config``) to ``path``."""
    import h5py

    entries = _entries(ts)
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": json.dumps(describe(net)),
        "config": json.dumps(config or {}, sort_keys=True),
        "seed": int(ts.seed),
        "iteration": int(ts.iteration),
    }
    checksum = _checksum(entries, attrs)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            for name, arr in entries:
                f.create_dataset(name, data=arr)
            f.attrs["checksum"] = checksum  # last: a file without it was never finished


def load_checkpoint(path: str | os.PathLike, *, net: Network | None = None,
                    opt: GradientTransformation | None = None) -> Checkpoint:
    """Read and verify a checkpoint.

    ``net``: if given, the file's architecture must equal it (resuming a different network
    is an error). ``opt``: if given, the optimizer state is restored into the structure of
    ``opt.init(params)`` and every leaf's shape and dtype must match; otherwise
    ``train_state.opt_state`` is None.
    """
    import h5py

    path = os.fspath(path)
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            datasets: dict[str, np.ndarray] = {}
            f.visititems(lambda name, obj: datasets.__setitem__(name, obj[()])
                         if isinstance(obj, h5py.Dataset) else None)
    except FileNotFoundError:
        raise
    except (OSError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {err}") from err

    if attrs.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lastlayer checkpoint (format attribute is "
                              f"{attrs.get('format')!r}, expected {FORMAT!r})")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {attrs.get('format_version')} "
                              f"is not supported (this lastlayer reads version {FORMAT_VERSION})")
    if "checksum" not in attrs:
        raise CheckpointError(f"{path}: checkpoint is incomplete (no checksum): its save was interrupted")
    stored = attrs.pop("checksum")
    if _checksum(list(datasets.items()), attrs) != stored:
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt")

    file_net = build(json.loads(attrs["architecture"]))
    if net is not None and file_net.layers != net.layers:
        raise CheckpointError(f"{path}: checkpoint of a different architecture:\n"
                              f"  in the file: {_layer_list(file_net)}\n  expected:    {_layer_list(net)}")
    net = net or file_net

    params = _read_layers(datasets, "params", [_expected_params(layer) for layer in net], path)
    dtype = next((a.dtype for p in params for a in p.values()), np.dtype(np.float64))
    state_template = net.init_state(dtype)
    net_state = _read_layers(datasets, "net_state",
                             [{k: (v.shape, v.dtype) for k, v in s.items()} for s in state_template],
                             path)
    opt_state = None
    if opt is not None:
        opt_state = _read_tree(datasets, "opt_state", opt.init(params), path)
    history = {name.split("/", 1)[1]: arr.tolist() for name, arr in datasets.items()
               if name.startswith("history/")}
    ts = TrainState(params, net_state, opt_state, int(attrs["seed"]), int(attrs["iteration"]),
                    history)
    return Checkpoint(net, ts, json.loads(attrs["config"]))


def _plain(value: Any) -> Any:
    """h5py attribute values as plain Python (numpy scalars -> int / float / str)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _layer_list(net: Network) -> str:
    return ", ".join(str(layer) for layer in net)


def _expected_params(layer) -> dict:
    return {name: (shape, None) for name, shape in layer.param_shapes().items()}


def _read_layers(datasets: dict, group: str, expected: list[dict], path: str) -> list[dict]:
    """Per-layer dicts of arrays, each checked against (shape, dtype or None)."""
    present = {name for name in datasets if name.startswith(group + "/")}
    wanted = {f"{group}/{i}/{k}" for i, e in enumerate(expected) for k in e}
    if present != wanted:
        raise CheckpointError(f"{path}: {group} do not match the network: missing "
                              f"{sorted(wanted - present)}, unexpected {sorted(present - wanted)}")
    out = []
    for i, spec in enumerate(expected):
        layer = {}
        for name, (shape, dtype) in spec.items():
            arr = datasets[f"{group}/{i}/{name}"]
            if arr.shape != tuple(shape) or arr.dtype.kind != "f" or (dtype is not None and arr.dtype != dtype):
                raise CheckpointError(f"{path}: {group}/{i}/{name} has shape {arr.shape} and dtype "
                                      f"{arr.dtype}, expected shape {tuple(shape)}"
                                      + (f" and dtype {dtype}" if dtype is not None else ""))
            layer[name] = arr
        out.append(layer)
    return out


def _read_tree(datasets: dict, group: str, template: Any, path: str) -> Any:
    """Leaves of ``template`` read from ``group/<tree path>``, shapes and dtypes checked."""
    leaves = []
    for leaf_path, leaf in tree_paths(template):
        name = f"{group}/{leaf_path}"
        if name not in datasets:
            raise CheckpointError(f"{path}: optimizer state {leaf_path!r} is missing: the checkpoint "
                                  f"was saved with a different optimizer")
        arr = datasets[name]
        want = np.asarray(leaf)
        scalar = isinstance(leaf, (int, float))  # a counter: compare the kind only
        if arr.shape != want.shape or (arr.dtype.kind != want.dtype.kind if scalar
                                       else arr.dtype != want.dtype):
            raise CheckpointError(f"{path}: optimizer state {leaf_path!r} has shape {arr.shape} and "
                                  f"dtype {arr.dtype}, expected {want.shape} and {want.dtype}")
        leaves.append(arr.item() if scalar else arr)
    extra = {n for n in datasets if n.startswith(group + "/")} - \
        {f"{group}/{p}" for p, _ in tree_paths(template)}
    if extra:
        raise CheckpointError(f"{path}: unexpected optimizer state {sorted(extra)}: the checkpoint "
                              f"was saved with a different optimizer")
    return tree_unflatten(template, leaves)
