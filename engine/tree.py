"""Nested containers of arrays ("trees"): a network's parameters (a list of dicts of
arrays), its gradients, an optimizer's state (NamedTuples of such lists).

Containers are dicts, lists, tuples and NamedTuples; anything else is a leaf (an array, a
Python number, None). Dict keys are visited in sorted order, so flattening is
deterministic whatever the insertion order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["tree_map", "tree_flatten", "tree_unflatten", "tree_paths"]


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def tree_map(f: Callable, tree: Any, *others: Any) -> Any:
    """Apply ``f(leaf, *other_leaves)`` over the structure of ``tree``.

    The ``others`` must contain (at least) every container position of ``tree``: a dict
    in ``tree`` is matched by key, so ``others`` may have extra keys, which are ignored.
    This is how gradients that omit frozen tensors meet a full optimizer state.
    """
    if isinstance(tree, dict):
        return {k: tree_map(f, v, *(o[k] for o in others)) for k, v in tree.items()}
    if _is_namedtuple(tree):
        return type(tree)(*(tree_map(f, v, *(o[i] for o in others)) for i, v in enumerate(tree)))
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(f, v, *(o[i] for o in others)) for i, v in enumerate(tree))
    return f(tree, *others)


def tree_paths(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``[(path, leaf), ...]`` in a deterministic order; paths look like ``"1/mu/0/W"``
    (positions and keys joined by '/'; a NamedTuple contributes its field names)."""
    if isinstance(tree, dict):
        items = [(str(k), tree[k]) for k in sorted(tree, key=str)]
    elif _is_namedtuple(tree):
        items = list(zip(tree._fields, tree))
    elif isinstance(tree, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(tree)]
    else:
        return [(prefix, tree)]
    out = []
    for key, value in items:
        if "/" in key:
            raise ValueError(f"tree key {key!r} contains '/', which paths use as separator")
        out += tree_paths(value, f"{prefix}/{key}" if prefix else key)
    return out


def tree_flatten(tree: Any) -> list[Any]:
    """The leaves of ``tree`` in the order of ``tree_paths``."""
    return [leaf for _, leaf in tree_paths(tree)]


def tree_unflatten(template: Any, leaves: list[Any]) -> Any:
    """Rebuild ``template``'s structure with ``leaves`` (in ``tree_flatten`` order)."""
    leaves = list(leaves)
    n_expected = len(tree_flatten(template))
    if len(leaves) != n_expected:
        raise ValueError(f"leaves: expected {n_expected} for this structure, got {len(leaves)}")
    it = iter(leaves)

    def build(t):
        if isinstance(t, dict):
            keys = sorted(t, key=str)
            built = {k: build(t[k]) for k in keys}
            return {k: built[k] for k in t}  # keep the template's key order
        if _is_namedtuple(t):
            return type(t)(*(build(v) for v in t))
        if isinstance(t, (list, tuple)):
            return type(t)(build(v) for v in t)
        return next(it)

    return build(template)
