"""``evaluate_head``: a fitted last layer's scores on (possibly streamed) data, in one pass
of chunk sums: the loss, the accuracy, the Brier score and the equal-width ECE / MCE of its
probabilities, and the same for its Laplace predictive (the layout in ``heads``' docstring).
"""

from __future__ import annotations

import math

import numpy as np

from ..._checks import positive_int
from ..diagnostics.calibration import brier, ece
from ..laplace.posterior import LastLayerLaplace
from ..streaming.runners import make_runner
from ..streaming.sources import default_chunk_rows
from .checks import _finite_rows, as_source
from .softmax_streamed import class_indices, logit_scores

__all__ = ["evaluate_head", "ECE_BINS"]

ECE_BINS = 15  # equal-width confidence bins of evaluate_head's ECE (Guo et al. 2017)


def _bins(p, y, n_bins: int):
    """(Brier sum, (3, M) per-bin counts, hits and confidence sums) of probabilities p (n, C)
    and labels y (n,) in [0, C), from ``calibration.ece``'s equal-width bins."""
    if not len(y):
        return 0.0, np.zeros((3, n_bins))
    table = ece(p, y, n_bins, "width").bins
    count = table.count.astype(np.float64)
    full = count > 0
    hits = np.where(full, np.round(np.where(full, table.accuracy, 0.0) * count), 0.0)
    sums = np.where(full, np.where(full, table.confidence, 0.0) * count, 0.0)
    return brier(p, y) * len(y), np.stack([count, hits, sums])


def _calibration(bins: np.ndarray, n: int) -> dict:
    """ECE and MCE of the merged bins (module docstring), over n rows."""
    count, hits, sums = bins
    full = count > 0
    gaps = np.abs(hits[full] - sums[full])
    return {"ece": math.fsum(gaps.tolist()) / n, "mce": float((gaps / count[full]).max())}


def _chunk_eval(start, stop, phi_src, y_src, W, b, loss, classes, laplace=None):
    from ..streaming.sources import check_chunk

    phi = phi_src.read(start, stop)
    check_chunk(phi, start, "features")
    phi = phi.astype(np.float64, copy=False)
    target = y_src.read(start, stop)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
        z = phi @ W.T + (0.0 if b is None else b)
    if not np.isfinite(z).all():
        row = int(np.flatnonzero(~np.isfinite(z).all(axis=1))[0]) + start
        raise ValueError(f"X: the head's outputs W x + b overflow float64 in row {row} "
                         f"(max |x| there {np.abs(phi[row - start]).max():.3g}); rescale the features")
    if loss == "squared":
        check_chunk(target, start, "targets")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
            r = z - target.reshape(len(target), -1)
            sse = float((r * r).sum())
        if not np.isfinite(sse):
            big_z, big_t = float(np.abs(z).max()), float(np.abs(target).max())
            what = ("X: the head's outputs W x + b" if big_z >= big_t else "y: the targets")
            raise ValueError(f"{what} (largest |value| {max(big_z, big_t):.3g}) make the squared "
                             f"errors of rows {start}-{stop - 1} overflow float64; rescale "
                             f"{'the features' if big_z >= big_t else 'the targets'}")
        if laplace is None:
            return np.array([sse, 0.0, 0.0]),
        y64 = target.astype(np.float64, copy=False).reshape(len(target), -1)
        return np.array([sse, 0.0, 0.0]), np.array([len(y64) * laplace.predictive_nll(phi, y64)])
    y, known = class_indices(target, classes)
    rows = np.flatnonzero(known)  # a label the head does not know counts as wrong
    ce, correct = logit_scores(z[rows], y[rows]) if rows.size else (0.0, 0.0)
    zk = z[rows] - z[rows].max(axis=1, keepdims=True) if rows.size else z[rows]
    e = np.exp(zk)
    score, bins = _bins(e / e.sum(axis=1, keepdims=True), y[rows], ECE_BINS)
    out = (np.array([ce, correct, float(len(target) - rows.size), score]), bins)
    if laplace is None:
        return out
    if not rows.size:
        return out + (np.zeros(3), np.zeros((3, ECE_BINS)))
    p = laplace.predict_proba(phi[rows], method="probit")
    nll = len(rows) * laplace.predictive_nll(phi[rows], y[rows].astype(np.intp), method="probit")
    score, bins = _bins(p, y[rows], ECE_BINS)
    return out + (np.array([nll, float((p.argmax(axis=1) == y[rows]).sum()), score]), bins)


def _head_arrays(W, b, loss, classes):
    """(W, b, classes) checked: W (C, d) finite float, b (C,) or None, classes (C,) sorted
    distinct integers for "ce"."""
    if loss not in ("squared", "ce"):
        raise ValueError(f"loss: expected 'squared' or 'ce', got {loss!r}")
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[0] == 0 or W.shape[1] == 0 or W.dtype.kind not in "fiu":
        raise ValueError(f"W: expected a numeric array of shape (C, d) with C, d >= 1, got "
                         f"{W.dtype} {W.shape}")
    W = W.astype(np.float64, copy=False)
    _finite_rows(W, "W")
    if b is not None:
        b = np.asarray(b)
        if b.shape != (W.shape[0],) or b.dtype.kind not in "fiu":
            raise ValueError(f"b: expected a numeric array of shape ({W.shape[0]},) like W's rows, "
                             f"got {b.dtype} {b.shape}")
        b = b.astype(np.float64, copy=False)
        _finite_rows(b, "b")
    if loss == "ce":
        if classes is None:
            raise ValueError("classes: a ce head needs its class labels (the head's classes_)")
        classes = np.asarray(classes)
        if classes.shape != (W.shape[0],) or classes.dtype.kind not in "iu":
            raise ValueError(f"classes: expected {W.shape[0]} integer labels (one per row of W), got "
                             f"{classes.dtype} {classes.shape}")
        if np.any(classes[1:] <= classes[:-1]):
            raise ValueError(f"classes: expected sorted distinct labels, got {classes.tolist()[:10]}")
    return W, b, classes


def _check_posterior(laplace, W, b, loss: str):
    """``laplace`` None, or the LastLayerLaplace of this very head (W, b) and loss."""
    if laplace is None:
        return None
    if not isinstance(laplace, LastLayerLaplace):
        raise TypeError(f"laplace: expected a LastLayerLaplace or None, got "
                        f"{type(laplace).__name__}")
    if laplace.loss != loss:
        raise ValueError(f"laplace: a posterior for loss {laplace.loss!r}, the head's is {loss!r}")
    same = (laplace.W.shape == W.shape and np.array_equal(laplace.W, W)
            and (laplace.b is None) == (b is None) and (b is None or np.array_equal(laplace.b, b)))
    if not same:
        raise ValueError(f"laplace: its mode (W {laplace.W.shape}, b "
                         f"{'None' if laplace.b is None else laplace.b.shape}) is not the head's "
                         f"(W {W.shape}, b {'None' if b is None else b.shape}): the posterior of "
                         f"another head")
    return laplace


def evaluate_head(X, y, W, b, loss: str, classes=None, *, laplace=None,
                  chunk_rows: int | None = None, workers: int | None = None,
                  scheduler: str | None = None, progress=None) -> dict:
    """Metrics of the head (W, b) on features ``X`` and targets / labels ``y`` (arrays,
    file specs or ArraySources, streamed in chunks): for "squared" the mean squared error
    per output, its root and the Gaussian nll; for "ce" the mean cross-entropy (also as
    ``nll``), the accuracy, ``brier``, ``ece`` and ``mce`` (ECE_BINS equal-width bins), and
    how many rows hold a label the head does not know (they count as wrong and are left out
    of the cross-entropy and the calibration scores). ``laplace``: the head's
    LastLayerLaplace, whose predictive's metrics go under the key "laplace" (module
    docstring).

    Every shape is checked against the head before any row is read: X (N, d) with d =
    W's columns, N >= 1; for "squared" y (N, C) with C = W's rows, or (N,) when C = 1; for
    "ce" y (N,) integer labels and ``classes`` (C,) the head's sorted labels. Every metric
    returned is finite: outputs that overflow, or labels none of which the head knows (no
    cross-entropy to report), are a ValueError."""
    from ..streaming.sources import row_chunks

    W, b, classes = _head_arrays(W, b, loss, classes)
    laplace = _check_posterior(laplace, W, b, loss)
    phi, target = as_source(X, "X"), as_source(y, "y")
    c, d = W.shape
    if len(phi.shape) != 2 or phi.shape[1] != d:
        raise ValueError(f"X: expected features of shape (N, {d}) like W's columns, got {phi.shape}")
    if phi.rows == 0:
        raise ValueError(f"X: expected at least one row, got shape {phi.shape}")
    if phi.dtype.kind not in "fiu":
        raise ValueError(f"X: expected numeric features, got {phi.dtype}")
    if target.rows != phi.rows:
        raise ValueError(f"y: expected {phi.rows} rows like X, got {target.rows}")
    if loss == "ce" and (len(target.shape) != 1 or target.dtype.kind not in "iu"):
        raise ValueError(f"y: expected integer class labels of shape (N,), got {target.dtype} {target.shape}")
    if loss == "squared":
        if target.dtype.kind not in "fiu":
            raise ValueError(f"y: expected numeric targets, got {target.dtype}")
        columns = 1 if len(target.shape) == 1 else target.shape[1]
        if columns != c:
            want = f"(N, {c})" if c > 1 else "(N,) or (N, 1)"
            raise ValueError(f"y: expected targets of shape {want}, one column per output of the "
                             f"head (W has {c} rows), got {target.shape}")
    rows = positive_int(chunk_rows, "chunk_rows") if chunk_rows is not None else default_chunk_rows(d)
    with make_runner(scheduler, workers) as runner:
        client = getattr(runner, "client", None)  # a posterior is sent once to every worker
        shared = client.scatter(laplace, broadcast=True) if client and laplace else laplace
        parts = runner.map_sum(_chunk_eval, row_chunks(phi.rows, rows), runner.prepare(phi),
                               runner.prepare(target), W, b, loss, classes, shared,
                               progress=progress)
    n, out = phi.rows, parts[0]
    if loss == "squared":
        mse = float(out[0]) / (n * c)
        metrics = {"rows": n, "mse": mse, "rmse": float(np.sqrt(mse)),
                   "nll": 0.5 * c * float(np.log(np.pi)) + c * mse}
        if laplace is not None:
            metrics["laplace"] = {"nll": float(parts[1][0]) / n}
        return metrics
    known = n - int(out[2])
    if known == 0:
        raise ValueError(f"y: none of the {n} labels is one of the head's {c} classes "
                         f"({', '.join(map(str, classes.tolist()[:10]))}{', ...' if c > 10 else ''}): "
                         f"there is no cross-entropy to report")
    metrics = {"rows": n, "cross_entropy": float(out[0]) / known, "accuracy": float(out[1]) / n,
               "unknown_labels": int(out[2]), "nll": float(out[0]) / known,
               "brier": float(out[3]) / known, **_calibration(parts[1], known)}
    if laplace is not None:
        la = parts[2]
        metrics["laplace"] = {"accuracy": float(la[1]) / n, "nll": float(la[0]) / known,
                              "brier": float(la[2]) / known, **_calibration(parts[3], known)}
    return metrics
