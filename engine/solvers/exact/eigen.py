"""Curvature of the loss in parameter space: top eigenpairs and Rayleigh quotients.

Classifier space (a linear last layer on frozen features, exact): the Hessian of

    J(W, b) = (1/N) sum_i loss(W Phi_i + b, y_i) + lam ||W||_F^2

in the parameter order [vec(W) row by row ; b] of ``lastlayer.engine.solvers.exact.curvature``.
``top_eigenpairs`` takes its k largest eigenpairs either from the dense Hessian
(``method="dense"``: ``scipy.linalg.eigh`` of ``curvature.hessian``, memory P^2 for P
parameters) or by Lanczos iteration (``method="lanczos"``: ``scipy.sparse.linalg.eigsh``
on exact Hessian-vector products ``curvature.hvp``, memory O(P), O(N C d) per product),
from a fixed starting vector so that results are reproducible. ``rayleigh_quotient``
gives v^T H v / v^T v (PoF's g^T H g along a mini-batch gradient).

Any layer of a network (PoF's Fig. 1c): ``layer_hvp`` multiplies the Hessian block of
one layer's parameters by v through central differences of the hand-written gradient,

    H v ~= (g(theta + h v) - g(theta - h v)) / (2 h),   h = 1e-5 max(1, ||theta||) / ||v||,

whose truncation error is O(h^2 |third derivative|) and rounding error O(u |g| / h): about
1e-9 relative in float64 (the tests compare it with the exact last-layer Hessian).
``layer_top_eigenpair`` runs Lanczos on those products. The network is evaluated in
inference mode (dropout off, running statistics), so the function differentiated is
deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ..._checks import float_array, positive_int
from ...network import Network
from ...streams import stream
from .curvature import hessian, hvp

__all__ = ["Eigenpairs", "top_eigenpairs", "rayleigh_quotient", "layer_gradient", "layer_hvp",
           "layer_top_eigenpair", "pack", "unpack"]


class Eigenpairs(NamedTuple):
    values: np.ndarray  # (k,) largest first
    vectors: np.ndarray  # (P, k) orthonormal columns, vectors[:, i] belongs to values[i]
    method: str  # "dense" or "lanczos"


def pack(W, b=None) -> np.ndarray:
    """[vec(W) row by row ; b]: the parameter order of the Hessian."""
    return np.concatenate([W.ravel(), b]) if b is not None else W.ravel().copy()


def unpack(theta: np.ndarray, shape: tuple[int, int], bias: bool):
    """Inverse of ``pack``: (W of ``shape``, b or None)."""
    c, d = shape
    return theta[:c * d].reshape(c, d), (theta[c * d:] if bias else None)


def _lanczos(matvec: Callable[[np.ndarray], np.ndarray], size: int, k: int,
             tol: float) -> tuple[np.ndarray, np.ndarray]:
    operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    v0 = stream(0, "lanczos").standard_normal(size)  # fixed start: reproducible results
    values, vectors = scipy.sparse.linalg.eigsh(operator, k=k, which="LA", v0=v0, tol=tol)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order]


def top_eigenpairs(W, b, Phi, targets, lam: float = 0.0, loss: str = "ce", *, k: int = 1,
                   method: str = "lanczos", tol: float = 0.0) -> Eigenpairs:
    """The k largest eigenvalues of the last layer's Hessian (weights and bias) and their
    eigenvectors. W (C, d), b (C,) or None, Phi (N, d), targets (N,) labels or (N, C).

    method "dense": from the full Hessian (P = C d + C parameters, P^2 memory);
    "lanczos": implicitly restarted Lanczos on exact Hessian-vector products (``tol`` 0:
    to machine precision). The two agree to ~1e-12 relative on the top eigenvalues.
    """
    float_array(Phi, "Phi")
    positive_int(k, "k")
    size = W.size + (b.size if b is not None else 0)
    if k > size - (method == "lanczos"):
        raise ValueError(f"k: expected at most {size - (method == 'lanczos')} for {size} "
                         f"parameters with method {method!r}, got {k}")
    if method == "dense":
        values, vectors = scipy.linalg.eigh(hessian(W, b, Phi, targets, lam, loss),
                                            subset_by_index=[size - k, size - 1])
        return Eigenpairs(values[::-1].copy(), vectors[:, ::-1].copy(), "dense")
    if method != "lanczos":
        raise ValueError(f"method: expected 'dense' or 'lanczos', got {method!r}")

    def matvec(v):
        V, v_b = unpack(np.asarray(v, dtype=np.float64).reshape(-1), W.shape, b is not None)
        hv_w, hv_b = hvp(W, b, Phi, targets, lam, V, v_b, loss=loss)
        return pack(hv_w, hv_b)

    values, vectors = _lanczos(matvec, size, k, tol)
    return Eigenpairs(values, vectors, "lanczos")


def rayleigh_quotient(W, b, Phi, targets, v: np.ndarray, lam: float = 0.0,
                      loss: str = "ce") -> float:
    """v^T H v / v^T v for the last layer's Hessian H, v in the order of ``pack``."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    V, v_b = unpack(v, W.shape, b is not None)
    hv_w, hv_b = hvp(W, b, Phi, targets, lam, V, v_b, loss=loss)
    return float(v @ pack(hv_w, hv_b)) / float(v @ v)


# ---- any layer of a network: Hessian-vector products by central differences -----------------
def layer_gradient(net: Network, params: list, net_state: list, x, targets, loss: Callable,
                   layer: int) -> dict:
    """The gradient of loss(net(x), targets) (inference mode) w.r.t. layer ``layer``'s
    parameters: a dict like ``params[layer]``."""
    out, caches = net.forward(params, x, train=False, state=net_state)
    _, dout = loss(out, targets)
    mask = [{name: i == layer for name in p} for i, p in enumerate(params)]
    _, grads = net.backward(params, caches, dout, mask=mask, input_grad=False)
    return grads[layer]


def _layer_index(net: Network, params: list, layer: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or \
            not -len(net) <= layer < len(net):
        raise ValueError(f"layer: expected an index in [{-len(net)}, {len(net)}), got {layer!r}")
    layer %= len(net)
    if not params[layer]:
        raise ValueError(f"layer: layer {layer} ({net[layer]}) has no parameters")
    return layer


def layer_hvp(net: Network, params: list, net_state: list, x, targets, loss: Callable,
              layer: int, v: dict, *, step: float = 1e-5) -> dict:
    """H v for the Hessian block of layer ``layer``'s parameters, by central differences of
    the hand-written gradient (module docstring). v: a dict like ``params[layer]``."""
    layer = _layer_index(net, params, layer)
    names = sorted(params[layer])
    theta_norm = float(np.sqrt(sum(float((params[layer][k] ** 2).sum()) for k in names)))
    v_norm = float(np.sqrt(sum(float((v[k] ** 2).sum()) for k in names)))
    if v_norm == 0.0:
        return {k: np.zeros_like(params[layer][k]) for k in names}
    h = step * max(1.0, theta_norm) / v_norm

    def gradient_at(sign: float) -> dict:
        shifted = list(params)
        shifted[layer] = {k: params[layer][k] + (sign * h) * v[k] for k in names}
        return layer_gradient(net, shifted, net_state, x, targets, loss, layer)

    plus, minus = gradient_at(1.0), gradient_at(-1.0)
    return {k: (plus[k] - minus[k]) / (2 * h) for k in names}


def layer_top_eigenpair(net: Network, params: list, net_state: list, x, targets,
                        loss: Callable, layer: int, *, tol: float = 1e-10) -> tuple[float, dict]:
    """The largest eigenvalue of layer ``layer``'s Hessian block and its unit eigenvector
    (a dict like ``params[layer]``), by Lanczos on ``layer_hvp`` products."""
    layer = _layer_index(net, params, layer)
    names = sorted(params[layer])
    shapes = [params[layer][k].shape for k in names]
    sizes = [params[layer][k].size for k in names]

    def as_dict(flat: np.ndarray) -> dict:
        parts = np.split(np.asarray(flat, dtype=np.float64).reshape(-1), np.cumsum(sizes)[:-1])
        return {k: p.reshape(s) for k, p, s in zip(names, parts, shapes)}

    def matvec(flat):
        hv = layer_hvp(net, params, net_state, x, targets, loss, layer, as_dict(flat))
        return np.concatenate([hv[k].ravel() for k in names])

    size = sum(sizes)
    if size < 2:
        raise ValueError(f"layer: layer {layer} has {size} parameter; Lanczos needs at least 2")
    values, vectors = _lanczos(matvec, size, 1, tol)
    return float(values[0]), as_dict(vectors[:, 0])
