"""The Layca step of one tensor, unfused: the single reference of the project.

``lastlayer.engine.optim.layca`` uses it for its unfused path, the tests and benchmarks of the fused
kernels (``lastlayer.kernels.layca``) compare against it. The four steps of Carbonnelle & De
Vleeschouwer's Algorithm 1 (docs/claims.md, section C), one array expression each, on the
flattened tensor, in the dtype of w (float32 stays float32; float64, or NumPy's extended
``longdouble`` for a more precise answer in tests):

    0. s <- s / max|s|                  a no-op mathematically (step 2 normalises), so that
                                        s.w cannot overflow or underflow for any finite scale
    1. s <- s - (s.w / w.w) w           tangent projection
    2. s <- s ||w|| / ||s||              rotation-based normalisation; a projected step with
                                        norm <= eps (measured before step 0's scaling) is zero
    3. w <- w - rho s
    4. w <- w r0 / ||w||                 back onto the sphere of radius r0 = ||w_0||

NaN / Inf entries of s are replaced by 0 first and counted (claim C4). A zero step skips
steps 1-3: the result is w rescaled to r0 (the fused kernels do the same; the Layca
transform leaves the weights untouched on a zero step). About fifteen passes over arrays of
w's size, against five for the fused kernels.
"""

from __future__ import annotations

import numpy as np

from .device import is_cupy_array
from .layca import LaycaInfo, check_numbers

__all__ = ["layca_reference"]


def layca_reference(w, s, rho: float, target_norm: float, *, eps: float = 1e-7):
    """One Layca step on a copy of w.

    Parameters
    ----------
    w : floating array of any shape (n >= 1 elements in all), NumPy or CuPy, not modified:
        the current kernel, of finite non-zero norm.
    s : array of w's kind, dtype and shape, not modified: the base rule's step (the
        direction w moves *against*), before any learning rate. NaN / Inf entries count as 0.
    rho : the layer's rate, finite, >= 0: a non-zero step turns w by exactly arctan(rho).
    target_norm : r0 = ||w_0||, finite, > 0: the norm of the result.
    eps : finite, >= 0: a projected step with norm <= eps is a zero step.

    Returns
    -------
    (w_new, info) : w_new a new array of w's shape and dtype with norm ``target_norm``;
        info a ``LaycaInfo`` (norm of w_new, zero step, number of non-finite entries of s).

    Raises ValueError / TypeError naming the argument for a w of norm 0 or with non-finite
    entries (the rotation is undefined), mismatched arrays, or rho, target_norm, eps out of
    range.
    """
    xp = _check_arrays(w, s)
    rho = float(check_numbers([rho], positive=False, name="rho")[0])
    target_norm = float(check_numbers([target_norm], positive=True, name="target_norm")[0])
    eps = float(check_numbers([eps], positive=False, name="eps")[0])
    w1 = w.reshape(-1)  # (n,)
    s1 = s.reshape(-1)  # (n,)
    finite = xp.isfinite(s1)
    nonfinite = int(s1.size - int(xp.count_nonzero(finite)))
    if nonfinite:
        s1 = xp.where(finite, s1, 0)  # (n,), w's dtype
    ww = xp.vdot(w1, w1)  # w.w, a scalar of w's dtype
    if not (bool(xp.isfinite(ww)) and ww > 0):
        raise ValueError(f"w: w.w = {ww}: the rotation is undefined for a w of norm 0, with "
                         f"non-finite entries, or whose squares overflow")
    scale = xp.abs(s1).max()
    zero = not scale > 0
    if not zero:
        u = s1 / scale  # step 0: entries in [-1, 1]
        u = u - (xp.vdot(u, w1) / ww) * w1  # step 1, (n,)
        u_norm = xp.linalg.norm(u)
        zero = bool(u_norm * scale <= eps)  # ||projected s|| <= eps
    if zero:
        new = w1 * (target_norm / xp.sqrt(ww))  # step 4 on the unchanged w
    else:
        u *= xp.sqrt(ww) / u_norm  # step 2: ||u|| = ||w||, u orthogonal to w
        new = w1 - rho * u  # step 3
        new *= target_norm / xp.linalg.norm(new)  # step 4
    info = LaycaInfo(float(xp.linalg.norm(new)), zero, nonfinite)
    return new.reshape(w.shape), info


def _check_arrays(w, s):
    """The array namespace of w and s (numpy or cupy) after checking that they are arrays
    of one kind, one floating dtype and one shape, with at least one element."""
    for name, x in (("w", w), ("s", s)):
        if not (isinstance(x, np.ndarray) or is_cupy_array(x)):
            raise TypeError(f"{name}: expected a NumPy or CuPy array, got {type(x).__name__}")
    if is_cupy_array(w) != is_cupy_array(s):
        raise TypeError(f"s: expected an array on w's device ({type(w).__name__}), got "
                        f"{type(s).__name__}")
    if np.dtype(w.dtype).kind != "f":
        raise TypeError(f"w: expected a floating dtype, got {w.dtype}")
    if s.dtype != w.dtype:
        raise TypeError(f"s: expected w's dtype {w.dtype}, got {s.dtype}")
    if tuple(s.shape) != tuple(w.shape):
        raise ValueError(f"s: expected w's shape {tuple(w.shape)}, got {tuple(s.shape)}")
    if w.size == 0:
        raise ValueError("w: expected at least one element, got an empty array")
    if is_cupy_array(w):
        import cupy

        return cupy
    return np
