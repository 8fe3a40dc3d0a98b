"""Layca: layer-level controlled amount of weight rotation (Carbonnelle & De Vleeschouwer,
"On layer-level control of DNN training and its impact on generalization", Algorithm 1,
Section 4.2), as a ``GradientTransformation`` wrapping any base *direction* rule.

For every Layca-updated tensor w (a layer's kernel, flattened; Frobenius norms), given
the base rule's step s (its direction before the learning rate: the gradient for SGD, the
EMA of the gradient for SGD_AMom, m_hat / (sqrt(v_hat) + eps) for Adam, ...)::

    1. s <- s - (s.w / w.w) w              project onto the tangent space of the sphere
    2. s <- s ||w|| / ||s||                rotation-based normalisation (zero if ||s|| <= eps)
    3. w <- w - rho_l(t) s                 the update
    4. w <- w ||w_0|| / ||w||              back onto the sphere of the initial norm

After steps 1-2, s is orthogonal to w with ||s|| = ||w||, so one step rotates w by exactly
arctan(rho_l(t)) whatever the scale of the gradient, and the norm never changes (claims
C1, C2). Layer-wise rates (their Section 5.1), for the L Layca-updated layers indexed
i = 0 (input side) .. L-1::

    alpha > 0:   rho_i(t) = rho(t) (1 - alpha)^(5 (L-1-i) / (L-1))     (last layers first)
    alpha <= 0:  rho_i(t) = rho(t) (1 + alpha)^(5 i / (L-1))           (first layers first)

so alpha = 0 is uniform, alpha = 1 trains only the last layer and alpha = -1 only the
first (0^0 = 1); L = 1 gives the multiplier 1.

Which tensors Layca updates is an explicit mask with the structure of the parameters
(``kernel_mask`` selects the ``W`` of every Dense and Conv2D layer by layer *type*), and
which kernel-layer index i each of them has is an explicit tree of ints
(``kernel_layer_index``): nothing is matched by name strings. Other tensors are frozen
(the paper's code leaves biases and batch-norm parameters untouched) or updated by the
base rule with step -rho(t) d (``others="base"``).

Deviations from the authors' code (Simoncarbo/Layer-level-control-of-DNN-training), all
stated where they act:

* step 4 rescales to ||w_0||, the norm at ``init`` kept in the state; their code rescales
  to the norm before the step, which drifts by rounding over many steps;
* the eps test of step 2 is on the projected base step (before the learning rate, as in
  docs/claims.md); their code tests the projected step already multiplied by lr;
* the step is divided by its largest entry before step 1 (a no-op mathematically, as step
  2 normalises), so that s.w cannot overflow or underflow for any finite gradient scale;
* NaN / Inf entries of s are replaced by 0 and counted in the state (their Appendix A.2,
  item 4, recommends the replacement without counting).

The step of all Layca tensors is the fused kernel ``lastlayer.kernels.layca`` (two passes
over memory, all tensors in one call), or with ``fused=False`` the unfused reference
``lastlayer.kernels.layca_reference.layca_reference``; both report a
``lastlayer.kernels.LaycaInfo`` per tensor. A zero step leaves the weights unchanged.

Two ways to apply it. ``update_in_place`` (the training loop's path, fused only) writes the
new weights into the parameters' arrays: five array passes per tensor in all.
``update`` (the pure reference, for tests and for ``fused=False``) returns *updates*
(``params + updates`` are the new params): the update of a Layca tensor is ``w_new - w``
(computed on a copy), so the new weights are w_new up to one rounding of the addition,
which the next step 4 removes again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from lastlayer.kernels.layca import LaycaInfo, StepOverflowError, layca_update_many
from lastlayer.kernels.layca_reference import layca_reference

from .._checks import check_mask
from ..backend import array_module
from ..layers import Conv2D, Dense
from ..network import Mask, Network, Params
from .schedules import ConstantSchedule, Schedule
from .transforms import (
    GradientTransformation, identity, scale_by_adagrad, scale_by_adam, scale_by_ema, scale_by_rms,
)
from .tree import tree_select

__all__ = [
    "LaycaState", "layca", "rate_multipliers",
    "per_tensor_multipliers", "kernel_mask", "kernel_layer_index",
    "layca_sgd", "layca_sgd_amom", "layca_adam", "layca_rmsprop", "layca_adagrad",
    "LAYCA_OPTIMIZERS", "layer_rotation", "rotation_angle", "rotation_monitor",
    "DEFAULT_RATES",
]

KERNEL_LAYERS = (Dense, Conv2D)  # layers whose "W" multiplies the inputs (their Section 4.1)

# Default global rates rho (docs/design.md, from the authors' code): 3^-5 for Adam and SGD_AMom
# with Layca, 3^-3 for SGD, RMSprop and Adagrad with Layca.
DEFAULT_RATES = {"sgd": 3.0**-3, "sgd_amom": 3.0**-5, "adam": 3.0**-5, "rmsprop": 3.0**-3,
                 "adagrad": 3.0**-3}


class LaycaState(NamedTuple):
    """State of ``layca``. The per-tensor trees are lists (one per layer) of dicts holding an
    entry for every Layca-updated tensor only. Leaves are ints, floats and the base rule's
    arrays, so the state is saved by ``lastlayer.engine.training.checkpoint`` as it is."""

    count: int  # updates done so far: the argument of the rate schedule rho(t)
    initial_norm: list  # ||w_0||_F (float) of every Layca tensor, captured at init
    nonfinite: list  # NaN / Inf entries of the base step replaced by 0 so far (int)
    zero_steps: list  # steps skipped because ||projected step|| <= eps so far (int)
    base: Any  # the base direction rule's state


# ---- layer-wise rates ----------------------------------------------------------------------
def rate_multipliers(alpha: float, n_layers: int) -> np.ndarray:
    """The multipliers rho_i / rho(t) of their Section 5.1, shape (n_layers,), float64.

    alpha in [-1, 1]; i = 0 is the input side. alpha > 0: (1 - alpha)^(5 (L-1-i)/(L-1));
    alpha <= 0: (1 + alpha)^(5 i/(L-1)); one layer: [1.0].
    """
    _check_alpha(alpha)
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1:
        raise ValueError(f"n_layers: expected an integer >= 1, got {n_layers!r}")
    if n_layers == 1:
        return np.ones(1)
    i = np.arange(n_layers, dtype=np.float64)
    last = n_layers - 1
    if alpha > 0:
        return (1.0 - alpha) ** (5.0 * (last - i) / last)
    return (1.0 + alpha) ** (5.0 * i / last)


def per_tensor_multipliers(alpha: float, layer_index: list[dict[str, int]], params: Params) -> list:
    """A tree of floats with the structure of ``params``: the Section 5.1 multiplier of each
    indexed tensor's layer, 1.0 for tensors without an index. Used to give plain rules
    (SGD) the same layer-wise rates: ``scale_per_tensor(per_tensor_multipliers(...))``."""
    n_layers = _n_kernel_layers(layer_index)
    factors = rate_multipliers(alpha, n_layers)
    return [{name: float(factors[idx[name]]) if name in idx else 1.0 for name in p}
            for p, idx in zip(params, layer_index, strict=True)]


def _check_alpha(alpha: float) -> None:
    if not -1.0 <= alpha <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha: expected a value in [-1, 1], got {alpha}")


def _n_kernel_layers(layer_index: list[dict[str, int]]) -> int:
    """L, after checking that the indices are exactly 0 .. L-1 (every index used)."""
    used = sorted({i for d in layer_index for i in d.values()})
    for i in used:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"layer_index: expected integer indices, got {i!r}")
    if used != list(range(len(used))):
        raise ValueError(f"layer_index: the kernel-layer indices must be 0 .. L-1 with none "
                         f"missing, got {used}")
    return len(used)


# ---- which tensors, which index --------------------------------------------------------------
def kernel_mask(net: Network, params: Params) -> Mask:
    """True for the kernel ``W`` of every Dense and Conv2D layer (chosen by layer type, never
    by name strings), False for everything else (biases, batch-norm parameters, ...)."""
    if len(params) != len(net):
        raise ValueError(f"params: expected {len(net)} dicts (one per layer), got {len(params)}")
    return [{name: isinstance(layer, KERNEL_LAYERS) and name == "W" for name in p}
            for layer, p in zip(net, params)]


def kernel_layer_index(mask: Mask) -> list[dict[str, int]]:
    """Kernel-layer index i of every masked tensor: the rank, in network order, of its layer
    among the layers with a masked tensor (tensors of one layer share its index). Returns a
    list (one per layer) of dicts holding the masked tensors only."""
    out, i = [], 0
    for layer_mask in mask:
        names = [name for name, on in layer_mask.items() if on]
        out.append({name: i for name in names})
        i += bool(names)
    return out


# ---- the transform -----------------------------------------------------------------------------
def layca(base: GradientTransformation, lr: float | Schedule, alpha: float = 0.0, *,
          mask: Mask, layer_index: list[dict[str, int]], others: str = "frozen",
          eps: float = 1e-7, fused: bool = True) -> GradientTransformation:
    """Layca (Algorithm 1) around the base direction rule ``base``.

    Parameters
    ----------
    base : a direction transform (``identity()``, ``scale_by_momentum()``,
        ``scale_by_ema()`` for SGD_AMom, ``scale_by_adam()``, ``scale_by_rms()``,
        ``scale_by_adagrad()``, or a ``chain`` ending in one), *without* a learning rate.
    lr : the global rate rho(t), a constant or a ``Schedule`` of the update count.
    alpha : layer-wise prioritisation in [-1, 1] (Section 5.1; module docstring).
    mask : list (one per layer) of dicts of bools with the structure of the params: the
        tensors Layca updates (``kernel_mask(net, params)``). Each must be non-zero at init.
    layer_index : kernel-layer index of every masked tensor (``kernel_layer_index(mask)``);
        the indices must be 0 .. L-1.
    others : tensors not in ``mask``: "frozen" (no update; the paper's default) or "base"
        (updated by the base rule: w <- w - rho(t) d, no layer multiplier, no rotation).
    eps : a projected base step with norm <= eps becomes a zero step (weights unchanged).
    fused : True (default): the fused kernel ``lastlayer.kernels.layca.layca_update_many`` (the same
        four steps in two passes over memory, NumPy or CuPy arrays), which the training loop
        applies in place (``update_in_place``); False: the unfused reference
        ``lastlayer.kernels.layca_reference.layca_reference``, through ``update`` only. The two agree
        to rounding (float64: within 1e-12 after hundreds of steps, tests/engine/optim/
        test_layca.py); a step whose squares overflow float64 is done by the reference.

    The state (``LaycaState``) holds the update count, ||w_0|| of every Layca tensor, the
    counts of non-finite entries and zero steps per tensor, and the base rule's state (of
    the Layca tensors only when ``others="frozen"``). Gradients may omit tensors (frozen by
    the training mask): those get no update and their state is carried over.
    """
    schedule = lr if isinstance(lr, Schedule) else ConstantSchedule(lr)
    _check_alpha(alpha)
    if others not in ("frozen", "base"):
        raise ValueError(f"others: expected 'frozen' or 'base', got {others!r}")
    if not eps >= 0:
        raise ValueError(f"eps: expected >= 0, got {eps}")
    _check_index_covers_mask(mask, layer_index)
    factors = rate_multipliers(alpha, _n_kernel_layers(layer_index))

    def base_part(tree):  # what the base rule sees: everything, or the Layca tensors only
        return tree if others == "base" else tree_select(tree, mask)

    def init(params):
        check_mask(mask, params)
        norms = []
        for i, (p, m) in enumerate(zip(params, mask)):
            layer = {}
            for name in (n for n, on in m.items() if on):
                layer[name] = _initial_norm(p[name], i, name)
            norms.append(layer)
        nonfinite = [{name: 0 for name in layer} for layer in norms]
        zero_steps = [{name: 0 for name in layer} for layer in norms]
        return LaycaState(0, norms, nonfinite, zero_steps, base.init(base_part(params)))

    def base_steps(grads, state, params):
        """The base rule's steps, and the Layca tensors present in the gradients (network
        order) with their rate and target norm."""
        check_mask(mask, grads, tree_name="the gradients", exact=False)
        steps, base_state = base.update(base_part(grads), state.base, base_part(params))
        rho = schedule(state.count)
        jobs = [(i, name) for i, m in enumerate(mask) for name, on in m.items()
                if on and name in grads[i]]
        rhos = [rho * float(factors[layer_index[i][name]]) for i, name in jobs]
        norms = [state.initial_norm[i][name] for i, name in jobs]
        return steps, base_state, rho, jobs, rhos, norms

    def next_state(state, jobs, infos, base_state):
        nonfinite = [dict(d) for d in state.nonfinite]
        zero_steps = [dict(d) for d in state.zero_steps]
        for (i, name), info in zip(jobs, infos):
            nonfinite[i][name] += info.nonfinite
            zero_steps[i][name] += int(info.zero_step)
        return LaycaState(state.count + 1, state.initial_norm, nonfinite, zero_steps, base_state)

    def others_steps(steps):
        """(layer, name, d) of the tensors outside the mask that the base rule updates."""
        if others != "base":
            return []
        return [(i, name, d) for i, m in enumerate(mask) for name, d in steps[i].items() if not m[name]]

    def update(grads, state, params):
        steps, base_state, rho, jobs, rhos, norms = base_steps(grads, state, params)
        ws = [params[i][name] for i, name in jobs]
        ss = [steps[i][name] for i, name in jobs]
        if fused:  # in place on copies: the caller's parameters are never modified
            new_ws = [w.copy() if r != 0 else w for w, r in zip(ws, rhos)]
            infos = _fused_in_place(new_ws, ss, rhos, norms, eps)
        else:
            results = [layca_reference(w, s, r, n, eps=eps) if r != 0 else (w, _unmoved(w, s))
                       for w, s, r, n in zip(ws, ss, rhos, norms)]
            new_ws, infos = [r[0] for r in results], [r[1] for r in results]
        updates: list[dict] = [{} for _ in grads]
        for (i, name), w, w_new, info in zip(jobs, ws, new_ws, infos):
            updates[i][name] = array_module(w).zeros_like(w) if info.zero_step else w_new - w
        for i, name, d in others_steps(steps):
            updates[i][name] = (-rho) * d
        return updates, next_state(state, jobs, infos, base_state)

    def update_in_place(grads, state, params):
        """``update`` written straight into params' arrays: the fused kernel's two passes
        (five array passes per tensor) and nothing else; the new weights are w_new itself,
        not w + (w_new - w)."""
        steps, base_state, rho, jobs, rhos, norms = base_steps(grads, state, params)
        ws = [params[i][name] for i, name in jobs]
        infos = _fused_in_place(ws, [steps[i][name] for i, name in jobs], rhos, norms, eps)
        for i, name, d in others_steps(steps):
            params[i][name] -= rho * d
        return next_state(state, jobs, infos, base_state)

    return GradientTransformation(init, update, update_in_place if fused else None)


def _unmoved(w, s) -> LaycaInfo:
    """The info of a tensor whose rate is 0 (a layer multiplier of 0: alpha = +-1 moves one
    layer only): it is left exactly as it is, since step 3 adds nothing and step 4's
    rescaling to r0 would only add rounding."""
    xp = array_module(w)
    norm = float(xp.sqrt(xp.sum(xp.asarray(w, dtype=xp.float64) ** 2)))
    return LaycaInfo(norm, False, int(xp.count_nonzero(~xp.isfinite(s))))


def _fused_in_place(ws: list, ss: list, rhos: list, norms: list, eps: float) -> list:
    """``lastlayer.kernels.layca.layca_update_many`` in place on ``ws``, tensors of rate 0 left as they
    are (``_unmoved``). A step whose squares overflow float64 (finite entries beyond
    ~1e154), which the kernel refuses before writing anything, is done by the unfused
    reference instead: it rescales the step first."""
    moving = [k for k, r in enumerate(rhos) if r != 0]
    infos = [_unmoved(w, s) if r == 0 else None for w, s, r in zip(ws, ss, rhos)]
    pick = (lambda seq: [seq[k] for k in moving])
    try:
        done = layca_update_many(pick(ws), pick(ss), pick(rhos), pick(norms), eps=eps) if moving else []
    except StepOverflowError:
        done = []
        for k in moving:
            w_new, info = layca_reference(ws[k], ss[k], rhos[k], norms[k], eps=eps)
            ws[k][...] = w_new
            done.append(info)
    for k, info in zip(moving, done):
        infos[k] = info
    return infos


def _initial_norm(w, layer: int, name: str) -> float:
    """||w_0|| in float64 (a float32 norm would put the sphere off by up to ~n u32)."""
    norm = float(array_module(w).linalg.norm(w.astype(np.float64, copy=False)))
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"layca: layer {layer} parameter {name!r} has norm {norm}: Layca "
                         f"rotates a tensor on the sphere of its initial norm, which must be "
                         f"finite and non-zero (do not initialise a Layca tensor to zero)")
    return norm


def _check_index_covers_mask(mask: Mask, layer_index: list[dict[str, int]]) -> None:
    if not isinstance(layer_index, (list, tuple)) or len(layer_index) != len(mask):
        raise ValueError(f"layer_index: expected a list of {len(mask)} dicts (one per layer, "
                         f"like the mask), got {type(layer_index).__name__} of length "
                         f"{len(layer_index) if hasattr(layer_index, '__len__') else '-'}")
    for i, (m, idx) in enumerate(zip(mask, layer_index)):
        masked = {name for name, on in m.items() if on}
        if set(idx) != masked:
            raise ValueError(f"layer_index: layer {i} indexes {sorted(idx)}, but the mask selects "
                             f"{sorted(masked)} there (build it with kernel_layer_index(mask))")
    if not any(any(m.values()) for m in mask):
        raise ValueError("mask: selects no tensor; Layca would update nothing")


# ---- ready-made rules (their Section 6.2 set) --------------------------------------------------
def layca_sgd(lr=DEFAULT_RATES["sgd"], alpha: float = 0.0, *, mask, layer_index, **kwargs):
    """Layca around plain SGD (direction g), default rho = 3^-3."""
    return layca(identity(), lr, alpha, mask=mask, layer_index=layer_index, **kwargs)


def layca_sgd_amom(lr=DEFAULT_RATES["sgd_amom"], alpha: float = 0.0, *, mask, layer_index,
                   beta: float = 0.9, **kwargs):
    """Layca around SGD_AMom (m <- beta m + (1 - beta) g, their Appendix A.3), default 3^-5."""
    return layca(scale_by_ema(beta), lr, alpha, mask=mask, layer_index=layer_index, **kwargs)


def layca_adam(lr=DEFAULT_RATES["adam"], alpha: float = 0.0, *, mask, layer_index,
               b1: float = 0.9, b2: float = 0.999, adam_eps: float = 1e-8, **kwargs):
    """Layca around Adam's direction m_hat / (sqrt(v_hat) + eps), default rho = 3^-5."""
    return layca(scale_by_adam(b1, b2, adam_eps), lr, alpha, mask=mask,
                 layer_index=layer_index, **kwargs)


def layca_rmsprop(lr=DEFAULT_RATES["rmsprop"], alpha: float = 0.0, *, mask, layer_index,
                  decay: float = 0.9, rms_eps: float = 1e-7, **kwargs):
    """Layca around RMSprop's direction g / (sqrt(v) + eps) (Keras defaults), default 3^-3."""
    return layca(scale_by_rms(decay, rms_eps), lr, alpha, mask=mask,
                 layer_index=layer_index, **kwargs)


def layca_adagrad(lr=DEFAULT_RATES["adagrad"], alpha: float = 0.0, *, mask, layer_index,
                  adagrad_eps: float = 1e-7, **kwargs):
    """Layca around Adagrad's direction g / (sqrt(a) + eps), default rho = 3^-3."""
    return layca(scale_by_adagrad(adagrad_eps), lr, alpha, mask=mask,
                 layer_index=layer_index, **kwargs)


LAYCA_OPTIMIZERS: dict[str, Callable[..., GradientTransformation]] = {
    "sgd": layca_sgd, "sgd_amom": layca_sgd_amom, "adam": layca_adam, "rmsprop": layca_rmsprop,
    "adagrad": layca_adagrad,
}


# ---- monitoring ----------------------------------------------------------------------------------
def _unit(v, xp):
    return v / xp.linalg.norm(v)


def rotation_angle(w_before, w_after) -> float:
    """Angle (radians) between two tensors of the same shape, flattened:
    2 atan2(||a - b||, ||a + b||) on the unit vectors a, b (Kahan's form, accurate for tiny
    and near-pi angles where arccos of the cosine is not)."""
    xp = array_module(w_before, w_after)
    a, b = _unit(w_before.ravel(), xp), _unit(w_after.ravel(), xp)
    return 2.0 * math.atan2(float(xp.linalg.norm(a - b)), float(xp.linalg.norm(a + b)))


def layer_rotation(params: Params, initial_params: Params, mask: Mask) -> dict[int, float]:
    """Their "angle deviation" (Section 5.3, Fig. 3): the cosine distance 1 - cos(w_t, w_0)
    of every layer with a masked tensor, keyed by the layer's position in ``params``. The
    masked tensors of one layer are concatenated into one vector. Computed as
    ||a - b||^2 / 2 on unit vectors, which equals 1 - cos without its cancellation."""
    out = {}
    for i, (p, p0, m) in enumerate(zip(params, initial_params, mask, strict=True)):
        names = sorted(name for name, on in m.items() if on)
        if not names:
            continue
        xp = array_module(*(p[n] for n in names))
        a = _unit(xp.concatenate([p[n].ravel() for n in names]), xp)
        b = _unit(xp.concatenate([p0[n].ravel() for n in names]), xp)
        out[i] = 0.5 * float(xp.vdot(a - b, a - b))
    return out


def rotation_monitor(initial_params: Params, mask: Mask,
                     layer_index: list[dict[str, int]]) -> Callable[[int, Params], dict]:
    """A ``train(..., monitor=...)`` hook recording the angle deviation of every kernel layer
    under the history names ``rotation_<i>`` (i = kernel-layer index, 0 = input side)."""
    rank = {j: next(iter(idx.values())) for j, idx in enumerate(layer_index) if idx}

    def monitor(t: int, params: Params) -> dict[str, float]:
        return {f"rotation_{rank[j]}": v
                for j, v in layer_rotation(params, initial_params, mask).items()}

    return monitor
