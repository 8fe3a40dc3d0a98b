"""Where Numba keeps the compiled kernels: a per-user cache directory, never the package.

``@njit(cache=True)`` writes its index and object files (``*.nbi``, ``*.nbc``) next to the
source by default, into ``kernels/__pycache__``. For an installed (non-editable) lastlayer
that is ``site-packages/lastlayer/kernels/__pycache__``: files that pip does not own and so
does not remove. After ``pip install .`` then ``pip install -e .`` in the same environment
the left-over folders form an empty namespace package ``lastlayer`` that can shadow the
editable install (``from lastlayer.kernels import fwht`` then finds no ``fwht``; it was
``from kernels import fwht`` when the layers were installed as top-level packages). So every
cached kernel is decorated inside ``cache_directory()``, which points Numba's cache at

    $NUMBA_CACHE_DIR                        when set (Numba's own override: left to Numba),
    $XDG_CACHE_HOME/lastlayer/numba         (Linux; ~/.cache when XDG_CACHE_HOME is unset),
    ~/Library/Caches/lastlayer/numba        (macOS),  %LOCALAPPDATA%/lastlayer/numba (Windows),
    TMPDIR/lastlayer-numba-UID              when none of these is writable,

for the decorations only: Numba's setting is restored afterwards, so a user's own cached
functions are not moved. Numba keys each entry by the source file's directory and content
hash, so two installs (or an install and a source tree) never share one.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["cache_directory", "user_cache_dir"]


def user_cache_dir() -> Path:
    """The per-user folder for lastlayer's compiled kernels (module docstring)."""
    if sys.platform == "win32":  # pragma: no cover - not on the CI machine
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":  # pragma: no cover
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for folder in (base / "lastlayer" / "numba",
                   Path(tempfile.gettempdir()) / f"lastlayer-numba-{_uid()}"):
        if _writable(folder):
            return folder
    return folder  # neither is writable: Numba then compiles without a cache file


def _uid() -> str:
    return str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


@contextmanager
def cache_directory():
    """Numba functions decorated with ``cache=True`` inside this block keep their cache in
    ``user_cache_dir()`` (unless NUMBA_CACHE_DIR is set: then Numba's choice stands)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        yield
        return
    from numba.core import config

    previous = config.CACHE_DIR
    config.CACHE_DIR = str(user_cache_dir())
    try:
        yield
    finally:
        config.CACHE_DIR = previous
