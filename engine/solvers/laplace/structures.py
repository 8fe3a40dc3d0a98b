"""The three posterior structures of ``lastlayer.engine.solvers.laplace.posterior``: full,
kron, kfac.

All work in the class-major order of the parameters, index (c, j) with c < C and j < q:
j < d is W[c, j], and with a bias j = d is b_c (q = d + 1; q = d without a bias). In that
order the per-sample Jacobian of the logits is J_i = I_C (x) phit_i^T with phit_i =
[Phi_i, 1], and the prior precision is I_C (x) D with D = diag(dvec), dvec = (tau_w, ...,
tau_w, tau_b) (q,). The engine's order [vec(W) row by row; b] is a fixed permutation of it
(``engine_order``).

* ``FullCurvature``: Lambda = Hn + I_C (x) D with Hn = sum_i J_i^T A_i J_i = N H_loss the
  exact (C q)^2 matrix; Cholesky Lambda = L L^T, log det Lambda = 2 sum log L_kk, the
  covariance by two triangular solves.
* ``KronCurvature`` (squared loss, A_i = 2 I_C, exact): Lambda = I_C (x) K, K = 2 G + D,
  G = sum_i phit_i phit_i^T (q, q); Sigma = I_C (x) K^-1, log det Lambda = C log det K.
* ``KfacCurvature``: Lambda ~ (1/N) S_A (x) G + I_C (x) D with S_A = sum_i A_i (C, C), i.e.
  N * (1/N sum_i A_i) (x) (1/N sum_i phit_i phit_i^T). With S_A = Q_A diag(l) Q_A^T and the
  generalised eigenvectors V of (G, D) (V^T G V = diag(mu), V^T D V = I; from the ordinary
  eigenproblem of D^-1/2 G D^-1/2), Lambda = (Q_A (x) V^-T) (diag(l) (x) diag(mu) / N + I)
  (Q_A (x) V^-T)^T, hence

      Sigma = (Q_A (x) V) diag(w) (Q_A (x) V)^T,   w_ag = 1 / (l_a mu_g / N + 1),
      log det Lambda = C log det D - sum_ag log w_ag.

  The prior is added exactly, also with tau_w != tau_b (the usual trick adds one scalar to
  the eigenvalues l_a lambda_g of the two factors, which is this with D = tau I); only the
  curvature is approximated: sum_i A_i (x) G_i - (1/N) S_A (x) G = sum_i (A_i - Abar) (x)
  (G_i - Gbar) exactly (G_i = phit_i phit_i^T, bars the means over i), zero when the A_i
  are all equal (the squared loss).

Every posterior gives log det Lambda, the traces T_k = tr(Sigma E_k) and Q_kl = tr(Sigma
E_k Sigma E_l) of the evidence's derivatives (E_k = I_C (x) diag(the j of group k), group 0
the weights, group 1 the bias), and, for new phit (M, q), the logit covariance
Sigma_z[m] = J_m Sigma J_m^T without forming J_m: from the blocks Sigma_{cc'} (full), as
(phit^T K^-1 phit) I_C (kron), as Q_A diag(sum_g w_ag (V^T phit)_g^2) Q_A^T (kfac).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["engine_order", "centred_variance", "FullCurvature", "KronCurvature", "KfacCurvature"]

BLOCK_BYTES = 64 << 20  # temporaries of the blockwise logit covariances stay near this


def engine_order(c: int, d: int, bias: bool) -> np.ndarray:
    """perm (C q,): the engine's index of class-major parameter (c, j), so that
    M_engine[np.ix_(perm, perm)] is M in the class-major order."""
    q = d + (1 if bias else 0)
    cls, j = np.divmod(np.arange(c * q), q)
    return np.where(j < d, cls * d + j, c * d + cls)


def _group_masks(q: int, d: int) -> list[np.ndarray]:
    """Boolean masks over j < q: the weights, then (with a bias) the bias."""
    j = np.arange(q)
    return [j < d] + ([j == d] if q > d else [])


def _cholesky(a: np.ndarray, what: str) -> np.ndarray:
    try:
        return scipy.linalg.cholesky(a, lower=True, check_finite=True)
    except (np.linalg.LinAlgError, ValueError):
        raise ValueError(f"{what} is not positive definite in float64 (a prior precision too "
                         f"small against the curvature's rounding, or Phi badly scaled); "
                         f"raise tau_w / tau_b or rescale Phi") from None


def centred_variance(cov: np.ndarray) -> np.ndarray:
    """diag(P Sigma_z P) (M, C) for Sigma_z (M, C, C), P = I - 1 1^T / C: the variance of the
    centred logits z - mean(z) 1, all a softmax sees (softmax(z + s 1) = softmax(z))."""
    c = cov.shape[-1]
    rows = cov.sum(axis=2)
    return (np.diagonal(cov, axis1=1, axis2=2) - 2 * rows / c
            + rows.sum(axis=1, keepdims=True) / c ** 2)


def _dense_gaussian_nll(cov: np.ndarray, r: np.ndarray) -> np.ndarray:
    c = cov.shape[-1]
    cov = cov.copy()
    cov[:, np.arange(c), np.arange(c)] += 0.5
    chol = np.linalg.cholesky(cov)
    u = np.linalg.solve(chol, r[:, :, None])[:, :, 0]
    logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    return 0.5 * (c * np.log(2 * np.pi) + logdet + (u * u).sum(axis=1))


def _rows_per_block(bytes_per_row: int) -> int:
    return max(1, BLOCK_BYTES // max(8 * bytes_per_row, 1))


class FullCurvature:
    """The exact Hn = sum_i J_i^T A_i J_i (C q, C q), class-major order."""

    name = "full"

    def __init__(self, hn: np.ndarray, c: int, d: int, q: int):
        self.hn, self.c, self.d, self.q = hn, c, d, q

    def posterior(self, dvec: np.ndarray) -> FullPosterior:
        return FullPosterior(self, dvec)


class FullPosterior:
    def __init__(self, curv: FullCurvature, dvec: np.ndarray):
        self.curv, self.dvec = curv, dvec
        lam = self.precision()
        self.chol = _cholesky(lam, "the posterior precision N H + P0")
        self.logdet = float(2 * np.log(np.diag(self.chol)).sum())
        self._cov = None

    def precision(self) -> np.ndarray:
        lam = self.curv.hn.copy()
        lam[np.diag_indices_from(lam)] += np.tile(self.dvec, self.curv.c)
        return lam

    def covariance(self) -> np.ndarray:
        """Sigma = Lambda^-1 = L^-T L^-1 (C q, C q), computed once."""
        if self._cov is None:
            p = self.chol.shape[0]
            inv_l = scipy.linalg.solve_triangular(self.chol, np.eye(p), lower=True)
            self._cov = inv_l.T @ inv_l
        return self._cov

    def traces(self):
        c, d, q = self.curv.c, self.curv.d, self.curv.q
        s4 = self.covariance().reshape(c, q, c, q)
        masks = _group_masks(q, d)
        t = np.array([np.einsum("cjcj->", s4[:, m][:, :, :, m]) for m in masks])
        sq = s4 * s4
        qm = np.array([[sq[:, mk][:, :, :, ml].sum() for ml in masks] for mk in masks])
        return t, qm

    def logit_covariance(self, phit: np.ndarray) -> np.ndarray:
        """Sigma_z[m, c, e] = sum_jk phit_mj Sigma[(c, j), (e, k)] phit_mk, (M, C, C)."""
        c, q = self.curv.c, self.curv.q
        flat = self.covariance().reshape(c * q * c, q)
        out = np.empty((len(phit), c, c))
        rows = _rows_per_block(c * q * c)
        for lo in range(0, len(phit), rows):
            x = phit[lo:lo + rows]
            t = (flat @ x.T).reshape(c, q, c, len(x))  # sum_k Sigma[(c, j), (e, k)] phit_mk
            out[lo:lo + rows] = np.einsum("mj,cjem->mce", x, t)
        return 0.5 * (out + out.transpose(0, 2, 1))

    def logit_variance(self, phit: np.ndarray) -> np.ndarray:
        """diag Sigma_z (M, C): phit^T Sigma_cc phit for each class c."""
        c, q = self.curv.c, self.curv.q
        s4 = self.covariance().reshape(c, q, c, q)
        blocks = np.einsum("cjck->cjk", s4)  # (C, q, q): the diagonal blocks
        return np.einsum("mj,cjk,mk->mc", phit, blocks, phit)

    def logit_centred_variance(self, phit: np.ndarray) -> np.ndarray:
        return centred_variance(self.logit_covariance(phit))

    def gaussian_nll(self, phit: np.ndarray, r: np.ndarray) -> np.ndarray:
        """-log N(r; 0, Sigma_z + I / 2) per row (M,), r (M, C) the residuals y - z."""
        return _dense_gaussian_nll(self.logit_covariance(phit), r)

    def logit_noise(self, phit: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """F_m eps_ms (M, S, C) for eps (M, S, C) standard normal, F_m F_m^T = Sigma_z[m]
        (F_m = U sqrt(e) from the eigendecomposition of Sigma_z[m])."""
        e, u = np.linalg.eigh(self.logit_covariance(phit))
        f = u * np.sqrt(np.maximum(e, 0.0))[:, None, :]
        return eps @ f.transpose(0, 2, 1)  # (eps_m F_m^T)[s, c]: batched products


class KronCurvature:
    """The squared loss: Hn = I_C (x) 2 G, G = Phit^T Phit (q, q), exactly."""

    name = "kron"

    def __init__(self, gram: np.ndarray, c: int, d: int, q: int):
        self.gram, self.c, self.d, self.q = gram, c, d, q

    def posterior(self, dvec: np.ndarray) -> KronPosterior:
        return KronPosterior(self, dvec)


class KronPosterior:
    def __init__(self, curv: KronCurvature, dvec: np.ndarray):
        self.curv, self.dvec = curv, dvec
        k = 2 * curv.gram
        k[np.diag_indices_from(k)] += dvec
        self.k = k
        chol = _cholesky(k, "the posterior precision's factor K = 2 Phit^T Phit + D")
        self.logdet = float(curv.c * 2 * np.log(np.diag(chol)).sum())
        inv_l = scipy.linalg.solve_triangular(chol, np.eye(curv.q), lower=True)
        self.k_inv = inv_l.T @ inv_l  # (q, q): the covariance of every class's [W_c, b_c]

    def precision(self) -> np.ndarray:
        return np.kron(np.eye(self.curv.c), self.k)

    def covariance(self) -> np.ndarray:
        return np.kron(np.eye(self.curv.c), self.k_inv)

    def traces(self):
        c, d, q = self.curv.c, self.curv.d, self.curv.q
        masks = _group_masks(q, d)
        s = self.k_inv
        t = np.array([c * np.trace(s[np.ix_(m, m)]) for m in masks])
        qm = np.array([[c * (s[np.ix_(mk, ml)] ** 2).sum() for ml in masks] for mk in masks])
        return t, qm

    def _scalar_variance(self, phit):
        return np.einsum("mj,jk,mk->m", phit, self.k_inv, phit)  # (M,)

    def logit_covariance(self, phit):
        return self._scalar_variance(phit)[:, None, None] * np.eye(self.curv.c)

    def logit_variance(self, phit):
        return np.repeat(self._scalar_variance(phit)[:, None], self.curv.c, axis=1)

    def logit_centred_variance(self, phit):
        return self.logit_variance(phit) * (1 - 1 / self.curv.c)

    def gaussian_nll(self, phit, r):
        """Sigma_z + I / 2 = (v + 1/2) I_C: log det = C log(v + 1/2)."""
        s = self._scalar_variance(phit) + 0.5
        c = self.curv.c
        return 0.5 * (c * np.log(2 * np.pi * s) + (r * r).sum(axis=1) / s)

    def logit_noise(self, phit, eps):
        return np.sqrt(self._scalar_variance(phit))[:, None, None] * eps


class KfacCurvature:
    """S_A = sum_i A_i (C, C) (its eigendecomposition) and G = Phit^T Phit (q, q), N rows."""

    name = "kfac"

    def __init__(self, s_a: np.ndarray, gram: np.ndarray, n: int, c: int, d: int, q: int):
        self.s_a, self.gram, self.n, self.c, self.d, self.q = s_a, gram, n, c, d, q
        l_a, self.q_a = scipy.linalg.eigh(s_a)
        self.l_a = np.maximum(l_a, 0.0)  # S_A is positive semi-definite: below 0 is rounding

    def posterior(self, dvec: np.ndarray) -> KfacPosterior:
        return KfacPosterior(self, dvec)


class KfacPosterior:
    def __init__(self, curv: KfacCurvature, dvec: np.ndarray):
        self.curv, self.dvec = curv, dvec
        s = 1 / np.sqrt(dvec)
        mu, qg = scipy.linalg.eigh(s[:, None] * curv.gram * s[None, :])
        self.mu = np.maximum(mu, 0.0)  # D^-1/2 G D^-1/2 is positive semi-definite
        self.v = s[:, None] * qg  # V^T G V = diag(mu), V^T D V = I
        self.w = 1 / (np.outer(curv.l_a, self.mu) / curv.n + 1)  # (C, q)
        self.logdet = float(curv.c * np.log(dvec).sum() - np.log(self.w).sum())

    def precision(self) -> np.ndarray:
        lam = np.kron(self.curv.s_a, self.curv.gram) / self.curv.n
        lam[np.diag_indices_from(lam)] += np.tile(self.dvec, self.curv.c)
        return lam

    def covariance(self) -> np.ndarray:
        b = np.kron(self.curv.q_a, self.v)
        return (b * self.w.ravel()) @ b.T

    def traces(self):
        masks = _group_masks(self.curv.q, self.curv.d)
        mats = [self.v[m].T @ self.v[m] for m in masks]  # V^T E_k V (q, q)
        w = self.w
        t = np.array([(w @ np.diag(mk)).sum() for mk in mats])
        qm = np.array([[((w @ (mk * ml)) * w).sum() for ml in mats] for mk in mats])
        return t, qm

    def _s(self, phit):
        h = phit @ self.v  # (M, q)
        return (h * h) @ self.w.T  # (M, C): sum_g w_ag h_g^2

    def logit_variance(self, phit):
        return self._s(phit) @ (self.curv.q_a ** 2).T

    def logit_centred_variance(self, phit):
        """diag(P Sigma_z P) from u = Q_A^T 1: Sigma_z 1 = Q_A (s o u), 1^T Sigma_z 1 = s . u^2,
        O(M C^2) without the (M, C, C) covariances."""
        qa, c = self.curv.q_a, self.curv.c
        s = self._s(phit)
        u = qa.sum(axis=0)
        rows = (s * u) @ qa.T  # (M, C): Sigma_z 1
        return s @ (qa ** 2).T - 2 * rows / c + (s @ (u * u))[:, None] / c ** 2

    def logit_covariance(self, phit):
        qa = self.curv.q_a
        return np.einsum("ca,ma,ea->mce", qa, self._s(phit), qa)

    def gaussian_nll(self, phit, r):
        """Sigma_z + I / 2 = Q_A diag(s_m + 1/2) Q_A^T: O(M C^2), no (M, C, C) array."""
        s = self._s(phit) + 0.5
        u = r @ self.curv.q_a
        return 0.5 * (self.curv.c * np.log(2 * np.pi) + np.log(s).sum(axis=1)
                      + (u * u / s).sum(axis=1))

    def logit_noise(self, phit, eps):
        """Q_A (sqrt(s_m) o eps_ms): Sigma_z[m] = Q_A diag(s_m) Q_A^T."""
        return (eps * np.sqrt(self._s(phit))[:, None, :]) @ self.curv.q_a.T
