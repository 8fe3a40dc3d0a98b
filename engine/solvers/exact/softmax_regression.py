"""The exact optimum of a softmax cross-entropy last layer (multinomial logistic regression).

    J(W, b) = (1/N) sum_i CE(W Phi_i + b, y_i) + lam ||W||_F^2,      W: (C, d), b: (C,)

For lam > 0, J is strongly convex in W (Hessian >= 2 lam I, claim M1), so the optimum W is
unique (claim M7). The unpenalised bias has one flat direction: adding the same constant
to every b_c leaves every softmax unchanged. The solvers fix that gauge with sum_c b_c = 0
(starting from b = 0, every Newton step keeps it), which makes the whole optimum unique.

Two solvers, which must agree:

* ``method="newton"``: Newton's method with the exact Hessian
  (``lastlayer.engine.solvers.exact.curvature``), a Cholesky solve per step and a
  backtracking (Armijo) line search; quadratic convergence to the rounding floor. Memory (C
  d + C)^2, so for moderate C d.
* ``method="newton-cg"``: the same Newton steps, each solved by conjugate gradients on
  exact Hessian-vector products (O(N C d) each, the Hessian never formed), to a relative
  accuracy min(1/2, sqrt(||g||)) (superlinear convergence); for large C d.
* ``method="lbfgs"``: scipy's L-BFGS-B on the same value and hand-written gradient.
* ``method="auto"`` (default): "newton" up to ``NEWTON_DENSE_MAX`` parameters, else "newton-cg".

All return the KKT residual ||grad J||_2 at the returned point and whether it reached
``tol`` (``converged``); L-BFGS typically stalls near 1e-10 .. 1e-9, above the default tol.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.optimize

from ..._checks import all_finite, float_array, penalty, positive_int, real_number
from ...losses import softmax
from .curvature import hessian, hvp, objective

__all__ = ["SoftmaxSolution", "fit_softmax_regression"]

NEWTON_MAX_PARAMS = 12_000  # (C d + C)^2 doubles: ~1.2 GB beyond this
NEWTON_DENSE_MAX = 1_500  # "auto": beyond this, Hessian-vector products are far cheaper


class SoftmaxSolution(NamedTuple):
    W: np.ndarray  # (C, d)
    b: np.ndarray | None  # (C,) with sum 0, or None without bias
    kkt_residual: float  # ||grad J||_2 at (W, b)
    iterations: int
    method: str
    converged: bool = True  # kkt_residual <= tol; False: the residual it reached is above


def _pack(W, b):
    return np.concatenate([W.ravel(), b]) if b is not None else W.ravel().copy()


def _unpack(theta, c, d, fit_bias):
    W = theta[:c * d].reshape(c, d)
    return W, (theta[c * d:] if fit_bias else None)


def _residual(obj) -> float:
    g = obj.grad_W.ravel() if obj.grad_b is None else np.concatenate([obj.grad_W.ravel(), obj.grad_b])
    return float(np.linalg.norm(g))


def fit_softmax_regression(Phi, labels, lam: float, *, fit_bias: bool = True,
                           method: str = "auto", tol: float = 1e-12, max_iter: int | None = None,
                           n_classes: int | None = None, W0=None, b0=None) -> SoftmaxSolution:
    """Minimise J(W, b) to a KKT residual ||grad J|| <= ``tol`` (absolute).

    Parameters
    ----------
    Phi : (N, d) float64 features, N, d >= 1; labels : (N,) NumPy integer labels in [0, C)
    lam : finite, > 0 (at lam = 0 separable data has no finite optimum), N lam <= 1e150
        (``lastlayer.engine._checks.LAM_ROWS_MAX``)
    n_classes : C >= 2 (default: labels.max() + 1). With ``fit_bias``, every class needs at
        least one sample: the unpenalised bias of an absent class would go to -inf (J has
        no minimiser), so that is an error; without a bias W stays finite (lam > 0).
    W0, b0 : starting point of shapes (C, d) and (C,) (default zeros); b0 is shifted to sum 0

    Returns a ``SoftmaxSolution``; ``converged`` is False when the solver stopped (iteration
    limit, or no decrease left to rounding) with ``kkt_residual`` still above ``tol``.
    """
    float_array(Phi, "Phi")
    if Phi.ndim != 2 or Phi.shape[0] == 0 or Phi.shape[1] == 0:
        raise ValueError(f"Phi: expected shape (N, d) with N, d >= 1, got {tuple(Phi.shape)}")
    all_finite(Phi, "Phi")
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels: expected a NumPy integer array, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != Phi.shape[0] or labels.dtype.kind not in "iu":
        raise ValueError(f"labels: expected integer labels of shape ({Phi.shape[0]},), got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    lam = penalty(lam, Phi.shape[0], "lam")  # > 0, N lam <= LAM_ROWS_MAX
    if method not in ("auto", "newton", "newton-cg", "lbfgs"):
        raise ValueError(f"method: expected 'auto', 'newton', 'newton-cg' or 'lbfgs', got {method!r}")
    tol = real_number(tol, "tol", minimum=0, open_minimum=True)
    if max_iter is not None:
        positive_int(max_iter, "max_iter")
    if labels.min() < 0:
        raise ValueError(f"labels: expected labels >= 0, got {labels.min()}")
    c = int(labels.max()) + 1 if n_classes is None else positive_int(n_classes, "n_classes", 2)
    if c < 2:
        raise ValueError("labels: all labels are 0; a softmax over one class is constant "
                         "(pass n_classes >= 2)")
    if labels.max() >= c:
        raise ValueError(f"labels: expected labels < n_classes = {c}, got {labels.max()}")
    d = Phi.shape[1]
    counts = np.bincount(labels, minlength=c)
    if fit_bias and not counts.all():
        absent = np.flatnonzero(counts == 0)
        raise ValueError(f"labels: class{'es' if absent.size > 1 else ''} "
                         f"{', '.join(map(str, absent[:10]))} ha{'ve' if absent.size > 1 else 's'} no "
                         f"sample: with an unpenalised bias, J has no minimiser (that class's "
                         f"b_c -> -inf); drop the class (n_classes) or pass fit_bias=False")
    W = np.zeros((c, d), Phi.dtype) if W0 is None else _start(W0, (c, d), Phi.dtype, "W0")
    b = None
    if fit_bias:
        b = np.zeros(c, Phi.dtype) if b0 is None else _start(b0, (c,), Phi.dtype, "b0")
        b -= b.mean()  # the gauge sum_c b_c = 0
    if method == "lbfgs":
        return _lbfgs(Phi, labels, lam, W, b, tol, max_iter or 20_000)
    if method == "auto":
        method = "newton" if c * d + (c if fit_bias else 0) <= NEWTON_DENSE_MAX else "newton-cg"
    return _newton(Phi, labels, lam, W, b, tol, max_iter or 100, method)


def _start(x, shape, dtype, name) -> np.ndarray:
    """A copy of the starting point ``x`` after checking its shape and values."""
    if not hasattr(x, "shape") or tuple(x.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got "
                         f"{tuple(x.shape) if hasattr(x, 'shape') else type(x).__name__}")
    float_array(x, name)
    all_finite(x, name)
    return np.array(x, dtype=dtype)


# Where Newton's predicted decrease -slope / 2 is below the rounding of J (near the optimum),
# Armijo's test on J rejects the full step for nothing: the step is then judged by the
# residual ||grad J|| it leads to (as lastlayer.engine.solvers.estimators.softmax_streamed.FLAT_SLOPE).
FLAT_SLOPE = 1e-10


def _newton(Phi, labels, lam, W, b, tol, max_iter, method) -> SoftmaxSolution:
    c, d = W.shape
    n_params = c * d + (c if b is not None else 0)
    if method == "newton" and n_params > NEWTON_MAX_PARAMS:
        raise ValueError(f"method='newton': {n_params} parameters need a {n_params}^2 Hessian; "
                         f"use method='lbfgs' beyond {NEWTON_MAX_PARAMS}")
    # the flat gauge direction e = (0, 1/sqrt(C)): H e = 0 and g . e = 0, so solving with
    # H + e e^T gives the same step, orthogonal to e, from a positive definite matrix
    gauge = np.zeros(n_params)
    if b is not None:
        gauge[c * d:] = 1 / np.sqrt(c)
    obj = objective(W, b, Phi, labels, lam, "ce")
    for it in range(max_iter):
        res = _residual(obj)
        if res <= tol:
            return SoftmaxSolution(W, b, res, it, method, True)
        g = _pack(obj.grad_W, obj.grad_b)
        if method == "newton":
            h = hessian(W, b, Phi, labels, lam, "ce")
            h += np.outer(gauge, gauge)
            try:
                factor = scipy.linalg.cho_factor(h, check_finite=True)
            except (np.linalg.LinAlgError, ValueError):
                raise ValueError(f"Phi: the Hessian of J is not positive definite in float64 "
                                 f"(max |Phi| = {np.abs(Phi).max():.3g}: its squares overflow or "
                                 f"swamp 2 lam = {2 * lam:g}); rescale Phi") from None
            step = -scipy.linalg.cho_solve(factor, g, check_finite=False)
        else:
            def apply(v, W=W, b=b):
                hv_w, hv_b = hvp(W, b, Phi, labels, lam, *_unpack(v, c, d, b is not None), "ce")
                return _pack(hv_w, hv_b) + gauge * (gauge @ v)

            diagonal = _hessian_diagonal(W, b, Phi, lam) + gauge * gauge
            step = -_conjugate_gradients(apply, g, min(0.5, np.sqrt(res)) * res, 2 * n_params,
                                         diagonal)
        slope = float(g @ step)  # < 0: a descent direction
        t = 1.0  # backtracking (Armijo); near the optimum the full step is always taken
        while True:
            W_new, b_new = _unpack(_pack(W, b) + t * step, c, d, b is not None)
            if b_new is not None:
                # J is invariant along the gauge direction, but conjugate gradients (and
                # rounding) let sum(b) drift: put it back to 0 exactly (J and grad unchanged)
                b_new = b_new - b_new.mean()
            new = objective(W_new, b_new, Phi, labels, lam, "ce")
            if new.value <= obj.value + 1e-4 * t * slope:
                break
            if t == 1.0 and -slope <= FLAT_SLOPE * abs(obj.value) and _residual(new) < res:
                break  # J is flat to rounding here: the step lowers the residual
            t /= 2
            if t < 1e-10:  # no decrease possible: J is flat to rounding here
                return SoftmaxSolution(W, b, res, it, method, False)
        W, b, obj = W_new, b_new, new
    res = _residual(obj)
    return SoftmaxSolution(W, b, res, max_iter, method, res <= tol)


def _hessian_diagonal(W, b, Phi, lam) -> np.ndarray:
    """The diagonal of H (packed like the parameters): (1/N) sum_i p_ic (1 - p_ic) Phi_ij^2
    + 2 lam for W, (1/N) sum_i p_ic (1 - p_ic) for b."""
    z = Phi @ W.T
    if b is not None:
        z += b
    p = softmax(z)
    a = p * (1.0 - p)
    dW = (a.T @ (Phi * Phi)) / len(Phi) + 2 * lam
    return _pack(dW, a.mean(axis=0) if b is not None else None)


def _conjugate_gradients(apply, rhs, tol: float, max_iter: int, diagonal=None) -> np.ndarray:
    """Solve A x = rhs for symmetric positive definite A given as ``apply(v) = A v``, until
    ||A x - rhs|| <= tol (Hestenes & Stiefel), preconditioned by ``diagonal`` (A's diagonal,
    Jacobi) when given: with the penalised W (curvature >= 2 lam) beside the unpenalised b
    (<= 1/2), plain CG needed more iterations the larger lam (16 at lam = 1e100)."""
    m = np.ones_like(rhs) if diagonal is None else diagonal
    x = np.zeros_like(rhs)
    r = rhs.copy()
    z = r / m
    p = z.copy()
    rz = float(r @ z)
    for _ in range(max_iter):
        if np.linalg.norm(r) <= tol:
            break
        ap = apply(p)
        alpha = rz / float(p @ ap)
        x += alpha * p
        r -= alpha * ap
        z = r / m
        rz, rz_old = float(r @ z), rz
        p = z + (rz / rz_old) * p
    return x


def _lbfgs(Phi, labels, lam, W, b, tol, max_iter) -> SoftmaxSolution:
    c, d = W.shape
    fit_bias = b is not None

    def fun(theta):
        Wt, bt = _unpack(theta, c, d, fit_bias)
        obj = objective(Wt, bt, Phi, labels, lam, "ce")
        return obj.value, _pack(obj.grad_W, obj.grad_b)

    result = scipy.optimize.minimize(
        fun, _pack(W, b), jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter, "maxfun": 2 * max_iter, "gtol": tol, "ftol": 0.0,
                 "maxcor": 30})
    W, b = _unpack(result.x, c, d, fit_bias)
    if fit_bias:
        b = b - b.mean()  # L-BFGS also keeps sum(b) fixed up to rounding; restore the gauge
    obj = objective(W, b, Phi, labels, lam, "ce")
    res = _residual(obj)
    # L-BFGS-B often stops on its own criteria (no progress in rounding) above ``tol``:
    # the flag and the residual reached say so instead of a silent promise
    return SoftmaxSolution(W.copy(), None if b is None else b.copy(), res, int(result.nit),
                           "lbfgs", res <= tol)
