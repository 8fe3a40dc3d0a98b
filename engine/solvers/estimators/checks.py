"""What the exact-head estimators check before any pass over the data: the penalties, the CV
splitter, the Laplace settings against the problem's size, the features' sources and their
values. Each check names the argument, what it expects and what it got.
"""

from __future__ import annotations

import numpy as np

from ..._checks import LAM_ROWS_MAX, is_integer, is_real, penalty, positive_int, real_number
from ..laplace.posterior import FULL_AUTO_MAX, FULL_MAX, STRUCTURES
from ..streaming.sources import ArraySource, open_source

__all__ = ["check_lams", "check_cv", "check_laplace", "as_source", "LAM_ROWS_MAX",
           "LAPLACE_PRIORS", "LAPLACE_FEATURES_MAX"]

LAPLACE_PRIORS = ("evidence", "fixed")
LAPLACE_FEATURES_MAX = 4 << 30  # bytes of the (N, d) float64 training features in memory

def check_lams(values, rows: int, name: str = "lam", *, allow_zero: bool = False) -> np.ndarray:
    """``values`` (a number or a non-empty 1-D sequence of numbers, Python or NumPy) as a
    1-D float64 array, each finite, > 0 (>= 0 with ``allow_zero``: the ridge head's single
    lam, the minimum-norm least-squares solution) and with ``rows`` * lam <=
    ``LAM_ROWS_MAX`` (1e150: lastlayer.engine._checks says why); else a TypeError (not numbers) or a
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
        why = (" ('cv', laplace.select.select_prior's K-fold choice, refits the head on every "
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
