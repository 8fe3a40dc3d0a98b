"""Compiled hot loops (Numba on the CPU, Numba-CUDA on CuPy arrays), each beside a plain
NumPy reference. This package imports only numpy and numba, never ``engine``.

* ``fwht(x, normalized=False, out=None)``: fast Walsh-Hadamard transform (``kernels.fwht``).
* ``layca_update`` / ``layca_update_many``: the fused Layca step of one or many tensors
  (``kernels.layca``), two passes over memory.

Numba's cache of the compiled kernels lives in a per-user folder, never inside the
installed package (``kernels.numba_cache``).
"""

from .numba_cache import cache_directory

with cache_directory():  # every module with a cached Numba kernel is imported here (numba_cache.py)
    from . import fwht_cpu, layca_cpu  # noqa: F401
    from .fwht import fwht
    from .layca import LaycaInfo, layca_update, layca_update_many

__all__ = ["fwht", "layca_update", "layca_update_many", "LaycaInfo"]
