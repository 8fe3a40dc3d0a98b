"""docs/derivations.md checks every backward pass: one check block for every layer class and
loss, each a formula evaluated against the layer's own backward, that fails when the
backward is wrong; its code references name lines inside the functions they cite.
(tests/models/test_docs.py runs the blocks; this file reads them on its own, without
importing models.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import lastlayer.engine.layers
import lastlayer.engine.losses
from lastlayer.engine.layers import Dense, Layer, Tanh

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "derivations.md"
LOSSES = ("softmax_cross_entropy", "squared_error")
# [`path`](../path#La-Lb), `Qualified.name`, lines a-b
REFERENCE = re.compile(r"\[`([\w/]+\.py)`\]\(\.\./([\w/]+\.py)#L(\d+)-L(\d+)\),\s+"
                       r"`([\w.]+)`,\s+lines\s+(\d+)-(\d+)")


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.M | re.S)


def checks() -> dict[str, list[str]]:
    """Name -> the blocks whose first line is `# check: Name[, Other] [(mode)]`."""
    found: dict[str, list[str]] = {}
    for block in python_blocks():
        tag = re.match(r"# check: ([^(\n]+)", block)
        for name in tag.group(1).split(",") if tag else ():
            found.setdefault(name.strip(), []).append(block)
    return found


def run_check(name: str) -> None:
    """The setup block (the page's first) and then the check blocks of ``name``."""
    namespace = {"__name__": "__main__"}
    for block in [python_blocks()[0], *checks()[name]]:
        exec(compile(block, f"{DOC.name}: check {name}", "exec"), namespace)


def test_every_layer_class_and_loss_has_a_check_block():
    layers = {name for name in lastlayer.engine.layers.__all__
              if isinstance(cls := getattr(lastlayer.engine.layers, name), type)
              and issubclass(cls, Layer) and cls is not Layer}
    found = checks()
    assert layers | set(LOSSES) <= set(found), f"no check block for {layers - set(found)}"
    for name in layers | set(LOSSES):
        calls = ".backward(" if name in layers else ""
        assert any(f"{name}(" in b and calls in b and "assert " in b for b in found[name]), name


def _tanh_1_minus_y(self, params, cache, dy):
    return dy * (1 - cache.y), {}  # for 1 - y^2


def _dense_dw_off_by_1e_12(self, params, cache, dy, _backward=Dense.backward):
    dx, grads = _backward(self, params, cache, dy)
    return dx, {**grads, "W": grads["W"] * (1 + 1e-12)}


def _textbook_cross_entropy(logits, targets, _loss=lastlayer.engine.losses.softmax_cross_entropy):
    loss, dz = _loss(logits, targets)
    if targets.ndim == 2:  # (p - t) / N, wrong for rows that do not sum to 1
        dz = (lastlayer.engine.losses.softmax(logits) - targets) / logits.shape[0]
    return loss, dz


MUTATIONS = [("Tanh", Tanh, "backward", _tanh_1_minus_y),
             ("Dense", Dense, "backward", _dense_dw_off_by_1e_12),
             ("softmax_cross_entropy", lastlayer.engine.losses, "softmax_cross_entropy",
              _textbook_cross_entropy)]


@pytest.mark.parametrize("name, owner, attribute, wrong", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_wrong_backward_fails_its_check_block(name, owner, attribute, wrong, monkeypatch,
                                                capsys):
    run_check(name)  # the block passes on the code as it is
    monkeypatch.setattr(owner, attribute, wrong)
    with pytest.raises(AssertionError):
        run_check(name)


def test_code_references_name_lines_inside_their_function():
    references = REFERENCE.findall(DOC.read_text())
    assert len(references) >= 20
    for path, link, first, last, qualname, first_again, last_again in references:
        assert (link, first, last) == (path, first_again, last_again), (path, qualname)
        node = ast.parse((ROOT / path).read_text())
        for part in qualname.split("."):
            node = next(n for n in node.body if getattr(n, "name", None) == part)
        assert node.lineno <= int(first) <= int(last) <= node.end_lineno, (
            f"{path}: {qualname} is lines {node.lineno}-{node.end_lineno}, the doc says "
            f"{first}-{last}")
