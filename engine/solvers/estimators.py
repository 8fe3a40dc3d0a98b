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
Laplace posterior of the head, ``engine.solvers.laplace.LastLayerLaplace``:

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
(squared only), "kfac". K-fold CV of the prior (``laplace_select.select_prior``) is not
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

Calibration (``evaluate_head``; Guo et al. 2017, ``engine.solvers.calibration``). For "ce"
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

import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from .._checks import LAM_ROWS_MAX, boolean, is_integer, is_real, penalty, positive_int, real_number
from .calibration import brier, ece
from .laplace import FULL_AUTO_MAX, FULL_MAX, STRUCTURES, LastLayerLaplace, tau_from_lam
from .ridge_cv import fold_edges, ridge_cv_scores, ridge_kkt, ridge_statistics, solve_ridge
from .runners import make_runner
from .softmax_streamed import class_counts, class_indices, logit_scores, make_problem, softmax_path
from .sources import ArraySource, default_chunk_rows, open_source

__all__ = ["ExactRidgeHead", "ExactSoftmaxHead", "evaluate_head", "as_source", "check_lams",
           "check_cv", "check_laplace", "LAM_ROWS_MAX", "LAPLACE_PRIORS", "LAPLACE_FEATURES_MAX",
           "ECE_BINS"]

LAPLACE_PRIORS = ("evidence", "fixed")
LAPLACE_FEATURES_MAX = 4 << 30  # bytes of the (N, d) float64 training features in memory
ECE_BINS = 15  # equal-width confidence bins of evaluate_head's ECE (Guo et al. 2017)

def check_lams(values, rows: int, name: str = "lam", *, allow_zero: bool = False) -> np.ndarray:
    """``values`` (a number or a non-empty 1-D sequence of numbers, Python or NumPy) as a
    1-D float64 array, each finite, > 0 (>= 0 with ``allow_zero``: the ridge head's single
    lam, the minimum-norm least-squares solution) and with ``rows`` * lam <=
    ``LAM_ROWS_MAX`` (1e150: engine._checks says why); else a TypeError (not numbers) or a
    ValueError naming ``name``, the bound and the value received (and its position in a
    grid). Checks only the numbers: call it before any work, ``rows`` being N, the rows the
    head is fitted on."""
    rows = positive_int(rows, "rows")
    if is_real(values):
        items = [values]
    elif isinstance(values, (str, bytes, bool, np.bool_)) or values is None:
        raise TypeError(f"{name}: expected a number or a sequence of numbers, got "
                        f"{type(values).__name__} {values!r}")
    else:
        try:
            array = np.asarray(values, dtype=object)
        except (TypeError, ValueError):
            array = None
        if array is None or array.ndim != 1:
            raise TypeError(f"{name}: expected a number or a 1-D sequence of numbers, got "
                            f"{type(values).__name__} {values!r}")
        items = list(array)
        if not items:
            raise ValueError(f"{name}: expected at least one value, got an empty sequence")
    out = np.empty(len(items))
    for i, value in enumerate(items):
        try:
            out[i] = penalty(value, rows, name, allow_zero=allow_zero)
        except (TypeError, ValueError) as err:
            if len(items) == 1:
                raise
            raise type(err)(f"{err} (entry {i} of {len(items)})") from None
    return out


def check_cv(cv, rows: int, loss: str = "squared", name: str = "cv"):
    """``cv`` checked against the data before any pass: None, an integer K with 2 <= K <=
    ``rows`` (K contiguous folds, each of at least one row), or for ``loss`` "squared" one
    of "loo", "gcv" (which need at least 2 rows). Returns it (K as a Python int); else a
    ValueError (TypeError for what is not a number or a string) naming ``name``."""
    allowed = ("loo", "gcv") if loss == "squared" else ()
    if loss not in ("squared", "ce"):
        raise ValueError(f"loss: expected 'squared' or 'ce', got {loss!r}")
    rows = positive_int(rows, "rows")
    if cv is None:
        return None
    if isinstance(cv, str) and cv in allowed:
        if rows < 2:
            raise ValueError(f"{name}: {cv!r} needs at least 2 rows, got {rows}")
        return cv
    expected = (f"{name}: expected None, an integer >= 2 (K folds)"
                + (f" or one of {', '.join(map(repr, allowed))}" if allowed else ""))
    if not is_integer(cv):
        if isinstance(cv, str) and cv in ("loo", "gcv"):
            raise ValueError(f"{expected}, got {cv!r} (leave-one-out and GCV are for the squared loss)")
        if isinstance(cv, str) or is_real(cv):
            raise ValueError(f"{expected}, got {cv!r}")
        raise TypeError(f"{expected}, got {type(cv).__name__} {cv!r}")
    if cv < 2:
        raise ValueError(f"{expected}, got {cv!r}")
    if cv > rows:
        raise ValueError(f"{name}: {int(cv)} folds need at least {int(cv)} rows (one per fold), got {rows}")
    return int(cv)


def check_laplace(loss: str, *, prior, structure, tau_b, bias: bool, rows: int, features: int,
                  lam=None, outputs: int | None = None) -> str:
    """The Laplace settings (module docstring) checked before any pass: ``prior`` one of
    LAPLACE_PRIORS, ``structure`` one of the engine's STRUCTURES ("kron" for "squared"
    only), ``tau_b`` as ``prior`` and ``bias`` need it, ``lam`` (the single lambda, None for
    a grid, whose lambdas are all > 0) > 0 since tau_w = 2 N lam, the (``rows``,
    ``features``) float64 training matrix within LAPLACE_FEATURES_MAX bytes and, once the
    number of outputs C is known, "full" within the engine's FULL_MAX parameters C (d + 1).
    Returns the structure, resolved when C is known; else a ValueError (TypeError for what is
    not a number) naming laplace_prior, laplace_structure, laplace_tau_b, lam or laplace."""
    if loss not in ("squared", "ce"):
        raise ValueError(f"loss: expected 'squared' or 'ce', got {loss!r}")
    if not isinstance(prior, str) or prior not in LAPLACE_PRIORS:
        why = (" ('cv', laplace_select.select_prior's K-fold choice, refits the head on every "
               "fold: not offered)" if prior == "cv" else "")
        raise ValueError(f"laplace_prior: expected one of {', '.join(map(repr, LAPLACE_PRIORS))}, "
                         f"got {prior!r}{why}")
    if not isinstance(structure, str) or structure not in STRUCTURES:
        raise ValueError(f"laplace_structure: expected one of {', '.join(map(repr, STRUCTURES))}, "
                         f"got {structure!r}")
    if structure == "kron" and loss != "squared":
        raise ValueError("laplace_structure: 'kron' is exact only for the squared loss "
                         "(A_i = 2 I); for ce use 'auto', 'full' or 'kfac'")
    if lam is not None and is_real(lam) and float(lam) == 0:
        raise ValueError("lam: the Laplace prior precision tau_w = 2 N lam needs lam > 0, got 0")
    if prior == "evidence" and tau_b is not None:
        raise ValueError(f"laplace_tau_b: only with laplace_prior 'fixed' (the evidence chooses "
                         f"tau_b), got {tau_b!r}")
    if prior == "fixed" and not bias and tau_b is not None:
        raise ValueError(f"laplace_tau_b: the head has no bias (fit_intercept False): expected "
                         f"None, got {tau_b!r}")
    if prior == "fixed" and bias:
        if tau_b is None:
            raise ValueError("laplace_tau_b: laplace_prior 'fixed' with a bias needs the bias's "
                             "prior precision (> 0 for ce, >= 0 for squared)")
        if real_number(tau_b, "laplace_tau_b", minimum=0) == 0:
            if loss == "ce":
                raise ValueError("laplace_tau_b: expected > 0 for ce (adding one constant to "
                                 "every bias leaves the softmax unchanged: tau_b = 0 is an "
                                 "improper posterior), got 0")
            if structure == "kfac":
                raise ValueError("laplace_tau_b: expected > 0 with laplace_structure 'kfac' (its "
                                 "prior enters through D^-1/2); for a flat bias prior use 'kron' "
                                 "(exact), got 0")
    rows, features = positive_int(rows, "rows"), positive_int(features, "features")
    need = rows * features * 8
    if need > LAPLACE_FEATURES_MAX:
        raise ValueError(f"laplace: the posterior needs the training features in memory as "
                         f"float64, {rows:,} x {features} = {_size(need)}, above "
                         f"LAPLACE_FEATURES_MAX = {_size(LAPLACE_FEATURES_MAX)}; fit without "
                         f"it, or on fewer rows or features")
    if outputs is None:
        return structure
    p = positive_int(outputs, "outputs") * (features + bool(bias))
    resolved = structure if structure != "auto" else (
        "kron" if loss == "squared" else "full" if p <= FULL_AUTO_MAX else "kfac")
    if resolved == "full" and p > FULL_MAX:
        raise ValueError(f"laplace_structure: 'full' needs a dense {p:,} x {p:,} precision "
                         f"({p * p * 8 / 2**30:.1f} GiB), above FULL_MAX = {FULL_MAX:,} "
                         f"parameters C (d + 1); use 'kfac'"
                         + (" or 'kron' (exact)" if loss == "squared" else ""))
    return resolved


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,} bytes"


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


def _no_sample_weight(sample_weight) -> None:
    if sample_weight is not None:
        shape = f" of shape {np.shape(sample_weight)}" if hasattr(sample_weight, "shape") else ""
        raise ValueError(f"sample_weight: the exact heads weight every row equally (J is the "
                         f"plain mean loss); expected None, got {type(sample_weight).__name__}{shape}")


def _finite_rows(x: np.ndarray, name: str, what: str = "entries") -> None:
    """A ValueError naming ``name``, the count of NaN/Inf entries and the first row holding one."""
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))
        count = int(bad.sum())
        raise ValueError(f"{name}: {count} NaN/Inf {what} in {rows.size} row{'s' if rows.size > 1 else ''}, "
                         f"the first in row {int(rows[0])}; expected finite values")


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
    from .sources import check_chunk

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
    from .sources import row_chunks

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
