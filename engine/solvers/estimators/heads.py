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
its own rows; only d x d or C x d sums come back (``lastlayer.engine.solvers.streaming.runners``).

Lambda. ``lam`` fixes it; ``lams`` (a grid) with ``cv`` chooses it: ``cv=K`` (K contiguous
folds, scikit-learn's ``KFold(K)``, 2 <= K <= N: mean held-out MSE for ridge, mean held-out
cross-entropy for softmax; each fold is fitted with the whole problem's penalty
N lam ||W||^2, as ``RidgeCV`` and ``LogisticRegressionCV`` keep one alpha or C), or for
ridge ``cv="loo"`` (exact leave-one-out, scikit-learn ``RidgeCV``'s default) and
``cv="gcv"`` (generalised cross-validation), both exact also at N < d (``ridge_cv``). Every
lambda is finite, > 0 (a single ridge ``lam`` may be 0) and N lam <= ``LAM_ROWS_MAX``
(1e150), so that no product in the solvers overflows. Ridge needs one pass over the data for
every lambda and fold at once (two for "loo", and for "gcv" or K folds where the sums cannot
resolve a nearly exact fit); softmax solves the lambda path from the largest lambda down,
each solve warm-started from the previous one. After the choice the head is refitted on all
rows. Fitted attributes: ``coef_`` (C, d), ``intercept_`` (C,), ``lam_``, ``cv_lams_`` /
``cv_scores_`` (the CV curve), ``kkt_residual_`` (||grad J|| at the solution, on all rows;
for ridge with a bias in the coordinates of the centred features), ``n_features_in_``;
softmax also ``classes_`` (the labels' own dtype: uint64 labels >= 2^63 work),
``converged_``, ``n_iter_``. A softmax solve that stops above ``tol`` warns
``sklearn.exceptions.ConvergenceWarning`` with the residual it reached.

Conventions and checks. ``fit(X, y, sample_weight=None, *, progress=None)``: every row
weighs the same, so a ``sample_weight`` is refused (a ValueError) rather than ignored;
``progress(rows)`` is called as rows are read. ``predict`` before ``fit`` raises
scikit-learn's ``NotFittedError``; NaN / Inf features, or outputs that overflow, are a
ValueError naming X, the count and the first row. ``check_lams(values, rows, name)`` and
``check_cv(cv, rows, loss)`` are the checks ``fit`` makes before any pass, for a command line
to make before any work; ``runners.check_scheduler`` checks a scheduler address.
``evaluate_head`` checks the sources' shapes against the head before reading a row and
returns finite metrics only.

Laplace (``laplace=True``; MacKay 1992, "A practical Bayesian framework for backpropagation
networks"; Daxberger et al., "Laplace Redux", NeurIPS 2021). After the fit, the last-layer
Laplace posterior of the head, ``lastlayer.engine.solvers.laplace.posterior.LastLayerLaplace``:

    q(theta) = N(theta*, Lambda^-1),   Lambda = sum_i J_i^T A_i J_i + P0,
    P0 = diag(tau_w on the C d weights, tau_b on the C biases),

theta* = (coef_, intercept_) the fitted head, which is the posterior mode for tau_w =
2 N lam_ (``tau_from_lam``: N J = sum loss + (tau_w / 2) ||W||^2) and tau_b = 0.
``laplace_prior``: "evidence" maximises the Laplace log evidence (MacKay's eq. 2.10; Redux
eq. 5) over (tau_w, tau_b) with theta* held (``optimize_prior(mode="separate")``, from
tau_b = tau_w = 2 N lam_; its result in ``laplace_evidence_``); "fixed" keeps tau_w =
2 N lam_ and takes tau_b = ``laplace_tau_b`` (required with a bias: > 0 for "ce", whose
shift of every bias by one constant is a null direction of the Hessian; >= 0 for
"squared", 0 being the flat prior under which theta* is the exact mode; None without a
bias). ``laplace_structure``: the engine's "auto" ("kron", exact, for the squared loss;
"full" up to C (d + 1) = FULL_AUTO_MAX parameters for "ce", else "kfac"), or "full", "kron"
(squared only), "kfac". K-fold CV of the prior (``laplace.select.select_prior``) is not
offered: it refits the head on every fold (K + 1 in-memory fits: 50 s for 5 folds against
the head's 4 s on 4000 x 128 MNIST features, C = 10). The posterior needs the training
features in memory: after the fit they are read whole, as float64 (float32 values exactly),
N d 8 bytes <= ``LAPLACE_FEATURES_MAX`` (4 GiB; checked before any pass), and it is built
in this process whatever ``workers``. Then ``predict_proba`` is the probit predictive
softmax(z / sqrt(1 + (pi / 8) diag Sigma_z)) (the binary form for C = 2), z = W x + b and
Sigma_z = J Sigma J^T the logits' posterior covariance, and ``predict`` its argmax;
``decision_function`` stays the MAP logits z. The ridge head's predictive is Gaussian,
N(z, Sigma_z + I / 2) (the squared loss ||z - y||^2 is -log N(y; z, I / 2) up to a
constant): ``predict(X, return_std=True)`` returns (mean, sqrt(diag Sigma_z + 1/2)),
``predict_gaussian(X)`` (mean (M, C), covariance (M, C, C)). Fitted: ``laplace_``
(LastLayerLaplace, or None), ``laplace_evidence_`` (EvidenceOptimum or None),
``laplace_log_evidence_`` (None where tau_b = 0 makes the prior improper). The ``laplace_*``
parameters are read only when ``laplace`` is True.

Calibration (``evaluate_head``; Guo et al. 2017, ``lastlayer.engine.solvers.diagnostics.calibration``). For "ce"
also ``nll`` (= ``cross_entropy``, the mean -log p_iy), ``brier`` ((1/n) sum_i sum_k (p_ik -
1[k = y_i])^2) and ``ece`` / ``mce`` over ECE_BINS = 15 equal-width confidence bins, on
the rows whose label the head knows: per chunk ``calibration.ece``'s bins (counts, hits
and confidence sums), added over chunks, ECE = (1/n) sum_m |hits_m - S_m| (the bins are
fixed, so the merge is exact up to the rounding of S_m). For "squared" ``nll`` = (C / 2)
log pi + C mse, the mean -log N(y_i; z_i, I / 2). With ``laplace=`` the posterior of the
head, ``metrics["laplace"]`` holds the same for its predictive (accuracy, nll, brier, ece,
mce; for "squared" the exact Gaussian predictive's nll), the nll from
``LastLayerLaplace.predictive_nll`` (log domain).
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from ..._checks import boolean, positive_int, real_number
from ..laplace.posterior import LastLayerLaplace, tau_from_lam
from ..streaming.runners import make_runner
from ..streaming.sources import ArraySource, default_chunk_rows, fold_edges
from .checks import _finite_rows, _no_sample_weight, as_source, check_cv, check_laplace, check_lams
from .ridge_cv import ridge_cv_scores, ridge_kkt, ridge_statistics, solve_ridge
from .softmax_streamed import class_counts, class_indices, make_problem, softmax_path

__all__ = ["ExactRidgeHead", "ExactSoftmaxHead"]


class _ExactHead(BaseEstimator):
    """Shared parameters and checks (see the module docstring)."""

    def _lams(self, rows: int) -> np.ndarray:
        """The lambdas to fit: ``lam`` alone, or the sorted grid ``lams`` (each > 0)."""
        if self.lams is None:
            zero = isinstance(self, ExactRidgeHead)  # lam = 0: the minimum-norm solution
            return check_lams(self.lam, rows, "lam", allow_zero=zero)
        return np.unique(check_lams(self.lams, rows, "lams"))

    def _data(self, X, y):
        phi = as_source(X, "X")
        target = as_source(y, "y")
        if len(phi.shape) != 2 or phi.shape[0] == 0 or phi.shape[1] == 0:
            raise ValueError(f"X: expected features of shape (N, d) with N, d >= 1, got {phi.shape}")
        if target.rows != phi.rows:
            raise ValueError(f"y: expected {phi.rows} rows like X, got {target.rows}")
        if len(target.shape) == 2 and target.shape[1] == 0:
            raise ValueError(f"y: expected at least one target column, got shape {target.shape}")
        if phi.dtype.kind not in "fiu":
            raise ValueError(f"X: expected numeric features, got {phi.dtype}")
        rows = self.chunk_rows if self.chunk_rows is not None else default_chunk_rows(phi.shape[1])
        rows = positive_int(rows, "chunk_rows")
        return phi, target, rows

    def _runner(self):
        return make_runner(self.scheduler, self.workers)

    def _check_fitted(self, X):
        """``X`` as a finite (N, d) array, once the head is fitted (NotFittedError before)."""
        check_is_fitted(self, "coef_")
        if isinstance(X, (str, ArraySource)):
            raise TypeError("X: predict takes a NumPy array (read a file with ArraySource.read)")
        x = np.asarray(X)
        d = self.coef_.shape[-1]
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"X: expected shape (N, {d}), got {x.shape}")
        if x.dtype.kind not in "fiu":
            raise ValueError(f"X: expected numeric features, got {x.dtype}")
        _finite_rows(x, "X")
        return x

    def _logits(self, x):
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
            z = x @ np.asarray(self.coef_).T + self.intercept_
        _finite_rows(np.asarray(z), "X", "outputs (W x + b overflows float64)")
        return z

    def _check_laplace(self, phi, loss: str, outputs: int | None):
        """check_laplace on the parameters, before any pass (nothing when laplace is False)."""
        if not boolean(self.laplace, "laplace"):
            return
        check_laplace(loss, prior=self.laplace_prior, structure=self.laplace_structure,
                      tau_b=self.laplace_tau_b, bias=bool(self.fit_intercept), rows=phi.rows,
                      features=phi.shape[1], lam=self.lam if self.lams is None else None,
                      outputs=outputs)

    def _fit_laplace(self, phi, target, W, b, loss: str, classes=None, progress=None) -> None:
        """laplace_, laplace_evidence_, laplace_log_evidence_ (module docstring)."""
        self.laplace_ = self.laplace_evidence_ = self.laplace_log_evidence_ = None
        if not self.laplace:
            return
        x = phi.read(0, phi.rows).astype(np.float64, copy=False)  # float32 values exactly
        t = target.read(0, target.rows)
        if progress is not None:
            progress(phi.rows)
        if loss == "ce":
            t = class_indices(t, classes)[0]  # every label is a class: classes_ are the labels'
        else:
            t = t.astype(np.float64, copy=False).reshape(len(t), -1)
        tau_w = tau_from_lam(self.lam_, phi.rows)
        common = dict(loss=loss, structure=self.laplace_structure)
        if self.laplace_prior == "evidence":
            start = LastLayerLaplace(W, b, x, t, tau_w=tau_w, tau_b=None if b is None else tau_w,
                                     **common)
            opt = start.optimize_prior(mode="separate")
            if not opt.converged:
                warnings.warn(f"{type(self).__name__}: the Laplace evidence maximisation stopped "
                              f"after {opt.iterations} iterations with |dE/d log tau| = "
                              f"{np.abs(opt.gradient).max():.3g} above its tolerance; laplace_ "
                              f"has its last prior (tau_w = {opt.tau_w:.6g}"
                              + (f", tau_b = {opt.tau_b:.6g})" if b is not None else ")"),
                              ConvergenceWarning, stacklevel=3)
            la = start.with_prior(opt.tau_w, opt.tau_b)
            self.laplace_evidence_ = opt
        else:
            la = LastLayerLaplace(W, b, x, t, tau_w=tau_w,
                                  tau_b=None if b is None else float(self.laplace_tau_b), **common)
        self.laplace_ = la
        if b is None or la.tau_b > 0:
            self.laplace_log_evidence_ = la.log_evidence()

    def _posterior(self, what: str) -> LastLayerLaplace:
        check_is_fitted(self, "coef_")
        la = getattr(self, "laplace_", None)
        if la is None:
            raise ValueError(f"{what}: needs the Laplace posterior: fit with laplace=True")
        return la


class ExactRidgeHead(_ExactHead, RegressorMixin):
    """The closed-form ridge head (module docstring). ``fit_intercept``: an unpenalised bias."""

    def __init__(self, lam: float = 1e-3, *, lams=None, cv=None, fit_intercept: bool = True,
                 chunk_rows: int | None = None, workers: int | None = None, scheduler: str | None = None,
                 laplace: bool = False, laplace_prior: str = "evidence",
                 laplace_structure: str = "auto", laplace_tau_b: float | None = None):
        self.lam = lam
        self.lams = lams
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.chunk_rows = chunk_rows
        self.workers = workers
        self.scheduler = scheduler
        self.laplace = laplace
        self.laplace_prior = laplace_prior
        self.laplace_structure = laplace_structure
        self.laplace_tau_b = laplace_tau_b

    def fit(self, X, y, sample_weight=None, *, progress=None):
        """Fit on features ``X`` (N, d) and targets ``y`` (N,) or (N, C); ``sample_weight``
        must be None (every row weighs the same); ``progress(rows)`` is called as rows are read."""
        _no_sample_weight(sample_weight)
        phi, target, rows = self._data(X, y)
        lams = self._lams(phi.rows)
        cv = check_cv(self.cv, phi.rows, "squared")
        if cv is not None and self.lams is None:
            raise ValueError("cv: cross-validation needs a grid of lambdas (lams=...)")
        if target.dtype.kind not in "fiu":
            raise ValueError(f"y: expected numeric targets, got {target.dtype}")
        self._check_laplace(phi, "squared", 1 if len(target.shape) == 1 else target.shape[1])
        folds = cv if isinstance(cv, int) else 1
        with self._runner() as runner:
            stats = ridge_statistics(runner, phi, target, folds, rows, progress)
            if cv is None:
                scores = None
                self.lam_ = float(lams[0])
            else:
                method = cv if isinstance(cv, str) else "kfold"
                scores = ridge_cv_scores(runner, phi, target, stats, lams, self.fit_intercept, method,
                                         rows, progress)
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
        self.kkt_residual_ = ridge_kkt(total, W, b, self.lam_)
        self.n_rows_ = phi.rows
        self._fit_laplace(phi, target, W, b, "squared", progress=progress)
        return self

    def predict(self, X, return_std: bool = False):
        """W x + b (N,) or (N, C); with ``return_std`` (a Laplace fit) also the predictive's
        standard deviation sqrt(diag Sigma_z + 1/2), of the same shape."""
        x = self._check_fitted(X)
        mean = self._logits(x)
        if not boolean(return_std, "return_std"):
            return mean
        la = self._posterior("return_std")
        _, var = la.logit_moments(x.astype(np.float64, copy=False), full=False)
        std = np.sqrt(var + 0.5)
        return mean, (std[:, 0] if np.ndim(self.coef_) == 1 else std)

    def predict_gaussian(self, X):
        """The Laplace predictive N(mean, cov) of X (M, d): mean (M, C), cov (M, C, C) =
        Sigma_z + I / 2 (``LastLayerLaplace.predict_gaussian``; a Laplace fit)."""
        x = self._check_fitted(X)
        self._logits(x)  # outputs that overflow are named here
        la = self._posterior("predict_gaussian")
        return la.predict_gaussian(x.astype(np.float64, copy=False))


class ExactSoftmaxHead(_ExactHead, ClassifierMixin):
    """The exact L2-regularised softmax head (module docstring)."""

    def __init__(self, lam: float = 1e-3, *, lams=None, cv=None, fit_intercept: bool = True,
                 tol: float = 1e-10, max_iter: int = 100, chunk_rows: int | None = None,
                 workers: int | None = None, scheduler: str | None = None, laplace: bool = False,
                 laplace_prior: str = "evidence", laplace_structure: str = "auto",
                 laplace_tau_b: float | None = None):
        self.lam = lam
        self.lams = lams
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.chunk_rows = chunk_rows
        self.workers = workers
        self.scheduler = scheduler
        self.laplace = laplace
        self.laplace_prior = laplace_prior
        self.laplace_structure = laplace_structure
        self.laplace_tau_b = laplace_tau_b

    def fit(self, X, y, sample_weight=None, *, progress=None):
        """Fit on features ``X`` (N, d) and integer labels ``y`` (N,); ``sample_weight`` must
        be None; ``progress(rows)`` is called as rows are read. A solve that stops above
        ``tol`` (along the CV path or the final one) warns ``ConvergenceWarning`` with the
        residual it reached; ``converged_`` says whether the final one reached ``tol``."""
        _no_sample_weight(sample_weight)
        phi, labels, rows = self._data(X, y)
        lams = self._lams(phi.rows)
        cv = check_cv(self.cv, phi.rows, "ce")
        if cv is not None and self.lams is None:
            raise ValueError("cv: cross-validation needs a grid of lambdas (lams=...)")
        tol = real_number(self.tol, "tol", minimum=0, open_minimum=True)
        max_iter = positive_int(self.max_iter, "max_iter")
        if len(labels.shape) != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"y: expected integer class labels of shape (N,), got {labels.dtype} "
                             f"{labels.shape}")
        self._check_laplace(phi, "ce", None)
        with self._runner() as runner:
            counts = class_counts(runner, labels, rows)
            classes = np.array(list(counts), dtype=labels.dtype)  # uint64 labels >= 2^63 included
            if len(classes) < 2:
                raise ValueError(f"y: expected at least 2 classes, got {len(classes)}")
            self._check_laplace(phi, "ce", len(classes))  # "full" against C (d + 1)
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
                            missing = sorted(set(counts) - set(present))
                            raise ValueError(f"cv: fold {f} leaves class {missing[0]} out of its "
                                             f"training rows; with an unpenalised bias the fit "
                                             f"has no minimiser: use fewer folds or shuffle the rows")
                    path, held_scores = softmax_path(runner, phi, labels, classes, lams,
                                                     self.fit_intercept, tol, max_iter, rows,
                                                     train=train, held=held, progress=progress)
                    for lam, sol in zip(lams, path):
                        _warn_unconverged(sol, lam, tol, max_iter, f"fold {f} of {cv}, ")
                    total_ce += np.array([s[0] for s in held_scores])
                scores = total_ce / cv
                lam = float(lams[int(np.argmin(scores))])
            else:
                lam = float(lams[0])
            solutions, _ = softmax_path(runner, phi, labels, classes, np.array([lam]),
                                        self.fit_intercept, tol, max_iter, rows, progress=progress)
            sol = solutions[0]
            _warn_unconverged(sol, lam, tol, max_iter, "")
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
        self._fit_laplace(phi, labels, sol.W, sol.b, "ce", classes, progress)
        return self

    def decision_function(self, X):
        """The MAP logits W x + b (N, C), with or without the Laplace posterior."""
        return self._logits(self._check_fitted(X))

    def predict_proba(self, X):
        """softmax(W x + b) (N, C); after a Laplace fit the probit predictive (module
        docstring, ``LastLayerLaplace.predict_proba(method="probit")``)."""
        x = self._check_fitted(X)
        z = self._logits(x)
        if getattr(self, "laplace_", None) is not None:
            return self.laplace_.predict_proba(x.astype(np.float64, copy=False), method="probit")
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The most probable class: of the MAP logits, or of the Laplace predictive."""
        if getattr(self, "laplace_", None) is not None:
            return self.classes_[self.predict_proba(X).argmax(axis=1)]
        z = self.decision_function(X)
        return self.classes_[z.argmax(axis=1)]


def _warn_unconverged(sol, lam: float, tol: float, max_iter: int, where: str) -> None:
    if not sol.converged:
        why = (f"after max_iter = {max_iter} Newton iterations" if sol.iterations >= max_iter
               else f"after {sol.iterations} Newton iterations, no decrease of J left to rounding")
        warnings.warn(f"ExactSoftmaxHead: the solve at lam = {lam:.6g} ({where}residual "
                      f"{sol.kkt_residual:.3g}) stopped above tol = {tol:.3g} {why}",
                      ConvergenceWarning, stacklevel=3)
