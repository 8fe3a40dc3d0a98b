"""Compiled hot loops (Numba on the CPU, Numba-CUDA on CuPy arrays), each beside a plain
NumPy reference. This package imports only numpy and numba, never ``engine``.

* ``fwht(x, normalized=False, out=None)``: fast Walsh-Hadamard transform
  (``lastlayer.kernels.fwht``).
* ``layca_update`` / ``layca_update_many``: the fused Layca step of one or many tensors
  (``lastlayer.kernels.layca``), two passes over memory.
* ``maxpool2d`` / ``maxpool2d_backward``: max pooling in one pass (``lastlayer.kernels.pool``).
* ``im2col`` / ``col2im``: the convolution's window copies (``lastlayer.kernels.im2col``).

Numba's cache of the compiled kernels lives in a per-user folder, never inside the
installed package (``lastlayer.kernels.numba_cache``).
"""

from .numba_cache import cache_directory

with cache_directory():  # every module with a cached Numba kernel is imported here (numba_cache.py)
    from . import fwht_cpu, im2col_cpu, layca_cpu, pool_cpu  # noqa: F401
    from .fwht import fwht
    from .layca import LaycaInfo, layca_update, layca_update_many
    from .im2col import col2im, im2col
    from .pool import maxpool2d, maxpool2d_backward

__all__ = ["fwht", "layca_update", "layca_update_many", "LaycaInfo", "maxpool2d",
           "maxpool2d_backward", "im2col", "col2im"]
