"""Backend selection and the import rules of DESIGN.md (imports point down only)."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from engine.backend import array_module, to_device, to_numpy

ROOT = Path(__file__).resolve().parents[2]


def test_numpy_arrays_select_numpy():
    assert array_module(np.zeros(2), None, np.ones(3)) is np
    assert array_module() is np


def test_cupy_arrays_select_cupy_and_mixing_devices_is_an_error(monkeypatch):
    """CuPy is never imported by the engine: a stand-in module registered as 'cupy' is
    enough to test the dispatch logic on a machine without a GPU."""
    fake = types.ModuleType("cupy")

    class ndarray:  # noqa: N801 - mirrors cupy.ndarray
        pass

    fake.ndarray = ndarray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert array_module(ndarray(), None) is fake
    with pytest.raises(TypeError, match="NumPy and CuPy mixed"):
        array_module(ndarray(), np.zeros(1))


def test_engine_import_does_not_import_cupy():
    code = "import sys, engine, models.cli; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_to_device_keeps_the_structure():
    params = [{"W": np.ones((2, 2))}, {}, {"b": np.zeros(3)}]
    moved = to_device(params, np)
    assert isinstance(moved, list) and moved[1] == {}
    np.testing.assert_array_equal(moved[0]["W"], params[0]["W"])
    np.testing.assert_array_equal(to_numpy(np.arange(3)), [0, 1, 2])


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package, forbidden", [
    ("kernels", {"engine", "models"}),
    ("engine", {"models", "cupy", "numba_cuda"}),
])
def test_imports_point_down(package, forbidden):
    for path in (ROOT / package).rglob("*.py"):
        bad = _imports(path) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_engine_has_no_cuda_specific_code():
    for path in (ROOT / "engine").rglob("*.py"):
        text = path.read_text()
        assert "numba.cuda" not in text and "cuda." not in text, path
