"""``lastlayer head fit``: the exact head (``lastlayer.engine.solvers.estimators``), optionally its
last-layer Laplace posterior (``--laplace``), written atomically to HEAD.h5 (the layout in
the package's docstring; the ``laplace/`` group in ``laplace``'s)."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
from rich.table import Table

from lastlayer.engine.solvers.streaming.runners import check_scheduler
from lastlayer.engine.training.io import atomic_path, atomic_write_text

from ...experiment import version
from .common import (
    HEAD_FORMAT, HeadUsageError, check_files, head_threads, open_sources, peak_rss, progress,
)
from .laplace import laplace_rows, laplace_summary, write_laplace

__all__ = ["cmd_fit", "LAPLACE_FLAGS"]

# the flags that only --laplace reads: (flag, attribute of args)
LAPLACE_FLAGS = (("--laplace-prior", "laplace_prior"), ("--laplace-structure", "laplace_structure"),
                 ("--laplace-tau-b", "laplace_tau_b"))


def _check_flags(args) -> None:
    """The combinations of flags, before any file is opened."""
    if args.loss == "ce" and args.labels is None:
        raise HeadUsageError("--loss ce needs --labels (integer classes), not --targets")
    if args.loss == "squared" and args.targets is None:
        raise HeadUsageError("--loss squared needs --targets (real values), not --labels")
    if args.cv is not None and args.lam_grid is None:
        raise HeadUsageError("--cv needs --lam-grid LO:HI:N (the lambdas to choose from)")
    if args.cv in ("loo", "gcv") and args.loss == "ce":
        raise HeadUsageError(f"--cv {args.cv} is for --loss squared; use K folds for ce")
    if args.loss == "ce" and args.lam is not None and args.lam <= 0:
        raise HeadUsageError(f"--lam: expected > 0 for --loss ce (no finite optimum at 0), got "
                             f"{args.lam:g}")
    if not args.laplace:
        for flag, name in LAPLACE_FLAGS:
            if getattr(args, name) is not None:
                raise HeadUsageError(f"{flag} needs --laplace (it sets the Laplace posterior)")
    if args.laplace and args.lam is not None and args.lam == 0:
        raise HeadUsageError("--lam: --laplace needs lam > 0 (the prior precision tau_w = "
                             "2 N lam), got 0")


def cmd_fit(args, dump, console_for) -> int:
    _check_flags(args)
    figure = Path(args.out).with_suffix(".cv.png") if Path(args.out).name else None  # "." later
    curve = str(figure) if figure and args.lam_grid is not None else None
    check_files({"FEATURES": args.features, "--targets": args.targets, "--labels": args.labels},
                {"--out": args.out, "--json": args.json, "--out (its CV curve)": curve})
    if args.scheduler is not None:
        check_scheduler(args.scheduler, "--scheduler")  # its form; whether it answers, later
    features, target = open_sources(args)
    from sklearn.exceptions import ConvergenceWarning

    from lastlayer.engine.solvers.estimators import (
        ExactRidgeHead, ExactSoftmaxHead, check_cv, check_lams, check_laplace, evaluate_head,
    )

    # the numbers, against the data's size, before any pass over it
    if args.lam is not None:
        check_lams(args.lam, features.rows, "--lam", allow_zero=args.loss == "squared")
    else:
        check_lams(args.lam_grid, features.rows, "--lam-grid")
    cv = args.cv if args.cv is not None else (5 if args.lam_grid is not None else None)
    check_cv(cv, features.rows, args.loss,
             "--cv" if args.cv is not None else "--cv (default 5 with a grid)")
    laplace = dict(laplace=args.laplace, laplace_prior=args.laplace_prior or "evidence",
                   laplace_structure=args.laplace_structure or "auto",
                   laplace_tau_b=args.laplace_tau_b)
    if args.laplace:
        outputs = None if args.loss == "ce" else (target.shape[1] if len(target.shape) == 2 else 1)
        check_laplace(args.loss, prior=laplace["laplace_prior"],
                      structure=laplace["laplace_structure"], tau_b=args.laplace_tau_b,
                      bias=args.bias, rows=features.rows, features=features.shape[1],
                      lam=args.lam, outputs=outputs)
    common = dict(lams=args.lam_grid, cv=cv, fit_intercept=args.bias, chunk_rows=args.chunk_rows,
                  workers=args.workers, scheduler=args.scheduler, **laplace)
    lam = args.lam if args.lam is not None else 1.0
    head = (ExactRidgeHead(lam, **common) if args.loss == "squared"
            else ExactSoftmaxHead(lam, tol=args.tol, **common))
    console = console_for(sys.stdout)
    t0 = time.perf_counter()
    with head_threads(features, args.loss, args.chunk_rows), \
            warnings.catch_warnings(record=True) as caught, \
            progress(console, args.quiet, "fitting") as advance:
        warnings.simplefilter("always", ConvergenceWarning)
        head.fit(features, target, progress=advance)
        W = np.atleast_2d(head.W_ if args.loss == "squared" else head.coef_)
        b = np.atleast_1d(head.intercept_).astype(np.float64) if args.bias else None
        classes = getattr(head, "classes_", None)
        metrics = evaluate_head(features, target, W, b, args.loss, classes, laplace=head.laplace_,
                                chunk_rows=args.chunk_rows, workers=args.workers,
                                scheduler=args.scheduler, progress=advance)
    seconds = time.perf_counter() - t0
    method = ("closed form: Cholesky on the d x d Gram matrix" if args.loss == "squared"
              else "Newton-CG on chunked gradients and Hessian-vector products")
    attrs = {"format": HEAD_FORMAT, "loss": args.loss, "lam": head.lam_, "method": method,
             "kkt_residual": head.kkt_residual_,
             "converged": bool(getattr(head, "converged_", True)),
             "rows": features.rows, "features": features.shape[1], "bias": bool(args.bias),
             "cv": "none" if cv is None else str(cv), "source": args.features}
    for w in caught:  # each unconverged solve, one line (the head is still written, marked)
        if issubclass(w.category, ConvergenceWarning):
            print(f"lastlayer head fit: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    summary = posterior = None
    if head.laplace_ is not None:
        from lastlayer.engine.solvers.laplace.posterior import tau_from_lam

        posterior = (head.laplace_, laplace["laplace_prior"],
                     tau_from_lam(head.lam_, features.rows), head.laplace_evidence_)
        summary = laplace_summary(*posterior)
    _write_head(args.out, W, b, classes, head.cv_lams_, head.cv_scores_, attrs, posterior)
    stale = None
    if head.cv_scores_ is not None:
        _cv_figure(figure, head.cv_lams_, head.cv_scores_, head.lam_, args.loss, cv)
    elif figure is not None and figure.is_file():  # an earlier fit's curve: not of this head
        figure.unlink()
        stale = figure
    peak = peak_rss()

    table = Table(title=f"exact {'ridge' if args.loss == 'squared' else 'softmax'} head")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    rows = [("rows x features", f"{features.rows:,} x {features.shape[1]}"),
            ("outputs" if args.loss == "squared" else "classes", str(W.shape[0])),
            ("lambda", f"{head.lam_:.4g}" + (f" (chosen by {cv}-fold CV)" if isinstance(cv, int)
                                              else f" (chosen by {cv.upper()})" if cv else "")),
            ("KKT residual ||grad J||", f"{head.kkt_residual_:.2e}"
             + ("" if attrs["converged"] else f" (NOT converged to --tol {args.tol:g})"))]
    shown = ("rows", "laplace") + (("nll",) if args.loss == "ce" else ())  # nll = cross_entropy
    rows += [(f"train {k}", f"{v:.6g}") for k, v in metrics.items() if k not in shown]
    if summary is not None:
        rows += laplace_rows(summary)
        rows += [(f"train Laplace {k}", f"{v:.6g}") for k, v in metrics["laplace"].items()]
    rows += [("time", f"{seconds:.1f} s"), ("peak memory", f"{peak / 2**20:.0f} MiB")]
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(f"head written to {args.out}"
                  + (f", CV curve to {figure}" if head.cv_scores_ is not None else "")
                  + (f"; removed {stale}, the CV curve of an earlier fit to {args.out}"
                     if stale else ""), highlight=False)
    if args.json:
        result = {"head": args.out, "attrs": attrs, "train": metrics, "laplace": summary,
                  "cv": None if head.cv_scores_ is None else
                  {"lams": head.cv_lams_.tolist(), "scores": head.cv_scores_.tolist()}}
        atomic_write_text(args.json, dump(result, {"seconds": seconds, "peak_rss_bytes": peak}))
    return 0


def _write_head(path, W, b, classes, cv_lams, cv_scores, attrs, laplace=None) -> None:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["W"] = W
        if b is not None:
            f["b"] = b
        if classes is not None:
            f["classes"] = classes
        if cv_scores is not None:
            f["cv_lams"] = cv_lams
            f["cv_scores"] = cv_scores
        for k, v in {**attrs, "lastlayer": version()}.items():
            f.attrs[k] = v
        if laplace is not None:
            write_laplace(f, *laplace)


def _cv_figure(path: Path, lams, scores, chosen, loss, cv) -> None:
    from lastlayer.models.experiment import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.semilogx(lams, scores, "o-", label=f"{cv}-fold" if isinstance(cv, int) else str(cv).upper())
    ax.axvline(chosen, color="C3", linestyle="--", label=f"chosen lam = {chosen:.3g}")
    ax.set_xlabel("lam (penalty lam ||W||^2, mean loss)")
    ax.set_ylabel("held-out MSE" if loss == "squared" else "held-out cross-entropy")
    ax.set_title("cross-validation curve")
    ax.legend()
    save_figure(fig, path)
