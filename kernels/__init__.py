"""Compiled hot loops (Numba on the CPU, Numba-CUDA on CuPy arrays), each beside a plain
NumPy reference. This package imports only numpy and numba, never ``engine``.

* ``fwht(x, normalized=False, out=None)``: fast Walsh-Hadamard transform (``kernels.fwht``).
"""

from .fwht import fwht

__all__ = ["fwht"]
