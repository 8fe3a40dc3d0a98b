"""Neural-collapse metrics of last-layer features (Papyan, Han & Donoho, PNAS 2020; the
CDNV of Galanti, Gyorgy & Hutter, ICLR 2022), in one streamed pass (two with a classifier).

Notation: features phi_i (d,) of N samples with labels y_i in [0, C), n_c samples in class
c, class means mu_c = (1/n_c) sum_{y_i = c} phi_i, the global mean mu_G = (1/N) sum_i phi_i
(the mean of all samples, = sum_c n_c mu_c / N), the centred means M = [mu_c - mu_G]
(d, C) and the last layer W (C, d), b (C,) of the engine, logits = Phi W^T + b.

    Sigma_W = (1/N) sum_c sum_{y_i = c} (phi_i - mu_c)(phi_i - mu_c)^T      (d, d)
    Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T = M M^T / C          (d, d)

* NC1 (Papyan et al.: the quantity of their within-class variation figure):
  NC1 = Tr(Sigma_W Sigma_B^+) / C. The pseudo-inverse comes from the SVD of M, M = U S V^T:
  Sigma_B^+ = U_r diag(C / s_k^2) U_r^T over the r kept singular values. Rank cut-off:
  sum_c n_c (mu_c - mu_G) = 0, so rank M <= C - 1 and, when d >= C, the smallest of its C
  singular values is 0 in exact arithmetic (about eps ||M|| in floating point): it is always
  dropped; of the others, those <= max(d, C) eps s_1 are dropped too (NumPy's matrix_rank
  tolerance). ``rank_b`` reports r. Every class mean equal (Sigma_B = 0, r = 0): NC1 is 0/0
  and reported as NaN.
* NC2 (equinorm, equiangularity, the simplex ETF): with u_c = (mu_c - mu_G) / ||mu_c - mu_G||
  and G = [u_c . u_c'] (C, C), the Gram matrix of the normalised centred means,

      nc2             = || G / ||G||_F - (I - 11^T/C) / sqrt(C - 1) ||_F   (||I - 11^T/C||_F
                        = sqrt(C - 1)); 0 iff every cos(mu_c - mu_G, mu_c' - mu_G) = -1/(C-1);
      nc2_equinorm    = std_c ||mu_c - mu_G|| / mean_c ||mu_c - mu_G||;
      nc2_equiangular = std over the C (C - 1) / 2 pairs c < c' of cos(mu_c - mu_G, mu_c' - mu_G)
                        (adding 1/(C-1) to every cosine leaves a std unchanged);
      nc2_max_angle   = mean over the pairs c < c' of |cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|.

  Standard deviations are population ones (ddof = 0) throughout. A centred mean of norm 0
  makes the cosines NaN.
* NC3 (self-duality): || W / ||W||_F - M^T / ||M||_F ||_F (needs W).
* NC4 (the nearest class centre): the fraction of the N samples where
  argmax_c (W phi + b)_c != argmin_c ||phi - mu_c|| (needs W; b = 0 when not given; ties go to
  the first index). ``classifier_error`` and ``ncc_error`` are the two rules' training errors.
* CDNV (Galanti et al.'s class-distance normalised variance):
  V_c = (1/n_c) sum_{y_i = c} ||phi_i - mu_c||^2 and CDNV = mean over the pairs c < c' of
  (V_c + V_c') / (2 ||mu_c - mu_c'||^2) (equal to the mean over ordered pairs c != c');
  ||mu_c - mu_c'|| from the differences themselves.

Accumulation. Every chunk of rows (a runner: ``LocalRunner`` in this process, ``DaskRunner``
on workers, the same fixed tree of merges as the streamed heads,
``lastlayer.engine.solvers.streaming.runners``) computes, for its rows shifted by the first
row s = phi_0 and in float64, per class

    n_c,  m_c = mean(phi_i - s),  t_c = sum ||phi_i - s - m_c||^2,  and  S = sum_c M2_c,
    M2_c = sum (phi_i - s - m_c)(phi_i - s - m_c)^T      (one d x d sum over the classes),

two passes over the chunk in memory; two sets merge by the pairwise update of Chan, Golub &
LeVeque (1979): with delta_c = m_c^b - m_c^a, n_c = n_c^a + n_c^b, f_c = n_c^a n_c^b / n_c,

    m_c = m_c^a + delta_c n_c^b / n_c,   t_c = t_c^a + t_c^b + f_c ||delta_c||^2,
    S = S^a + S^b + sum_c f_c delta_c delta_c^T,

sums of non-negative terms: features far from the origin (an offset of 1e6) keep their
digits, where sum phi phi^T - n mu mu^T cancels log10(|mu|^2 / var) of the 16 digits. Only
sum_c M2_c is kept (not M2_c itself): memory is C d + d^2, and Sigma_W = S / N, V_c = t_c / n_c.
NC4 needs the means first: a second pass, logits W (phi - s) + (W s + b) and distances
||phi - s||^2 - 2 (phi - s) . m_c + ||m_c||^2. float32 features (and W, b) are widened to
float64, exactly, chunk by chunk; the metrics are float64.

Where other code differs (read from their sources):

* tding1/Neural-Collapse (``validate_NC.py``, Zhu et al. 2021): class sums in float32, then
  Sigma_W in a second pass around the means; NC1 with ``scipy.linalg.pinv(Sigma_B)`` (SciPy's
  default cut-off, d eps relative, acts on Sigma_B's eigenvalues s_k^2 / C, so it drops
  s_k / s_1 below sqrt(d eps), where ours drops below max(d, C) eps); its NC2 is the ETF
  distance of W W^T (the classifier, not normalised row by row), its NC3 is
  || W M / ||W M||_F - (I - 11^T/C) / sqrt(C - 1) ||_F (a product, not Papyan's difference)
  and its NC4 ||W mu_G + b||, the bias condition of Zhu et al., not the NCC mismatch.
* rhubarbwu/neural-collapse (``measure.py``, ``accumulate.py``): float32 accumulators by
  default; mu_G defaults to the unweighted mean of the class means (``weighted=False``),
  equal to ours for balanced classes only; NC1 ``covariance_ratio`` with
  ``torch.linalg.pinv(Sigma_B)`` (cut-off on Sigma_B's values, float32 eps), or, with
  "svd", the top C - 1 eigenpairs (Han et al. 2022); its ``simplex_etf_error`` compares
  M^T M / ||M^T M||_F without normalising each mean (Kothapalli 2023: unequal norms raise
  it), its ``self_duality_error`` the product W M / ||W M||_F with the ETF; its NCC agreement
  takes argmax(W phi) without the bias; its cosine statistics are a variance, not a std;
  the CDNV is ours (mean over pairs c < c').
* Papyan et al. study balanced classes, where the sample mean and the mean of the class
  means coincide; with unbalanced classes M is centred by the sample mean here, so perfectly
  ETF-placed class means with unequal n_c give NC2 > 0. Some plots of the literature show
  squared distances (NC3) or torch's unbiased std (ddof = 1): compare values accordingly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from ..._checks import float_array, positive_int
from ..streaming.runners import LocalRunner
from ..streaming.sources import (
    ArraySource, check_chunk, default_chunk_rows, open_source, row_chunks,
)

__all__ = ["NeuralCollapse", "neural_collapse", "merge_statistics", "between_pinv", "self_duality"]

# Below this scale of differences (their squares ~1e-300, near float64's smallest normal
# number 2.2e-308) the statistics lose digits: refused (rescaling is free: NC1-NC4 and the
# CDNV are scale-invariant).
TINY_SPREAD = 1e-150

_EPS = np.finfo(np.float64).eps


class NeuralCollapse(NamedTuple):
    """The metrics (module docstring) and the statistics they come from."""

    nc1: float  # Tr(Sigma_W Sigma_B^+) / C (NaN when Sigma_B = 0)
    nc2: float  # ETF distance of the normalised centred means' Gram matrix
    nc2_equinorm: float  # std / mean of ||mu_c - mu_G||
    nc2_equiangular: float  # std over pairs c < c' of the cosines
    nc2_max_angle: float  # mean over pairs c < c' of |cos + 1/(C-1)|
    nc3: float | None  # || W/||W||_F - M^T/||M||_F ||_F; None without W
    nc4: float | None  # fraction argmax(W phi + b) != argmin ||phi - mu_c||; None without W
    cdnv: float  # mean over pairs c < c' of (V_c + V_c') / (2 ||mu_c - mu_c'||^2)
    classifier_error: float | None  # fraction argmax(W phi + b) != y; None without W
    ncc_error: float | None  # fraction argmin_c ||phi - mu_c|| != y; None without W
    counts: np.ndarray  # (C,) int64: n_c
    means: np.ndarray  # (C, d): mu_c
    global_mean: np.ndarray  # (d,): mu_G
    sigma_w: np.ndarray  # (d, d)
    sigma_b: np.ndarray  # (d, d)
    class_variances: np.ndarray  # (C,): V_c
    rank_b: int  # singular values of M kept by the pseudo-inverse


# ---- argument checks ------------------------------------------------------------------------
def _feature_source(features):
    """An ArraySource of the (N, d) float features, checked (memory: finite) before any pass."""
    if isinstance(features, str):
        features = open_source(features, "features")
    elif isinstance(features, np.ndarray):
        float_array(features, "features")
        if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(f"features: expected shape (N, d) with N, d >= 1, got "
                             f"{tuple(features.shape)}")
        bad = ~np.isfinite(features)
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            raise ValueError(f"features: expected finite values, got {int(bad.sum())} NaN/Inf "
                             f"entr{'y' if bad.sum() == 1 else 'ies'} (the first in row {row})")
        return ArraySource.memory(features)
    elif not isinstance(features, ArraySource):
        raise TypeError(f"features: expected an (N, d) float array, an ArraySource or a file "
                        f"spec (data.npy, data.h5:features), got {type(features).__name__}")
    if len(features.shape) != 2 or 0 in features.shape:
        raise ValueError(f"features: expected shape (N, d) with N, d >= 1, got "
                         f"{tuple(features.shape)} ({features.label})")
    if np.dtype(features.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"features: expected float32 or float64 features, got {features.dtype} "
                        f"({features.label})")
    return features


def _label_source(labels, n: int):
    if isinstance(labels, str):
        labels = open_source(labels, "labels")
    elif isinstance(labels, np.ndarray):
        labels = ArraySource.memory(labels)
    elif not isinstance(labels, ArraySource):
        raise TypeError(f"labels: expected an (N,) integer array, an ArraySource or a file spec, "
                        f"got {type(labels).__name__}")
    if np.dtype(labels.dtype).kind not in "iu":
        raise TypeError(f"labels: expected integer class labels, got {labels.dtype} "
                        f"({labels.label})")
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},), one label per row of features, got "
                         f"{tuple(labels.shape)} ({labels.label})")
    return labels


def _chunk_labels(start, stop, lab_src, n_classes):
    """(the distinct labels of rows [start, stop), their counts); labels < 0, or >= n_classes
    when it is given, refused naming the row."""
    y = lab_src.read(start, stop)
    _check_label_range(y, start, n_classes, lab_src.label)
    return np.unique(y, return_counts=True)


def _check_label_range(y, start, n_classes, label):
    bad = (y < 0) if n_classes is None else ((y < 0) | (y >= n_classes))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        want = "labels >= 0" if n_classes is None else f"labels in [0, {n_classes})"
        where = "" if label == "the array" else f" ({label})"
        raise ValueError(f"labels: expected {want}, got {y[row].item()} in row {start + row}"
                         f"{where}")


def _missing(present: list[int], c: int, limit: int = 10) -> list[int]:
    """The first ``limit`` of 0..c-1 not in the sorted ``present`` (without an array of c)."""
    out, expected = [], 0
    for v in present + [c]:
        while expected < min(v, c) and len(out) < limit:
            out.append(expected)
            expected += 1
        expected = max(expected, v + 1)
    return out


def _class_counts(runner, labels: ArraySource, n_classes, chunk_rows) -> np.ndarray:
    """Counts per class (one pass over the labels alone; in memory: at once), C >= 2 and
    every class present; else a ValueError naming the empty classes."""
    if labels.kind == "memory":
        parts = [_chunk_labels(0, labels.rows, labels, n_classes)]
    else:
        parts = runner.map_list(_chunk_labels, row_chunks(labels.rows, chunk_rows),
                                runner.prepare(labels), n_classes)
    total: dict[int, int] = {}
    for values, counts in parts:
        for v, k in zip(values.tolist(), counts.tolist()):
            total[v] = total.get(v, 0) + k
    present = sorted(total)
    c = n_classes if n_classes is not None else present[-1] + 1
    if c < 2:
        raise ValueError("labels: every label is 0; neural collapse compares classes: pass "
                         "n_classes >= 2 with samples in each")
    if len(present) < c:
        empty, k = _missing(present, c), c - len(present)
        names = ", ".join(map(str, empty)) + (f", ... ({k} in all)" if k > len(empty) else "")
        raise ValueError(f"labels: class{'es' if k > 1 else ''} {names} of n_classes = {c} "
                         f"ha{'ve' if k > 1 else 's'} no sample: "
                         f"{'their means are' if k > 1 else 'its mean is'} undefined; "
                         f"relabel the classes 0..C-1 or pass the right n_classes")
    return np.array([total[v] for v in range(c)], np.int64)


def _check_classifier(W, b):
    """Types, dimensions and finiteness of W and b (their shapes need C: ``_classifier``)."""
    if W is None:
        if b is not None:
            raise ValueError("b: given without W; NC3 and NC4 need the classifier W (C, d)")
        return
    float_array(W, "W")
    if W.ndim != 2:
        raise ValueError(f"W: expected shape (C, d) (logits = Phi W^T + b), got "
                         f"{tuple(W.shape)}")
    if not np.isfinite(W).all():
        raise ValueError(f"W: expected finite values, got {int((~np.isfinite(W)).sum())} NaN/Inf")
    if b is not None:
        float_array(b, "b")
        if b.ndim != 1:
            raise ValueError(f"b: expected shape (C,), got {tuple(b.shape)}")
        if not np.isfinite(b).all():
            raise ValueError(f"b: expected finite values, got {int((~np.isfinite(b)).sum())} "
                             f"NaN/Inf")


def _classifier(W, b, c: int, d: int):
    """(W, b) as float64 (exact widening) once C is known; shapes checked."""
    if W is None:
        return None, None
    if W.shape != (c, d):
        raise ValueError(f"W: expected shape (C, d) = ({c}, {d}) (logits = Phi W^T + b), got "
                         f"{tuple(W.shape)}")
    if b is not None and b.shape != (c,):
        raise ValueError(f"b: expected shape (C,) = ({c},), got {tuple(b.shape)}")
    return (W.astype(np.float64, copy=False),
            None if b is None else b.astype(np.float64, copy=False))


# ---- the pass over the data -------------------------------------------------------------------
def _rows(start, stop, phi_src, lab_src, shift, n_classes):
    phi = phi_src.read(start, stop)
    check_chunk(phi, start, "features")
    y = lab_src.read(start, stop)
    _check_label_range(y, start, n_classes, lab_src.label)
    return phi.astype(np.float64, copy=False) - shift, y.astype(np.int64)


def _gram(x):
    """x^T x (k, k) for x (n, k), exactly symmetric (one syrk on the upper triangle)."""
    x = np.ascontiguousarray(x)
    upper = get_blas_funcs("syrk", (x,))(1.0, x.T, trans=0, lower=0)  # x.T: Fortran, no copy
    return upper + np.triu(upper, 1).T


def _chunk_statistics(start, stop, phi_src, lab_src, shift, n_classes):
    """(n (C,), m (C, d), S (d, d), t (C,)) of rows [start, stop) (module docstring), by two
    passes over the chunk: the class means, then the centred rows."""
    p, y = _rows(start, stop, phi_src, lab_src, shift, n_classes)
    d = p.shape[1]
    order = np.argsort(y, kind="stable")
    p, y = p[order], y[order]
    present, first = np.unique(y, return_index=True)
    n = np.zeros(n_classes, np.int64)
    n[present] = np.diff(np.append(first, len(y)))
    mean = np.zeros((n_classes, d))
    mean[present] = np.add.reduceat(p, first, axis=0) / n[present][:, None]
    centred = p - mean[y]
    t = np.zeros(n_classes)
    t[present] = np.add.reduceat((centred * centred).sum(axis=1), first)
    return n, mean, _gram(centred), t


def merge_statistics(a: tuple, b: tuple) -> tuple:
    """The pairwise (Chan et al.) merge of two (n, m, S, t) (module docstring); a class with
    no sample on one side (n = 0) merges as nothing."""
    na, ma, sa, ta = a
    nb, mb, sb, tb = b
    n = na + nb
    wb = nb / np.maximum(n, 1)  # n_b / n (0 for a class absent from both)
    f = na * wb  # n_a n_b / n
    delta = mb - ma
    mean = ma + delta * wb[:, None]
    scatter = sa + sb + _gram(np.sqrt(f)[:, None] * delta)  # sum_c f_c delta_c delta_c^T
    t = ta + tb + f * (delta * delta).sum(axis=1)
    return n, mean, scatter, t


def _nearest(dist: np.ndarray) -> np.ndarray:
    """The NCC decision: argmin over the classes of the squared distances (n, C)."""
    return dist.argmin(axis=1)


def _chunk_decisions(start, stop, phi_src, lab_src, shift, n_classes, mean, W, bias):
    """[argmax != argmin (NC4), argmax != y, argmin != y] counted over rows [start, stop)."""
    p, y = _rows(start, stop, phi_src, lab_src, shift, n_classes)
    z = p @ W.T + bias  # = phi W^T + b
    dist = (p * p).sum(axis=1)[:, None] - 2.0 * (p @ mean.T) + (mean * mean).sum(axis=1)
    clf, ncc = z.argmax(axis=1), _nearest(dist)
    return (np.array([(clf != ncc).sum(), (clf != y).sum(), (ncc != y).sum()], np.int64),)


# ---- the metrics from the statistics ------------------------------------------------------------
def between_pinv(centred: np.ndarray, n_classes: int) -> tuple[np.ndarray, int]:
    """(Sigma_B^+ (d, d), r) for Sigma_B = M M^T / C, M = centred.T (centred: (C, d) rows
    mu_c - mu_G), by the SVD of M with the module docstring's rank cut-off."""
    u, s, _ = np.linalg.svd(centred.T, full_matrices=False)  # u (d, k), k = min(d, C)
    keep = min(len(s), n_classes - 1)
    if len(s) and s[0] > 0:
        keep = min(keep, int((s > max(centred.shape) * _EPS * s[0]).sum()))
    else:
        keep = 0
    u, s = u[:, :keep], s[:keep]
    return (u * (n_classes / s**2)) @ u.T, keep


def _unit(x):
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else np.full_like(x, math.nan)


def _pairs(values: np.ndarray) -> np.ndarray:
    """The entries c < c' of a (C, C) matrix."""
    return values[np.triu_indices(len(values), 1)]


def _etf_target(c: int) -> np.ndarray:
    """(I - 11^T/C) / ||I - 11^T/C||_F, the normalised Gram matrix of a simplex ETF."""
    return (np.eye(c) - 1.0 / c) / math.sqrt(c - 1)


def _etf_metrics(centred: np.ndarray) -> tuple[float, float, float, float]:
    """(nc2, equinorm, equiangularity, max-angle) of the centred means (C, d)."""
    c = len(centred)
    norms = np.linalg.norm(centred, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = centred / norms[:, None]
        gram = u @ u.T
        nc2 = float(np.linalg.norm(_unit(gram) - _etf_target(c)))
        cos = _pairs(gram)
        equinorm = float(norms.std() / norms.mean())
    return nc2, equinorm, float(cos.std()), float(np.abs(cos + 1.0 / (c - 1)).mean())


def self_duality(W: np.ndarray, centred: np.ndarray) -> float:
    """NC3 = || W / ||W||_F - M^T / ||M||_F ||_F for W (C, d) and centred = M^T (C, d)."""
    return float(np.linalg.norm(_unit(W) - _unit(centred)))


def _cdnv(mean: np.ndarray, variances: np.ndarray) -> float:
    total, pairs = 0.0, 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for c in range(len(mean) - 1):
            dist2 = ((mean[c + 1:] - mean[c]) ** 2).sum(axis=1)
            total += float(((variances[c] + variances[c + 1:]) / (2.0 * dist2)).sum())
            pairs += len(dist2)
    return total / pairs


def neural_collapse(features, labels, W=None, b=None, *, n_classes: int | None = None,
                    chunk_rows: int | None = None, runner=None) -> NeuralCollapse:
    """NC1-NC4 and the CDNV of ``features`` (module docstring for the definitions).

    Parameters
    ----------
    features : Phi (N, d), a float32 / float64 NumPy array (finite), or an ``ArraySource``,
        or a file spec for ``open_source`` (``data.npy``, ``data.npz:name``,
        ``data.h5:dataset``, ``dir.zarr[:name]``) of such an array, read by row chunks.
    labels : y (N,) integers in [0, C): a NumPy array, an ``ArraySource`` or a file spec.
        Every class needs at least one sample (its mean is undefined otherwise).
    W, b : the last layer, W (C, d) and b (C,) (logits = Phi W^T + b), float32 / float64;
        needed for NC3 and NC4 (None: those are None). b defaults to 0.
    n_classes : C >= 2 (default: max(labels) + 1).
    chunk_rows : rows per chunk (default ``default_chunk_rows(d)``, about 32 MB a chunk).
    runner : a ``LocalRunner`` (default) or ``DaskRunner`` (``make_runner``) evaluating the
        chunk sums; the result does not depend on the number of workers.

    Every argument is checked before the features are read: a wrong type is a TypeError,
    a wrong shape, label or value a ValueError naming the argument; a NaN or Inf in a
    streamed chunk is a ValueError naming its rows. Returns a ``NeuralCollapse``.
    """
    phi = _feature_source(features)
    n, d = phi.shape
    lab = _label_source(labels, n)
    if n_classes is not None:
        n_classes = positive_int(n_classes, "n_classes", 2)
    chunk_rows = (default_chunk_rows(d, np.dtype(phi.dtype).itemsize) if chunk_rows is None
                  else positive_int(chunk_rows, "chunk_rows"))
    if runner is None:
        runner = LocalRunner()
    elif not isinstance(runner, LocalRunner):
        raise TypeError(f"runner: expected a LocalRunner or DaskRunner (lastlayer.engine.solvers.streaming.runners."
                        f"make_runner), got {type(runner).__name__}")
    _check_classifier(W, b)
    if W is not None and n_classes is not None:
        _classifier(W, b, n_classes, d)  # the shapes, before the labels are read
    counts = _class_counts(runner, lab, n_classes, chunk_rows)
    c = len(counts)
    W64, b64 = _classifier(W, b, c, d)

    shift = phi.read(0, 1).astype(np.float64).reshape(-1)  # row 0: checked by the pass
    ranges = row_chunks(n, chunk_rows)
    phi_arg, lab_arg = runner.prepare(phi), runner.prepare(lab)
    m, scatter, t = runner.map_sum(_chunk_statistics, ranges, phi_arg, lab_arg, shift, c,
                                   combine=merge_statistics)[1:]
    if not (np.isfinite(scatter).all() and np.isfinite(m).all()):
        raise ValueError(f"features: the sums of squares overflow float64 (|phi| up to "
                         f"{np.abs(shift).max():.3g} in row 0); rescale the features")
    spread = max(float(np.abs(m - m.mean(axis=0)).max()), float(np.sqrt(t.max() / n)))
    if 0 < spread < TINY_SPREAD:  # squares of the differences underflow: digits are lost
        raise ValueError(f"features: the class means and the spread around them are at most "
                         f"{spread:.3g}, so their squares fall below float64's normal range and "
                         f"lose digits; rescale the features (the metrics do not depend on "
                         f"their scale)")
    weights = counts / n
    centre = weights @ m  # mu_G - s
    centred = m - centre  # rows mu_c - mu_G
    sigma_w = scatter / n
    sigma_b = _gram(centred) / c
    pinv, rank = between_pinv(centred, c)
    nc1 = float(np.trace(sigma_w @ pinv) / c) if rank > 0 else math.nan
    nc2, equinorm, equiangular, max_angle = _etf_metrics(centred)
    variances = t / counts
    cdnv = _cdnv(m, variances)

    nc3 = nc4 = clf_err = ncc_err = None
    if W64 is not None:
        nc3 = self_duality(W64, centred)
        bias = W64 @ shift + (b64 if b64 is not None else 0.0)
        wrong = runner.map_sum(_chunk_decisions, ranges, phi_arg, lab_arg, shift, c, m, W64,
                               bias)[0]
        nc4, clf_err, ncc_err = (float(k) / n for k in wrong)
    return NeuralCollapse(nc1, nc2, equinorm, equiangular, max_angle, nc3, nc4, cdnv, clf_err,
                          ncc_err, counts, shift + m, shift + centre, sigma_w, sigma_b,
                          variances, rank)
