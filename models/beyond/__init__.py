"""Ledger rows beyond the five papers: neural collapse, the simplex-ETF head, the exact
last-layer Laplace and calibration, one module each, in one registry: ``TOPICS``.

Every entry names a module ``models/beyond/<module>.py`` with ``checks() -> list[Check]``,
whose IDs start with the topic's prefix (NC, ETF, LA, CAL). ``lastlayer verify`` runs
them after the papers' rows; ``lastlayer verify --only LA`` selects one topic.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..ledger import Check

__all__ = ["Topic", "TOPICS", "checks"]


@dataclass(frozen=True)
class Topic:
    prefix: str  # every ledger ID of the topic starts with it, then a digit: NC1, ETF2
    module: str  # models/beyond/<module>.py
    title: str
    source: str  # where the mathematics comes from

    def checks(self) -> list[Check]:
        rows = importlib.import_module(f"{__name__}.{self.module}").checks()
        stray = [c.id for c in rows if not (c.id.startswith(self.prefix)
                                            and c.id[len(self.prefix):][:1].isdigit())]
        if stray:
            raise ValueError(f"{__name__}.{self.module}: IDs {stray} are not the topic's prefix "
                             f"{self.prefix!r} followed by a number")
        return rows


TOPICS: tuple[Topic, ...] = (
    Topic("NC", "nc_claims", "Neural collapse", "Papyan, Han & Donoho, PNAS 2020"),
    Topic("ETF", "etf_claims", "The fixed simplex-ETF head", "Zhu et al., NeurIPS 2021"),
    Topic("LA", "laplace_claims", "The exact last-layer Laplace", "MacKay 1992; Daxberger et al. 2021"),
    Topic("CAL", "calibration_claims", "Calibration", "Guo et al., ICML 2017"),
)


def checks() -> list[Check]:
    """Every topic's rows, in registry order."""
    return [check for topic in TOPICS for check in topic.checks()]
