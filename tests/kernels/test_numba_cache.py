"""Numba's cache of the compiled kernels lives in a per-user folder, never inside the
package: after ``pip install .`` a ``site-packages/lastlayer/kernels/__pycache__`` of Numba
files (which pip does not own) outlives an uninstall and shadows a later editable install."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numba
from numba.core.caching import NullCache

import lastlayer.kernels
from lastlayer.kernels.numba_cache import user_cache_dir

PACKAGE = Path(lastlayer.kernels.__file__).resolve().parent


def _cached_dispatchers():
    """(module, name, dispatcher) of every Numba function with ``cache=True`` in kernels/."""
    for info in pkgutil.iter_modules(lastlayer.kernels.__path__):
        if "cuda" in info.name:  # CUDA kernels compile for the device and cache nothing
            continue
        module = importlib.import_module(f"lastlayer.kernels.{info.name}")
        for name, obj in vars(module).items():
            cache = getattr(obj, "_cache", None)
            if isinstance(obj, numba.core.dispatcher.Dispatcher) and not isinstance(cache, NullCache):
                yield module.__name__, name, obj


def test_every_cached_kernel_keeps_its_cache_outside_the_package():
    expected = Path(os.environ.get("NUMBA_CACHE_DIR") or user_cache_dir()).resolve()
    found = list(_cached_dispatchers())
    assert len(found) >= 10, found  # the FWHT and Layca kernels
    for module, name, dispatcher in found:
        where = Path(dispatcher._cache._cache_path).resolve()
        assert not where.is_relative_to(PACKAGE), f"{module}.{name} caches into {where}"
        assert where.is_relative_to(expected), f"{module}.{name} caches into {where}, not {expected}"


def test_the_cache_files_appear_in_the_user_folder_and_numba_is_left_as_it_was(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    code = ("import numba.core.config as c; before = c.CACHE_DIR; import numpy as np, lastlayer.kernels; "
            "lastlayer.kernels.fwht(np.ones((2, 8))); assert c.CACHE_DIR == before, c.CACHE_DIR; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    written = list((tmp_path / "lastlayer" / "numba").rglob("*.nbi"))
    assert written, f"no Numba index file under {tmp_path}"
    assert all("kernels_" in p.parent.name for p in written)  # keyed by the source folder


def test_numba_cache_dir_is_numbas_own_override(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "mine"), "XDG_CACHE_HOME": str(tmp_path / "x")}
    code = "import numpy as np, lastlayer.kernels; lastlayer.kernels.fwht(np.ones(8)); print('ok')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "mine").rglob("*.nbi")) and not (tmp_path / "x").exists()
