"""Losses, each returning ``(loss, d loss / d prediction)`` in one fused pass.

Convention (docs/claims.md, objective J): a loss is the **mean over the N samples** of a
per-sample loss, so that ``J(W) = loss + lambda ||W||_F^2`` matches the papers' eq. 4.

Targets come in two forms, told apart by shape:

* integer class labels of shape (N,), values in [0, C);
* real targets of the prediction's shape (N, C): one-hot rows, probabilities or, for the
  squared error, any real values.
"""

from __future__ import annotations

from typing import NamedTuple

from ._checks import all_finite, float_array
from .backend import array_module

__all__ = ["softmax_cross_entropy", "squared_error", "softmax", "log_softmax", "one_hot",
           "ErrorEnergy", "error_energy"]


def _check_prediction(pred, name: str):
    float_array(pred, name)
    if pred.ndim != 2 or pred.shape[0] == 0:
        raise ValueError(f"{name}: expected shape (N, C) with N >= 1, got {tuple(pred.shape)}")
    all_finite(pred, name)


def _labels(targets, n: int, c: int):
    """Validate integer labels: shape (N,), values in [0, C)."""
    xp = array_module(targets)
    if targets.shape != (n,):
        raise ValueError(f"targets: integer labels must have shape ({n},), got {tuple(targets.shape)}")
    if targets.size and (int(targets.min()) < 0 or int(targets.max()) >= c):
        lo, hi = int(targets.min()), int(targets.max())
        raise ValueError(f"targets: labels must lie in [0, {c}), got values in [{lo}, {hi}]")
    return targets.astype(xp.intp, copy=False)


def _is_integer(a) -> bool:
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise TypeError(f"targets: expected an array of labels or real targets, got {type(a).__name__}")
    return a.dtype.kind in "iu"


def one_hot(labels, n_classes: int, dtype):
    """(N,) integer labels -> (N, C) rows with a single 1."""
    xp = array_module(labels)
    out = xp.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[xp.arange(labels.shape[0]), labels] = 1
    return out


def log_softmax(logits):
    """Row-wise log softmax, stable for logits of any magnitude: (N, C) -> (N, C)."""
    xp = array_module(logits)
    z = logits - logits.max(axis=1, keepdims=True)  # max of every row is now exactly 0
    return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))  # the sum is in [1, C]


def softmax(logits):
    """Row-wise softmax: (N, C) -> (N, C), rows sum to 1."""
    xp = array_module(logits)
    e = xp.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, targets):
    """Mean softmax cross-entropy and its gradient w.r.t. the logits.

        loss = (1/N) sum_i [ -sum_c t_ic log p_ic ],     p_i = softmax(z_i)
        dloss/dz_i = (p_i sum_c t_ic - t_i) / N          (= (p_i - t_i) / N for rows summing to 1)

    Parameters
    ----------
    logits : (N, C) float32 / float64, finite
    targets : (N,) integer labels in [0, C), or (N, C) non-negative real targets (one-hot,
        probabilities, smoothed labels); the gradient formula above is exact for any
        non-negative rows, whether or not they sum to 1.

    Returns
    -------
    loss : float (Python scalar; a 0-d array on CuPy)
    dlogits : (N, C), same dtype as ``logits``

    Stability: log-sum-exp is taken after subtracting the row maximum, so logits of
    magnitude 1e4 or more give finite, exact results (no exp overflow, no log(0)).
    """
    _check_prediction(logits, "logits")
    xp = array_module(logits, targets)
    n, c = logits.shape
    logp = log_softmax(logits)  # (N, C)
    p = xp.exp(logp)  # (N, C) softmax
    if _is_integer(targets):
        labels = _labels(targets, n, c)
        rows = xp.arange(n)
        loss = -logp[rows, labels].sum() / n
        dlogits = p  # reuse: p - one_hot(labels)
        dlogits[rows, labels] -= 1
        dlogits /= n
    else:
        t = _real_targets(targets, logits)
        if bool((t < 0).any()):
            raise ValueError("targets: cross-entropy targets must be non-negative")
        loss = -(t * logp).sum() / n
        dlogits = (p * t.sum(axis=1, keepdims=True) - t) / n
    return _scalar(loss), dlogits


def squared_error(pred, targets):
    """Mean over samples of the summed squared error, and its gradient.

        loss = (1/N) sum_i ||pred_i - y_i||^2,         dloss/dpred = 2 (pred - y) / N

    This is the data term of docs/claims.md's J (no factor 1/2, mean over samples only, sum
    over outputs); for one output it is the usual mean squared error.

    Parameters
    ----------
    pred : (N, C) float32 / float64, finite
    targets : (N, C) real targets, or (N,) integer labels (compared with one-hot rows)

    Returns
    -------
    loss : float; dpred : (N, C), same dtype as ``pred``
    """
    _check_prediction(pred, "pred")
    n = pred.shape[0]
    r = pred - _dense_targets(targets, pred)  # (N, C) residual
    return _scalar((r * r).sum() / n), (2 / n) * r


def _dense_targets(targets, pred):
    """(N, C) targets: one-hot rows for integer labels (N,), else validated real targets."""
    if _is_integer(targets) and targets.ndim == 1:
        n, c = pred.shape
        return one_hot(_labels(targets, n, c), c, pred.dtype)
    return _real_targets(targets, pred)


def _real_targets(targets, pred):
    float_array(targets, "targets")
    if targets.ndim == 1 and pred.ndim == 2:
        raise ValueError(f"targets: got shape {tuple(targets.shape)} with dtype {targets.dtype}; "
                         f"class labels need an integer dtype, real targets the prediction's "
                         f"shape {tuple(pred.shape)}")
    if targets.shape != pred.shape:
        raise ValueError(f"targets: real targets must have the prediction's shape "
                         f"{tuple(pred.shape)}, got {tuple(targets.shape)}")
    if targets.dtype != pred.dtype:
        raise TypeError(f"targets: dtype {targets.dtype} does not match the prediction's "
                        f"dtype {pred.dtype}; cast one of them explicitly")
    all_finite(targets, "targets")
    return targets


def _scalar(x):
    """Host float for NumPy results; CuPy results stay on the device (no sync)."""
    return float(x) if array_module(x).__name__ == "numpy" else x


class ErrorEnergy(NamedTuple):
    """The energy of the error a softmax CE back-propagates (Varno et al. 2019, eqs. 11-12),
    with delta_j = (y_hat_j - y_j) / N the error at logit j (eq. 7)."""

    phi: float  # sum_j phi_j = E_N[y_hat y_hat^T] + E_N[y y^T] - 2 E_N[y_hat y^T]   (eq. 12)
    per_class: object  # (C,) phi_j = E_N[(N delta_j)^2] = E_N[(y_hat_j - y_j)^2]     (eq. 11)
    estimates: float  # E_N[y_hat y_hat^T]: in [1/C, 1] (eqs. 13-19)
    labels: float  # E_N[y y^T]: 1 for one-hot labels
    cross: float  # E_N[y_hat y^T]: the mean probability of the correct class, in [0, 1]
    noise_share: float  # estimates / phi: the share of phi that is the estimates' energy


def error_energy(logits, targets) -> ErrorEnergy:
    """The error energy of softmax(logits) against labels (N,) or real targets (N, C)
    (e.g. one-hot rows). ``phi`` is computed from its definition (eq. 11) and the three
    components separately (eq. 12), so the identity can be checked. ``noise_share`` reads
    the paper's Table 1 ("noise energy to total energy of back-propagated error"): at
    initialisation the estimates carry no information about the labels, so their energy
    is the noise."""
    _check_prediction(logits, "logits")
    y = _dense_targets(targets, logits)
    p = softmax(logits)
    per_class = ((p - y) ** 2).mean(axis=0)  # (C,)
    estimates = float((p * p).sum(axis=1).mean())
    labels = float((y * y).sum(axis=1).mean())
    cross = float((p * y).sum(axis=1).mean())
    phi = float(per_class.sum())
    return ErrorEnergy(phi, per_class, estimates, labels, cross,
                       estimates / phi if phi > 0 else float("nan"))
