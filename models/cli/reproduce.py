"""``lastlayer reproduce PAPER``: a paper's experiments into one results folder (and
``lastlayer compare``, whose study is written the same way).

The folder (--out, default runs/PAPER) is written whole or not at all. The paper writes
into a new hidden folder beside it (``.NAME.partial-*``); only when everything is written
does that folder take the place of --out, with a manifest ``lastlayer-run.json`` recording
what wrote it (experiment, quick or full, seeds, version, date) and the files it holds.
Ctrl-C or SIGTERM removes the partial folder: nothing partial is ever left in --out.

An existing --out is checked before any work:

* empty or absent: used;
* holding an earlier run of the same experiment (its manifest lists every file in it):
  replaced whole, saying so (no figure of the earlier run stays behind);
* holding another experiment's run, or any file that no manifest accounts for: refused,
  so that nothing a user put there is lost.

The run's tasks (``lastlayer.models.tasks``) go to a local Dask cluster of one
single-threaded worker per core (``--workers N``; 1: one after another in this process) or
to an existing cluster (``--scheduler ADDRESS``); the files are the same bits either way.
Every finished task is kept in a journal beside --out (``.NAME.tasks/``) until the folder is
written; after an interrupt, the same command with ``--resume`` runs only the tasks left.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from lastlayer.engine.training.io import atomic_write_text

from lastlayer.engine.solvers.streaming.runners import SchedulerError, check_scheduler
from lastlayer.engine.threads import cores

from .common import Files, UsageError
from ..experiment import provenance
from ..papers import paper
from ..tasks import Execution, ResumeError

MANIFEST = "lastlayer-run.json"


def earlier_run(out: Path, experiment: str) -> dict | None:
    """The manifest of the run in ``out`` that this one may replace (None: ``out`` is absent
    or empty). UsageError if ``out`` holds anything else (module docstring)."""
    if not out.exists() or not any(out.iterdir()):
        return None
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        files, wrote = set(manifest["files"]), manifest["experiment"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--out {out}: the folder holds files that lastlayer did not write (no "
                         f"readable {MANIFEST}); choose an empty or new folder") from None
    if wrote != experiment:
        raise UsageError(f"--out {out}: holds a `lastlayer reproduce {wrote}` run (written "
                         f"{manifest.get('date', '?')}); give {experiment} its own --out")
    stray = sorted(p.name for p in out.iterdir() if p.name not in files and p.name != MANIFEST)
    if stray:
        raise UsageError(f"--out {out}: {stray[0]!r} was not written by the earlier {wrote} run; "
                         f"move it away or choose another folder")
    return manifest


def cmd_reproduce(args, console, run=None) -> int:
    """``run(stage, quick=, seeds=, quiet=, execution=)`` writes the run (default: the
    paper's ``reproduce``); ``lastlayer compare`` passes its study."""
    run = run or paper(args.experiment).reproduce
    if args.scheduler is not None:
        try:
            check_scheduler(args.scheduler, "--scheduler")  # its form; whether it answers, later
        except ValueError as err:
            raise UsageError(str(err)) from None
    given = args.out if args.out is not None else f"runs/{args.experiment}"
    files = Files()
    files.output_dir(given, "--out")
    out = Path(os.path.realpath(given))  # a symbolic link: the folder it names is the run's
    if out in (Path.cwd(), *Path.cwd().parents):
        raise UsageError(f"--out {out}: is the current directory or one above it; name a folder "
                         f"for the run")
    previous = earlier_run(out, args.experiment)
    if previous is not None:
        settings = "quick" if previous.get("quick") else "full"
        console.print(f"replacing the earlier {args.experiment} run in {out}/ ({settings}, "
                      f"{previous.get('seeds')} seeds, written {previous.get('date', '?')})",
                      highlight=False)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    journal = out.parent / f".{out.name}.tasks"
    workers = args.workers if args.workers is not None or args.scheduler else cores()
    execution = Execution(workers=workers, scheduler=args.scheduler, journal=journal,
                          resume=args.resume)
    try:
        try:
            run(stage, quick=args.quick, seeds=args.seeds, quiet=args.quiet, execution=execution)
        except SchedulerError as err:
            raise UsageError(f"{'--scheduler' if args.scheduler else '--workers'}: {err}") from None
        except ResumeError as err:
            raise UsageError(str(err)) from None
        except KeyboardInterrupt:
            kept = len(list(journal.glob("*.task"))) if journal.is_dir() else 0
            if kept:
                print(f"{kept} finished task{'s' if kept != 1 else ''} kept in {journal}/: the "
                      f"same command with --resume runs only the rest", file=sys.stderr)
            raise
        written = sorted(p.name for p in stage.iterdir())
        meta = {"experiment": args.experiment, "quick": bool(args.quick),
                "seeds": _seeds(stage / "results.h5"), "files": written, **provenance()}
        atomic_write_text(stage / MANIFEST, json.dumps(meta, indent=1, sort_keys=True) + "\n")
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes it 0700: the mode mkdir would give
        _replace(stage, out)
        shutil.rmtree(journal, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # the parents made for this run, deepest first, if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    console.print(f"{args.experiment}: {', '.join(written)} written to {given.rstrip('/')}/",
                  highlight=False)
    return 0


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _seeds(results: Path) -> int | None:
    """The number of seeds the run recorded in its results file."""
    import h5py

    with h5py.File(results, "r") as f:
        return int(f.attrs["seeds"]) if "seeds" in f.attrs else None


def _replace(stage: Path, out: Path) -> None:
    """Put the folder ``stage`` in the place of ``out`` (absent, empty, or an earlier run)."""
    if out.exists() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
