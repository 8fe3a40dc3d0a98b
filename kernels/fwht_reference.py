"""The plain NumPy fast Walsh-Hadamard transform: the reference for tests and benchmarks.

One vectorised NumPy operation per butterfly level: viewing each row as (n / 2h, 2, h), the
level with stride h maps the pairs (a, b) = (v[:, 0, :], v[:, 1, :]) to (a + b, a - b).
After the levels h = 1, 2, 4, ..., n/2 the row holds H_n x (unnormalised, Sylvester order).
"""

from __future__ import annotations

import numpy as np


def fwht_reference(x: np.ndarray, normalized: bool = False) -> np.ndarray:
    """H_n x over the last axis (a new array); divided by sqrt(n) if ``normalized``."""
    x = np.asarray(x)
    n = x.shape[-1]
    if n & (n - 1) or n == 0:
        raise ValueError(f"x: the last axis must have a power-of-two length, got {n}")
    y = np.array(x, dtype=x.dtype, order="C", copy=True).reshape(-1, n)
    h = 1
    while h < n:
        v = y.reshape(len(y), n // (2 * h), 2, h)
        a = v[:, :, 0, :].copy()
        v[:, :, 0, :] += v[:, :, 1, :]
        v[:, :, 1, :] = a - v[:, :, 1, :]
        h *= 2
    if normalized:
        y *= y.dtype.type(1 / np.sqrt(n))
    return y.reshape(x.shape)
