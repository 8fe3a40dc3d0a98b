"""``lastlayer head eval``: a head written by ``lastlayer head fit`` on features, streamed.

For ce: accuracy, NLL (the cross-entropy), ECE over 15 equal-width confidence bins and the
Brier score of the softmax (``lastlayer.engine.solvers.estimators.evaluate_head``); when the head
file has a ``laplace/`` group (``laplace``), the same for the Laplace posterior's
probit predictive, in a second row; and, for features written by ``lastlayer features``,
the network's own last layer. For squared: MSE, RMSE and the NLL of N(z, I / 2) (the
likelihood the squared loss is), and with ``laplace/`` the NLL of the Gaussian predictive
N(z, Sigma_z + I / 2).
"""

from __future__ import annotations

import sys
import time

from rich.table import Table

from lastlayer.engine.training.io import atomic_write_text

from ..common import array_file
from .common import (
    HEAD_FORMAT, HeadUsageError, check_files, head_threads, open_sources, progress,
)
from .laplace import GROUP, read_laplace

__all__ = ["cmd_eval", "read_head"]


def read_head(path: str) -> dict:
    """The head file's W, b, classes, loss, lam and (None without one) its LastLayerLaplace."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != HEAD_FORMAT:
                raise HeadUsageError(f"HEAD {path}: not a head written by `lastlayer head fit`")
            head = {"W": f["W"][()], "b": f["b"][()] if "b" in f else None,
                    "classes": f["classes"][()] if "classes" in f else None,
                    "loss": str(f.attrs["loss"]), "lam": float(f.attrs["lam"])}
            head["laplace"] = (read_laplace(f[GROUP], head["W"], head["b"], head["loss"],
                                            f"HEAD {path}") if GROUP in f else None)
            return head
    except (OSError, KeyError) as err:
        raise HeadUsageError(f"HEAD {path}: cannot read it ({err})") from None


def cmd_eval(args, dump, console_for) -> int:
    check_files({"HEAD": args.head, "FEATURES": args.features, "--targets": args.targets,
                 "--labels": args.labels}, {"--json": args.json})
    head = read_head(args.head)
    if head["loss"] == "ce" and args.labels is None:
        raise HeadUsageError("this is a softmax (ce) head: give --labels")
    if head["loss"] == "squared" and args.targets is None:
        raise HeadUsageError("this is a ridge (squared) head: give --targets")
    features, target = open_sources(args)
    from lastlayer.engine.solvers.estimators import ECE_BINS, evaluate_head

    console = console_for(sys.stdout)
    la = head["laplace"]
    t0 = time.perf_counter()
    with head_threads(features, head["loss"], args.chunk_rows), \
            progress(console, args.quiet, "evaluating") as advance:
        metrics = evaluate_head(features, target, head["W"], head["b"], head["loss"],
                                head["classes"], laplace=la, chunk_rows=args.chunk_rows,
                                progress=advance)
    seconds = time.perf_counter() - t0
    own = _network_scores(args.features)  # features of `lastlayer features`: the trained head too
    table = Table(title=f"{args.head} on {args.features}",
                  caption=f"{metrics['rows']:,} rows" + (
                      f", {metrics['unknown_labels']:,} with a label the head does not know "
                      f"(wrong, and left out of nll, ece and brier)"
                      if metrics.get("unknown_labels") else ""))
    table.add_column("predictive")
    if head["loss"] == "ce":
        columns = ("accuracy", "nll", "ece", "brier")
        names = {"ece": f"ece ({ECE_BINS} bins)"}
        rows = [("exact head: softmax", metrics)]
        if la is not None:
            rows.append((f"Laplace: probit ({la.structure})", metrics["laplace"]))
        if own:
            rows.append(("the network's own last layer", {"accuracy": own.get("accuracy"),
                                                           "nll": own.get("loss")}))
    else:
        columns, names = ("mse", "rmse", "nll"), {"nll": "nll (Gaussian)"}
        rows = [("exact head: N(z, I/2)", metrics)]
        if la is not None:
            rows.append((f"Laplace: N(z, Sigma_z + I/2) ({la.structure})",
                         {**metrics["laplace"], "mse": metrics["mse"], "rmse": metrics["rmse"]}))
    for c in columns:
        table.add_column(names.get(c, c), justify="right")
    for name, values in rows:
        table.add_row(name, *(f"{values[c]:.6g}" if values.get(c) is not None else "-"
                              for c in columns))
    console.print(table)
    if args.json:
        atomic_write_text(args.json, dump({"head": args.head, "features": args.features,
                                           "metrics": metrics, "network": own,
                                           "laplace": None if la is None else
                                           {"structure": la.structure, "predictive":
                                            "probit" if la.loss == "ce" else "gaussian"}},
                                          {"seconds": seconds}))
    return 0


def _network_scores(spec: str) -> dict | None:
    from ..features import network_scores

    group = spec[len(array_file(spec)) + 1:].rpartition("/")[0]
    return network_scores(array_file(spec), group) if group else None
