"""Batch normalisation, ENTAME's z-normalisation and L2 normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._checks import float_dtype, positive_int
from ..backend import array_module
from .base import Layer


class BatchNormCache(NamedTuple):
    x_hat: object  # normalised input, same shape as x
    inv_std: object  # 1 / sqrt(var + eps), broadcastable to x: (1, C) or (1, C, 1, 1)
    train: bool  # batch statistics (True) or running statistics (False) were used
    batch_mean: object  # (C,) batch mean in training, None at inference
    batch_var: object  # (C,) biased batch variance in training, None at inference


@dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch normalisation (Ioffe & Szegedy 2015) over features (N, C) or channels
    (N, C, H, W): statistics per feature / channel over the M = N (or N H W) values.

        x_hat = (x - mu) / sqrt(var + eps),      y = gamma * x_hat + beta

    Training uses the batch mean and biased batch variance and needs M >= 2 (with one
    value per channel x_hat is identically 0). Inference uses the running statistics of
    the state, updated after each training forward by ``update_state``:

        mean <- (1 - momentum) mean + momentum mu
        var  <- (1 - momentum) var  + momentum var * M / (M - 1)     (unbiased, as PyTorch)

    Parameters: ``gamma`` (C,) initialised 1, ``beta`` (C,) initialised 0.
    State: ``mean`` (C,) initialised 0, ``var`` (C,) initialised 1.
    """

    num_features: int
    eps: float = 1e-5
    momentum: float = 0.1

    stateful = True

    def __post_init__(self):
        _check_statistics_args(self)

    def __str__(self):
        return f"BatchNorm({self.num_features})"

    def param_shapes(self):
        return {"gamma": (self.num_features,), "beta": (self.num_features,)}

    def init(self, rng, dtype=np.float64):
        dt = float_dtype(dtype)
        return {"gamma": np.ones(self.num_features, dt), "beta": np.zeros(self.num_features, dt)}

    def init_state(self, dtype=np.float64):
        dt = float_dtype(dtype)
        return {"mean": np.zeros(self.num_features, dt), "var": np.ones(self.num_features, dt)}

    def output_shape(self, input_shape):
        if len(input_shape) not in (2, 4) or input_shape[1] != self.num_features:
            c = self.num_features
            raise self.shape_error(f"(N, {c}) or (N, {c}, H, W)", input_shape)
        return tuple(input_shape)

    @staticmethod
    def _axes_and_shape(x):
        """Reduction axes and the broadcast shape of per-channel vectors."""
        if x.ndim == 2:
            return (0,), (1, x.shape[1])
        return (0, 2, 3), (1, x.shape[1], 1, 1)

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        xp = array_module(x)
        axes, bshape = self._axes_and_shape(x)
        gamma, beta = params["gamma"].reshape(bshape), params["beta"].reshape(bshape)
        if train:
            x_hat, inv_std, mu, var = _standardize_batch(self, x, axes, self.eps)
            cache = BatchNormCache(x_hat, inv_std, True, mu, var)
        else:
            if state is None or "mean" not in state:
                raise ValueError(f"{self}: inference uses the running statistics; pass "
                                 f"state=... (from init_state / update_state)")
            inv_std = 1 / xp.sqrt(state["var"].reshape(bshape) + self.eps)
            x_hat = (x - state["mean"].reshape(bshape)) * inv_std
            cache = BatchNormCache(x_hat, inv_std, False, None, None)
        return gamma * x_hat + beta, cache

    def update_state(self, state, cache):
        if not cache.train:
            return state
        m = cache.x_hat.size // cache.x_hat.shape[1]
        mom = self.momentum
        return {
            "mean": (1 - mom) * state["mean"] + mom * cache.batch_mean,
            "var": (1 - mom) * state["var"] + mom * cache.batch_var * (m / (m - 1)),
        }

    def backward(self, params, cache, dy):
        x_hat = cache.x_hat
        self.check_upstream(dy, x_hat.shape, x_hat.dtype)
        axes, bshape = self._axes_and_shape(dy)
        grads = {"gamma": (dy * x_hat).sum(axis=axes), "beta": dy.sum(axis=axes)}
        dx_hat = dy * params["gamma"].reshape(bshape)
        return _standardize_backward(cache, dx_hat, axes), grads


def _check_statistics_args(layer: Layer) -> None:
    """num_features, eps and momentum of a layer with batch statistics."""
    positive_int(layer.num_features, "num_features")
    if not layer.eps > 0:
        raise ValueError(f"eps: expected > 0, got {layer.eps}")
    if not 0 <= layer.momentum <= 1:
        raise ValueError(f"momentum: expected a value in [0, 1], got {layer.momentum}")


def _standardize_batch(layer: Layer, x, axes, eps: float):
    """Training-mode standardisation over ``axes``: (x_hat, inv_std, mean (C,), biased var (C,)).
    Needs at least 2 values per channel (with one, x_hat is identically 0)."""
    xp = array_module(x)
    m = x.size // x.shape[1]
    if m < 2:
        raise ValueError(f"{layer}: training needs at least 2 values per channel (batch "
                         f"statistics), got input of shape {tuple(x.shape)}")
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=axes, keepdims=True)  # biased, two-pass: no cancellation
    inv_std = 1 / xp.sqrt(var + eps)
    return xc * inv_std, inv_std, mu.reshape(-1), var.reshape(-1)


def _standardize_backward(cache, dx_hat, axes):
    """dx from dx_hat = d loss / d x_hat: through the batch statistics in training,
    dx = inv_std (dx_hat - mean(dx_hat) - x_hat mean(dx_hat x_hat)); an affine map at inference."""
    if cache.train:
        x_hat = cache.x_hat
        return cache.inv_std * (dx_hat - dx_hat.mean(axis=axes, keepdims=True)
                                - x_hat * (dx_hat * x_hat).mean(axis=axes, keepdims=True))
    return dx_hat * cache.inv_std


@dataclass(frozen=True)
class ZNormalize(Layer):
    """ENTAME's feature normalisation (Varno et al. 2019, eq. 20): per feature, over the batch,

        x_bar = (x - mu_N) / sqrt(sigma_N^2 + eps)

    with the biased batch variance and no learnable parameters (BatchNorm with scale 1 and
    shift 0: the training outputs are bit-identical). In training the gradient flows through
    mu_N and sigma_N. At inference the statistics are constants from the state:

    * ``statistics="last"`` (default): those of the last training batch, the paper's
      "detached version of the ones obtained in the corresponding training step";
    * ``statistics="running"``: exponential running averages, updated like BatchNorm's
      (momentum 0.1, unbiased variance).

    eps is not given in the paper: 1e-5, BatchNorm's default. Input (N, K) -> (N, K).
    State: ``mean`` (K,) initialised 0, ``var`` (K,) initialised 1 (the identity map for
    z-normalised inputs, used only before the first training step).
    """

    num_features: int
    eps: float = 1e-5
    statistics: str = "last"
    momentum: float = 0.1

    stateful = True

    def __post_init__(self):
        _check_statistics_args(self)
        if self.statistics not in ("last", "running"):
            raise ValueError(f"statistics: expected 'last' or 'running', got {self.statistics!r}")

    def __str__(self):
        return f"ZNormalize({self.num_features}, {self.statistics})"

    def init_state(self, dtype=np.float64):
        dt = float_dtype(dtype)
        return {"mean": np.zeros(self.num_features, dt), "var": np.ones(self.num_features, dt)}

    def output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] != self.num_features:
            raise self.shape_error(f"(N, {self.num_features})", input_shape)
        return tuple(input_shape)

    def forward(self, params, x, train=False, *, state=None, rng=None):
        """x: (N, K) -> x_bar: (N, K)."""
        self.check_input(params, x)
        if train:
            x_hat, inv_std, mu, var = _standardize_batch(self, x, (0,), self.eps)
            return x_hat, BatchNormCache(x_hat, inv_std, True, mu, var)
        if state is None or "mean" not in state:
            raise ValueError(f"{self}: inference uses the state's statistics; pass state=... "
                             f"(from init_state / update_state)")
        xp = array_module(x)
        inv_std = 1 / xp.sqrt(state["var"].reshape(1, -1) + self.eps)
        x_hat = (x - state["mean"].reshape(1, -1)) * inv_std
        return x_hat, BatchNormCache(x_hat, inv_std, False, None, None)

    def update_state(self, state, cache):
        if not cache.train:
            return state
        if self.statistics == "last":
            return {"mean": cache.batch_mean.copy(), "var": cache.batch_var.copy()}
        m = cache.x_hat.shape[0]
        mom = self.momentum
        return {"mean": (1 - mom) * state["mean"] + mom * cache.batch_mean,
                "var": (1 - mom) * state["var"] + mom * cache.batch_var * (m / (m - 1))}

    def backward(self, params, cache, dy):
        self.check_upstream(dy, cache.x_hat.shape, cache.x_hat.dtype)
        return _standardize_backward(cache, dy, (0,)), {}


class L2NormalizeCache(NamedTuple):
    y: object  # (N, d) output x / (||x|| + eps)
    norm: object  # (N, 1) ||x||


@dataclass(frozen=True)
class L2Normalize(Layer):
    """Row-wise ``y = x / (||x||_2 + eps)`` on (N, d) inputs (the fixed-classifier head).

    Jacobian per row, with n = ||x|| and s = n + eps:
        dy/dx = I / s - x x^T / (n s^2),     so     dx = (g - y (x . g) / n) / s
    for an upstream gradient g. At x = 0 the second term vanishes (x = 0) and dx = g / eps.
    """

    eps: float = 1e-8

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"eps: expected > 0 (it keeps a zero row finite), got {self.eps}")

    def __str__(self):
        return f"L2Normalize(eps={self.eps:g})"

    def output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise self.shape_error("(N, d)", input_shape)
        return tuple(input_shape)

    def forward(self, params, x, train=False, *, state=None, rng=None):
        self.check_input(params, x)
        xp = array_module(x)
        norm = xp.sqrt((x * x).sum(axis=1, keepdims=True))  # (N, 1)
        y = x / (norm + self.eps)
        return y, L2NormalizeCache(y, norm)

    def backward(self, params, cache, dy):
        y, norm = cache.y, cache.norm
        self.check_upstream(dy, y.shape, y.dtype)
        xp = array_module(dy)
        s = norm + self.eps
        # (x . g) / n = s (y . g) / n; rows with n = 0 have y = 0, so any finite divisor works
        x_dot_g_over_n = s * (y * dy).sum(axis=1, keepdims=True) / xp.where(norm > 0, norm, 1)
        return (dy - y * x_dot_g_over_n) / s, {}
