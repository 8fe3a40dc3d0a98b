"""Embedded datasets and seeded mini-batching. Nothing is downloaded, ever.

Every loader returns a ``Dataset`` with a deterministic train/test split (a function of
``seed`` alone). Standardisation, where used, is fitted on the training part only and
then applied to both parts, so no test statistic leaks into training.

* ``simulated_regression``: the post-training paper's synthetic data, both recipes
  (docs/design.md): ``"code"`` (their released code: X ~ U(-1, 1)^10, W1 ~ U(-5, 5)^(10x5),
  W2 ~ U(-5, 5)^(5x1)) and ``"paper"`` (their text: X ~ U(0, 1), W ~ U(-1, 1)), with
  Y = tanh(X W1) W2, no noise, 10 000 points split 8 000 / 2 000, not standardised.
* ``digits``: scikit-learn's bundled 8x8 digits (1797 x 64, 10 classes), flat or as
  1x8x8 images.
* ``diabetes``: scikit-learn's bundled diabetes regression (442 x 10).
* ``toy_classification``: C Gaussian classes in d dimensions with controllable overlap.

Mini-batches come from ``batch_indices(n, batch_size, iteration, seed, mode)``: a pure
function of the iteration, so that training resumed from a checkpoint draws exactly the
batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .._checks import positive_int
from ..streams import stream

__all__ = [
    "Dataset", "Standardizer", "simulated_regression", "digits", "diabetes",
    "toy_classification", "batch_indices", "epoch_permutation", "load", "DATASETS",
]


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays. Classification targets are int64 labels (N,); regression
    targets are float64 (N, outputs)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classification" or "regression"
    n_classes: int | None = None
    description: str = ""
    target_scale: np.ndarray | None = field(default=None, repr=False)  # std of y_train, if y was standardised

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "classification" else self.y_train.shape[1]

    def __str__(self) -> str:
        kind = (f"{self.n_classes} classes" if self.task == "classification"
                else f"{self.n_outputs} output(s)")
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test, inputs "
                f"{tuple(self.x_train.shape[1:])}, {kind}")


@dataclass(frozen=True)
class Standardizer:
    """z = (x - mean) / std per feature, fitted on training data. Features with zero
    variance (constant pixels) get std 1, so they map to 0 instead of NaN."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def _split(n: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random split: (train indices, test indices)."""
    perm = stream(seed, "split").permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


# ---- post-training simulated regression ---------------------------------------------
def simulated_regression(recipe: str = "code", *, n: int = 10_000, n_train: int = 8_000,
                         seed: int = 0) -> Dataset:
    """Y = tanh(X W1) W2 (Moreau & Audiffren 2017, Section 5, 'Simulated Data Set').

    recipe "code": X ~ U(-1, 1)^(n x 10), W1 ~ U(-5, 5)^(10 x 5), W2 ~ U(-5, 5)^(5 x 1)
    (their released code); recipe "paper": X ~ U(0, 1), W1, W2 ~ U(-1, 1) (their text).
    No noise, no standardisation; the first ``n_train`` points train, the rest test
    (the points are i.i.d., so the split needs no shuffling).
    """
    if recipe not in ("code", "paper"):
        raise ValueError(f"recipe: expected 'code' or 'paper', got {recipe!r}")
    positive_int(n, "n", 2)
    if not 1 <= n_train < n:
        raise ValueError(f"n_train: expected 1 <= n_train < n = {n}, got {n_train}")
    rng = stream(seed, "simreg")
    x_lo, w_bound = (-1.0, 5.0) if recipe == "code" else (0.0, 1.0)
    x = rng.uniform(x_lo, 1.0, (n, 10))
    w1 = rng.uniform(-w_bound, w_bound, (10, 5))
    w2 = rng.uniform(-w_bound, w_bound, (5, 1))
    y = np.tanh(x @ w1) @ w2
    return Dataset(f"simreg-{recipe}", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   "regression",
                   description=f"Y = tanh(X W1) W2, recipe '{recipe}' of the post-training paper")


# ---- scikit-learn's bundled data ------------------------------------------------------
def digits(*, images: bool = False, test_fraction: float = 0.25, seed: int = 0,
           standardize: bool = True) -> Dataset:
    """scikit-learn's 8x8 digits (1797 samples, pixel values 0..16, 10 classes); flat
    (N, 64) or images (N, 1, 8, 8). Standardised per pixel with training statistics."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    train, test = _split(len(x), _n_test(len(x), test_fraction), seed)
    x_train, x_test = x[train], x[test]
    if standardize:
        scaler = Standardizer.fit(x_train)
        x_train, x_test = scaler(x_train), scaler(x_test)
    if images:
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    return Dataset("digits-images" if images else "digits", x_train, y[train], x_test, y[test],
                   "classification", n_classes=10,
                   description="scikit-learn's bundled 8x8 handwritten digits")


def diabetes(*, test_fraction: float = 0.25, seed: int = 0, standardize: bool = True) -> Dataset:
    """scikit-learn's diabetes regression (442 x 10 -> disease progression). With
    ``standardize`` both inputs and target are standardised on the training part;
    ``target_scale`` keeps the target's std so errors can be reported in its units."""
    from sklearn.datasets import load_diabetes  # bundled with scikit-learn: no download

    bunch = load_diabetes()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.float64).reshape(-1, 1)
    train, test = _split(len(x), _n_test(len(x), test_fraction), seed)
    x_train, x_test, y_train, y_test = x[train], x[test], y[train], y[test]
    scale = None
    if standardize:
        sx, sy = Standardizer.fit(x_train), Standardizer.fit(y_train)
        x_train, x_test, y_train, y_test = sx(x_train), sx(x_test), sy(y_train), sy(y_test)
        scale = sy.std
    return Dataset("diabetes", x_train, y_train, x_test, y_test, "regression",
                   description="scikit-learn's bundled diabetes progression data",
                   target_scale=scale)


def _n_test(n: int, fraction: float) -> int:
    if not 0 < fraction < 1:
        raise ValueError(f"test_fraction: expected a value in (0, 1), got {fraction}")
    return max(1, round(n * fraction))


# ---- toy classification ---------------------------------------------------------------
def toy_classification(*, n_train: int = 1000, n_test: int = 1000, n_classes: int = 3,
                       dim: int = 10, overlap: float = 1.0, seed: int = 0) -> Dataset:
    """C Gaussian classes in ``dim`` dimensions: class c has mean mu_c (random directions,
    norm 3) and covariance overlap^2 I. ``overlap`` = 0.5 is nearly separable, 2 heavily
    overlapping. Classes are balanced in expectation (labels drawn uniformly)."""
    for name, v in (("n_train", n_train), ("n_test", n_test), ("dim", dim)):
        positive_int(v, name)
    positive_int(n_classes, "n_classes", 2)
    if not overlap > 0:
        raise ValueError(f"overlap: expected > 0, got {overlap}")
    rng = stream(seed, "toy")
    means = rng.standard_normal((n_classes, dim))
    means *= 3.0 / np.linalg.norm(means, axis=1, keepdims=True)
    n = n_train + n_test
    y = rng.integers(0, n_classes, n)
    x = means[y] + overlap * rng.standard_normal((n, dim))
    return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], "classification",
                   n_classes=n_classes,
                   description=f"{n_classes} Gaussian classes in {dim}-D, overlap {overlap:g}")


DATASETS = ("digits", "digits-images", "diabetes", "simreg-code", "simreg-paper", "toy")


def load(name: str, seed: int = 0) -> Dataset:
    """A dataset by its command-line name (one of ``DATASETS``) with default settings."""
    if name == "digits":
        return digits(seed=seed)
    if name == "digits-images":
        return digits(images=True, seed=seed)
    if name == "diabetes":
        return diabetes(seed=seed)
    if name in ("simreg-code", "simreg-paper"):
        return simulated_regression(name.split("-")[1], seed=seed)
    if name == "toy":
        return toy_classification(seed=seed)
    raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")


# ---- mini-batching ---------------------------------------------------------------------
@lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n samples in ``epoch``: a permutation drawn from a generator keyed
    by (seed, epoch), so any epoch's order is known without replaying earlier ones."""
    perm = stream(seed, "epoch", epoch).permutation(n)
    perm.flags.writeable = False  # cached: nobody may change it
    return perm


def batches_per_epoch(n: int, batch_size: int, mode: str = "epoch") -> float:
    """Iterations per pass over the data: ceil(n / B) in "epoch" mode, n / B in "stream"."""
    return -(-n // batch_size) if mode == "epoch" else n / batch_size


def batch_indices(n: int, batch_size: int, iteration: int, seed: int,
                  mode: str = "epoch") -> np.ndarray:
    """Sample indices of mini-batch number ``iteration`` (0-based).

    mode "epoch": each epoch is a fresh permutation cut into ceil(n / B) batches; the last
    batch of an epoch is smaller when B does not divide n.
    mode "stream": consecutive windows of B samples over the endless concatenation of
    epoch permutations, so every batch has exactly B samples and a batch may straddle two
    epochs (the post-training paper's code: sequential batches, reshuffled at wrap-around).
    """
    positive_int(n, "n")
    positive_int(batch_size, "batch_size")
    if iteration < 0:
        raise ValueError(f"iteration: expected >= 0, got {iteration}")
    if mode == "epoch":
        per_epoch = -(-n // batch_size)
        epoch, k = divmod(iteration, per_epoch)
        return epoch_permutation(n, seed, epoch)[k * batch_size:(k + 1) * batch_size]
    if mode == "stream":
        start = iteration * batch_size
        out = np.empty(batch_size, dtype=np.intp)
        filled = 0
        while filled < batch_size:
            epoch, offset = divmod(start + filled, n)
            take = min(batch_size - filled, n - offset)
            out[filled:filled + take] = epoch_permutation(n, seed, epoch)[offset:offset + take]
            filled += take
        return out
    raise ValueError(f"mode: expected 'epoch' or 'stream', got {mode!r}")
