"""Ledger rows NC: the neural-collapse metrics of
``lastlayer.engine.solvers.diagnostics.neural_collapse`` (Papyan, Han & Donoho, PNAS 2020;
the CDNV of Galanti et al., ICLR 2022) checked on features built to have known values,
streamed against in memory, and measured over the training of a CNN.

Constructed features (every draw from ``stream(seed, "beyond-data", NC_STREAM, k)``): U
(d, C) has orthonormal columns (a random orthogonal matrix's first C), the simplex ETF is
v_c = sqrt(C / (C - 1)) U (e_c - 1/C) (unit vectors, v_c . v_c' = -1/(C-1), sum_c v_c v_c^T =
C/(C-1) P with P the projector on their (C-1)-dimensional span), and the class means are
mu_c = o + r v_c (o a random offset: mu_G = o for balanced classes).

* Collapsed (rows NC*-collapsed): every sample is its class mean, W = kappa (mu_c - mu_G)
  (kappa > 0), b = -W mu_G: NC1 = CDNV = NC2 = NC3 = NC4 = 0 exactly.
* Spread (NC1-closed, NC1-cdnv): class c has the 2d samples mu_c +- a_c q_k (q_k the columns
  of a second random orthogonal matrix), so the class means are exact, V_c = a_c^2,
  Sigma_W = (mean_c a_c^2 / d) I and Sigma_B = r^2 / (C - 1) P, Sigma_B^+ = (C - 1) / r^2 P:

      NC1 = mean_c(a_c^2) (C - 1)^2 / (C d r^2),
      CDNV = mean_c(a_c^2) (C - 1) / (2 C r^2)  (||mu_c - mu_c'||^2 = 2 r^2 C / (C - 1)).

* Rhombus (NC2-closed): C = 4 centred means x e_1, -x e_1, y e_2, -y e_2 (rotated into R^d,
  plus an offset): cosines -1 (two pairs) and 0 (four pairs), so equinorm = |x - y| / (x + y),
  equiangularity = std{-1, -1, 0, 0, 0, 0} = sqrt(2) / 3, max-angle = mean |cos + 1/3| = 4/9,
  and ||G||_F = sqrt(8), <G, I - 11^T/C> = tr G - 1^T G 1 / C = 4: NC2 = sqrt(2 - 2 (4 /
  (sqrt(8) sqrt(3)))) = sqrt(2 - 2 sqrt(2/3)).
* NC3-closed: W = kappa (cos theta A + sin theta E), A = M^T / ||M||_F, E of unit norm with
  <A, E>_F = 0: NC3 = ||cos theta A + sin theta E - A||_F = 2 sin(theta / 2).
* NC4-closed: the spread case (a_c < r / 2, far inside the NCC regions), classes repeated
  unequally, W = the collapsed classifier with rows 0 and 1 exchanged: the classifier says 1
  for class 0 and 0 for class 1, NCC is right everywhere: NC4 = (n_0 + n_1) / N.

NC5 rows check the computation itself (chunks, files, an offset of 1e6) against the one-chunk
result; NC6 measures the metrics over the training of a small CNN on the digits
(``nc_training_curve``, reusable by ``lastlayer compare``) and reports NC1 at the end over NC1
after the first epoch: PASS when it falls below 1/2 with NC4 falling, DIFFERS-FROM-PAPER
otherwise (the protocol is fixed in ``TRAINING``, never tuned to agree).
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from lastlayer.engine import Conv2D, Dense, Flatten, MaxPool2D, Network, ReLU, optim
from lastlayer.engine.optim.schedules import StepDecay
from lastlayer.engine.solvers.diagnostics.neural_collapse import neural_collapse
from lastlayer.engine.solvers.streaming.sources import ArraySource
from lastlayer.engine.streams import stream
from lastlayer.engine.training import evaluate, init_train_state, train
from lastlayer.engine.training.data import digits

from ..ledger import DIFFERS, FAIL, PASS, Check, Outcome, at_most

__all__ = ["checks", "nc_training_curve", "NCCurve", "TRAINING"]

NC_STREAM = 0x4E43  # the first counter of every draw of these rows ("NC")
ROUNDING = 1e-12  # float64 on d <= 32, N <= 500: errors measured <= 1e-15 (docs/claims.md)


def _rng(k: int) -> np.random.Generator:
    return stream(0, "beyond-data", NC_STREAM, k)


def _orthogonal(rng, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _etf(rng, c: int, d: int) -> np.ndarray:
    """(C, d) rows v_c: a simplex ETF of unit vectors in a random (C-1)-dim subspace of R^d."""
    u = _orthogonal(rng, d)[:, :c]
    return math.sqrt(c / (c - 1)) * (np.eye(c) - 1.0 / c) @ u.T


def _shuffled(rng, x, y):
    order = rng.permutation(len(y))
    return np.ascontiguousarray(x[order]), y[order]


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(float).tiny))


# ---- the constructed cases -------------------------------------------------------------------
C, D, RADIUS = 10, 32, 3.0


def collapsed_case():
    """(features, labels, W, b, means): 7 samples per class, each exactly its class mean."""
    rng = _rng(1)
    offset = 5.0 * rng.standard_normal(D)
    means = offset + RADIUS * _etf(rng, C, D)
    y = np.repeat(np.arange(C), 7)
    W = 1.7 * (means - offset)
    x, y = _shuffled(rng, means[y], y)
    return x, y, W, -W @ offset, means


def spread_case(counts=None, k: int = 2):
    """(features, labels, means, a, r): class c has ``counts[c]`` copies of the 2d samples
    mu_c +- a_c q_k (C = 5, d = 9, r = 2, a_c in [0.2, 0.6]); one copy each by default."""
    c, d, r = 5, 9, 2.0
    rng = _rng(k)
    offset = 3.0 + rng.standard_normal(d)
    means = offset + r * _etf(rng, c, d)
    q = _orthogonal(rng, d)
    a = rng.uniform(0.2, 0.6, c)
    counts = np.ones(c, int) if counts is None else np.asarray(counts)
    rows, labels = [], []
    for cls in range(c):
        block = np.concatenate([means[cls] + a[cls] * q.T, means[cls] - a[cls] * q.T])
        rows += [block] * counts[cls]
        labels += [cls] * (2 * d * counts[cls])
    x, y = _shuffled(rng, np.concatenate(rows), np.array(labels))
    return x, y, means, a, r


def nc1_closed_form(a, c: int, d: int, r: float) -> tuple[float, float]:
    """(NC1, CDNV) of ``spread_case`` (module docstring)."""
    v = float(np.mean(np.asarray(a) ** 2))
    return v * (c - 1) ** 2 / (c * d * r * r), v * (c - 1) / (2 * c * r * r)


def rhombus_case(x_len=1.0, y_len=2.5):
    """(features, labels, x, y): 6 samples per class, mu_c +- 0.3 q_j (j = 1..3)."""
    c, d = 4, 6
    rng = _rng(3)
    q = _orthogonal(rng, d)
    offset = rng.standard_normal(d)
    centred = np.array([[x_len, 0], [-x_len, 0], [0, y_len], [0, -y_len]]) @ q[:, :2].T
    spread = 0.3 * _orthogonal(rng, d)[:, :3].T  # (3, d): the class means stay exact
    x = np.concatenate([offset + centred[cls] + sign * spread
                        for cls in range(c) for sign in (1, -1)])
    y = np.repeat(np.arange(c), 6)  # balanced: mu_G = offset
    return (*_shuffled(rng, x, y), x_len, y_len)


def rhombus_closed_form(x_len: float, y_len: float) -> tuple[float, float, float, float]:
    """(NC2, equinorm, equiangularity, max-angle) of ``rhombus_case`` (module docstring)."""
    return (math.sqrt(2 - 2 * math.sqrt(2 / 3)), abs(x_len - y_len) / (x_len + y_len),
            math.sqrt(2) / 3, 4 / 9)


# ---- rows on the collapsed case -----------------------------------------------------------------
def _collapsed():
    x, y, W, b, _ = collapsed_case()
    return neural_collapse(x, y, W, b)


def nc1_collapsed() -> Outcome:
    """max(NC1, CDNV) on collapsed features: 0."""
    res = _collapsed()
    return at_most(max(abs(res.nc1), abs(res.cdnv)), ROUNDING)


def nc2_collapsed() -> Outcome:
    """max(NC2 ETF distance, equinorm, equiangularity, max-angle) on collapsed features: 0."""
    res = _collapsed()
    return at_most(max(res.nc2, res.nc2_equinorm, res.nc2_equiangular, res.nc2_max_angle),
                   ROUNDING)


def nc3_collapsed() -> Outcome:
    return at_most(_collapsed().nc3, ROUNDING)


def nc4_collapsed() -> Outcome:
    return at_most(_collapsed().nc4, ROUNDING)


# ---- rows on known values -------------------------------------------------------------------
def nc1_closed() -> Outcome:
    """NC1 of the spread case against its closed form: relative error."""
    x, y, means, a, r = spread_case()
    expected = nc1_closed_form(a, len(means), x.shape[1], r)[0]
    return at_most(abs(neural_collapse(x, y).nc1 / expected - 1), ROUNDING)


def nc1_cdnv() -> Outcome:
    x, y, means, a, r = spread_case()
    expected = nc1_closed_form(a, len(means), x.shape[1], r)[1]
    return at_most(abs(neural_collapse(x, y).cdnv / expected - 1), ROUNDING)


def nc2_closed() -> Outcome:
    """The four NC2 numbers of the rhombus against their closed forms: largest relative error."""
    x, y, x_len, y_len = rhombus_case()
    res = neural_collapse(x, y)
    measured = (res.nc2, res.nc2_equinorm, res.nc2_equiangular, res.nc2_max_angle)
    expected = rhombus_closed_form(x_len, y_len)
    return at_most(max(abs(m / e - 1) for m, e in zip(measured, expected)), ROUNDING)


THETA = 0.7


def nc3_closed() -> Outcome:
    """NC3 of W = kappa (cos theta A + sin theta E) against 2 sin(theta / 2): relative error."""
    x, y, means, _, _ = spread_case()
    rng = _rng(4)
    centred = means - means.mean(axis=0)  # balanced: mu_G is the mean of the class means
    A = centred / np.linalg.norm(centred)
    E = rng.standard_normal(A.shape)
    E -= np.sum(E * A) * A
    E /= np.linalg.norm(E)
    W = 2.3 * (math.cos(THETA) * A + math.sin(THETA) * E)
    res = neural_collapse(x, y, W)
    return at_most(abs(res.nc3 / (2 * math.sin(THETA / 2)) - 1), ROUNDING)


NC4_COUNTS = (3, 1, 2, 1, 4)


def nc4_closed() -> Outcome:
    """NC4 with rows 0 and 1 of the collapsed classifier exchanged, unequal classes: measured
    minus (n_0 + n_1) / N (the fraction of a whole count: exact)."""
    x, y, means, _, _ = spread_case(NC4_COUNTS, k=5)
    centre = means.mean(axis=0)  # the centre of the ETF (not mu_G: the classes are unequal)
    W = means - centre
    W[[0, 1]] = W[[1, 0]]
    res = neural_collapse(x, y, W, -W @ centre)
    counts = np.bincount(y)
    expected = (counts[0] + counts[1]) / len(y)
    return Outcome(res.nc4 - expected, 0.0, ROUNDING,
                   PASS if abs(res.nc4 - expected) <= ROUNDING else FAIL)


# ---- streamed == in memory; the offset ----------------------------------------------------------
def _generic(rng, n=500, c=6, d=10):
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    means = 3.0 * rng.standard_normal((c, d))
    x = means[y] + rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + 4.0
    return x, y, rng.standard_normal((c, d)), rng.standard_normal(c)


def _difference(a, b) -> float:
    """Largest relative difference over the metrics, the means and the two covariances."""
    scalars = [_rel(getattr(a, k), getattr(b, k)) for k in
               ("nc1", "nc2", "nc2_equinorm", "nc2_equiangular", "nc2_max_angle", "nc3", "nc4",
                "cdnv")]
    arrays = [_rel(getattr(a, k), getattr(b, k)) for k in
              ("means", "global_mean", "sigma_w", "sigma_b", "class_variances")]
    same_counts = np.array_equal(a.counts, b.counts)
    return max(scalars + arrays) if same_counts else math.inf


def nc5_stream() -> Outcome:
    """N = 500 rows, 6 classes, labels in random order: one chunk in memory against chunks
    of 37 rows (every chunk holds several classes, every class spans chunks) from an
    ArraySource, a .npy file and an HDF5 file (labels from the file too): largest relative
    difference of every metric and statistic."""
    x, y, W, b = _generic(_rng(6))
    whole = neural_collapse(x, y, W, b, chunk_rows=len(x))
    worst = _difference(neural_collapse(ArraySource.memory(x), y, W, b, chunk_rows=37), whole)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        with h5py.File(Path(tmp) / "f.h5", "w") as f:
            f["features"], f["labels"] = x, y
        files = ((f"{tmp}/x.npy", y), (f"{tmp}/f.h5:features", f"{tmp}/f.h5:labels"))
        for features, labels in files:
            worst = max(worst, _difference(neural_collapse(features, labels, W, b,
                                                              chunk_rows=37), whole))
    return at_most(worst, ROUNDING)


OFFSET = 1e6


def nc5_offset() -> Outcome:
    """The same features at the origin and shifted by 1e6 (values on a 2^-20 grid, so the
    shift is exact), chunks of 37 rows: largest relative difference of every metric and
    statistic (translation changes none; b is shifted with them)."""
    x, y, W, b = _generic(_rng(7))
    x = np.round(x * 2.0**20) / 2.0**20
    near = neural_collapse(x, y, W, b, chunk_rows=37)
    far = neural_collapse(x + OFFSET, y, W, b - OFFSET * W.sum(axis=1), chunk_rows=37)
    shifted = near._replace(means=near.means + OFFSET, global_mean=near.global_mean + OFFSET)
    return at_most(_difference(far, shifted), ROUNDING)


# ---- a measured curve: a small CNN on the digits ------------------------------------------------
class TrainingProtocol(NamedTuple):
    epochs: int  # training length
    measured: tuple[int, ...]  # epochs after which the metrics are computed
    batch_size: int
    lr: float  # divided by 10 at 1/3 and 2/3 of the epochs (Papyan et al.'s schedule)
    momentum: float
    weight_decay: float  # the PyTorch convention: lam = weight_decay / 2 in the engine
    channels: int
    hidden: int


TRAINING = TrainingProtocol(epochs=150, measured=(1, 2, 5, 10, 20, 50, 100, 150), batch_size=128,
                            lr=0.05, momentum=0.9, weight_decay=5e-4, channels=16, hidden=64)


class NCCurve(NamedTuple):
    """The metrics on the training features (the last Dense layer's input) after each of
    ``epochs``: arrays of the same length."""

    epochs: np.ndarray
    nc1: np.ndarray
    nc2: np.ndarray
    nc3: np.ndarray
    nc4: np.ndarray
    cdnv: np.ndarray
    train_error: np.ndarray
    train_loss: np.ndarray


def digits_cnn(protocol: TrainingProtocol = TRAINING) -> Network:
    """Conv 3x3 (channels, padding 1) -> ReLU -> 2x2 max pooling -> Dense(hidden) -> ReLU ->
    Dense(10): the features are the hidden ReLU's output (d = hidden)."""
    k = protocol.channels
    return Network([Conv2D(1, k, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                    Dense(k * 16, protocol.hidden), ReLU(), Dense(protocol.hidden, 10)])


@functools.lru_cache(maxsize=4)
def nc_training_curve(seed: int = 0, protocol: TrainingProtocol = TRAINING) -> NCCurve:
    """Train ``digits_cnn`` on the digits' training set (1348 images, 8x8) with momentum SGD
    and the protocol's step-decayed rate, and measure ``neural_collapse`` on the training
    features, W and b of the last layer after each epoch of ``protocol.measured``."""
    data = digits(images=True, seed=seed)
    net = digits_cnn(protocol)
    per_epoch = -(-len(data.x_train) // protocol.batch_size)
    total = protocol.epochs * per_epoch
    schedule = StepDecay(protocol.lr, (total // 3, 2 * total // 3))
    opt = optim.momentum(schedule, protocol.momentum, weight_decay=protocol.weight_decay / 2)
    ts = init_train_state(net, opt, seed)
    body = net[:-1]
    rows = []
    for epoch in protocol.measured:
        ts = train(net, opt, data, ts, iterations=epoch * per_epoch,
                   batch_size=protocol.batch_size, eval_every=total + 1, quiet=True)
        phi, _ = body.forward(ts.params[:-1], data.x_train, train=False, state=ts.net_state[:-1])
        head = ts.params[-1]
        res = neural_collapse(phi, data.y_train, head["W"], head["b"], n_classes=10)
        fit = evaluate(net, ts.params, ts.net_state, data.x_train, data.y_train, data.task)
        rows.append((epoch, res.nc1, res.nc2, res.nc3, res.nc4, res.cdnv, 1 - fit["accuracy"],
                     fit["loss"]))
    return NCCurve(*(np.array(col) for col in zip(*rows)))


def nc6_training() -> Outcome:
    """NC1 at the last measured epoch / NC1 at the first; PASS when it is below 1/2 and NC4
    fell too, else DIFFERS-FROM-PAPER (Papyan et al.: NC1 falls by orders of magnitude)."""
    curve = nc_training_curve()
    values = np.concatenate([curve.nc1, curve.nc4])
    if not np.isfinite(values).all():  # a broken measurement, not a finding
        return Outcome(f"non-finite NC1 / NC4: {curve.nc1.tolist()} / {curve.nc4.tolist()}",
                       "< 0.5 and NC4 falling", 0.5, FAIL)
    ratio = float(curve.nc1[-1] / curve.nc1[0])
    collapsed = ratio < 0.5 and curve.nc4[-1] < curve.nc4[0]
    expected = (f"< 0.5 and NC4 falling (NC1 {curve.nc1[0]:.3g} -> {curve.nc1[-1]:.3g}, "
                f"NC4 {curve.nc4[0]:.3g} -> {curve.nc4[-1]:.3g})")
    return Outcome(ratio, expected, 0.5, PASS if collapsed else DIFFERS)


def checks() -> list[Check]:
    return [
        Check("NC1-collapsed", "features equal to their class means (simplex ETF, offset): "
              "max(NC1, CDNV), 0 expected", nc1_collapsed),
        Check("NC1-closed", "NC1 = Tr(Sigma_W Sigma_B^+)/C of +-a_c spreads around ETF means "
              "vs mean(a^2)(C-1)^2/(C d r^2): rel. error", nc1_closed),
        Check("NC1-cdnv", "CDNV of the same features vs mean(a^2)(C-1)/(2 C r^2): rel. error",
              nc1_cdnv),
        Check("NC2-collapsed", "collapsed features: max(ETF distance, equinorm, equiangularity, "
              "max-angle), 0 expected", nc2_collapsed),
        Check("NC2-closed", "rhombus of 4 means (x, y): ETF distance sqrt(2 - 2 sqrt(2/3)), "
              "equinorm |x-y|/(x+y), equiangularity sqrt(2)/3, max-angle 4/9: max rel. error",
              nc2_closed),
        Check("NC3-collapsed", "W = kappa (mu_c - mu_G): ||W/||W|| - M^T/||M|| ||_F, 0 expected",
              nc3_collapsed),
        Check("NC3-closed", "W at angle theta = 0.7 from M^T: NC3 vs 2 sin(theta/2): rel. error",
              nc3_closed),
        Check("NC4-collapsed", "collapsed features, W = means, b = -W mu_G: fraction "
              "argmax(W phi + b) != NCC, 0 expected", nc4_collapsed),
        Check("NC4-closed", "rows 0, 1 of the collapsed classifier exchanged, unequal classes: "
              "NC4 - (n_0 + n_1)/N", nc4_closed),
        Check("NC5-stream", "chunks of 37 rows (memory, .npy, .h5) vs one chunk in memory: max "
              "rel. difference of every metric and statistic", nc5_stream),
        Check("NC5-offset", "features shifted by 1e6 (exactly) vs at the origin, chunked: max rel. "
              "difference of every metric and statistic", nc5_offset),
        Check("NC6-training", "small CNN on digits, training features: NC1 at the last measured "
              "epoch / NC1 at epoch 1 (collapse: < 0.5, NC4 falling)", nc6_training),
    ]
