"""The exact last-layer Laplace approximation of a linear head (MacKay 1992, "A practical
Bayesian framework for backpropagation networks" and "The evidence framework applied to
classification networks"; Daxberger et al., "Laplace Redux", NeurIPS 2021; the
laplace-torch library, whose issue #138 is the cost of its explicit Jacobian phi^T (x) I).

Model. Frozen features Phi (N, d), a head W (C, d), b (C,) or None, logits z_i = W Phi_i +
b, parameters theta = [vec(W) row by row; b] (P = C d + C; the order of
``lastlayer.engine.solvers.exact.curvature``). With separate prior precisions on the weights
and the bias (laplace-torch issue #116), P0 = diag(tau_w on the C d weights, tau_b on the C
biases),

    log p(D, theta) = -sum_i loss_i(theta) + c_lik - (1/2) theta^T P0 theta
                      + (1/2) log det P0 - (P/2) log 2 pi,

loss = "ce": -log softmax(z_i)[y_i] (c_lik = 0); loss = "squared": ||z_i - y_i||^2 (no
1/2), the Gaussian likelihood N(y_i; z_i, (1/2) I_C): noise variance 1/2, c_lik = -(N C
/ 2) log pi.

The engine's J. N J(W, b) = sum_i loss_i + N lam ||W||^2 = -log p(D, theta) + const for
tau_w = 2 N lam and tau_b = 0 (``tau_from_lam``): the MAP of J at lam (``ridge``,
``fit_softmax_regression``) is the mode for tau_w = 2 N lam with an unpenalised bias. For CE
the loss is unchanged by z_i -> z_i + s(phit_i) 1_C, so every direction theta = 1_C (x) v
(the same v in R^(d+1) added to every class's [W_c, b_c]) is a null direction of the
Hessian, the bias direction (0, 1_C) among them: tau_w > 0 regularises the weight
directions, and tau_b > 0 is required for a proper posterior when there is a bias (the
engine's MAP fixes that gauge with sum_c b_c = 0, the tau_b -> 0+ limit of the mode).
Post-hoc prior tuning (``with_prior``, ``lastlayer.engine.solvers.laplace.select``) keeps theta*
fixed, as laplace-torch does; theta* is then the exact mode only at its own prior, and
``mode_residual`` = ||grad log p(D, theta*)|| says how far it is from one.

Laplace: q(theta) = N(theta*, Lambda^-1),

    Lambda = N H_loss(theta*) + P0 = sum_i J_i^T A_i J_i + P0,

H_loss the exact Hessian of the mean loss (``curvature.hessian`` at lam = 0), A_i the
logit Hessian (diag(p_i) - p_i p_i^T, or 2 I), J_i the logits' Jacobian. The head is
linear, so the Gauss-Newton matrix is the Hessian exactly. In the class-major order (c, j)
(j < d: W[c, j]; j = d: b_c) J_i = I_C (x) phit_i^T, phit_i = [Phi_i, 1], and P0 = I_C (x) D,
D = diag(tau_w, ..., tau_w, tau_b). Structures (``structures``):

* "full": the dense (C(d+1))^2 Lambda, its Cholesky factor, covariance and log det;
* "kron": the squared loss, exactly: Lambda = I_C (x) (2 Phit^T Phit + D), O(d^3) whatever
  C; the posterior is Bayesian linear regression with noise variance 1/2, per output;
* "kfac": Lambda ~ N (1/N sum_i A_i) (x) (1/N sum_i phit_i phit_i^T) + I_C (x) D, the prior
  added exactly through the eigenvectors of both factors (the curvature is the one
  approximation);
* "auto": "kron" for the squared loss (exact); for CE "full" when C(d+1) <= FULL_AUTO_MAX,
  else "kfac".

Predictive for Phi* (M, d) (the linearised predictive, exact for a linear head): logit mean
z = Phi* W^T + b and covariance Sigma_z = J* Sigma J*^T (M, C, C), never forming J*. CE: the
probit (MacKay's "moderated output") p = sigmoid(f / sqrt(1 + pi/8 v)) with f = z_1 - z_0 and v its
variance when C = 2, and softmax(z / sqrt(1 + pi/8 diag Sigma_z)) for C > 2 (Redux's and
laplace-torch's "probit"); or Monte Carlo with S draws z + F eps (F F^T = Sigma_z, eps from
lastlayer.engine.streams.stream(seed, "laplace-mc", row)) averaging softmax. Squared: N(z, Sigma_z +
(1/2) I_C). A softmax sees only the centred logits z - mean(z) 1, but for CE the null
directions above make the subspace {1_C (x) v} invariant under Lambda = ... + I_C (x) D, so
the shared logit (1_C / sqrt(C))^T z has the prior's variance phit^T D^-1 phit whatever N,
and the multiclass probit's diag Sigma_z counts it: "probit-centred" uses diag(P Sigma_z P), P = I -
1 1^T / C, instead (for C = 2 both are the binary form, which is invariant already).

Evidence (the Laplace approximation of p(D)): with the (P/2) log 2 pi of the prior and of the
Gaussian integral cancelling,

    log p(D) ~ -sum_i loss_i(theta*) + c_lik - (1/2) theta*^T P0 theta*
               + (1/2) log det P0 - (1/2) log det Lambda,

exact for the squared loss at its exact mode (``squared_loss_mode``): then it equals
sum_c log N(Y[:, c]; 0, Phit D^-1 Phit^T + (1/2) I_N). It needs a proper prior (tau_b > 0).
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.linalg
import scipy.special

from ..._checks import all_finite, float_array, penalty, positive_int, real_number
from ...losses import log_softmax
from ...streams import stream
from ..exact.curvature import LOSSES, hessian, objective
from . import evidence
from .structures import FullCurvature, KfacCurvature, KronCurvature, engine_order

__all__ = ["LastLayerLaplace", "STRUCTURES", "PREDICTIVES", "FULL_AUTO_MAX", "FULL_MAX",
           "PROBIT_SCALE", "tau_from_lam", "squared_loss_mode"]

STRUCTURES = ("auto", "full", "kron", "kfac")
PREDICTIVES = ("probit", "probit-centred", "mc")
FULL_AUTO_MAX = 4096  # "auto" -> "full" up to here: a 134 MB Lambda, ~2e10 flops to factor
FULL_MAX = 12_000  # "full" and the dense precision() / covariance(): (12 000)^2 doubles = 1.15 GB
BLOCK_BYTES = 64 << 20  # row blocks of the streamed sums and of the Monte Carlo draws
MC_TINY = 1e-280  # a Monte Carlo mean probability below this is recomputed in log space
PROBIT_SCALE = np.pi / 8  # sigmoid(x) ~ Phi(sqrt(pi/8) x) (MacKay 1992b)


# ---- validation -------------------------------------------------------------------------------
def _float64(x, name: str, ndim: int) -> np.ndarray:
    float_array(x, name)
    if x.dtype != np.float64:
        raise TypeError(f"{name}: expected float64 (the posterior's Cholesky factors and "
                        f"log-determinants are float64 computations), got {x.dtype}")
    if x.ndim != ndim or 0 in x.shape:
        want = {1: "(n,)", 2: "(n, m)"}[ndim]
        raise ValueError(f"{name}: expected a non-empty array of shape {want}, got "
                         f"{tuple(x.shape)}")
    all_finite(x, name)
    return x


def _check_features(phi, d: int, name: str) -> np.ndarray:
    _float64(phi, name, 2)
    if phi.shape[1] != d:
        raise ValueError(f"{name}: expected shape (N, {d}) (W has {d} columns), got {phi.shape}")
    return phi


def _check_targets(targets, loss: str, n: int, c: int, name: str = "targets") -> np.ndarray:
    if not isinstance(targets, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(targets).__name__}")
    if loss == "ce":
        if targets.shape != (n,) or targets.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected integer labels of shape ({n},) for 'ce', got "
                             f"{targets.dtype} {targets.shape}")
        if n and (targets.min() < 0 or targets.max() >= c):
            raise ValueError(f"{name}: expected labels in [0, {c}), got [{targets.min()}, "
                             f"{targets.max()}]")
        return targets
    _float64(targets, name, 2)
    if targets.shape != (n, c):
        raise ValueError(f"{name}: expected real targets of shape ({n}, {c}) for 'squared', got "
                         f"{targets.shape}")
    return targets


def _check_taus(tau_w, tau_b, loss: str, bias: bool, structure: str):
    tau_w = real_number(tau_w, "tau_w", minimum=0, open_minimum=True)
    if not bias:
        if tau_b is not None:
            raise ValueError(f"tau_b: the head has no bias (b is None), got tau_b={tau_b!r}")
        return tau_w, None
    if tau_b is None:
        raise ValueError("tau_b: the head has a bias: give its prior precision tau_b (the "
                         "engine's MAP at lam is the mode for tau_b = 0, tau_w = 2 N lam)")
    tau_b = real_number(tau_b, "tau_b", minimum=0)
    if tau_b == 0 and loss == "ce":
        raise ValueError("tau_b: expected > 0 for 'ce': shifting every bias by the same constant "
                         "leaves each softmax unchanged, so (0, 1_C) is a null direction of the "
                         "Hessian and tau_b = 0 gives an improper posterior (infinite variance)")
    if tau_b == 0 and structure == "kfac":
        raise ValueError("tau_b: expected > 0 for structure 'kfac', whose prior enters through "
                         "the eigenvectors of D^-1/2 G D^-1/2; for the squared loss with a flat "
                         "bias prior use 'kron' (exact)")
    return tau_w, tau_b


def tau_from_lam(lam: float, n_rows: int) -> float:
    """The prior precision on W whose mode is the MAP of J = (1/N) sum loss + lam ||W||^2:
    N J = sum loss + N lam ||W||^2 = sum loss + (tau_w / 2) ||W||^2, so tau_w = 2 N lam
    (with tau_b = 0: the engine's bias is unpenalised)."""
    n_rows = positive_int(n_rows, "n_rows")
    return 2.0 * n_rows * penalty(lam, n_rows, "lam")


def _gram(phi: np.ndarray, bias: bool) -> np.ndarray:
    """G = Phit^T Phit (q, q) without building Phit = [Phi, 1]."""
    n, d = phi.shape
    g = np.empty((d + bias, d + bias))
    g[:d, :d] = phi.T @ phi
    g[:d, :d] = 0.5 * (g[:d, :d] + g[:d, :d].T)
    if bias:
        g[:d, d] = g[d, :d] = phi.sum(axis=0)
        g[d, d] = n
    return g


def _augment(phi: np.ndarray, bias: bool) -> np.ndarray:
    return np.hstack([phi, np.ones((len(phi), 1))]) if bias else phi


def squared_loss_mode(Phi, Y, tau_w: float, tau_b: float | None = None):
    """The exact posterior mode for the squared loss (the Bayesian linear regression mean):
    per output c, (2 Phit^T Phit + D) [W_c, b_c] = 2 Phit^T Y[:, c]. Phi (N, d), Y (N, C),
    float64; tau_b None: no bias. Returns (W (C, d), b (C,) or None). With tau_w = 2 N lam
    and tau_b = 0 it is ``ridge(Phi, Y, lam, fit_bias=True)``."""
    phi = _float64(Phi, "Phi", 2)
    y = _float64(Y, "Y", 2)
    if y.shape[0] != phi.shape[0]:
        raise ValueError(f"Y: expected {phi.shape[0]} rows like Phi, got shape {y.shape}")
    bias = tau_b is not None
    tau_w, tau_b = _check_taus(tau_w, tau_b, "squared", bias, "kron")
    k = 2 * _gram(phi, bias)
    k[np.diag_indices_from(k)] += [tau_w] * phi.shape[1] + ([tau_b] if bias else [])
    rhs = 2 * np.vstack([phi.T @ y] + ([y.sum(axis=0, keepdims=True)] if bias else []))
    sol = scipy.linalg.cho_solve(scipy.linalg.cho_factor(k), rhs)  # (q, C)
    d = phi.shape[1]
    return np.ascontiguousarray(sol[:d].T), (sol[d].copy() if bias else None)


def _log_mean_softmax(logits: np.ndarray) -> np.ndarray:
    """log((1/S) sum_s softmax(logits[:, s, :])) (B, C) for logits (B, S, C): the Monte Carlo
    predictive in log form. The draws' probabilities are averaged directly (one exp per entry,
    as laplace-torch does; each row shifted by its maximum, so nothing overflows), and only
    the entries whose mean falls below MC_TINY, where the sum may have underflowed or lost
    digits to subnormals, are redone in log space (log-sum-exp over the draws of the
    log-softmax): finite for any finite logits. Averaging every entry in log space costs
    three times as much (a log-sum-exp over S draws of a log-softmax)."""
    p = logits - logits.max(axis=2, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=2, keepdims=True)
    mean = p.mean(axis=1)
    small = mean < MC_TINY
    with np.errstate(divide="ignore"):  # an underflowed 0 is replaced just below
        out = np.log(mean)
    if small.any():
        rows = np.flatnonzero(small.any(axis=1))
        s, c = logits.shape[1:]
        logp = log_softmax(logits[rows].reshape(-1, c)).reshape(len(rows), s, c)
        exact = scipy.special.logsumexp(logp, axis=1) - np.log(s)
        out[rows] = np.where(small[rows], exact, out[rows])
    return out


def _logit_hessian_sum(W, b, phi, loss: str) -> np.ndarray:
    """S_A = sum_i A_i (C, C): diag(sum_i p_i) - sum_i p_i p_i^T (CE), 2 N I (squared)."""
    c = W.shape[0]
    if loss == "squared":
        return 2.0 * len(phi) * np.eye(c)
    s = np.zeros((c, c))
    rows = max(1, BLOCK_BYTES // (8 * c))
    for lo in range(0, len(phi), rows):
        z = phi[lo:lo + rows] @ W.T + (0.0 if b is None else b)
        p = np.exp(log_softmax(z))
        s -= p.T @ p
        s[np.diag_indices(c)] += p.sum(axis=0)
    return 0.5 * (s + s.T)


class LastLayerLaplace:
    """The Laplace posterior N(theta*, Lambda^-1) of a linear head (module docstring).

    Parameters
    ----------
    W : (C, d) float64, the expansion point (a MAP); b : (C,) float64 or None (no bias)
    Phi : (N, d) float64 training features; targets : (N,) integer labels in [0, C) for
        "ce", (N, C) float64 for "squared"
    loss : "ce" or "squared"
    tau_w : > 0, the prior precision of every weight; tau_b : >= 0 (> 0 for "ce" and for
        "kfac"), the bias's; None exactly when b is None. ``tau_from_lam`` maps the
        engine's lam to tau_w.
    structure : "auto", "full", "kron" (squared loss only) or "kfac"

    Attributes: ``structure`` (resolved), ``n_params`` P, ``log_det_precision``,
    ``sum_loss`` (sum_i loss_i at theta*), ``mode_residual`` ||grad log p(D, theta*)||_2.
    """

    def __init__(self, W, b, Phi, targets, *, loss: str = "ce", tau_w, tau_b=None,
                 structure: str = "auto"):
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
        if structure not in STRUCTURES:
            raise ValueError(f"structure: expected one of {STRUCTURES}, got {structure!r}")
        W = _float64(W, "W", 2)
        c, d = W.shape
        if b is not None:
            b = _float64(b, "b", 1)
            if b.shape != (c,):
                raise ValueError(f"b: expected shape ({c},) (one bias per row of W), got {b.shape}")
        bias = b is not None
        if loss == "ce" and c < 2:
            raise ValueError(f"W: expected C >= 2 classes for 'ce', got {c}")
        phi = _check_features(Phi, d, "Phi")
        n = phi.shape[0]
        targets = _check_targets(targets, loss, n, c)
        q = d + bias
        if structure == "auto":
            structure = ("kron" if loss == "squared" else
                         "full" if c * q <= FULL_AUTO_MAX else "kfac")
        if structure == "kron" and loss != "squared":
            raise ValueError("structure: 'kron' is exact only for the squared loss (A_i = 2 I); "
                             "for 'ce' use 'full' or 'kfac'")
        if structure == "full" and c * q > FULL_MAX:
            raise ValueError(f"structure: 'full' needs a dense ({c * q})^2 precision "
                             f"({(c * q) ** 2 * 8 / 2**30:.1f} GiB); use 'kfac'"
                             f"{' or kron' if loss == 'squared' else ''} beyond {FULL_MAX} "
                             f"parameters")
        self.tau_w, self.tau_b = _check_taus(tau_w, tau_b, loss, bias, structure)
        self.loss, self.structure = loss, structure
        self.W, self.b = W.copy(), (b.copy() if bias else None)
        self.n_rows, self.n_classes, self.n_features = n, c, d
        self.n_params = c * q
        with np.errstate(over="ignore", invalid="ignore"):  # a huge W: refused just below
            obj = objective(W, b, phi, targets, 0.0, loss)
        self.sum_loss = n * float(obj.value)
        if not np.isfinite(self.sum_loss) or not np.isfinite(obj.grad_W).all():
            raise ValueError(f"W: the loss at theta* (W, b) is not finite (sum of losses "
                             f"{self.sum_loss}; largest |W| {float(np.abs(W).max()):.3g}); "
                             f"expected a head whose logits on Phi are finite")
        self._grad_sum = n * np.concatenate([obj.grad_W.ravel()] + ([obj.grad_b] if bias else []))
        if structure == "full":
            perm = engine_order(c, d, bias)
            hn = n * hessian(W, b, phi, targets, 0.0, loss)
            self._curv = FullCurvature(hn[np.ix_(perm, perm)], c, d, q)
        elif structure == "kron":
            self._curv = KronCurvature(_gram(phi, bias), c, d, q)
        else:
            self._curv = KfacCurvature(_logit_hessian_sum(W, b, phi, loss), _gram(phi, bias),
                                       n, c, d, q)
        self._set_prior()

    # ---- the prior ----------------------------------------------------------------------------
    def _dvec(self) -> np.ndarray:
        bias = [self.tau_b] if self.b is not None else []
        return np.array([self.tau_w] * self.n_features + bias)

    def _set_prior(self) -> None:
        self._post = self._curv.posterior(self._dvec())
        self.log_det_precision = self._post.logdet
        p0_theta = np.concatenate([self.tau_w * self.W.ravel()]
                                  + ([self.tau_b * self.b] if self.b is not None else []))
        self.mode_residual = float(np.linalg.norm(self._grad_sum + p0_theta))

    def with_prior(self, tau_w, tau_b=None) -> LastLayerLaplace:
        """The same theta* and curvature under new prior precisions (post-hoc tuning): a
        new object; only the prior-dependent factorisation is redone."""
        new = copy.copy(self)
        new.tau_w, new.tau_b = _check_taus(tau_w, tau_b, self.loss, self.b is not None,
                                           self.structure)
        new._set_prior()
        return new

    # ---- the Gaussian ---------------------------------------------------------------------------
    @property
    def mean(self) -> np.ndarray:
        """theta* (P,) in the engine's order [vec(W) row by row; b]."""
        return np.concatenate([self.W.ravel()] + ([self.b] if self.b is not None else []))

    def _dense(self, aug: np.ndarray) -> np.ndarray:
        perm = engine_order(self.n_classes, self.n_features, self.b is not None)
        out = np.empty_like(aug)
        out[np.ix_(perm, perm)] = aug
        return out

    def _check_dense(self, what: str) -> None:
        if self.n_params > FULL_MAX:
            raise ValueError(f"{what}: a dense ({self.n_params})^2 matrix needs "
                             f"{self.n_params ** 2 * 8 / 2**30:.1f} GiB; available up to "
                             f"{FULL_MAX} parameters")

    def precision(self) -> np.ndarray:
        """Lambda (P, P) in the engine's order (dense: P <= FULL_MAX)."""
        self._check_dense("precision")
        return self._dense(self._post.precision())

    def covariance(self) -> np.ndarray:
        """Sigma = Lambda^-1 (P, P) in the engine's order (dense: P <= FULL_MAX)."""
        self._check_dense("covariance")
        return self._dense(self._post.covariance())

    # ---- the predictive -------------------------------------------------------------------------
    def _inputs(self, phi_star):
        phi = _check_features(phi_star, self.n_features, "Phi_star")
        z = phi @ self.W.T + (0.0 if self.b is None else self.b)
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.einsum("ij,ij->i", phi, phi)  # phit^T Sigma phit needs ||phi||^2 finite
        if not (np.isfinite(z).all() and np.isfinite(norms).all()):
            raise ValueError(f"Phi_star: its logits or squared row norms overflow float64 "
                             f"(largest |entry| {float(np.abs(phi).max()):.3g}); expected "
                             f"features whose squared norms are finite: rescale them")
        return _augment(phi, self.b is not None), z

    def logit_moments(self, Phi_star, full: bool = True):
        """(z (M, C), Sigma_z (M, C, C)) for Phi_star (M, d); with ``full=False`` only the
        diagonal, (M, C) (what the multiclass probit needs: M C instead of M C^2 numbers)."""
        phit, z = self._inputs(Phi_star)
        return z, (self._post.logit_covariance(phit) if full else self._post.logit_variance(phit))

    def _log_predictive(self, phit, z, method: str, draws: int, seed: int) -> np.ndarray:
        if method not in PREDICTIVES:
            raise ValueError(f"method: expected one of {PREDICTIVES}, got {method!r}")
        draws = positive_int(draws, "draws")  # checked whatever the method: a typo is an error
        seed = positive_int(seed, "seed", 0)
        if method != "mc":
            if self.n_classes == 2:
                cov = self._post.logit_covariance(phit)
                v = cov[:, 0, 0] + cov[:, 1, 1] - 2 * cov[:, 0, 1]
                x = (z[:, 1] - z[:, 0]) / np.sqrt(1 + PROBIT_SCALE * v)
                return -np.logaddexp(0.0, np.stack([x, -x], axis=1))  # log sigmoid(-x), (x)
            var = (self._post.logit_variance(phit) if method == "probit"
                   else self._post.logit_centred_variance(phit))
            return log_softmax(z / np.sqrt(1 + PROBIT_SCALE * var))
        c = self.n_classes
        out = np.empty_like(z)
        rows = max(1, BLOCK_BYTES // (8 * draws * c))
        for lo in range(0, len(z), rows):
            hi = min(lo + rows, len(z))
            eps = np.stack([stream(seed, "laplace-mc", m).standard_normal((draws, c))
                            for m in range(lo, hi)])  # (B, S, C): row m's draws, whatever B
            logits = z[lo:hi, None, :] + self._post.logit_noise(phit[lo:hi], eps)
            out[lo:hi] = _log_mean_softmax(logits)
        return out

    def predict_proba(self, Phi_star, method: str = "probit", draws: int = 1000,
                      seed: int = 0) -> np.ndarray:
        """CE predictive probabilities (M, C) for Phi_star (M, d): "probit" (MacKay's; the
        binary form for C = 2), "probit-centred" (the same on diag(P Sigma_z P), P = I - 1
        1^T / C) or "mc" (``draws`` >= 1 samples of the logits per row, row m drawn from
        stream(seed, "laplace-mc", m))."""
        if self.loss != "ce":
            raise ValueError("predict_proba: the squared loss's predictive is Gaussian; use "
                             "predict_gaussian")
        phit, z = self._inputs(Phi_star)
        return np.exp(self._log_predictive(phit, z, method, draws, seed))

    def predict_gaussian(self, Phi_star):
        """Squared loss: the predictive N(z, Sigma_z + (1/2) I_C) for Phi_star (M, d):
        returns (mean (M, C), covariance (M, C, C): M C^2 numbers; ``logit_moments(...,
        full=False)`` and ``predictive_nll`` avoid them)."""
        if self.loss != "squared":
            raise ValueError("predict_gaussian: for 'ce' use predict_proba")
        z, cov = self.logit_moments(Phi_star)
        cov[:, np.arange(self.n_classes), np.arange(self.n_classes)] += 0.5
        return z, cov

    def predictive_nll(self, Phi_star, targets, method: str = "probit", draws: int = 1000,
                       seed: int = 0) -> float:
        """Mean negative log predictive density over the rows of Phi_star (M, d) with
        ``targets`` (labels (M,) for "ce", (M, C) for "squared"; ``method`` and ``draws``
        as ``predict_proba``; the squared loss's predictive is the exact Gaussian, its
        density in closed form for "kron" and "kfac": no (M, C, C) covariance)."""
        phit, z = self._inputs(Phi_star)
        y = _check_targets(targets, self.loss, len(z), self.n_classes)
        if self.loss == "ce":
            logp = self._log_predictive(phit, z, method, draws, seed)
            return float(-logp[np.arange(len(z)), y].mean())
        return float(self._post.gaussian_nll(phit, y - z).mean())

    # ---- the evidence ---------------------------------------------------------------------------
    def log_evidence(self) -> float:
        """The Laplace log marginal likelihood (module docstring; nats)."""
        c, d = self.n_classes, self.n_features
        if self.b is not None and self.tau_b == 0:
            raise ValueError("tau_b: the evidence needs a proper prior on the bias (tau_b > 0); "
                             "tau_b = 0 makes log det P0 = -inf")
        c_lik = -0.5 * self.n_rows * c * np.log(np.pi) if self.loss == "squared" else 0.0
        quad = self.tau_w * float((self.W * self.W).sum())
        logdet_p0 = c * d * np.log(self.tau_w)
        if self.b is not None:
            quad += self.tau_b * float(self.b @ self.b)
            logdet_p0 += c * np.log(self.tau_b)
        return float(-self.sum_loss + c_lik - 0.5 * quad + 0.5 * logdet_p0
                     - 0.5 * self.log_det_precision)

    def optimize_prior(self, mode: str = "separate", bounds=(1e-8, 1e8), max_iter: int = 100):
        """The prior precisions maximising ``log_evidence`` with theta* fixed (Newton's
        method in log space; ``evidence.maximize_evidence``)."""
        return evidence.maximize_evidence(self, mode=mode, bounds=bounds, max_iter=max_iter)
