"""Ledger rows G-*: the engine's hand-written gradients against central differences.

One row per layer and per loss (the cases of ``lastlayer.engine.gradcheck.cases``, grouped by row:
batch 1, odd spatial sizes, stride 2, padding, training and inference modes), each
reporting the worst relative error over its cases and all their tensors (input and
parameters), then one row for a whole network.
"""

from __future__ import annotations

from lastlayer.engine.gradcheck import cases

from .ledger import Check, at_most


def _row(row: str, group: list) -> Check:
    names = "; ".join(c.name for c in group)
    kind = "loss" if isinstance(group[0], cases.LossCase) else "layer"
    return Check(row, f"{row[2:]} {kind} gradient vs central differences [{names}]: max rel. error",
                 lambda: at_most(cases.worst_error(group), cases.LAYER_TOL))


def checks() -> list[Check]:
    """One check per layer / loss, then the whole network."""
    out = [_row(row, group) for row, group in cases.case_groups().items()]
    out.append(Check("G-Network", cases.NETWORK_DESCRIPTION,
                     lambda: at_most(max(max(case().values()) for case in cases.NETWORK_CASES),
                                     cases.NETWORK_TOL)))
    return out
