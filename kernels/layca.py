"""``layca_update``: the Layca step of one kernel tensor, or of a list of them, fused into two
passes over memory, on NumPy (Numba) or device (Numba-CUDA) arrays.

Layca (Carbonnelle & De Vleeschouwer, "Layer rotation", Algorithm 1; docs/claims.md section C),
for a kernel w (flattened, any shape), the base optimizer's step s (its update direction
before the learning rate), the layer's rate rho and target norm r0 = ||w_0||:

    1. s <- s - (s.w / w.w) w          project onto the tangent space of the sphere at w
    2. s <- s ||w|| / ||s||             rotation-based normalisation; ||s|| <= eps: s <- 0
    3. w <- w - rho s
    4. w <- w r0 / ||w||                back onto the sphere of radius r0

Fused form. Pass 1 reads w and s once and returns four float64 sums: ww = w.w, sw = s.w,
ss = s.s and the number of non-finite entries of s (which count as 0 everywhere). Then,
with k = sw / ww and p = s - k w (the projected step), ||p||^2 = ss - sw^2 / ww, and the
normalised step s_n = p ||w|| / ||p|| is orthogonal to w with norm ||w||, so
||w - rho s_n|| = ||w|| sqrt(1 + rho^2) in closed form and steps 1-4 are one affine map:

    w <- a w + b s,   c = r0 / (||w|| sqrt(1 + rho^2)),
                      a = c (1 + rho sw / (||w|| ||p||)),   b = -c rho ||w|| / ||p||,

or a = r0 / ||w||, b = 0 for a zero step (||p|| <= eps). Pass 2 applies it (reading w and
s, writing w) and sums the squares of the stored result, so the returned norm is measured,
not assumed: five array passes in all, against about fifteen for the unfused NumPy steps
(``lastlayer.kernels.layca_reference``).

Cancellation. ss - sw^2 / ww loses log2(ss / ||p||^2) bits when s is nearly parallel to w.
All sums are accumulated in float64, also for float32 data (whose products are then exact).
When ||p||^2 <= ``config.LAYCA_CANCELLATION_RATIO`` * ss (default 2^-4: angle(s, w) below
14.5 degrees, at most 4 bits lost otherwise) ||p||^2 is recomputed directly as
sum((s - k w)^2) in one extra read pass, which is as accurate as the unfused step 1. So the
fused result agrees with the unfused one to a few roundings at any angle (both then err by
about 1e-16 / sin(angle) in float64; tests/kernels/test_layca.py compares them with an
extended-precision answer), and in float32 it is the float64 result rounded once, closer to
exact than float32 NumPy. The closed form for the norm after the step assumes the
normalised step exactly orthogonal to w, which it is only to ~1e-16 / sin(angle): those
same tensors are then rescaled to r0 after pass 2, as step 4 of the unfused form does, in
one more read-write pass, so their norm is r0 to rounding as well. Only steps nearly
parallel to w pay the extra passes.

Degenerate inputs (claim C4): NaN/Inf entries of s are treated as 0 and counted; a zero step
only rescales w to r0 (no change when ||w|| = r0, to rounding). A w of norm 0 (the rotation
is undefined), with non-finite entries, or whose squares overflow float64, and an s whose
finite entries overflow float64 when squared, raise a ValueError naming the tensor. All
tensors are checked after pass 1 and before any is written: on an error nothing is modified.
A step that shares memory with a w (other than being that w itself, which is a zero step),
and tensors of ws that overlap, are refused before pass 1: w is written while s is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numba import njit

from . import config
from .device import is_device_array, is_numba_device_array

__all__ = ["LaycaInfo", "StepOverflowError", "layca_update", "layca_update_many"]


class StepOverflowError(ValueError):
    """A step s with finite entries whose sums s.s or s.w overflow float64 (entries beyond
    about 1e154): the fused kernels do not rescale s, the unfused reference does. Raised
    before anything is written."""


class LaycaInfo(NamedTuple):
    """What one Layca update did to one tensor."""

    norm: float  # ||w|| after the update (measured on the stored values, in float64)
    zero_step: bool  # the projected step had norm <= eps: w was only rescaled to r0
    nonfinite: int  # entries of s that were NaN or +-Inf (treated as 0)


def layca_update(w, s, rho: float, target_norm: float, *, eps: float = 1e-7) -> LaycaInfo:
    """One Layca step on one kernel tensor, in place on ``w`` (steps 1-4 in the module doc).

    Parameters
    ----------
    w : float32 or float64 array of any shape (n elements in all, n >= 1), updated in place:
        a NumPy array (Numba CPU kernels), or a CuPy or Numba device array (CUDA kernels).
        Any layout (a non-contiguous w is updated through a contiguous copy).
    s : the base optimizer's step, same kind of array, dtype and shape as w; not modified.
        It may be w itself (a zero step), but not otherwise share memory with w (a
        ValueError: w is written while s is read).
    rho : the layer's rate, finite, >= 0. A non-zero step turns w by exactly arctan(rho).
    target_norm : r0 = ||w_0||, finite, > 0: ||w|| after the step.
    eps : a projected step with norm <= eps is a zero step (the paper code's 1e-7).

    Returns a ``LaycaInfo`` (norm after, zero step, number of non-finite entries of s).
    """
    return _update([w], [s], [rho], [target_norm], eps, many=False)[0]


def layca_update_many(ws: Sequence, ss: Sequence, rhos: Sequence[float],
                      target_norms: Sequence[float], *, eps: float = 1e-7) -> list[LaycaInfo]:
    """``layca_update`` of every tensor of a list, in one pass 1 and one pass 2 for all.

    ws, ss : sequences of T arrays as for ``layca_update`` (ss[t] matches ws[t] in dtype and
        shape; dtypes may differ between tensors; all on the CPU or all on the GPU). The
        tensors of ws must not overlap each other, nor any step a w (a ValueError).
    rhos, target_norms : sequences (or 1-D arrays) of T numbers, as for ``layca_update``.

    Returns T ``LaycaInfo`` records, in order. On the CPU the parallel work is spread over
    all tensors at once (lastlayer.kernels.layca_cpu); nothing is modified when any input is invalid.
    """
    count = len(ws)
    for name, seq in (("ss", ss), ("rhos", rhos), ("target_norms", target_norms)):
        if len(seq) != count:
            raise ValueError(f"{name}: expected {count} entries (one per tensor of ws), got {len(seq)}")
    return _update(list(ws), list(ss), rhos, target_norms, eps, many=True)


def _names(many: bool, t: int) -> tuple[str, str, str, str]:
    """How the error messages call w, s, rho and target_norm of tensor t."""
    if many:
        return f"ws[{t}]", f"ss[{t}]", f"rhos[{t}]", f"target_norms[{t}]"
    return "w", "s", "rho", "target_norm"


def _kind(x) -> str | None:
    """'numpy', 'device' (CuPy or Numba device array) or None for anything else."""
    if isinstance(x, np.ndarray):
        return "numpy"
    return "device" if is_device_array(x) else None


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_pair(w, s, kind: str, many: bool, t: int) -> None:
    """Raise a clear error unless w and s are float32/float64 arrays of one dtype and shape,
    of the same kind as the first tensor (all on the CPU or all on the GPU)."""
    wname, sname = _names(many, t)[:2]
    if _kind(w) is None:
        raise TypeError(f"{wname}: expected a NumPy array, or a CuPy or Numba device array, "
                        f"got {type(w).__name__}")
    where = {"numpy": "a NumPy array", "device": "a device (CuPy or Numba) array"}
    if _kind(w) != kind:
        raise TypeError(f"{wname}: expected {where[kind]} like {_names(many, 0)[0]}, "
                        f"got {type(w).__name__}")
    if _kind(s) != kind:
        raise TypeError(f"{sname}: expected {where[kind]} like {wname}, got {type(s).__name__}")
    if w.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{wname}: expected dtype float32 or float64, got {np.dtype(w.dtype)}")
    if s.dtype != w.dtype:
        raise TypeError(f"{sname}: expected dtype {np.dtype(w.dtype)} ({wname}'s dtype), "
                        f"got {np.dtype(s.dtype)}")
    if tuple(s.shape) != tuple(w.shape):
        raise ValueError(f"{sname}: expected shape {tuple(w.shape)} ({wname}'s shape), got {tuple(s.shape)}")
    if kind == "numpy" and not w.flags.writeable:
        raise ValueError(f"{wname}: the array is read-only (it is updated in place)")
    if kind == "device" and is_numba_device_array(w):
        for name, x in ((wname, w), (sname, s)):
            if not x.is_c_contiguous():
                raise ValueError(f"{name}: expected a C-contiguous Numba device array (CuPy "
                                 f"arrays may have any layout)")


def _byte_span(x) -> tuple[int, int] | None:
    """[lo, hi) of the bytes ``x`` spans (NumPy, or a device array's
    ``__cuda_array_interface__``); None for an empty array or one that says nothing."""
    if isinstance(x, np.ndarray):
        if x.size == 0:
            return None
        return tuple(int(v) for v in np.lib.array_utils.byte_bounds(x))
    iface = getattr(x, "__cuda_array_interface__", None)
    if iface is None or not iface.get("shape") or 0 in iface["shape"]:
        return None
    itemsize = np.dtype(iface["typestr"]).itemsize
    shape = iface["shape"]
    strides = iface.get("strides") or tuple(int(np.prod(shape[i + 1:])) * itemsize for i in range(len(shape)))
    ptr = int(iface["data"][0])
    low = sum(min(0, (n - 1) * st) for n, st in zip(shape, strides))
    high = sum(max(0, (n - 1) * st) for n, st in zip(shape, strides))
    return ptr + low, ptr + high + itemsize


def _layout(x):
    iface = getattr(x, "__array_interface__", None) or getattr(x, "__cuda_array_interface__", None)
    return None if iface is None else (iface["data"][0], tuple(iface["shape"]), iface.get("strides"))


def _same_view(a, b) -> bool:
    """``s`` is ``w`` itself (the same elements in the same layout): allowed, since the
    projected step is then exactly 0 and pass 2 reads s only through b = 0."""
    return a is b or (_layout(a) is not None and _layout(a) == _layout(b))


def _share(a, b) -> bool:
    """Whether two arrays whose byte spans overlap share an element (exact for NumPy, when
    cheap; device arrays and hard cases: their spans overlap, so assume they do)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        try:
            return bool(np.shares_memory(a, b, max_work=1 << 16))
        except np.exceptions.TooHardError:
            return True
    return True


def _check_no_overlap(ws: list, ss: list, many: bool) -> None:
    """A ValueError when a step s shares memory with a w (every w is overwritten in place
    while the steps are read; s_t being w_t itself is allowed: ``_same_view``), or two
    tensors of ws overlap; nothing has been written yet.
    A sweep over the byte spans sorted by start: O(T log T) unless spans overlap."""
    spans = []
    for t in range(len(ws)):
        for role, x in (("w", ws[t]), ("s", ss[t])):
            span = _byte_span(x)
            if span is not None:
                spans.append((span[0], span[1], role, t, x))
    spans.sort(key=lambda item: item[0])
    active: list = []
    for lo, hi, role, t, x in spans:
        active = [a for a in active if a[1] > lo]
        for _, _, role2, t2, x2 in active:
            if role == role2 == "s" or (t == t2 and _same_view(x, x2)) or not _share(x, x2):
                continue
            (r1, i1), (r2, i2) = sorted([(role2, t2), (role, t)], key=lambda item: (item[0] == "w", item[1]))
            names = {("w", i): _names(many, i)[0] for i in (i1, i2)}
            names.update({("s", i): _names(many, i)[1] for i in (i1, i2)})
            first, second = names[(r1, i1)], names[(r2, i2)]
            if r1 == "s":
                raise ValueError(f"{first}: shares memory with {second}, which the update "
                                 f"overwrites in place while it reads the step: pass a copy of the step")
            raise ValueError(f"{first}: shares memory with {second}: the tensors of ws must not "
                             f"overlap (each is updated in place)")
        active.append((lo, hi, role, t, x))


def check_numbers(values, *, positive: bool, name: str, many: bool = False) -> np.ndarray:
    """(T,) float64 of ``values``, or a ValueError naming the first one that is not finite
    and >= 0 (> 0 if ``positive``): ``name[t]`` when ``many``, else ``name``."""
    out = []
    for t, x in enumerate(values):
        v = _as_float(x)
        if not (math.isfinite(v) and (v > 0 if positive else v >= 0)):
            label = f"{name}[{t}]" if many else name
            raise ValueError(f"{label}: expected a finite number {'> 0' if positive else '>= 0'}, "
                             f"got {x!r}")
        out.append(v)
    return np.array(out)


def _as_float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _update(ws: list, ss: list, rhos, target_norms, eps, *, many: bool) -> list[LaycaInfo]:
    """Validate everything, then run the fused passes on the right backend."""
    eps_value = float(check_numbers([eps], positive=False, name="eps")[0])
    if not ws:
        return []
    kind = _kind(ws[0]) or "numpy"  # anything else fails the checks of the first pair
    for t in range(len(ws)):
        _check_pair(ws[t], ss[t], kind, many, t)
    _check_no_overlap(ws, ss, many)
    rho = check_numbers(rhos, positive=False, name="rhos" if many else "rho", many=many)
    r0 = check_numbers(target_norms, positive=True, name="target_norms" if many else "target_norm",
                       many=many)
    if kind == "device":
        from . import layca_cuda as backend  # imported only when a device array arrives
    else:
        from . import layca_cpu as backend
    return _fused(backend.Batch(ws, ss), rho, r0, eps_value, many)


@njit(cache=True)
def _projected_norm2(sums, eps, ratio):
    """From the pass-1 sums (T, 4) [ww, sw, ss, .]: (T,) ||p||^2 = ss - sw^2 / ww (clipped
    at 0); (T,) bool: recompute it directly, because it lost more than -log2(ratio) bits
    (||p||^2 <= ratio * ss) and the step is not zero anyway (ss > eps^2); and the first
    tensor whose w.w is not finite and > 0, and the first whose s.w or s.s is not finite
    (-1 for none)."""
    count = sums.shape[0]
    pp = np.zeros(count)
    redo = np.zeros(count, dtype=np.bool_)
    bad_w = -1
    bad_s = -1
    for t in range(count):
        ww, sw, ss = sums[t, 0], sums[t, 1], sums[t, 2]
        if not (math.isfinite(ww) and ww > 0):
            if bad_w < 0:
                bad_w = t
        elif not (math.isfinite(sw) and math.isfinite(ss)):
            if bad_s < 0:
                bad_s = t
        else:
            pp[t] = max(ss - sw * (sw / ww), 0.0)
            redo[t] = pp[t] <= ratio * ss and ss > eps * eps
    return pp, redo, bad_w, bad_s


@njit(cache=True)
def _coefficients(sums, pp, rho, r0, eps):
    """The affine map w <- a w + b s of each tensor (module doc), from the sums (T, 4),
    ||p||^2 (T,), rho (T,), r0 (T,). Returns (T,) a, (T,) b, (T,) bool zero step."""
    count = sums.shape[0]
    a = np.empty(count)
    b = np.empty(count)
    zero = np.empty(count, dtype=np.bool_)
    for t in range(count):
        wnorm = math.sqrt(sums[t, 0])
        pnorm = math.sqrt(pp[t])
        zero[t] = pnorm <= eps
        if zero[t]:
            a[t] = r0[t] / wnorm
            b[t] = 0.0
        else:
            c = r0[t] / (wnorm * math.hypot(1.0, rho[t]))
            a[t] = c * (1.0 + rho[t] * sums[t, 1] / (wnorm * pnorm))
            b[t] = -c * rho[t] * wnorm / pnorm
    return a, b, zero


def _fused(batch, rho: np.ndarray, r0: np.ndarray, eps: float, many: bool) -> list[LaycaInfo]:
    """Pass 1, the checks, the coefficients (with the cancellation fallback), pass 2.

    batch : a ``layca_cpu.Batch`` or ``layca_cuda.Batch`` holding T tensors, with methods
        ``reduce() -> (T, 4)`` [ww, sw, ss, non-finite count], ``residual(k, active) -> (T,)``
        [sum((s - k w)^2) where active] and ``update(a, b, active) -> (T,)`` [w <- a w + b s
        where active; ||w||^2 as stored], all float64 NumPy arrays, called in that order
        (``update`` twice for steps nearly parallel to w).
    rho, r0 : (T,) float64, validated.
    """
    sums = batch.reduce()  # (T, 4)
    pp, redo, bad_w, bad_s = _projected_norm2(sums, eps, config.LAYCA_CANCELLATION_RATIO)
    if bad_w >= 0:
        raise ValueError(f"{_names(many, bad_w)[0]}: w.w = {sums[bad_w, 0]} in float64: the rotation "
                         f"is undefined for a w of norm 0, with non-finite entries, or whose squares "
                         f"overflow float64")
    if bad_s >= 0:
        raise StepOverflowError(f"{_names(many, bad_s)[1]}: s.s = {sums[bad_s, 2]}, s.w = {sums[bad_s, 1]} "
                                f"overflow float64 although every entry is finite; the step's scale "
                                f"does not matter: rescale s")
    if redo.any():
        pp = np.where(redo, batch.residual(sums[:, 1] / sums[:, 0], redo), pp)
    a, b, zero = _coefficients(sums, pp, rho, r0, eps)
    norm2 = batch.update(a, b, np.ones(len(a), dtype=bool))
    # The closed form assumes the normalised step exactly orthogonal to w; for a step nearly
    # parallel to w its computed direction is off by ~u / sin(angle), and the norm by as
    # much: those tensors (the cancellation fallback's) are rescaled to r0 like step 4 of
    # the reference, in one more read-write pass.
    fix = redo & ~zero
    if fix.any():
        rescale = np.where(fix, r0 / np.sqrt(np.where(fix, norm2, 1.0)), 1.0)
        norm2 = np.where(fix, batch.update(rescale, np.zeros_like(rescale), fix), norm2)
    norms = np.sqrt(norm2)
    nonfinite = sums[:, 3].astype(np.int64)
    return [LaycaInfo(float(norms[t]), bool(zero[t]), int(nonfinite[t])) for t in range(len(norms))]
