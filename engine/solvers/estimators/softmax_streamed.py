"""The exact softmax head when the features are streamed: Newton-CG on chunk sums.

Objective (docs/claims.md): J(W, b) = (1/N) sum_i CE(W Phi_i + b, y_i) + lam ||W||_F^2,
the bias unpenalised with the gauge sum_c b_c = 0; scikit-learn's multinomial
``LogisticRegression(C=1 / (2 N lam))`` minimises the same. The value, the gradient and
every Hessian-vector product are sums over rows, computed chunk by chunk by a runner (in
this process or on Dask workers); memory is one chunk and a few C x d arrays (plus the
P x P Hessian, P = C d + C <= 4096, when it is cheaper than conjugate gradients). The
Newton iteration is that of ``lastlayer.engine.solvers.exact.softmax_regression`` (Newton-CG, CG to
relative accuracy min(1/2, sqrt(||g||)), Armijo backtracking, b put back on its gauge
after every step), switching to the exact Hessian once a step needs more than P / 4 CG
iterations (small lambda: CG iterations grow like 1 / sqrt(lam)); the two solvers agree to
their tolerance.

``fit_streamed`` solves one lambda from a warm start; ``softmax_path`` follows a decreasing
lambda grid, each solve starting from the previous solution (the solutions move smoothly
with lambda, so a few Newton steps suffice), on a subset of rows (the training folds),
with the held-out rows' mean cross-entropy and accuracy for cross-validation. On a subset
of n < N rows the penalty stays that of the whole problem, N lam ||W||^2 (as scikit-learn's
LogisticRegressionCV keeps one C for every fold).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ...losses import softmax, softmax_cross_entropy
from ..exact.curvature import hessian, hvp, objective
from ..streaming.sources import ArraySource, check_chunk, ranges_of

__all__ = ["StreamedSolution", "fit_streamed", "softmax_path", "ranges_of", "class_counts", "class_indices",
           "scores", "logit_scores"]


class StreamedSolution(NamedTuple):
    W: np.ndarray  # (C, d)
    b: np.ndarray | None  # (C,), sum 0
    kkt_residual: float
    iterations: int
    converged: bool


def class_indices(labels: np.ndarray, classes: np.ndarray):
    """(positions of ``labels`` in the sorted ``classes``, mask of the labels among them),
    exact for any two integer dtypes (uint64 labels >= 2^63 against int64 classes and the
    reverse: a label outside the range of the classes' dtype is simply not among them)."""
    labels = np.asarray(labels)
    inside = None
    if labels.dtype != classes.dtype:
        labels, inside = _exact_cast(labels, classes.dtype)
    y = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
    known = classes[y] == labels
    return y, (known if inside is None else known & inside)


def _exact_cast(values: np.ndarray, dtype: np.dtype):
    """``values`` (integers) in ``dtype`` where representable, 0 elsewhere, and the mask of
    the representable ones (NumPy would compare int64 with uint64 in float64, inexactly)."""
    info = np.iinfo(dtype)
    if values.dtype.kind == "i":
        v64 = values.astype(np.int64)
        if np.dtype(dtype).kind == "u":
            nonneg = v64 >= 0
            inside = nonneg & (np.where(nonneg, v64, 0).astype(np.uint64) <= np.uint64(info.max))
        else:
            inside = (v64 >= info.min) & (v64 <= info.max)
    else:
        inside = values.astype(np.uint64) <= np.uint64(info.max)
    return np.where(inside, values, 0).astype(dtype), inside


# The largest feature magnitude the streamed softmax head takes: its Hessian sums N x x^T
# (N <= 1e18 rows) stay below 1e218, far from float64's 1.8e308.
FEATURE_MAX = 1e100


def _read(start, stop, phi_src, lab_src, classes):
    phi = phi_src.read(start, stop)
    check_chunk(phi, start, "features")
    big = float(np.abs(phi).max(initial=0.0))  # a Python float: float32 chunks compare exactly
    if big > FEATURE_MAX:
        row = start + int(np.flatnonzero((np.abs(phi) > FEATURE_MAX).reshape(len(phi), -1).any(axis=1))[0])
        raise ValueError(f"X: |x| = {big:.3g} in row {row} is beyond {FEATURE_MAX:g}: the "
                         f"softmax head's Hessian products x x^T overflow float64; rescale the features")
    labels = lab_src.read(start, stop)
    y, known = class_indices(labels, classes)
    if not known.all():
        row = int(np.flatnonzero(~known)[0]) + start
        raise ValueError(f"labels: row {row} holds {labels[row - start]!r}, not one of the classes "
                         f"found when the fit started")
    return phi.astype(np.float64, copy=False), y


def scores(phi, y, W, b) -> np.ndarray:
    """[summed cross-entropy, correct predictions] of the rows ``phi`` with class indices
    ``y``. The cross-entropy is the very expression ``objective`` evaluates (n times its
    mean): the line search compares the two, and two formulas differing by a rounding
    would stall it near the optimum."""
    z = phi @ W.T
    if b is not None:
        z += b
    return logit_scores(z, y)


def logit_scores(z, y) -> np.ndarray:
    """``scores`` from the logits z (n, C)."""
    mean, _ = softmax_cross_entropy(z, y)
    return np.array([len(y) * mean, float((z.argmax(axis=1) == y).sum())])


# The chunk functions below turn the engine's per-row means (lastlayer.engine.solvers.exact.curvature, the
# gradient-checked objective, gradient, Hessian and Hessian-vector product, at lam = 0) into
# sums over the chunk's rows; the penalty is added once, by _Problem.
def _chunk_value_grad(start, stop, phi_src, lab_src, classes, W, b, with_grad, with_diag=False):
    """([summed CE, correct], summed dCE/dW, summed dCE/db[, summed diagonal of the Hessian in
    W (C, d) and in b (C,)]); without the gradient, the held-out scores only."""
    phi, y = _read(start, stop, phi_src, lab_src, classes)
    if not with_grad:
        return scores(phi, y, W, b),
    n = len(y)
    obj = objective(W, b, phi, y, 0.0, "ce")
    out = (np.array([n * obj.value, 0.0]), n * obj.grad_W,
           n * obj.grad_b if b is not None else np.zeros(len(W)))
    if not with_diag:
        return out
    z = phi @ W.T
    if b is not None:
        z += b
    p = softmax(z)
    a = p * (1.0 - p)  # (rows, C): the diagonal of diag(p) - p p^T
    return out + (a.T @ (phi * phi), a.sum(axis=0))


def _chunk_hvp(start, stop, phi_src, lab_src, classes, W, b, V, vb):
    phi, y = _read(start, stop, phi_src, lab_src, classes)
    hv_w, hv_b = hvp(W, b, phi, y, 0.0, V, vb, "ce")
    n = len(y)
    return n * hv_w, (n * hv_b if hv_b is not None else np.zeros(len(W)))


def _chunk_hessian(start, stop, phi_src, lab_src, classes, W, b):
    """([summed CE, 0], summed gradient, summed exact Hessian; parameters [vec(W) by class
    rows; b]) for the dense Newton step."""
    phi, y = _read(start, stop, phi_src, lab_src, classes)
    n = len(y)
    obj = objective(W, b, phi, y, 0.0, "ce")
    return (np.array([n * obj.value, 0.0]), n * obj.grad_W,
            n * obj.grad_b if b is not None else np.zeros(len(W)), n * hessian(W, b, phi, y, 0.0, "ce"))


def _chunk_labels(start, stop, lab_src):
    labels = lab_src.read(start, stop)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels: expected integer class labels, got {labels.dtype} "
                         f"(rows {start}-{stop - 1})")
    return np.unique(labels, return_counts=True)


def class_counts(runner, labels: ArraySource, chunk_rows: int, pieces=None) -> dict[int, int]:
    """Label -> count over the rows (one pass; ``pieces`` restricts to row intervals)."""
    ranges = ranges_of(pieces or [(0, labels.rows)], chunk_rows)
    total: dict[int, int] = {}
    for values, counts in runner.map_list(_chunk_labels, ranges, runner.prepare(labels)):
        for v, k in zip(values.tolist(), counts.tolist()):
            total[v] = total.get(v, 0) + k
    return dict(sorted(total.items()))


class _Problem:
    """J, its gradient and Hessian-vector products on the rows of ``ranges``."""

    def __init__(self, runner, phi, labels, classes, ranges, lam, fit_bias, progress=None):
        self.runner, self.ranges, self.lam, self.fit_bias = runner, ranges, lam, fit_bias
        self.phi, self.labels = runner.prepare(phi), runner.prepare(labels)
        self.classes = classes
        self.n = float(sum(stop - start for start, stop in ranges))
        self.progress = progress

    def value(self, W, b, with_grad=True, with_diag=False):
        """(J, dJ/dW, dJ/db) [+ (the Hessian's diagonal in W, in b) with ``with_diag``]."""
        out = self.runner.map_sum(_chunk_value_grad, self.ranges, self.phi, self.labels, self.classes,
                                  W, b, with_grad, with_diag, progress=self.progress)
        value = out[0][0] / self.n + self.lam * float((W * W).sum())
        if not with_grad:
            return value, None, None
        gW = out[1] / self.n + 2 * self.lam * W
        gb = out[2] / self.n if self.fit_bias else None
        if not with_diag:
            return value, gW, gb
        return value, gW, gb, (out[3] / self.n + 2 * self.lam, out[4] / self.n if self.fit_bias else None)

    def newton_terms(self, W, b):
        """J, its gradient and its exact Hessian (parameters [vec(W); b]) in one pass."""
        out, gW, gb, h = self.runner.map_sum(_chunk_hessian, self.ranges, self.phi, self.labels,
                                             self.classes, W, b, progress=self.progress)
        value = out[0] / self.n + self.lam * float((W * W).sum())
        gW = gW / self.n + 2 * self.lam * W
        gb = gb / self.n if self.fit_bias else None
        h = h / self.n
        idx = np.arange(W.size)
        h[idx, idx] += 2 * self.lam
        return value, gW, gb, h

    def hvp(self, W, b, V, vb):
        hW, hb = self.runner.map_sum(_chunk_hvp, self.ranges, self.phi, self.labels, self.classes,
                                     W, b, V, vb, progress=self.progress)
        return hW / self.n + 2 * self.lam * V, (hb / self.n if self.fit_bias else None)


def _norm(gW, gb):
    return float(np.sqrt((gW * gW).sum() + (0.0 if gb is None else (gb * gb).sum())))


# Newton's step by conjugate gradients costs one Hessian-vector pass (~4 N P flops, P = C d
# + C parameters) per CG iteration, and the iterations grow like sqrt(cond(H)) ~ 1/sqrt(lam);
# the exact Hessian costs one pass of ~N P^2 flops and a solve. So the steps start with CG
# and, up to DENSE_NEWTON_MAX parameters, switch to the exact Hessian (a direct solve, as
# scikit-learn's newton-cholesky) once a step has needed more than P / 4 CG iterations.
DENSE_NEWTON_MAX = 4096

# Near the optimum the decrease a Newton step makes, about -slope / 2 = g^T H^-1 g / 2, falls
# below the rounding of J itself (a sum over the rows, ~1e-16 |J| and more): Armijo's test on
# J then rejects every full step and accepted only steps of t ~ 1e-9, so the residual stayed
# at 3.6e-10 for 100 iterations (a K-fold path fit of the tests, at tol 1e-10). Where
# -slope <= FLAT_SLOPE |J|, the full step is judged by what convergence is measured by
# instead: accepted if it lowers ||grad J||.
FLAT_SLOPE = 1e-10


def fit_streamed(problem: _Problem, W0, b0, tol: float, max_iter: int) -> StreamedSolution:
    """Newton's method from (W0, b0): steps by Jacobi-preconditioned conjugate gradients, or
    by the exact Hessian once CG proves the more expensive (``DENSE_NEWTON_MAX``); Armijo
    backtracking, or the residual's decrease where J is flat to rounding (``FLAT_SLOPE``)."""
    W, b = W0.copy(), (None if b0 is None else b0 - b0.mean())
    c = W.shape[0]
    gauge = 1.0 / np.sqrt(c)
    size = W.size + (c if b is not None else 0)
    dense, hessian = False, None
    value, gW, gb, diag = problem.value(W, b, with_diag=True)
    for it in range(max_iter):
        res = _norm(gW, gb)
        if res <= tol:
            return StreamedSolution(W, b, res, it, True)
        if dense:
            sW, sb = _dense_step(hessian, gW, gb, gauge)
        else:
            sW, sb, cg_iterations = _cg_step(problem, W, b, gW, gb, gauge, res, diag)
            dense = size <= DENSE_NEWTON_MAX and cg_iterations > size / 4
        slope = float((gW * sW).sum()) + (0.0 if gb is None else float(gb @ sb))
        t = 1.0
        judged = None  # (J, gradient) at the full step, when judged by the residual
        while True:
            W_new = W + t * sW
            b_new = None if b is None else b + t * sb
            if b_new is not None:
                b_new = b_new - b_new.mean()  # the gauge sum_c b_c = 0, exactly (J unchanged)
            new_value, _, _ = problem.value(W_new, b_new, with_grad=False)
            if new_value <= value + 1e-4 * t * slope:
                break
            if t == 1.0 and -slope <= FLAT_SLOPE * abs(value):
                judged = problem.value(W_new, b_new, with_diag=not dense)
                if _norm(judged[1], judged[2]) < res:
                    break
                judged = None
            t /= 2
            if t < 1e-10:  # no decrease left to rounding
                return StreamedSolution(W, b, res, it, False)
        W, b = W_new, b_new
        if dense:
            value, gW, gb, hessian = problem.newton_terms(W, b)
        elif judged is not None:
            value, gW, gb, diag = judged
        else:
            value, gW, gb, diag = problem.value(W, b, with_diag=True)
    res = _norm(gW, gb)
    return StreamedSolution(W, b, res, max_iter, res <= tol)


def _dense_step(hessian, gW, gb, gauge):
    """Newton's step -H^-1 g; the flat gauge direction e of b is lifted by e e^T (H e = 0,
    g . e = 0: the same step, from a positive definite matrix)."""
    c, d = gW.shape
    g = gW.ravel() if gb is None else np.concatenate([gW.ravel(), gb])
    h = hessian.copy()
    if gb is not None:
        h[c * d:, c * d:] += gauge * gauge
    # NumPy's LAPACK, like the products that built h: scipy's separate OpenBLAS pool would
    # start its own threads while NumPy's still spin, 30-60x slower on a 2-core machine
    step = -np.linalg.solve(h, g)
    return step[:c * d].reshape(c, d), (None if gb is None else step[c * d:])


def _cg_step(problem, W, b, gW, gb, gauge, res, diag):
    """Newton-CG: (H + e e^T) s = -g by conjugate gradients on Hessian-vector products,
    preconditioned by the diagonal of H + e e^T (Jacobi; ``diag`` = (its W part, its b
    part without e e^T)), to relative accuracy min(1/2, sqrt(||g||)). Returns the step and
    the CG iterations.

    The preconditioner is what lets a large lambda converge: the W block's curvature is
    >= 2 lam, the unpenalised b block's <= 1/2, and plain CG, whose steps follow the
    largest curvature, moved b by ~1 / (2 lam) per iteration (b = 1e-302 after a step at
    lam = 1e300, where 2 lam ||p||^2 also overflowed). Scaled by the diagonal, both
    blocks have curvature ~1 and CG converges in a few iterations at any lambda."""
    mW = diag[0]
    mb = None if b is None else diag[1] + gauge * gauge
    sW, sb = np.zeros_like(W), (None if b is None else np.zeros_like(b))
    rW, rb = -gW, (None if gb is None else -gb)
    zW, zb = rW / mW, (None if rb is None else rb / mb)
    pW, pb = zW.copy(), (None if zb is None else zb.copy())
    rz = float((rW * zW).sum()) + (0.0 if rb is None else float(rb @ zb))
    target = min(0.5, np.sqrt(res)) * res
    iterations = 0
    for iterations in range(2 * W.size + W.shape[0]):
        if _norm(rW, rb) <= target:
            break
        hW, hb = problem.hvp(W, b, pW, pb)
        if pb is not None:
            hb = hb + gauge * gauge * pb.sum()
        curvature = float((pW * hW).sum()) + (0.0 if pb is None else float(pb @ hb))
        alpha = rz / curvature
        sW += alpha * pW
        rW -= alpha * hW
        zW = rW / mW
        if pb is not None:
            sb += alpha * pb
            rb -= alpha * hb
            zb = rb / mb
        rz, rz_old = float((rW * zW).sum()) + (0.0 if rb is None else float(rb @ zb)), rz
        pW = zW + (rz / rz_old) * pW
        if pb is not None:
            pb = zb + (rz / rz_old) * pb
    return sW, sb, iterations


def softmax_path(runner, phi: ArraySource, labels: ArraySource, classes: np.ndarray, lams,
                 fit_bias: bool, tol: float, max_iter: int, chunk_rows: int,
                 train=None, held=None, progress=None):
    """Solutions along ``lams`` (solved from the largest down, each from the previous one)
    on the rows ``train`` (intervals; all rows if None), and, when ``held`` intervals are
    given, the held-out (mean CE, accuracy) of each. Returns (solutions, held scores) in the
    order of ``lams``."""
    train_ranges = ranges_of(train or [(0, phi.rows)], chunk_rows)
    held_ranges = ranges_of(held, chunk_rows) if held else None
    d, c = phi.shape[1], len(classes)
    W, b = np.zeros((c, d)), (np.zeros(c) if fit_bias else None)
    order = np.argsort(lams)[::-1]
    solutions, scores = [None] * len(lams), [None] * len(lams)
    n_train = sum(stop - start for start, stop in train_ranges)
    for i in order:
        # the whole problem's penalty N lam ||W||^2 on n_train rows: lam N / n_train per row
        # (LogisticRegressionCV keeps one C for every fold)
        lam = float(lams[i]) * phi.rows / n_train
        problem = _Problem(runner, phi, labels, classes, train_ranges, lam, fit_bias, progress)
        sol = fit_streamed(problem, W, b, tol, max_iter)
        solutions[i] = sol
        W, b = sol.W, sol.b
        if held_ranges:
            out = runner.map_sum(_chunk_value_grad, held_ranges, runner.prepare(phi), runner.prepare(labels),
                                 classes, W, b, False, progress=progress)
            n = sum(stop - start for start, stop in held_ranges)
            scores[i] = (out[0][0] / n, out[0][1] / n)
    return solutions, scores


def make_problem(runner, phi, labels, classes, lam, fit_bias, chunk_rows, progress=None) -> _Problem:
    return _Problem(runner, phi, labels, classes, ranges_of([(0, phi.rows)], chunk_rows), lam,
                    fit_bias, progress)
