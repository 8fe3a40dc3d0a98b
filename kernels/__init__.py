"""Compiled hot loops (Numba on the CPU, Numba-CUDA on CuPy arrays), each beside a plain
NumPy reference. This package imports only numpy and numba, never ``engine``."""
