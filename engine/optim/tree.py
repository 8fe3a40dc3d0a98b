"""Nested containers of arrays ("trees"): a network's parameters (a list of dicts of
arrays), its gradients, an optimizer's state (NamedTuples of such lists).

Containers are dicts, lists, tuples and NamedTuples; anything else is a leaf (an array, a
Python number, None). Dict keys are visited in sorted order, so flattening is
deterministic whatever the insertion order.

Partial trees: gradients leave frozen tensors out (``Network.backward(mask=...)``), so a
dict of the gradients may hold fewer keys than the parameters' dict at the same place.
``tree_map`` follows the first tree's keys; ``apply_updates`` and ``tree_carry_over``
touch only the leaves present in the partial tree; ``tree_select`` and ``tree_merge``
split a tree by a mask and put it back together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["tree_map", "tree_flatten", "tree_unflatten", "tree_paths", "apply_updates",
           "tree_carry_over", "tree_select", "tree_merge"]


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


def apply_updates(params: Any, updates: Any) -> Any:
    """``params + updates`` for every leaf present in ``updates`` (a partial tree); the
    other leaves are returned as they are. New arrays are allocated: the input params are
    never modified."""
    if isinstance(params, dict):
        return {k: apply_updates(v, updates[k]) if k in updates else v for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return type(params)(apply_updates(p, u) for p, u in zip(params, updates, strict=True))
    return params + updates


def tree_carry_over(old: Any, new: Any) -> Any:
    """``old`` with the leaves present in the partial tree ``new`` replaced: the optimizer
    state of frozen tensors (absent from the gradients) is carried over unchanged."""
    if isinstance(old, dict):
        return {k: tree_carry_over(v, new[k]) if k in new else v for k, v in old.items()}
    if isinstance(old, (list, tuple)):
        return type(old)(tree_carry_over(o, n) for o, n in zip(old, new, strict=True))
    return new


def tree_select(tree: Any, mask: Any, keep: bool = True) -> Any:
    """The partial tree of the leaves of ``tree`` whose ``mask`` entry is ``keep`` (dicts
    lose the other keys; lists keep their length)."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if isinstance(v, (dict, list, tuple)):
                out[k] = tree_select(v, mask[k], keep)
            elif bool(mask[k]) == keep:
                out[k] = v
        return out
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_select(v, m, keep) for v, m in zip(tree, mask, strict=True))
    return tree


def tree_merge(a: Any, b: Any) -> Any:
    """The union of two partial trees of one structure (``b``'s leaves win where both have
    one): puts ``tree_select(t, m, True)`` and ``tree_select(t, m, False)`` back together."""
    if isinstance(a, dict):
        return {**a, **{k: tree_merge(a[k], v) if k in a else v for k, v in b.items()}}
    if isinstance(a, (list, tuple)):
        return type(a)(tree_merge(x, y) for x, y in zip(a, b, strict=True))
    return b
