"""Arrays read by row ranges, in memory or on disk, for solvers that stream their data.

``ArraySource`` names a 1-D or 2-D array and reads rows ``[start, stop)`` of it as NumPy.
It holds only strings and numbers (plus the array itself for in-memory data), so it can be
pickled to Dask workers, each of which opens the file and reads its own chunks: the data
never travels through the client. Supported:

* a NumPy array in memory (``ArraySource.memory``);
* ``file.npy`` (memory-mapped: only the rows asked for are read);
* ``file.npz:name`` (a member of an .npz archive; loaded whole, once per process);
* ``file.h5:dataset/path`` (an HDF5 dataset, read by hyperslab);
* ``dir.zarr`` or ``dir.zarr:name`` (a Zarr array, or an array inside a Zarr group).

``open_source(spec, what)`` parses those forms and checks that the file and the dataset
exist, naming ``what`` (e.g. "FEATURES") in the error, and the arrays the file holds when
the name is missing or wrong (``array_names``). ``row_chunks(n, rows)`` cuts N rows
into ranges; ``check_chunk`` refuses a chunk holding NaN or Inf, naming its row range.
"""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ArraySource", "open_source", "array_names", "row_chunks", "ranges_of", "fold_edges",
           "check_chunk", "default_chunk_rows"]

KINDS = ("memory", "npy", "npz", "h5", "zarr")


@dataclass(frozen=True)
class ArraySource:
    kind: str
    path: str = ""
    name: str = ""
    shape: tuple[int, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))
    array: Any = field(default=None, repr=False, compare=False)  # "memory" only

    @classmethod
    def memory(cls, array: np.ndarray) -> ArraySource:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"expected a NumPy array, got {type(array).__name__}")
        return cls("memory", shape=tuple(array.shape), dtype=array.dtype, array=array)

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 0

    @property
    def label(self) -> str:
        """How error messages call it: the file spec, or "the array"."""
        if self.kind == "memory":
            return "the array"
        return self.path + (f":{self.name}" if self.name else "")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a NumPy array (a copy for files, a view in memory); a file
        that cannot be read (truncated, a bad checksum) is a ValueError naming it."""
        if self.kind == "memory":
            return self.array[start:stop]
        try:
            return np.asarray(_handle(self.kind, self.path, self.name)[start:stop])
        except UNREADABLE as err:
            raise ValueError(f"{self.label}: cannot read rows {start}-{stop - 1} "
                             f"({type(err).__name__}: {err})") from None


# What a damaged file raises: zip errors for .npz (a truncated archive, a bad CRC), OSError
# for HDF5 and .npy, ValueError / KeyError for malformed headers.
UNREADABLE = (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile)


@functools.lru_cache(maxsize=16)
def _handle(kind: str, path: str, name: str):
    """An open array for reading rows (cached per process: workers reuse it)."""
    if kind == "npy":
        return np.load(path, mmap_mode="r")
    if kind == "npz":
        with np.load(path) as archive:
            return archive[name]
    if kind == "h5":
        import h5py

        return h5py.File(path, "r")[name]
    import zarr

    root = zarr.open(path, mode="r")
    return root[name] if name else root


def _fail(what: str, message: str):
    raise ValueError(f"{what}: {message}")


def open_source(spec: str, what: str = "array") -> ArraySource:
    """An ``ArraySource`` for ``file.npy``, ``file.npz:name``, ``file.h5:path`` or
    ``dir.zarr[:name]``; a ValueError naming ``what`` if the file or the array is missing
    or is not a 1-D or 2-D numeric array."""
    if not isinstance(spec, str) or not spec:
        _fail(what, f"expected a file name like data.npy, data.h5:features or data.zarr, got {spec!r}")
    base, _, name = spec.partition(":")
    lower = base.lower().rstrip("/")
    kind = ("npy" if lower.endswith(".npy") else "npz" if lower.endswith(".npz")
            else "h5" if lower.endswith((".h5", ".hdf5")) else "zarr" if lower.endswith(".zarr")
            else None)
    if kind is None:
        _fail(what, f"{spec!r}: expected a .npy, .npz:NAME, .h5:DATASET or .zarr[:NAME] file")
    if not os.path.exists(base):
        _fail(what, f"{spec!r}: no such {'directory' if kind == 'zarr' else 'file'} {base!r}")
    if kind in ("npz", "h5") and not name:
        _fail(what, f"{spec!r}: say which array, e.g. {base}:{_example(kind, base)}{_holding(kind, base)}")
    if kind == "npy" and name:
        _fail(what, f"{spec!r}: a .npy file holds one array; drop ':{name}'")
    try:
        handle = _open_checked(kind, base, name)
    except UNREADABLE as err:
        _fail(what, f"{spec!r}: cannot read it ({type(err).__name__}: {err})")
    if handle is None:
        if kind == "zarr" and not name:
            _fail(what, f"{spec!r} is a Zarr group, not an array: say which array, e.g. "
                        f"{base}:{_example(kind, base)}{_holding(kind, base)}")
        _fail(what, f"{spec!r}: no array {name!r} in {base!r}{_holding(kind, base)}")
    shape, dtype = tuple(int(s) for s in handle.shape), np.dtype(handle.dtype)
    if len(shape) not in (1, 2) or dtype.kind not in "fiub":
        _fail(what, f"{spec!r}: expected a 1-D or 2-D numeric array, got {dtype} {shape}")
    return ArraySource(kind, base, name, shape, dtype)


def array_names(kind: str, path: str) -> list[str]:
    """The names of the arrays an .npz archive, an HDF5 file or a Zarr group holds (nested
    ones as ``group/name``), sorted; [] if it cannot be read."""
    try:
        if kind == "npz":
            with np.load(path) as archive:
                return sorted(archive.files)
        if kind == "h5":
            import h5py

            names: list[str] = []
            with h5py.File(path, "r") as f:
                f.visititems(lambda key, obj: names.append(key) if isinstance(obj, h5py.Dataset) else None)
            return sorted(names)
        if kind == "zarr":
            import zarr

            root = zarr.open(path, mode="r")
            if hasattr(root, "shape"):
                return []
            return sorted(key for key, obj in root.members(max_depth=None) if hasattr(obj, "shape"))
    except UNREADABLE:
        pass
    return []


def _holding(kind: str, path: str, limit: int = 20) -> str:
    names = array_names(kind, path)
    if not names:
        return " (it holds no array)" if kind != "npy" else ""
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return f" (it holds: {shown})"


def _example(kind: str, path: str) -> str:
    names = array_names(kind, path)
    return names[0] if names else ("features" if kind != "npz" else "arr_0")


def _open_checked(kind: str, path: str, name: str):
    if kind == "npz":
        with np.load(path) as archive:
            if name not in archive.files:
                return None
    if kind == "h5":
        import h5py

        with h5py.File(path, "r") as f:
            if name not in f or not isinstance(f[name], h5py.Dataset):
                return None
    if kind == "zarr":
        import zarr

        root = zarr.open(path, mode="r")
        if name:
            if hasattr(root, "shape") or name not in root or not hasattr(root[name], "shape"):
                return None
        elif not hasattr(root, "shape"):
            return None
    return _handle(kind, path, name)


def default_chunk_rows(d: int, itemsize: int = 8, budget_bytes: int = 32 << 20) -> int:
    """Rows per chunk so that a chunk of d float64 columns stays near ``budget_bytes``."""
    return max(256, budget_bytes // max(1, d * max(itemsize, 8)))


def row_chunks(n: int, rows: int) -> list[tuple[int, int]]:
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def ranges_of(pieces, chunk_rows: int) -> list[tuple[int, int]]:
    """Chunk ranges covering the row intervals ``pieces`` [(start, stop), ...]."""
    out = []
    for lo, hi in pieces:
        out += [(s + lo, e + lo) for s, e in row_chunks(hi - lo, chunk_rows)]
    return out


def check_chunk(values: np.ndarray, start: int, what: str) -> None:
    """Refuse non-finite entries, naming the row range they are in."""
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1)) + start
            count = int(bad.sum())
            where = f"row {rows[0]}" if rows[0] == rows[-1] else f"rows {rows[0]}-{rows[-1]}"
            raise ValueError(f"{what}: {count} NaN/Inf entr{'y' if count == 1 else 'ies'} in {where} "
                             f"(in the chunk of rows {start}-{start + len(values) - 1})")


def fold_edges(n: int, k: int) -> np.ndarray:
    """Row boundaries of K contiguous folds as scikit-learn's KFold(k) cuts them (the
    first n % k folds one row longer): (K + 1,) int64."""
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    return np.concatenate([[0], np.cumsum(sizes)])
