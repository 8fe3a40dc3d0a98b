"""Weight initialisers.

Each initialiser is a small frozen dataclass, so that it prints as what it is
(``TruncatedNormal(std=0.1)``) and can be stored in an architecture description. Calling
one draws an array::

    w = HeNormal()(rng, shape=(64, 32), fan_in=32, fan_out=64, dtype=np.float64)

Numbers are always drawn in float64 from the NumPy ``Generator`` and then rounded to
``dtype``, so a float32 network starts from exactly the rounded float64 weights of the
float64 network with the same seed.

Fan-in / fan-out follow the usual convention: for a dense kernel of shape (out, in),
fan_in = in and fan_out = out; for a convolution kernel (C_out, C_in, kh, kw),
fan_in = C_in kh kw and fan_out = C_out kh kw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._checks import float_dtype

__all__ = [
    "Initializer",
    "HeNormal",
    "HeUniform",
    "GlorotNormal",
    "GlorotUniform",
    "TruncatedNormal",
    "Constant",
    "MaxEntropy",
    "fans",
]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel of shape (out, in, *receptive_field)."""
    if len(shape) < 2:
        raise ValueError(f"shape: fans need a kernel of at least 2 dimensions, got {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


class Initializer:
    """Base class: ``init(rng, shape, fan_in, fan_out, dtype) -> ndarray``."""

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int,
               fan_out: int) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int = 1,
                 fan_out: int = 1, dtype=np.float64) -> np.ndarray:
        dt = float_dtype(dtype)
        return np.asarray(self.sample(rng, tuple(shape), fan_in, fan_out), dtype=np.float64).astype(dt)


@dataclass(frozen=True)
class HeNormal(Initializer):
    """N(0, 2 / fan) (He et al. 2015), for layers followed by a ReLU; ``mode`` "fan_in"
    (default: preserves the variance of the forward signal) or "fan_out" (preserves the
    variance of the back-propagated error; ENTAME's base head, N(0, 2 / C) for a Dense
    layer with C outputs).

    Unlike Keras' ``he_normal`` the normal is not truncated."""

    mode: str = "fan_in"

    def __post_init__(self):
        if self.mode not in ("fan_in", "fan_out"):
            raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {self.mode!r}")

    def sample(self, rng, shape, fan_in, fan_out):
        fan = fan_in if self.mode == "fan_in" else fan_out
        return rng.standard_normal(shape) * math.sqrt(2.0 / fan)


@dataclass(frozen=True)
class HeUniform(Initializer):
    """U(-l, l) with l = sqrt(6 / fan_in): variance 2 / fan_in."""

    def sample(self, rng, shape, fan_in, fan_out):
        limit = math.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, shape)


@dataclass(frozen=True)
class GlorotNormal(Initializer):
    """N(0, 2 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""

    def sample(self, rng, shape, fan_in, fan_out):
        return rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))


@dataclass(frozen=True)
class GlorotUniform(Initializer):
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)): variance 2 / (fan_in + fan_out)."""

    def sample(self, rng, shape, fan_in, fan_out):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)


@dataclass(frozen=True)
class TruncatedNormal(Initializer):
    """N(mean, std^2) conditioned on |w - mean| <= cutoff * std (TensorFlow's default cutoff
    is 2). Out-of-range draws are redrawn, so the distribution is exactly the truncated one.
    Note: the standard deviation of the result is about 0.88 std for cutoff 2."""

    std: float = 0.1
    mean: float = 0.0
    cutoff: float = 2.0

    def __post_init__(self):
        if not self.std > 0:
            raise ValueError(f"std: expected > 0, got {self.std}")
        if not self.cutoff > 0:
            raise ValueError(f"cutoff: expected > 0, got {self.cutoff}")

    def sample(self, rng, shape, fan_in, fan_out):
        z = rng.standard_normal(shape)
        bad = np.abs(z) > self.cutoff
        while bad.any():  # expected number of rounds is tiny: P(|z| > 2) = 4.6 %
            z[bad] = rng.standard_normal(int(bad.sum()))
            bad = np.abs(z) > self.cutoff
        return self.mean + self.std * z


@dataclass(frozen=True)
class MaxEntropy(Initializer):
    """ENTAME's maximum-entropy initialisation of a new classifier (Varno et al. 2019, eq. 21):
    i.i.d. N(0, phi_w) entries with

        phi_w = gamma^2 lambda^2 / C^2,     C = fan_out (the classes of a Dense head),

    gamma the initial learning rate and lambda a hyper-parameter, or ``phi_w`` given
    directly. With phi_w tiny every logit is ~0, so every softmax output is ~1/C (maximum
    entropy), the loss is ~ln C and the error back-propagated into the features is stalled
    (~sqrt(phi_w) small) until the first update.

    The paper's statements about lambda conflict: a recommended range 1-1000, a condition
    lambda^2 < 1/N (N the batch size), and experiments at phi_w = 1e-12 with gamma = 1e-4
    (lambda = 0.01 C). Both parametrisations are accepted: ``MaxEntropy(phi_w=1e-12)`` (the
    experiments' value, the default) or ``MaxEntropy(gamma=1e-4, lam=0.5)``.
    """

    phi_w: float | None = None
    gamma: float | None = None
    lam: float | None = None

    def __post_init__(self):
        given = (self.gamma is not None, self.lam is not None)
        if self.phi_w is not None:
            if any(given):
                raise ValueError("phi_w: give phi_w, or gamma and lam, not both")
            if not (math.isfinite(self.phi_w) and self.phi_w >= 0):
                raise ValueError(f"phi_w: expected a finite number >= 0, got {self.phi_w!r}")
        elif all(given):
            for name in ("gamma", "lam"):
                value = getattr(self, name)
                if not (math.isfinite(value) and value > 0):
                    raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        elif any(given):
            raise ValueError("gamma, lam: give both (phi_w = gamma^2 lam^2 / C^2), or phi_w")
        else:
            object.__setattr__(self, "phi_w", 1e-12)  # the paper's experiments

    def variance(self, n_classes: int) -> float:
        """phi_w for a head with ``n_classes`` outputs."""
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) \
                or n_classes < 2:
            raise ValueError(f"C: a classifier needs at least 2 classes (fan_out), got "
                             f"{n_classes!r}")
        if self.phi_w is not None:
            return float(self.phi_w)
        return (self.gamma * self.lam / n_classes) ** 2

    def sample(self, rng, shape, fan_in, fan_out):
        return rng.standard_normal(shape) * math.sqrt(self.variance(fan_out))


@dataclass(frozen=True)
class Constant(Initializer):
    """Every entry equal to ``value`` (biases: 0, or 0.1 in the post-training paper's code)."""

    value: float = 0.0

    def sample(self, rng, shape, fan_in, fan_out):
        return np.full(shape, float(self.value))
