"""All ledger checks, in the order ``lastlayer verify`` prints them.

Each paper's module adds its rows here (G: gradients of the engine; later M, H, C, P, E
for the claims of CLAIMS.md)."""

from __future__ import annotations

from ..ledger import Check
from . import gradients, post_training


def all_checks() -> list[Check]:
    return gradients.checks() + post_training.checks()
