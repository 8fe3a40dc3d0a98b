"""Where an array lives, and whether the CUDA kernels can run: the one place that asks.

* ``is_cupy_array(x)``: a ``cupy.ndarray``. CuPy is never imported here: if nobody has
  imported it, no array can be a CuPy array, and the answer is False at no cost.
* ``is_numba_device_array(x)``: a Numba-CUDA device array (real, or the CUDA simulator's).
* ``is_device_array(x)``: either of the two; the CUDA kernels accept both.
* ``require_cuda(who)``: raise a RuntimeError that says what to do unless a CUDA GPU (or
  the simulator, ``NUMBA_ENABLE_CUDASIM=1``) is available; cached once it succeeds.
* ``cupy_stream()``: CuPy's current stream as a Numba stream, so that kernels launched on
  it run in order with CuPy's own work.

``lastlayer.engine.backend`` uses ``is_cupy_array`` too, so the engine and the kernels agree on
what a device array is.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

__all__ = ["is_cupy_array", "is_numba_device_array", "is_device_array", "require_cuda",
           "cupy_stream"]


def is_cupy_array(x: Any) -> bool:
    """True if ``x`` is a ``cupy.ndarray`` (CuPy is not imported to find out)."""
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def is_numba_device_array(x: Any) -> bool:
    """True for a Numba-CUDA device array, including the CUDA simulator's."""
    return type(x).__module__.startswith("numba.cuda")


def is_device_array(x: Any) -> bool:
    """A CuPy array or a Numba device array: what the CUDA kernels run on."""
    return is_cupy_array(x) or is_numba_device_array(x)


@functools.cache  # an exception is not cached: a later call asks again
def require_cuda(who: str) -> None:
    """Raise a RuntimeError naming ``who`` (e.g. "lastlayer.kernels.fwht_cuda") unless a CUDA GPU
    with a working driver, or Numba's CUDA simulator, can run the kernels."""
    from numba import cuda

    if not cuda.is_available():
        raise RuntimeError(
            f"no CUDA device: {who} needs an NVIDIA GPU with a working driver and CUDA "
            f"toolkit (numba.cuda.is_available() is False; numba.cuda.detect() says why). "
            f"Pass NumPy arrays to use the CPU kernels, or set NUMBA_ENABLE_CUDASIM=1 before "
            f"importing numba to run on the (slow) CUDA simulator.")


def cupy_stream():
    """CuPy's current stream as a Numba stream (the legacy default stream when CuPy uses
    it), for launching Numba kernels on CuPy arrays without synchronising."""
    import cupy
    from numba import cuda

    ptr = cupy.cuda.get_current_stream().ptr
    return cuda.external_stream(ptr) if ptr else cuda.legacy_default_stream()
