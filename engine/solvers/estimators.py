"""Exact last layers on your own features, as scikit-learn estimators.

``ExactRidgeHead`` (squared loss: the post-training paper's closed form) and
``ExactSoftmaxHead`` (L2-regularised softmax cross-entropy, solved by Newton to a KKT
residual of ``tol``) follow scikit-learn's conventions: ``fit`` / ``predict`` / ``score`` /
``get_params``, so they work in pipelines, ``clone`` and ``cross_val_score``. The
objective is the mean-loss one of docs/claims.md,

    J(W, b) = (1/N) sum_i loss(W Phi_i + b, y_i) + lam ||W||_F^2   (b not penalised),

so scikit-learn's ``Ridge(alpha=N lam)`` and ``LogisticRegression(C=1 / (2 N lam))``
(multinomial) have the same minimiser.

Data. ``X`` and ``y`` are NumPy arrays, or ``ArraySource`` objects / file specs
(``file.npy``, ``file.npz:name``, ``file.h5:dataset``, ``dir.zarr[:name]``), which are read
in chunks of ``chunk_rows`` rows: features larger than memory are fitted with bounded
memory (the ridge head keeps d x d sums; the softmax head streams every gradient and
Hessian-vector product). With ``workers=N`` (a local Dask cluster of N processes) or
``scheduler="tcp://..."`` (an existing one), each chunk is a task on a worker, which reads
its own rows; only d x d or C x d sums come back (``engine.solvers.runners``).

Lambda. ``lam`` fixes it; ``lams`` (a grid) with ``cv`` chooses it: ``cv=K`` (K contiguous
folds, scikit-learn's ``KFold(K)``: mean held-out MSE for ridge, mean held-out
cross-entropy for softmax; each fold is fitted with the whole problem's penalty
N lam ||W||^2, as ``RidgeCV`` and ``LogisticRegressionCV`` keep one alpha or C), or for ridge ``cv="loo"`` (exact leave-one-out, scikit-learn
``RidgeCV``'s default) and ``cv="gcv"`` (generalised cross-validation). Ridge needs one
pass over the data for every lambda and fold at once (two for "loo"); softmax solves the
lambda path from the largest lambda down, each solve warm-started from the previous one.
After the choice the head is refitted on all rows. Fitted attributes: ``coef_`` (C, d),
``intercept_`` (C,), ``lam_``, ``cv_lams_`` / ``cv_scores_`` (the CV curve),
``kkt_residual_`` (||grad J|| at the solution, on all rows), ``n_features_in_``; softmax
also ``classes_``, ``converged_``, ``n_iter_``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from .._checks import positive_int, real_number
from .ridge_cv import fold_edges, loo_scores, ridge_cv_scores, ridge_statistics, solve_ridge
from .runners import make_runner
from .softmax_streamed import class_counts, class_indices, make_problem, scores, softmax_path
from .sources import ArraySource, default_chunk_rows, open_source

__all__ = ["ExactRidgeHead", "ExactSoftmaxHead", "as_source"]


def as_source(x, what: str) -> ArraySource:
    """An ArraySource for a NumPy array, a file spec or an ArraySource; errors name ``what``."""
    if isinstance(x, ArraySource):
        return x
    if isinstance(x, str):
        return open_source(x, what)
    if isinstance(x, np.ndarray):
        if x.ndim not in (1, 2) or x.dtype.kind not in "fiub":
            raise ValueError(f"{what}: expected a 1-D or 2-D numeric array, got {x.dtype} {x.shape}")
        return ArraySource.memory(x)
    raise TypeError(f"{what}: expected a NumPy array, a file spec or an ArraySource, "
                    f"got {type(x).__name__}")


class _ExactHead(BaseEstimator):
    """Shared parameters and checks (see the module docstring)."""

    def _lams(self) -> np.ndarray:
        if self.lams is None:
            minimum_open = isinstance(self, ExactSoftmaxHead)
            return np.array([real_number(self.lam, "lam", minimum=0, open_minimum=minimum_open)])
        lams = np.asarray(self.lams, dtype=np.float64).ravel() if not isinstance(self.lams, str) else None
        if lams is None or lams.size == 0 or not np.all(np.isfinite(lams)) or np.any(lams < 0) or \
                (isinstance(self, ExactSoftmaxHead) and np.any(lams <= 0)):
            bound = "> 0" if isinstance(self, ExactSoftmaxHead) else ">= 0"
            raise ValueError(f"lams: expected a non-empty grid of finite numbers {bound}, "
                             f"got {self.lams!r}")
        return np.unique(lams)

    def _cv(self, allowed: tuple[str, ...]):
        cv = self.cv
        if cv is None or (isinstance(cv, str) and cv in allowed):
            return cv
        if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool) and cv >= 2:
            return int(cv)
        raise ValueError("cv: expected None, an integer >= 2 (K folds)"
                         + (f" or one of {', '.join(map(repr, allowed))}" if allowed else "")
                         + f", got {cv!r}")

    def _data(self, X, y):
        phi = as_source(X, "X")
        target = as_source(y, "y")
        if len(phi.shape) != 2 or phi.shape[0] == 0 or phi.shape[1] == 0:
            raise ValueError(f"X: expected features of shape (N, d) with N, d >= 1, got {phi.shape}")
        if target.rows != phi.rows:
            raise ValueError(f"y: expected {phi.rows} rows like X, got {target.rows}")
        if phi.dtype.kind not in "fiu":
            raise ValueError(f"X: expected numeric features, got {phi.dtype}")
        rows = self.chunk_rows if self.chunk_rows is not None else default_chunk_rows(phi.shape[1])
        positive_int(rows, "chunk_rows")
        return phi, target, rows

    def _runner(self):
        return make_runner(self.scheduler, self.workers)

    def _check_fitted(self, X):
        if not hasattr(self, "coef_"):
            raise ValueError(f"{type(self).__name__}: call fit before predict")
        x = np.asarray(X) if not isinstance(X, (str, ArraySource)) else None
        if x is None:
            raise TypeError("X: predict takes a NumPy array (read a file with ArraySource.read)")
        if x.ndim != 2 or x.shape[1] != self.coef_.shape[-1]:
            raise ValueError(f"X: expected shape (N, {self.coef_.shape[-1]}), got {x.shape}")
        return x


class ExactRidgeHead(_ExactHead, RegressorMixin):
    """The closed-form ridge head (module docstring). ``fit_intercept``: an unpenalised bias."""

    def __init__(self, lam: float = 1e-3, *, lams=None, cv=None, fit_intercept: bool = True,
                 chunk_rows: int | None = None, workers: int | None = None, scheduler: str | None = None):
        self.lam = lam
        self.lams = lams
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.chunk_rows = chunk_rows
        self.workers = workers
        self.scheduler = scheduler

    def fit(self, X, y, progress=None):
        lams = self._lams()
        cv = self._cv(("loo", "gcv"))
        if cv is not None and self.lams is None:
            raise ValueError("cv: cross-validation needs a grid of lambdas (lams=...)")
        phi, target, rows = self._data(X, y)
        if target.dtype.kind not in "fiu":
            raise ValueError(f"y: expected numeric targets, got {target.dtype}")
        folds = cv if isinstance(cv, int) else 1
        if folds > phi.rows:
            raise ValueError(f"cv: {folds} folds need at least {folds} rows, got {phi.rows}")
        with self._runner() as runner:
            stats = ridge_statistics(runner, phi, target, folds, rows, progress)
            if cv is None:
                scores = None
                self.lam_ = float(lams[0])
            elif cv == "loo":
                scores = loo_scores(runner, phi, target, stats, lams, self.fit_intercept, rows, progress)
            else:
                scores = ridge_cv_scores(stats, lams, self.fit_intercept, "gcv" if cv == "gcv" else "kfold")
        if scores is not None:
            self.lam_ = float(lams[int(np.argmin(scores))])
        total = stats.total()
        W, b = solve_ridge(total, self.lam_, self.fit_intercept)
        self.cv_lams_, self.cv_scores_ = (lams, scores) if scores is not None else (None, None)
        self.W_ = W
        self.coef_ = W[0] if len(target.shape) == 1 else W
        self.intercept_ = (b[0] if len(target.shape) == 1 else b) if b is not None else \
            (0.0 if len(target.shape) == 1 else np.zeros(W.shape[0]))
        self.n_features_in_ = phi.shape[1]
        self.kkt_residual_ = _ridge_kkt(total, W, b, self.lam_)
        self.n_rows_ = phi.rows
        return self

    def predict(self, X):
        x = self._check_fitted(X)
        return x @ np.asarray(self.coef_).T + self.intercept_


def _ridge_kkt(stats, W, b, lam) -> float:
    """||grad J|| at (W, b) from the sums: dJ/dW = (2/n)(W G + b s^T - B^T) + 2 lam W."""
    n = float(stats.n[0])
    gW = W @ stats.gram[0] - stats.cross[0].T
    gb = None
    if b is not None:
        gW += np.outer(b, stats.sums[0])
        gb = (2 / n) * (W @ stats.sums[0] + n * b - stats.tsum[0])
    gW = (2 / n) * gW + 2 * lam * W
    return float(np.sqrt((gW * gW).sum() + (0.0 if gb is None else (gb * gb).sum())))


class ExactSoftmaxHead(_ExactHead, ClassifierMixin):
    """The exact L2-regularised softmax head (module docstring)."""

    def __init__(self, lam: float = 1e-3, *, lams=None, cv=None, fit_intercept: bool = True,
                 tol: float = 1e-10, max_iter: int = 100, chunk_rows: int | None = None,
                 workers: int | None = None, scheduler: str | None = None):
        self.lam = lam
        self.lams = lams
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.chunk_rows = chunk_rows
        self.workers = workers
        self.scheduler = scheduler

    def fit(self, X, y, progress=None):
        lams = self._lams()
        cv = self._cv(())
        if cv is not None and self.lams is None:
            raise ValueError("cv: cross-validation needs a grid of lambdas (lams=...)")
        tol = real_number(self.tol, "tol", minimum=0, open_minimum=True)
        max_iter = positive_int(self.max_iter, "max_iter")
        phi, labels, rows = self._data(X, y)
        if len(labels.shape) != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"y: expected integer class labels of shape (N,), got {labels.dtype} "
                             f"{labels.shape}")
        with self._runner() as runner:
            counts = class_counts(runner, labels, rows)
            classes = np.array(list(counts), dtype=np.int64)
            if len(classes) < 2:
                raise ValueError(f"y: expected at least 2 classes, got {len(classes)}")
            scores = None
            if cv is not None:
                edges = fold_edges(phi.rows, cv)
                total_ce = np.zeros(len(lams))
                for f in range(cv):
                    held = [(int(edges[f]), int(edges[f + 1]))]
                    train = [(0, int(edges[f])), (int(edges[f + 1]), phi.rows)]
                    train = [(a, b) for a, b in train if b > a]
                    if self.fit_intercept:
                        present = class_counts(runner, labels, rows, train)
                        if len(present) < len(classes):
                            missing = sorted(set(classes.tolist()) - set(present))
                            raise ValueError(f"cv: fold {f} leaves class {missing[0]} out of its "
                                             f"training rows; with an unpenalised bias the fit "
                                             f"has no minimiser: use fewer folds or shuffle the rows")
                    _, held_scores = softmax_path(runner, phi, labels, classes, lams,
                                                  self.fit_intercept, tol, max_iter, rows,
                                                  train=train, held=held, progress=progress)
                    total_ce += np.array([s[0] for s in held_scores])
                scores = total_ce / cv
                lam = float(lams[int(np.argmin(scores))])
            else:
                lam = float(lams[0])
            solutions, _ = softmax_path(runner, phi, labels, classes, np.array([lam]),
                                        self.fit_intercept, tol, max_iter, rows, progress=progress)
            sol = solutions[0]
            problem = make_problem(runner, phi, labels, classes, lam, self.fit_intercept, rows)
            _, gW, gb = problem.value(sol.W, sol.b)
        self.classes_ = classes
        self.lam_ = lam
        self.cv_lams_, self.cv_scores_ = (lams, scores) if scores is not None else (None, None)
        self.coef_ = sol.W
        self.intercept_ = sol.b if sol.b is not None else np.zeros(len(classes))
        self.kkt_residual_ = float(np.sqrt((gW * gW).sum() + (0.0 if gb is None else (gb * gb).sum())))
        self.converged_ = bool(sol.converged)
        self.n_iter_ = int(sol.iterations)
        self.n_features_in_ = phi.shape[1]
        self.n_rows_ = phi.rows
        return self

    def decision_function(self, X):
        x = self._check_fitted(X)
        return x @ self.coef_.T + self.intercept_

    def predict_proba(self, X):
        z = self.decision_function(X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[self.decision_function(X).argmax(axis=1)]


def _chunk_eval(start, stop, phi_src, y_src, W, b, loss, classes):
    from .sources import check_chunk

    phi = phi_src.read(start, stop)
    check_chunk(phi, start, "features")
    phi = phi.astype(np.float64, copy=False)
    target = y_src.read(start, stop)
    if loss == "squared":
        check_chunk(target, start, "targets")
        r = phi @ W.T + (0.0 if b is None else b) - target.reshape(len(target), -1)
        return np.array([float((r * r).sum()), 0.0]),
    y, known = class_indices(target, classes)
    rows = np.flatnonzero(known)  # a label the head does not know counts as wrong
    ce, correct = scores(phi[rows], y[rows], W, b) if rows.size else (0.0, 0.0)
    return np.array([ce, correct, float(len(target) - rows.size)]),


def evaluate_head(X, y, W, b, loss: str, classes=None, *, chunk_rows: int | None = None,
                  workers: int | None = None, scheduler: str | None = None, progress=None) -> dict:
    """Metrics of the head (W, b) on features ``X`` and targets / labels ``y`` (arrays,
    file specs or ArraySources, streamed in chunks): for "squared" the mean squared error
    per output and its root; for "ce" the mean cross-entropy, the accuracy, and how many
    rows hold a label the head does not know (they count as wrong and are left out of the
    cross-entropy)."""
    from .sources import row_chunks

    phi, target = as_source(X, "X"), as_source(y, "y")
    if len(phi.shape) != 2 or phi.shape[1] != W.shape[1]:
        raise ValueError(f"X: expected features of shape (N, {W.shape[1]}), got {phi.shape}")
    if target.rows != phi.rows:
        raise ValueError(f"y: expected {phi.rows} rows like X, got {target.rows}")
    if loss == "ce" and (len(target.shape) != 1 or target.dtype.kind not in "iu"):
        raise ValueError(f"y: expected integer class labels of shape (N,), got {target.dtype} {target.shape}")
    if loss == "squared" and target.dtype.kind not in "fiu":
        raise ValueError(f"y: expected numeric targets, got {target.dtype}")
    rows = chunk_rows or default_chunk_rows(phi.shape[1])
    with make_runner(scheduler, workers) as runner:
        (out,) = runner.map_sum(_chunk_eval, row_chunks(phi.rows, rows), runner.prepare(phi),
                                runner.prepare(target), W, b, loss,
                                None if classes is None else np.asarray(classes), progress=progress)
    n = phi.rows
    if loss == "squared":
        mse = out[0] / (n * W.shape[0])
        return {"rows": n, "mse": mse, "rmse": float(np.sqrt(mse))}
    known = n - out[2]
    return {"rows": n, "cross_entropy": out[0] / known if known else float("nan"),
            "accuracy": out[1] / n, "unknown_labels": int(out[2])}
