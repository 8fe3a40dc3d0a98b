"""All ledger checks, in the order ``lastlayer verify`` prints them.

G: gradients of the engine; M, H, C: the claims of CLAIMS.md for the post-training,
fixed-classifier and Layca papers (P and E follow as their modules land)."""

from __future__ import annotations

from ..ledger import Check
from . import fixed_classifier, gradients, layca, post_training


def all_checks() -> list[Check]:
    return (gradients.checks() + post_training.checks() + fixed_classifier.checks()
            + layca.checks())
