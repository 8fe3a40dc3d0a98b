"""Sylvester-Hadamard matrices without storing them.

H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]], so that entry (i, j) of H_n (n = 2^k) is

    H[i, j] = (-1)^popcount(i & j)

(each bit position where both i and j have a 1 contributes one sign flip). H is symmetric,
H H^T = n I, and it is the matrix that ``fwht`` applies: fwht(x) = H x (unnormalised).
"""

from __future__ import annotations

import numpy as np

__all__ = ["hadamard_entry", "hadamard_rows", "dense_hadamard", "next_power_of_two", "log2_exact"]


def next_power_of_two(n: int) -> int:
    """Smallest 2^k >= n (1 for n <= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


def log2_exact(n: int) -> int:
    """k with n == 2^k, or -1 if n is not a power of two (n >= 1)."""
    return n.bit_length() - 1 if n >= 1 and n & (n - 1) == 0 else -1


def _popcount_parity(v: np.ndarray) -> np.ndarray:
    """popcount(v) mod 2 for non-negative int64 arrays (XOR-folding the bits)."""
    v = v.astype(np.uint64, copy=True)
    for shift in (32, 16, 8, 4, 2, 1):
        v ^= v >> np.uint64(shift)
    return (v & np.uint64(1)).astype(np.int64)


def hadamard_entry(i, j) -> np.ndarray:
    """H[i, j] = (-1)^popcount(i & j) for integer arrays (or scalars) i, j >= 0, as int8."""
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    if (i < 0).any() or (j < 0).any():
        raise ValueError("i, j: Hadamard indices must be >= 0")
    return (1 - 2 * _popcount_parity(i & j)).astype(np.int8)


def hadamard_rows(rows, n_cols: int, dtype=np.float64) -> np.ndarray:
    """Rows ``rows`` of H restricted to its first ``n_cols`` columns, generated on the fly:
    shape (len(rows), n_cols). (The truncated Hadamard head's Q is ``hadamard_rows(range(C),
    N)``; it is built only where a dense product is cheaper than the transform.)"""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 1)
    return hadamard_entry(rows, np.arange(n_cols, dtype=np.int64)[None, :]).astype(dtype)


def dense_hadamard(n: int, dtype=np.float64) -> np.ndarray:
    """The full n x n Sylvester-Hadamard matrix by the Kronecker recursion (tests only)."""
    if log2_exact(n) < 0:
        raise ValueError(f"n: expected a power of two, got {n}")
    h = np.ones((1, 1), dtype=dtype)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h
