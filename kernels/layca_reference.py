"""The plain NumPy Layca step, unfused: the reference for tests and benchmarks.

The four steps of Carbonnelle & De Vleeschouwer's Algorithm 1 (CLAIMS.md section C), one
NumPy expression each, computed in the dtype of w (float32 stays float32, as in the paper's
code), on the flattened tensor:

    1. s <- s - (s.w / w.w) w          tangent projection
    2. s <- s ||w|| / ||s||             rotation-based normalisation; ||s|| <= eps: zero step
    3. w <- w - rho s
    4. w <- w r0 / ||w||

NaN/Inf entries of s are replaced by 0 first and counted (claim C4). About fifteen passes over
arrays of w's size, against five for the fused kernels (``kernels.layca``).
"""

from __future__ import annotations

import numpy as np

from .layca import LaycaInfo


def layca_reference(w: np.ndarray, s: np.ndarray, rho: float, target_norm: float,
                    eps: float = 1e-7) -> tuple[np.ndarray, LaycaInfo]:
    """One Layca step on a copy of w.

    w, s : float32 or float64 arrays of one shape (any), not modified.
    rho : the layer's rate (>= 0); target_norm : r0 = ||w_0|| (> 0); eps : zero-step threshold.

    Returns (the updated w, a new array of w's shape and dtype; its ``LaycaInfo``).
    Raises ValueError when ||w|| is 0 or not finite (the rotation is undefined).
    """
    w1 = np.asarray(w).reshape(-1)  # (n,)
    s1 = np.asarray(s).reshape(-1)  # (n,)
    finite = np.isfinite(s1)
    nonfinite = s1.size - int(np.count_nonzero(finite))
    if nonfinite:
        s1 = np.where(finite, s1, 0)  # (n,), w's dtype
    ww = np.dot(w1, w1)
    if not (np.isfinite(ww) and ww > 0):
        raise ValueError(f"w: w.w = {ww}: the rotation is undefined for a w of norm 0 or not finite")
    p = s1 - (np.dot(s1, w1) / ww) * w1  # step 1, (n,)
    pnorm = np.linalg.norm(p)
    zero = bool(pnorm <= eps)
    if zero:
        new = w1.copy()  # step 3 with s = 0
    else:
        p *= np.sqrt(ww) / pnorm  # step 2
        new = w1 - rho * p  # step 3
    new *= target_norm / np.linalg.norm(new)  # step 4
    info = LaycaInfo(float(np.linalg.norm(new)), zero, nonfinite)
    return new.reshape(np.shape(w)), info
