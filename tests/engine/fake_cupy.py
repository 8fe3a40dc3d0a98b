"""A test double of CuPy: NumPy arrays that refuse to mix with NumPy, as CuPy's do.

The engine never imports CuPy; it asks ``lastlayer.engine.backend.array_module`` for the
namespace of its inputs, which returns ``sys.modules["cupy"]`` when they are
``cupy.ndarray`` instances. Registering ``make_module()`` there (``install(monkeypatch)``)
therefore sends every array of the type ``FakeDeviceArray`` down the engine's device path,
on a machine without a GPU.

What the double refuses, as CuPy does (a TypeError each time):

* implicit conversion to NumPy: ``np.asarray(a)``, ``np.ascontiguousarray(a)``, any NumPy
  function that needs a host array (``__array__`` raises, with CuPy's message);
* mixing with a ``numpy.ndarray`` (of any shape, 0-d included) in an operator, a ufunc
  (``a + h``, ``h * a``, ``np.add(a, h)``, ``a += h``) or a function of the namespace
  (``cupy.where(h, a, a)``, ``cupy.concatenate([a, h])``);
* a NumPy function CuPy does not implement, called on device arrays (``np.foo(a)``: the
  ``__array_function__`` protocol finds no CuPy function of that name).

Stricter than CuPy, on purpose: a ``numpy.ndarray`` used as an index or assigned into a
device array (``a[h_idx]``, ``a[k] = h``) is refused too. CuPy copies it to the device
silently; the engine's rule (``lastlayer.engine.backend``) is that host-device copies are explicit,
so a NumPy array reaching a device array that way is a finding, not a convenience.

Allowed, as in CuPy: Python and NumPy scalars as operands (``a * 2``, ``a / np.float64(3)``);
``float(a)``, ``int(a)``, ``bool(a)``, ``a.item()`` on one-element arrays (a synchronisation
on a GPU); the explicit copies ``cupy.asarray(h)`` / ``cupy.array(h)`` (host to device) and
``cupy.asnumpy(a)`` / ``a.get()`` (device to host). Reductions and integer indexing return
0-d device arrays, never NumPy scalars, as CuPy's do.

Underneath every operation is the NumPy operation on the wrapped arrays, in the same order,
so a computation on the double gives bit for bit the numbers of the same computation on
NumPy: the tests compare the two exactly.

The namespace is an explicit list (``FUNCTIONS``, ``LINALG``, ``DTYPES``) of names that
real CuPy has; a name the engine starts to use that is not listed is an AttributeError, and
is added here after checking that CuPy has it. ``cupy.random`` and ``cupy.cuda`` are not
provided: the engine draws on the host (``lastlayer.engine.streams``) and only ``kernels`` touches
CUDA (the tests stub the CUDA entry points they reach, e.g. ``lastlayer.kernels.fwht_cuda.fwht``).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["FakeDeviceArray", "FakeDevice", "make_module", "install", "device_leaves",
           "host_leaves"]

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
            "construct a NumPy array explicitly.")  # CuPy's own message

# Functions of the cupy namespace the engine calls through ``xp`` (all exist in CuPy).
FUNCTIONS = (
    "abs", "arange", "argmax", "ascontiguousarray", "concatenate", "count_nonzero", "dot",
    "einsum", "empty", "empty_like", "exp", "full", "isfinite", "log", "matmul", "maximum",
    "minimum", "ones", "ones_like", "pad", "sign", "sqrt", "stack", "sum", "tanh", "tensordot",
    "vdot", "where", "zeros", "zeros_like",
)
LINALG = ("norm", "qr", "solve", "cholesky", "eigh", "inv")
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "intp", "uint8",
          "uint16", "uint32", "uint64", "bool_", "complex64", "complex128")
# ndarray methods delegated to NumPy (all exist on cupy.ndarray)
METHODS = frozenset((
    "all", "any", "argmax", "argmin", "astype", "clip", "copy", "cumsum", "dot", "fill",
    "flatten", "max", "mean", "min", "nonzero", "prod", "ravel", "reshape", "squeeze", "std",
    "sum", "swapaxes", "take", "transpose", "var", "view",
))


class FakeDevice:
    """``a.device`` of every FakeDeviceArray: one device, id 0 (compared by ``==``)."""

    id = 0

    def __eq__(self, other):
        return isinstance(other, FakeDevice)

    def __hash__(self):
        return 0

    def __repr__(self):
        return "<FakeDevice 0>"


_DEVICE = FakeDevice()


def _refuse(where: str) -> TypeError:
    return TypeError(f"{where}: a numpy.ndarray met a device array (FakeDeviceArray); CuPy "
                     f"refuses this too: move it explicitly (cupy.asarray / lastlayer.engine.backend.to_device)")


def _unwrap(x: Any, where: str) -> Any:
    """FakeDeviceArray -> its NumPy array; a NumPy array -> TypeError; containers recursively."""
    if isinstance(x, FakeDeviceArray):
        return x._a
    if isinstance(x, np.ndarray):
        raise _refuse(where)
    if isinstance(x, list):
        return [_unwrap(v, where) for v in x]
    if isinstance(x, tuple):
        return tuple(_unwrap(v, where) for v in x)
    return x  # Python and NumPy scalars, None, slices, Ellipsis, dtypes, strings


def _wrap(x: Any) -> Any:
    """NumPy results -> device arrays (NumPy scalars become 0-d arrays, as in CuPy)."""
    if isinstance(x, np.ndarray):
        return FakeDeviceArray(x)
    if isinstance(x, np.generic):
        return FakeDeviceArray(np.asarray(x))
    if isinstance(x, tuple):  # qr, nonzero, ... (also NamedTuple results: plain tuples here)
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class FakeDeviceArray(NDArrayOperatorsMixin):
    """A NumPy array standing for a CuPy array on a GPU (see the module docstring).

    Operators come from ``NDArrayOperatorsMixin`` and run through ``__array_ufunc__``, so
    ``a + b``, ``a += b`` (in place), ``a @ b``, ``~a``, ``a > 0`` are NumPy's, on the
    wrapped arrays, and refuse a NumPy operand.
    """

    __slots__ = ("_a",)

    def __init__(self, a: np.ndarray):
        if type(a) is not np.ndarray:
            raise TypeError(f"FakeDeviceArray wraps a numpy.ndarray, got {type(a).__name__}")
        self._a = a

    # ---- the two NumPy protocols --------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        args = [_unwrap(x, where) for x in inputs]
        out = kwargs.get("out")
        for key in ("out", "where"):
            if key in kwargs:
                kwargs[key] = _unwrap(kwargs[key], where)
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:  # written in place: hand back the caller's device arrays
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        name = func.__name__
        if name not in FUNCTIONS and name not in LINALG:
            return NotImplemented  # CuPy has no such function: NumPy raises a TypeError
        where = f"numpy.{name}"
        return _wrap(func(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()}))

    # ---- attributes -----------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    device = property(lambda self: _DEVICE)
    T = property(lambda self: FakeDeviceArray(self._a.T))

    def __getattr__(self, name):
        if name not in METHODS:
            raise AttributeError(f"FakeDeviceArray has no attribute {name!r} (the double "
                                 f"delegates only the cupy.ndarray methods in fake_cupy.METHODS)")
        method = getattr(self._a, name)
        where = f"cupy.ndarray.{name}"

        def call(*args, **kwargs):
            return _wrap(method(*_unwrap(args, where),
                                **{k: _unwrap(v, where) for k, v in kwargs.items()}))

        return call

    # ---- indexing -------------------------------------------------------------------
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, "cupy.ndarray.__getitem__ (index)")])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, "cupy.ndarray.__setitem__ (index)")] = \
            _unwrap(value, "cupy.ndarray.__setitem__ (value)")

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    # ---- explicit copies to the host, and scalars (a synchronisation on a GPU) --------
    def get(self) -> np.ndarray:
        return self._a.copy()

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __format__(self, spec):
        return format(self._a, spec)

    def __repr__(self):
        return f"FakeDeviceArray({self._a!r})"


def _function(name: str, numpy_function):
    where = f"cupy.{name}"

    def call(*args, **kwargs):
        args, kwargs = _unwrap(args, where), {k: _unwrap(v, where) for k, v in kwargs.items()}
        return _wrap(numpy_function(*args, **kwargs))

    call.__name__ = name
    return call


def _asarray(a, dtype=None, order=None):
    """Host data (a NumPy array, a list, a scalar) is copied to the device; a device array
    is returned as it is (converted if ``dtype`` differs), as ``cupy.asarray`` does."""
    if isinstance(a, FakeDeviceArray):
        return FakeDeviceArray(np.asarray(a._a, dtype=dtype, order=order))
    return FakeDeviceArray(np.array(a, dtype=dtype, order=order, copy=True))


def _array(a, dtype=None, copy=True, order="K"):
    if isinstance(a, FakeDeviceArray):
        return FakeDeviceArray(np.array(a._a, dtype=dtype, copy=copy, order=order))
    return FakeDeviceArray(np.array(a, dtype=dtype, copy=True, order=order))


def _asnumpy(a):
    """Device -> host copy; NumPy input is returned as a NumPy array (as in CuPy)."""
    return a.get() if isinstance(a, FakeDeviceArray) else np.asarray(a)


def make_module() -> types.ModuleType:
    """A fresh module named ``cupy`` with the namespace above."""
    cp = types.ModuleType("cupy", "Test double of CuPy (tests/engine/fake_cupy.py)")
    cp.ndarray = FakeDeviceArray
    cp.asarray, cp.array, cp.asnumpy = _asarray, _array, _asnumpy
    cp.get_array_module = lambda *arrays: cp if any(
        isinstance(a, FakeDeviceArray) for a in arrays) else np
    for name in FUNCTIONS:
        setattr(cp, name, _function(name, getattr(np, name)))
    cp.linalg = types.ModuleType("cupy.linalg")
    for name in LINALG:
        setattr(cp.linalg, name, _function(f"linalg.{name}", getattr(np.linalg, name)))
    for name in DTYPES:
        setattr(cp, name, getattr(np, name))
    cp.dtype, cp.newaxis, cp.pi, cp.inf, cp.nan = np.dtype, None, np.pi, np.inf, np.nan
    return cp


def install(monkeypatch) -> types.ModuleType:
    """Register a fresh double as ``sys.modules["cupy"]`` for one test; returns it."""
    cp = make_module()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    return cp


def _leaves(tree: Any):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree


def device_leaves(tree: Any) -> list:
    """The FakeDeviceArray leaves of a nest of dicts, lists and (named) tuples."""
    return [x for x in _leaves(tree) if isinstance(x, FakeDeviceArray)]


def host_leaves(tree: Any) -> list:
    """The numpy.ndarray and NumPy-scalar leaves: on the device path there must be none."""
    return [x for x in _leaves(tree) if isinstance(x, (np.ndarray, np.generic))]
