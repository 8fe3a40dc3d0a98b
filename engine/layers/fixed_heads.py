"""Fixed classifier heads (Hoffer, Hubara & Soudry 2018, "Fix your classifier").

Both heads replace the learned affine last layer ``y = x W^T + b`` by a *fixed* C x N
matrix Q applied to the L2-normalised features, scaled by one learned scalar alpha (the
inverse softmax temperature) and shifted by a learned bias (their section "Choosing the
projection matrix": v_i = exp(alpha q_i . x_hat + b_i) / sum_j exp(alpha q_j . x_hat + b_j)):

    x_hat = x / (||x||_2 + eps)                        (N_batch, N), row-wise
    y     = alpha * x_hat Q^T + b                      (N_batch, C)

* ``HadamardHead``: Q is the truncated Sylvester-Hadamard matrix, the first C rows and
  first N columns of H_n, n = 2^ceil(log2 max(N, C)), entries +-1 unscaled (their section
  "Using a Hadamard matrix", y = H_hat x_hat + b, and their released code). Q is never
  stored: Q x_hat is the first C outputs of the fast Walsh-Hadamard transform of x_hat
  zero-padded to n (``lastlayer.kernels.fwht``), or, where that is cheaper, a dense product with
  rows generated for that call only (``lastlayer.kernels.hadamard.hadamard_rows``).
* ``OrthogonalHead``: Q has C orthonormal rows, drawn once from a seeded Gaussian (their
  "simple random sampling and singular-value decomposition"; here a QR, which gives the
  same distribution). Q is not trainable and lives in the layer's explicit state.

Defaults follow their code (docs/design.md): Hadamard alpha_0 = 1/sqrt(C), b ~ U(+-1/sqrt(C));
orthogonal alpha_0 = 10, b = 0; eps = 1e-8. Parameters: ``alpha`` (1,) if ``learn_alpha``
(otherwise alpha is the fixed hyper-parameter ``alpha_init``) and ``b`` (C,): C + 1
trainable numbers instead of the C N + C of a Dense head.

Backward, for an upstream gradient dy (N_batch, C), with z = x_hat Q^T:

    db = sum_rows dy,    dalpha = sum(dy * z),    dx_hat = alpha dy Q,

and dx from dx_hat through the normalisation, (I - x_hat x_hat^T) / ||x|| for eps -> 0
(``L2Normalize``, whose forward and backward both heads call).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lastlayer.kernels import fwht
from lastlayer.kernels.hadamard import hadamard_rows, next_power_of_two

from .._checks import float_dtype, positive_int
from ..backend import array_module
from .base import Layer
from .normalization import L2Normalize, L2NormalizeCache

__all__ = ["HadamardHead", "OrthogonalHead", "FixedHeadCache"]

METHODS = ("auto", "fwht", "dense")
# HadamardHead(method="auto") multiplies by the dense +-1 rows when C N <= 3 n (measured
# crossover, HadamardHead's docstring), else applies the transform.
AUTO_DENSE_FACTOR = 3


class FixedHeadCache(NamedTuple):
    normalized: L2NormalizeCache  # x_hat (N_batch, N) and ||x|| (N_batch, 1)
    z: object  # (N_batch, C) x_hat Q^T, for dalpha
    q: object  # OrthogonalHead: (C, N) reference to the state's Q; HadamardHead: None


class _FixedHead(Layer):
    """What both heads share: validation, parameters, the normalisation, alpha and b.

    Subclasses are frozen dataclasses with the fields ``d_in``, ``n_classes``,
    ``alpha_init``, ``learn_alpha``, ``eps`` and implement ``_q(state, x)`` (the operator's
    representation for one call, or None), ``_project(x_hat, q)`` = x_hat Q^T and
    ``_project_transposed(dz, q)`` = dz Q, and ``_init_bias(rng)`` (float64, shape (C,)).
    """

    def _validate_common(self) -> None:
        positive_int(self.d_in, "d_in")
        positive_int(self.n_classes, "n_classes")
        if not isinstance(self.learn_alpha, bool):
            raise TypeError(f"learn_alpha: expected a bool, got {type(self.learn_alpha).__name__} "
                            f"{self.learn_alpha!r}")
        if not self.eps > 0:
            raise ValueError(f"eps: expected > 0 (it keeps a zero row finite), got {self.eps}")
        a = self.initial_alpha
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not (math.isfinite(a) and a > 0):
            raise ValueError(f"alpha_init: expected a finite number > 0 (the inverse softmax "
                             f"temperature), got {self.alpha_init!r}")

    @property
    def initial_alpha(self) -> float:
        """alpha at initialisation (and its fixed value when ``learn_alpha`` is False)."""
        return self.alpha_init

    @property
    def _normalize(self) -> L2Normalize:
        return L2Normalize(self.eps)

    def __str__(self):
        return f"{type(self).__name__}({self.d_in} -> {self.n_classes})"

    def param_shapes(self):
        shapes = {"alpha": (1,)} if self.learn_alpha else {}
        shapes["b"] = (self.n_classes,)
        return shapes

    def init(self, rng, dtype=np.float64):
        """``alpha`` = [alpha_init] (if learned) and ``b``, drawn in float64 and rounded."""
        dt = float_dtype(dtype)
        params = {"alpha": np.full(1, self.initial_alpha, dtype=dt)} if self.learn_alpha else {}
        params["b"] = self._init_bias(rng).astype(dt)
        return params

    def output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] != self.d_in:
            raise self.shape_error(f"(N, {self.d_in})", input_shape)
        return (input_shape[0], self.n_classes)

    def _alpha(self, params):
        return params["alpha"] if self.learn_alpha else self.initial_alpha

    def forward(self, params, x, train=False, *, state=None, rng=None):
        """x: (N_batch, d_in) -> logits y: (N_batch, n_classes)."""
        self.check_input(params, x)
        q = self._q(state, x)
        x_hat, normalized = self._normalize.forward({}, x)  # (N_batch, N)
        z = self._project(x_hat, q)  # (N_batch, C)
        y = self._alpha(params) * z + params["b"]
        return y, FixedHeadCache(normalized, z, q)

    def backward(self, params, cache, dy):
        """dy: (N_batch, C) -> dx: (N_batch, d_in); grads alpha: (1,) (if learned), b: (C,)."""
        z = cache.z
        self.check_upstream(dy, z.shape, z.dtype)
        grads = {"b": dy.sum(axis=0)}  # (C,)
        if self.learn_alpha:
            grads["alpha"] = (dy * z).sum().reshape(1)  # (1,)
        dx_hat = self._project_transposed(self._alpha(params) * dy, cache.q)  # (N_batch, N)
        dx, _ = self._normalize.backward({}, cache.normalized, dx_hat)
        return dx, grads


@dataclass(frozen=True)
class HadamardHead(_FixedHead):
    """Fixed truncated-Hadamard classifier: y = alpha * x_hat Q^T + b, Q = H_n[:C, :N].

    H_n is the Sylvester-Hadamard matrix, H[i, j] = (-1)^popcount(i & j), of size
    n = 2^ceil(log2 max(N, C)) (N = ``d_in``, C = ``n_classes``), entries +-1 unscaled, so
    ||q_c||^2 = N. Its rows are exactly orthogonal when 2^ceil(log2 C) divides N (N = n
    in particular), and not in general when N < n, contrary to the paper's "all C rows
    are orthogonal" (ledger row H4).

    Parameters: ``alpha`` (1,) initialised ``alpha_init`` (default 1/sqrt(C)) if
    ``learn_alpha``; ``b`` (C,) ~ U(-1/sqrt(C), 1/sqrt(C)). The rows of H_n[:, :N] repeat
    with period 2^ceil(log2 N): C > N gives linearly dependent rows (the paper's ShuffleNet
    head, 960 x 1000, does), and C beyond that period gives duplicate rows, classes that
    differ only by their bias, which is refused unless ``allow_duplicate_rows``. No state; Q is never stored
    (neither here nor in params or state). Input (N_batch, d_in) -> output (N_batch, C).

    ``method`` picks how Q is applied (both give the same numbers to rounding):

    * ``"fwht"``: Q x_hat = first C entries of H_n [x_hat; 0] and, in backward,
      dx_hat = first N entries of H_n [alpha dy; 0] (H_n is symmetric): n log2 n additions
      per sample and an (N_batch, n) buffer.
    * ``"dense"``: the +-1 matrix ``hadamard_rows(range(C), N)`` is generated for that call
      only, then one matrix product: C N multiply-adds per sample.
    * ``"auto"`` (default): dense when C N <= ``AUTO_DENSE_FACTOR`` n (= 3 n), else fwht.
      Measured (bench/test_fixed_head.py, float32, batch 256, forward + backward of the
      projection, d_in 64 .. 16384): the vectorised transform runs at memory speed, so
      both paths cost a few passes over the (batch, n) data and the dense product is the
      faster one only for very few classes (C = 2: dense up to 2.8x faster at d_in = 16384;
      C = 4 .. 8: within 1.4x either way; C >= 16: the transform 1.06x .. 2.3x faster). An
      operation count (n log2 n additions against C N multiply-adds) would pick the dense
      product up to C ~ log2 n, where it is now the slower one.
    """

    d_in: int
    n_classes: int
    alpha_init: float | None = None
    learn_alpha: bool = True
    eps: float = 1e-8
    method: str = "auto"
    allow_duplicate_rows: bool = False

    def __post_init__(self):
        self._validate_common()
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if not isinstance(self.allow_duplicate_rows, bool):
            raise TypeError(f"allow_duplicate_rows: expected a bool, got {self.allow_duplicate_rows!r}")
        period = next_power_of_two(self.d_in)
        if self.n_classes > period and not self.allow_duplicate_rows:
            repeats = self.n_classes - period
            raise ValueError(
                f"n_classes: expected at most 2^ceil(log2 d_in) = {period} for d_in = {self.d_in}, "
                f"got {self.n_classes}: the rows of H_n[:, :d_in] repeat with period {period}, so "
                f"{repeats} class{'es' if repeats > 1 else ''} would have the same row of Q as an "
                f"earlier one (classes that differ only by their bias); pass "
                f"allow_duplicate_rows=True to build it anyway")

    @property
    def initial_alpha(self) -> float:
        return 1 / math.sqrt(self.n_classes) if self.alpha_init is None else self.alpha_init

    @property
    def n(self) -> int:
        """Size of the Hadamard matrix Q is cut from: 2^ceil(log2 max(N, C))."""
        return next_power_of_two(max(self.d_in, self.n_classes))

    @property
    def resolved_method(self) -> str:
        """``method``, with "auto" resolved by the measured cost model above."""
        if self.method != "auto":
            return self.method
        return "dense" if self.n_classes * self.d_in <= AUTO_DENSE_FACTOR * self.n else "fwht"

    def _init_bias(self, rng):
        bound = 1 / math.sqrt(self.n_classes)
        return rng.uniform(-bound, bound, self.n_classes)

    def _q(self, state, x):
        return None  # nothing to carry between forward and backward

    def _dense_q(self, like):
        """Q (C, N) as +-1 in ``like``'s dtype and namespace, for one call only."""
        q = hadamard_rows(range(self.n_classes), self.d_in, like.dtype)
        return array_module(like).asarray(q)

    def _transform_padded(self, a, keep: int):
        """First ``keep`` columns of H_n [a; 0] for every row of a (N_batch, k <= n)."""
        xp = array_module(a)
        padded = xp.zeros((a.shape[0], self.n), dtype=a.dtype)  # (N_batch, n)
        padded[:, :a.shape[1]] = a
        fwht(padded, out=padded)  # in place: rows <- H_n rows (H_n symmetric)
        return xp.ascontiguousarray(padded[:, :keep])  # a copy: the n-wide buffer is freed

    def _project(self, x_hat, q):
        """x_hat (N_batch, N) -> x_hat Q^T (N_batch, C)."""
        if self.resolved_method == "dense":
            return x_hat @ self._dense_q(x_hat).T
        return self._transform_padded(x_hat, self.n_classes)

    def _project_transposed(self, dz, q):
        """dz (N_batch, C) -> dz Q (N_batch, N)."""
        if self.resolved_method == "dense":
            return dz @ self._dense_q(dz)
        return self._transform_padded(dz, self.d_in)


@dataclass(frozen=True)
class OrthogonalHead(_FixedHead):
    """Fixed random orthonormal classifier: y = alpha * x_hat Q^T + b, Q Q^T = I_C.

    Q (C, N) is the transposed Q factor of the QR decomposition of a standard Gaussian
    N x C matrix drawn from ``np.random.default_rng(seed)``, its columns' signs fixed so
    that diag(R) > 0: this makes Q a function of the seed alone (not of the LAPACK build)
    and Haar-distributed. Needs C <= N (C orthonormal rows in R^N).

    Why Q lives in the *state* (``stateful = True``): it is an array, so it cannot live on
    the layer (which holds hyper-parameters only); it is not trained, so it must not be a
    parameter (optimizers, weight decay and parameter counts would all see it); and drawing
    it again at every call would cost a QR each time. The state is the engine's place for
    arrays that the forward pass reads but gradient steps never touch: it is built by
    ``init_state(dtype)`` (deterministic from the seed), saved in checkpoints and moved
    with the parameters, and ``update_state`` returns it unchanged (inherited).

    Parameters: ``alpha`` (1,) initialised ``alpha_init`` = 10 if ``learn_alpha``;
    ``b`` (C,) initialised 0. State: ``Q`` (C, N). Input (N_batch, d_in) -> (N_batch, C).
    """

    d_in: int
    n_classes: int
    seed: int = 0
    alpha_init: float = 10.0
    learn_alpha: bool = True
    eps: float = 1e-8

    stateful = True

    def __post_init__(self):
        self._validate_common()
        positive_int(self.seed, "seed", minimum=0)
        if self.n_classes > self.d_in:
            raise ValueError(f"n_classes: an orthonormal C x N matrix needs C <= N = d_in = "
                             f"{self.d_in}, got n_classes = {self.n_classes}")

    def __str__(self):
        return f"OrthogonalHead({self.d_in} -> {self.n_classes}, seed {self.seed})"

    def init_state(self, dtype=np.float64):
        """{"Q": (C, N)} with orthonormal rows, computed in float64 and rounded to dtype."""
        dt = float_dtype(dtype)
        g = np.random.default_rng(self.seed).standard_normal((self.d_in, self.n_classes))
        q, r = np.linalg.qr(g)  # (N, C), (C, C)
        q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # unique factor: diag(R) > 0
        return {"Q": np.ascontiguousarray(q.T).astype(dt)}

    def _init_bias(self, rng):
        return np.zeros(self.n_classes)

    def _q(self, state, x):
        """The state's Q, checked against the layer and the input's dtype."""
        q = state.get("Q") if isinstance(state, dict) else None
        if q is None:
            raise ValueError(f"{self}: Q lives in the layer state; pass "
                             f"state=layer.init_state(dtype) (got state={state!r:.40})")
        shape = (self.n_classes, self.d_in)
        if tuple(q.shape) != shape or q.dtype != x.dtype:
            raise ValueError(f"{self}: state['Q'] must have shape {shape} and the input's dtype "
                             f"{x.dtype}, got shape {tuple(q.shape)} and dtype {q.dtype}")
        return q

    def _project(self, x_hat, q):
        return x_hat @ q.T  # (N_batch, N) @ (N, C)

    def _project_transposed(self, dz, q):
        return dz @ q  # (N_batch, C) @ (C, N)
