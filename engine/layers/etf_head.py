"""The fixed simplex-ETF classifier (Zhu et al., NeurIPS 2021, "A geometric analysis of neural
collapse with unconstrained features").

Neural collapse ends with the C class vectors of the last layer at the vertices of a simplex
equiangular tight frame (ETF); Zhu et al. show that with unconstrained features and weight
decay every global minimiser is such a frame (their Theorem 3.1), and, in their experiments,
fix the classifier there from the start and train only what comes before it. Their (general)
simplex ETF is, for C classes in R^d,

    M = sqrt(C / (C - 1)) P (I_C - 1 1^T / C),     P (d, C),  P^T P = I_C,

and this head uses it as its weight: W^T = M, so that the logits are

    y = s * x W^T + b                                 x (N_batch, d), y (N_batch, C)
      = s * sqrt(C / (C - 1)) * (x P) (I_C - 1 1^T / C) + b.

The rows w_c of W (C, d) then satisfy W W^T = C / (C - 1) (I_C - 1 1^T / C): unit norms,
pairwise cosines exactly -1 / (C - 1), and sum_c w_c = 0 (the columns of W sum to zero).

Dimensions: an ETF of C vectors spans C - 1 dimensions, so d_in >= C - 1 is required and
enough. With d_in >= C, P has orthonormal columns as above. With d_in = C - 1 no d x C matrix
has P^T P = I_C; the head then takes P = Q V^T, Q (d, d) orthogonal and V (C, C - 1) the
Helmert basis of the vectors orthogonal to 1 (V^T V = I, V^T 1 = 0), so that P^T P =
I - 1 1^T / C: the ETF needs only (I - 1 1^T/C) P^T P (I - 1 1^T/C) = I - 1 1^T/C, which
holds for both. Fewer than C - 1 features cannot hold C equiangular vectors at -1/(C - 1).

How P is made (``method``):

* ``"hadamard"`` (matrix-free, like ``HadamardHead``): when d_in is a power of two with
  d_in > C, P = H_d[:, 1:C+1] / sqrt(d), columns 1 .. C of the Sylvester-Hadamard matrix
  (orthonormal once divided by sqrt(d)). Column 0, the all-ones one, is skipped: every other
  column is orthogonal to 1_d, so W 1_d = 0 and a shift of all features by the same amount
  (the large common mode of ReLU features) changes no logit; with column 0 that mode would
  raise one class's logit. Hence d_in >= C + 1. P is never stored: x P = fwht(x)[:, 1:C+1] /
  sqrt(d) (``lastlayer.kernels.fwht``: d log2 d additions per sample) and, H being
  symmetric, dz P^T = fwht([0, dz, 0]) / sqrt(d), dz placed in columns 1 .. C.
* ``"orthogonal"``: P from the QR decomposition of a standard Gaussian d x C matrix drawn
  from ``lastlayer.engine.streams.stream(seed, "etf")``, column signs fixed so that diag(R) > 0 (a
  function of the seed alone, Haar-distributed); for d = C - 1, Q from a Gaussian d x d, as
  above. P lives in the layer's explicit state (``init_state``), like ``OrthogonalHead``'s Q.
* ``"auto"`` (default): ``"hadamard"`` when it is possible (d_in a power of two, C < d_in
  <= 2^24) and C > ``AUTO_DENSE_FACTOR`` = 3, else ``"orthogonal"``. The cost model is
  ``HadamardHead``'s measured crossover (bench/test_fixed_head.py: the dense product is
  faster than the transform only when C N <= 3 n; here n = N = d_in), for the same two
  operations, a transform of the (N_batch, d) rows against an (N_batch, d) @ (d, C) product;
  and only the orthogonal path holds d C numbers in its state. Measured for this head (a
  shared 2-core machine, one thread, forward + backward, float32, batch 256): d = 1024 and
  8192, C = 2: the product 0.9-1.0x the transform's time; C = 3: 1.0-1.3x; C = 4 .. 16:
  1.2-1.7x; C = 100: 5x. For d <= 256 (float64, batch 64 and 256, C = 4 and 10) the
  transform's fixed cost per call (~30 us) made the product 1.3-3x faster instead, a
  difference of tens of microseconds a call, which the rule ignores.

The centring (I - 1 1^T / C) is never a matrix either: it subtracts each row's mean over the
C classes. Both paths centre, including the d = C - 1 one, where x P is already centred to
rounding.

Deviations from the paper, where they act (``forward``):

* Features are *not* normalised, as in Zhu et al.: their analysis has unconstrained features
  with weight decay (penalties on ||W||^2, ||H||^2 and ||b||^2) and no normalisation.
  (``HadamardHead`` and ``OrthogonalHead`` do L2-normalise, after Hoffer et al.)
* The optional learned scale s (``learn_scale``; parameter ``scale`` (1,)) is not in their
  model, where the classifier's norm is what weight decay balances against the features'
  norms; here the class vectors have unit norm and, by default, s = ``scale_init`` = 1 is a
  fixed hyper-parameter: the features' own norm plays the part of the logit scale.
* The optional learned bias b (``bias``; parameter ``b`` (C,), initialised 0) is off by
  default: their global minimisers have b = b* 1 (Theorem 3.1), a constant vector, which
  changes no softmax probability. With the defaults the head has no trainable number.

Backward, for an upstream gradient dy (N_batch, C), with u = x W^T (cached):

    db = sum_rows dy,    dscale = sum(dy * u),    dx = s dy W
       = s sqrt(C / (C - 1)) (dy (I - 1 1^T / C)) P^T          (the centring is symmetric).
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import NamedTuple

import numpy as np

from lastlayer.kernels import fwht
from lastlayer.kernels.fwht import MAX_LOG2_N
from lastlayer.kernels.hadamard import log2_exact

from .._checks import float_dtype, positive_int, real_number
from ..backend import array_module
from ..streams import stream
from .base import Layer
from .fixed_heads import AUTO_DENSE_FACTOR

__all__ = ["SimplexETFHead", "ETFHeadCache", "helmert_basis", "METHODS"]

METHODS = ("auto", "hadamard", "orthogonal")


class ETFHeadCache(NamedTuple):
    u: object  # (N_batch, C) x W^T, the logits before the scale and the bias (for dscale)
    p: object  # "orthogonal": (d_in, C) reference to the state's P; "hadamard": None


def helmert_basis(n_classes: int) -> np.ndarray:
    """V (C, C - 1): an orthonormal basis of the vectors of R^C orthogonal to 1, column j
    (j = 1 .. C - 1) = (1, .., 1, -j, 0, .., 0) / sqrt(j (j + 1)) with j ones; float64."""
    c = positive_int(n_classes, "n_classes", minimum=2)
    v = np.zeros((c, c - 1))
    for j in range(1, c):
        v[:j, j - 1] = 1.0
        v[j, j - 1] = -float(j)
        v[:, j - 1] /= math.sqrt(j * (j + 1))
    return v


@dataclass(frozen=True)
class SimplexETFHead(Layer):
    """Fixed simplex-ETF classifier: y = s * x W^T + b, W^T = sqrt(C/(C-1)) P (I - 1 1^T/C).

    ``d_in`` (>= ``n_classes`` - 1) features, ``n_classes`` = C >= 2 classes; ``method``
    "auto", "hadamard" or "orthogonal" (module docstring: how P is made and applied; "auto"
    resolved by ``resolved_method``); ``seed`` keys the orthogonal P (unused by "hadamard").

    Parameters: ``scale`` (1,) initialised ``scale_init`` if ``learn_scale`` (otherwise s is
    the fixed hyper-parameter ``scale_init``, default 1); ``b`` (C,) initialised 0 if
    ``bias``. State: ``P`` (d_in, C) with the orthogonal method, {} with the Hadamard one.
    Input (N_batch, d_in) -> logits (N_batch, C). Features are not normalised.
    """

    d_in: int
    n_classes: int
    _: KW_ONLY
    method: str = "auto"
    learn_scale: bool = False
    scale_init: float = 1.0
    bias: bool = False
    seed: int = 0

    def __post_init__(self):
        # NumPy integers are accepted (lastlayer.engine._checks) and kept as Python ints: the
        # Hadamard path's log2 needs int.bit_length
        object.__setattr__(self, "d_in", positive_int(self.d_in, "d_in"))
        object.__setattr__(self, "n_classes", positive_int(self.n_classes, "n_classes", minimum=2))
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("learn_scale", "bias"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
        real_number(self.scale_init, "scale_init", minimum=0, open_minimum=True)
        positive_int(self.seed, "seed", minimum=0)
        c = self.n_classes
        if self.d_in < c - 1:
            raise ValueError(f"d_in: a simplex ETF of n_classes = {c} vectors spans {c - 1} "
                             f"dimensions; expected d_in >= {c - 1}, got {self.d_in}")
        if self.method == "hadamard" and not self.hadamard_possible:
            raise ValueError(
                f"method: 'hadamard' needs d_in a power of two with n_classes < d_in <= "
                f"2^{MAX_LOG2_N} (P = columns 1 .. C of H_d / sqrt(d), the all-ones column 0 "
                f"skipped), got d_in = {self.d_in}, n_classes = {c}; use method='orthogonal' "
                f"or 'auto'")

    def __str__(self):
        return f"SimplexETFHead({self.d_in} -> {self.n_classes}, {self.resolved_method})"

    # ---- the construction -----------------------------------------------------------
    @property
    def gain(self) -> float:
        """sqrt(C / (C - 1)): the factor that gives the centred class vectors unit norm."""
        return math.sqrt(self.n_classes / (self.n_classes - 1))

    @property
    def hadamard_possible(self) -> bool:
        """d_in = 2^k with C < d_in <= 2^24: columns 1 .. C of H_d exist (and fwht runs)."""
        k = log2_exact(self.d_in)
        return 0 <= k <= MAX_LOG2_N and self.d_in > self.n_classes

    @property
    def resolved_method(self) -> str:
        """``method``, with "auto" resolved: "hadamard" if possible and C > 3, else
        "orthogonal" (module docstring)."""
        if self.method != "auto":
            return self.method
        cheaper = self.n_classes > AUTO_DENSE_FACTOR  # C d > 3 n with n = d
        return "hadamard" if self.hadamard_possible and cheaper else "orthogonal"

    @property
    def stateful(self) -> bool:
        """True with the orthogonal method (P lives in the state); the Hadamard path has none."""
        return self.resolved_method == "orthogonal"

    def init_state(self, dtype=np.float64):
        """Orthogonal method: {"P": (d_in, C)}, computed in float64 from the seed's "etf"
        stream and rounded to dtype; Hadamard method: {}."""
        dt = float_dtype(dtype)
        if self.resolved_method == "hadamard":
            return {}
        d, c = self.d_in, self.n_classes
        rng = stream(self.seed, "etf")
        if d >= c:
            g = rng.standard_normal((d, c))
            p, r = np.linalg.qr(g)  # (d, C), (C, C)
            p *= np.where(np.diag(r) < 0, -1.0, 1.0)  # unique factor: diag(R) > 0
        else:  # d = C - 1: P = Q V^T, P^T P = I - 1 1^T / C (module docstring)
            q, r = np.linalg.qr(rng.standard_normal((d, d)))
            q *= np.where(np.diag(r) < 0, -1.0, 1.0)
            p = q @ helmert_basis(c).T  # (d, d) @ (d, C)
        return {"P": np.ascontiguousarray(p).astype(dt)}

    # ---- parameters -----------------------------------------------------------------
    def param_shapes(self):
        shapes = {"scale": (1,)} if self.learn_scale else {}
        if self.bias:
            shapes["b"] = (self.n_classes,)
        return shapes

    def init(self, rng, dtype=np.float64):
        """``scale`` = [scale_init] (if learned) and ``b`` = 0 (if any); nothing is drawn."""
        dt = float_dtype(dtype)
        params = {"scale": np.full(1, self.scale_init, dtype=dt)} if self.learn_scale else {}
        if self.bias:
            params["b"] = np.zeros(self.n_classes, dtype=dt)
        return params

    def output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] != self.d_in:
            raise self.shape_error(f"(N, {self.d_in})", input_shape)
        return (input_shape[0], self.n_classes)

    def _scale(self, params):
        """s: the parameter (1,), or the hyper-parameter as a Python float (which keeps the
        input's dtype: a NumPy float64 scalar would turn float32 logits into float64)."""
        return params["scale"] if self.learn_scale else float(self.scale_init)

    # ---- the operator -----------------------------------------------------------------
    def _p(self, state, x):
        """The state's P (orthogonal), checked against the layer and x's dtype; None (Hadamard)."""
        if self.resolved_method == "hadamard":
            return None
        p = state.get("P") if isinstance(state, dict) else None
        if p is None:
            raise ValueError(f"{self}: P lives in the layer state; pass "
                             f"state=layer.init_state(dtype) (got state={state!r:.40})")
        shape = (self.d_in, self.n_classes)
        if tuple(p.shape) != shape:
            raise ValueError(f"{self}: state['P'] must have shape {shape}, got {tuple(p.shape)}")
        if p.dtype != x.dtype:
            raise TypeError(f"{self}: input dtype {x.dtype} does not match state['P'] dtype "
                            f"{p.dtype}; build the state with init_state({x.dtype}) (nothing is "
                            f"cast silently)")
        return p

    def _project(self, x, p):
        """x (N_batch, d) -> x P (N_batch, C)."""
        if p is not None:
            return x @ p
        c = self.n_classes
        return fwht(x)[:, 1:c + 1] * (1 / math.sqrt(self.d_in))  # a copy: the (N_batch, d) freed

    def _project_transposed(self, dz, p):
        """dz (N_batch, C) -> dz P^T (N_batch, d)."""
        if p is not None:
            return dz @ p.T
        xp = array_module(dz)
        out = xp.zeros((dz.shape[0], self.d_in), dtype=dz.dtype)  # (N_batch, d)
        out[:, 1:self.n_classes + 1] = dz * (1 / math.sqrt(self.d_in))
        return fwht(out, out=out)  # in place: rows <- H_d rows (H_d symmetric)

    def _centre(self, z):
        """sqrt(C / (C - 1)) z (I - 1 1^T / C): each row minus its mean over the classes."""
        return self.gain * (z - z.mean(axis=1, keepdims=True))

    # ---- forward and backward -----------------------------------------------------------
    def forward(self, params, x, train=False, *, state=None, rng=None):
        """x: (N_batch, d_in) -> logits y: (N_batch, n_classes). x is used as it comes, not
        normalised (Zhu et al.'s unconstrained features); s and b as the flags say."""
        self.check_input(params, x)
        p = self._p(state, x)
        u = self._centre(self._project(x, p))  # (N_batch, C) x W^T
        y = self._scale(params) * u  # a new array: u stays as cached
        if self.bias:
            y += params["b"]
        return y, ETFHeadCache(u, p)

    def backward(self, params, cache, dy):
        """dy: (N_batch, C) -> dx: (N_batch, d_in); grads scale: (1,), b: (C,) (those present)."""
        u = cache.u
        self.check_upstream(dy, u.shape, u.dtype)
        grads = {}
        if self.learn_scale:
            grads["scale"] = (dy * u).sum().reshape(1)  # (1,)
        if self.bias:
            grads["b"] = dy.sum(axis=0)  # (C,)
        dz = self._centre(self._scale(params) * dy)  # s dy W = (centred s dy) P^T
        return self._project_transposed(dz, cache.p), grads
