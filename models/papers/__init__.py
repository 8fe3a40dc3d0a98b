"""The papers lastlayer verifies and reproduces, in one registry: ``PAPERS``.

Every entry names a package ``models/papers/<name with '_' for '-'>/`` of the same shape:

    method.py      the paper's procedure, as a user calls it
    protocol.py    its experiments: constants, data, networks, training runs, statistics
    claims.py      ``checks() -> list[Check]``: its ledger rows, IDs starting with ``prefix``
    reproduce.py   ``run(out, *, quick, seeds, quiet, execution) -> Path``: ``lastlayer
                   reproduce NAME``, its work submitted as tasks (``lastlayer.models.tasks``)

claims.py and reproduce.py import method.py and protocol.py (and the engine); no paper
package imports another (tests/test_layering.py enforces both). ``lastlayer verify``,
``verify --list`` and the choices of ``lastlayer reproduce`` all derive from ``PAPERS``.
Adding a paper is one new folder and one line here (docs/design.md, "Adding a paper").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from ..gradients import checks as engine_checks
from ..ledger import Check

__all__ = ["Paper", "PAPERS", "paper", "all_checks"]


@dataclass(frozen=True)
class Paper:
    prefix: str  # every ledger ID of the paper starts with it, e.g. "M"
    name: str  # `lastlayer reproduce NAME`; the package is models/papers/<name, '-' -> '_'>
    title: str
    authors: str

    @property
    def package(self) -> str:
        return f"{__name__}.{self.name.replace('-', '_')}"

    def checks(self) -> list[Check]:
        """The paper's ledger rows (importing its claims module on first use)."""
        rows = importlib.import_module(f"{self.package}.claims").checks()
        stray = [c.id for c in rows if not c.id.startswith(self.prefix)]
        if stray:
            raise ValueError(f"{self.package}.claims: IDs {stray} do not start with the "
                             f"paper's prefix {self.prefix!r}")
        return rows

    def reproduce(self, out: Path, *, quick: bool = False, seeds: int | None = None,
                  quiet: bool = False, execution=None) -> Path:
        """Run ``lastlayer reproduce NAME``: results.h5, report.md and figures in ``out``;
        its tasks where ``execution`` says (``lastlayer.models.tasks.Execution``; default:
        one after another here). Every task runs with one BLAS and one Numba thread
        (``lastlayer.engine.threads``): its matrices are small, a second thread gains
        nothing there and thrashes on a shared machine, and the numbers then never depend
        on the machine's core count; the cores are used by running tasks side by side."""
        from lastlayer.engine.threads import thread_limits

        module = importlib.import_module(f"{self.package}.reproduce")
        with thread_limits(threads=1):
            return module.run(Path(out), quick=quick, seeds=seeds, quiet=quiet,
                              execution=execution)


PAPERS: tuple[Paper, ...] = (
    Paper("M", "post-training", "Post training in deep learning", "Moreau & Audiffren 2017"),
    Paper("H", "fixed-classifier", "Fix your classifier", "Hoffer, Hubara & Soudry 2018"),
    Paper("C", "layca", "On layer-level control of DNN training", "Carbonnelle & De Vleeschouwer"),
    Paper("P", "pof", "PoF: post-training of feature extractor", "Sato et al. 2022"),
    Paper("E", "entame", "Efficient neural task adaptation by maximum entropy initialization",
          "Varno et al. 2019"),
)


def paper(name: str) -> Paper:
    """The registry entry called ``name`` (as on the command line)."""
    for p in PAPERS:
        if p.name == name:
            return p
    raise ValueError(f"paper: expected one of {', '.join(p.name for p in PAPERS)}, got {name!r}")


def all_checks() -> list[Check]:
    """Every ledger row in the order ``lastlayer verify`` prints them: the engine's
    gradients (G), each paper's rows in registry order, then the topics beyond the papers
    (``lastlayer.models.beyond``: NC, ETF, LA, CAL)."""
    from ..beyond import checks as beyond_checks

    return engine_checks() + [check for p in PAPERS for check in p.checks()] + beyond_checks()
