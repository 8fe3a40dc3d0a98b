"""Files that are either written whole or not at all.

``atomic_path`` hands out a temporary file name in the destination's directory (a symbolic
link's target's); when the
block succeeds the file is fsynced and renamed over the destination (``os.replace`` is
atomic on POSIX and Windows), and the directory entry is fsynced too. A crash or an
exception midway leaves the previous file untouched and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "atomic_write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Context manager yielding a temporary ``Path`` to write to; it becomes ``path`` on
    success only. Used for HDF5 files, which h5py opens by name. A symbolic link is followed:
    its target is replaced and the link stays (the rename would otherwise replace the link
    itself and leave the file it names as it was)."""
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: directory {str(path.parent)!r} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs):
    """Context manager yielding a file object; the file appears at ``path`` on success only.

    ``mode`` is "w" (text, UTF-8 unless ``encoding`` is given) or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path, "w") as f:
        f.write(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
