"""Backend selection: NumPy or CuPy arrays, never mixed; CuPy never imported by the engine."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

from lastlayer.engine.backend import array_module, to_device, to_numpy


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
    code = "import sys, engine, lastlayer.models.cli; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_to_device_keeps_the_structure():
    params = [{"W": np.ones((2, 2))}, {}, {"b": np.zeros(3)}]
    moved = to_device(params, np)
    assert isinstance(moved, list) and moved[1] == {}
    np.testing.assert_array_equal(moved[0]["W"], params[0]["W"])
    np.testing.assert_array_equal(to_numpy(np.arange(3)), [0, 1, 2])
