"""``lastlayer head fit`` / ``lastlayer head eval``: exact last layers on a user's features.

    lastlayer head fit FEATURES (--targets Y | --labels L) --loss {squared,ce}
                       (--lam LAM | --lam-grid LO:HI:N) [--cv K|loo|gcv] [--bias]
                       [--workers N | --scheduler ADDRESS] [--chunk-rows R]
                       [--laplace [--laplace-prior {evidence,fixed}] [--laplace-tau-b T]
                        [--laplace-structure {auto,full,kron,kfac}]] --out HEAD.h5
    lastlayer head eval HEAD.h5 FEATURES (--targets Y | --labels L)

An array argument is ``file.npy``, ``file.npz:name``, ``file.h5:dataset/path`` or
``dir.zarr[:name]``; it is read in chunks (``lastlayer.engine.solvers.streaming``), so
features larger than memory work. A thin layer over ``lastlayer.engine.solvers.estimators``
(ExactRidgeHead, ExactSoftmaxHead): everything is checked before any work (the flags and their
combinations, the files, the datasets, their row counts and dtypes, the output paths, the
scheduler, the Laplace settings against the data's size), the head file is written
atomically at the end, and a bad input is one line and exit 2. ``fit`` runs the fit,
``eval`` the evaluation, ``laplace`` reads and writes the posterior, ``common`` holds what
they share.

The head file (HDF5): datasets ``W`` (C, d), ``b`` (C,) when fitted, ``classes`` (C,) for
``ce``, ``cv_lams`` / ``cv_scores`` when lambda was cross-validated; attributes ``lam``,
``loss``, ``method``, ``kkt_residual``, ``converged``, ``rows``, ``features``, ``cv``,
``lastlayer``. Next to it, ``HEAD.cv.png``: the cross-validation curve. With ``--laplace``
also the group ``laplace/``: the last-layer Laplace posterior of the head (its layout in
``laplace``), with tau_w, tau_b, the structure, the log evidence and the prior's
choice. ``--laplace`` reads the training features into memory once (float64, N d 8 bytes
<= 4 GiB, ``estimators.LAPLACE_FEATURES_MAX``; refused before any work beyond); the
head's own fit stays streamed. The combinations: ``--laplace-prior evidence`` (default)
maximises the evidence over (tau_w, tau_b) and takes no ``--laplace-tau-b``; ``fixed``
keeps tau_w = 2 N lam and needs ``--laplace-tau-b`` with ``--bias`` (> 0 for ce, >= 0 for
squared, > 0 with ``kfac``) and refuses it without; ``--laplace-structure kron`` is for
``--loss squared`` only ("auto": kron for squared, full up to C (d + 1) = 4096 parameters
for ce, else kfac); ``--lam 0`` is refused (tau_w = 0); every ``--laplace-*`` flag needs
``--laplace``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys

import numpy as np

from lastlayer.engine.solvers.streaming.runners import SchedulerError

from ..common import UsageError
from .common import HEAD_FORMAT, HeadUsageError

__all__ = ["add_parser", "cmd_head", "HEAD_FORMAT", "HeadUsageError"]

GRID_MAX = 1000  # lambdas in a grid: a typo (1e-3:1:10000000) is refused, not run for hours


def _lam_grid(text: str) -> np.ndarray:
    """LO:HI:N -> N log-spaced values from LO to HI (LO > 0, HI > LO, N >= 2)."""
    parts = text.split(":")
    try:
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"expected LO:HI:N such as 1e-6:1:20, got "
                                         f"{text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi and 2 <= n <= GRID_MAX):
        raise argparse.ArgumentTypeError(f"expected 0 < LO < HI (finite) and 2 <= N <= {GRID_MAX}, "
                                         f"got {text!r}")
    return np.logspace(math.log10(lo), math.log10(hi), n)


def _cv(text: str):
    if text in ("loo", "gcv"):
        return text
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K >= 2 folds, 'loo' or 'gcv', got "
                                         f"{text!r}") from None
    if k < 2:
        raise argparse.ArgumentTypeError(f"expected K >= 2 folds, 'loo' or 'gcv', got {text!r}")
    return k


def add_parser(sub, parser_class, real, integer):
    """The ``head`` command and its ``fit`` / ``eval`` subcommands (flag types from cli)."""
    head = sub.add_parser("head", help="fit or evaluate an exact last layer on your own features",
                          description="Exact last layers on frozen features read from .npy, .npz, "
                                      ".h5 or .zarr files, in chunks: the closed-form ridge head "
                                      "or the exact L2-regularised softmax head.")
    actions = head.add_subparsers(dest="action", metavar="ACTION", required=True,
                                  parser_class=parser_class)
    fit = actions.add_parser("fit", help="fit a head, lambda given or cross-validated",
                             description="Fit the exact head and write it to --out (HDF5).")
    fit.add_argument("features", metavar="FEATURES",
                     help="file.npy, file.npz:NAME, file.h5:DATASET or dir.zarr[:NAME]")
    target = fit.add_mutually_exclusive_group(required=True)
    target.add_argument("--targets", metavar="Y",
                        help="real targets (N,) or (N, C), for --loss squared")
    target.add_argument("--labels", metavar="L", help="integer class labels (N,), for --loss ce")
    fit.add_argument("--loss", choices=("squared", "ce"), required=True,
                     help="squared: the closed-form ridge head; ce: the exact softmax head")
    lam = fit.add_mutually_exclusive_group(required=True)
    lam.add_argument("--lam", type=real(0), help="the penalty lam ||W||^2 (mean loss convention; "
                     "scikit-learn's alpha = N lam, C = 1 / (2 N lam))")
    lam.add_argument("--lam-grid", type=_lam_grid, metavar="LO:HI:N",
                     help="N log-spaced lambdas, chosen by --cv")
    fit.add_argument("--cv", type=_cv, metavar="K|loo|gcv",
                     help="K contiguous folds, or (squared only) exact leave-one-out or GCV; "
                          "needs --lam-grid (default with a grid: 5)")
    fit.add_argument("--bias", action="store_true", help="also fit an unpenalised bias b")
    where = fit.add_mutually_exclusive_group()
    where.add_argument("--workers", type=integer(1), metavar="N",
                       help="run on a local Dask cluster of N processes")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing Dask cluster, e.g. tcp://host:8786")
    fit.add_argument("--chunk-rows", type=integer(1), metavar="R",
                     help="rows per chunk (default: about 32 MB)")
    fit.add_argument("--tol", type=real(0, low_open=True), default=1e-10,
                     help="KKT residual the softmax head is solved to (default 1e-10)")
    fit.add_argument("--laplace", action="store_true",
                     help="also fit the last-layer Laplace posterior of the head and write it to "
                          "--out (laplace/); reads the training features into memory")
    fit.add_argument("--laplace-prior", choices=("evidence", "fixed"),
                     help="evidence (default): tau_w, tau_b maximising the Laplace evidence; "
                          "fixed: tau_w = 2 N lam, tau_b = --laplace-tau-b")
    fit.add_argument("--laplace-tau-b", type=real(0), metavar="T",
                     help="the bias's prior precision, for --laplace-prior fixed with --bias")
    fit.add_argument("--laplace-structure", choices=("auto", "full", "kron", "kfac"),
                     help="the posterior's structure (default auto: kron for squared, full for "
                          "ce up to 4096 parameters, else kfac)")
    fit.add_argument("--out", required=True, metavar="HEAD.h5",
                     help="where to write the head (HDF5)")
    fit.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    fit.add_argument("--quiet", action="store_true", help="no progress display")

    ev = actions.add_parser("eval", help="RMSE, or accuracy, NLL, ECE and Brier, of a fitted head",
                            description="Evaluate a head written by `lastlayer head fit` (and its "
                                        "Laplace predictive when it has one).")
    ev.add_argument("head", metavar="HEAD.h5")
    ev.add_argument("features", metavar="FEATURES")
    target = ev.add_mutually_exclusive_group(required=True)
    target.add_argument("--targets", metavar="Y")
    target.add_argument("--labels", metavar="L")
    ev.add_argument("--chunk-rows", type=integer(1), metavar="R")
    ev.add_argument("--json", metavar="PATH")
    ev.add_argument("--quiet", action="store_true")
    return head


# ---- the command ---------------------------------------------------------------------------
def cmd_head(args, dump, console_for) -> int:
    # the connection retries of Dask's distributed are not ours to print
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    from .eval import cmd_eval
    from .fit import cmd_fit

    try:
        return (cmd_fit if args.action == "fit" else cmd_eval)(args, dump, console_for)
    except (UsageError, SchedulerError, ValueError, TypeError) as err:
        print(f"lastlayer head {args.action}: {_flag_names(str(err), args)}", file=sys.stderr)
        return 2


def _flag_names(message: str, args) -> str:
    """The estimators name their Python arguments (X, y, rows, lam, laplace, laplace_prior,
    ...); on the command line those are FEATURES, --targets / --labels, --lam, --laplace,
    --laplace-prior, ..."""
    target = "--targets" if args.targets is not None else "--labels"
    for python, flag in (("X: ", f"FEATURES {args.features}: "), ("y: ", f"{target} "
                         f"{args.targets if args.targets is not None else args.labels}: "),
                         ("features: ", f"FEATURES {args.features}: "),
                         ("targets: ", f"--targets {args.targets}: "),
                         ("rows: ", f"FEATURES {args.features}: rows: "),
                         ("laplace: ", "--laplace: "), ("lam: ", "--lam: ")):
        if message.startswith(python):
            message = flag + message[len(python):]
            break
    for python, flag in LAPLACE_NAMES:  # the estimators' parameters, anywhere in the message
        message = message.replace(python, flag)
    return message


LAPLACE_NAMES = (("laplace_prior", "--laplace-prior"), ("laplace_structure", "--laplace-structure"),
                 ("laplace_tau_b", "--laplace-tau-b"), ("fit_intercept False", "no --bias"))
