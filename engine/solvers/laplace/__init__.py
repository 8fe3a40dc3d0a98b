"""The exact last-layer Laplace approximation of a linear head: the posterior and its
predictive (``posterior.LastLayerLaplace``), on one of three exact structures
(``structures``: full, Kronecker for the squared loss, K-FAC with the prior added exactly),
its evidence maximised over the prior precisions (``evidence``) and the prior chosen by the
evidence and by K-fold cross-validation side by side (``select``). The imports point one
way: select -> posterior -> evidence, structures.
"""

from .evidence import MODES, EvidenceOptimum, evidence_derivatives, maximize_evidence
from .posterior import (
    FULL_AUTO_MAX, FULL_MAX, PREDICTIVES, STRUCTURES, LastLayerLaplace, squared_loss_mode,
    tau_from_lam,
)
from .select import PriorSelection, select_prior

__all__ = [
    "LastLayerLaplace", "tau_from_lam", "squared_loss_mode", "STRUCTURES", "PREDICTIVES",
    "FULL_AUTO_MAX", "FULL_MAX",
    "maximize_evidence", "evidence_derivatives", "EvidenceOptimum", "MODES",
    "select_prior", "PriorSelection",
]
