"""``lastlayer exercise list | start NAME [--out FILE] | check NAME [FILE]``: exercises with
self-checks (the registry and the checkers: ``models/exercises``).

* ``list``: one line per exercise, its name and title;
* ``start NAME``: copies the exercise's template to FILE (default: the template's own name,
  e.g. ``leaky_relu.py``, in the current folder). An existing file is never overwritten:
  the copy is written to a temporary file beside FILE and hard-linked into place, which
  fails if FILE appeared meanwhile;
* ``check NAME [FILE]``: runs the learner's FILE (default: the name ``start`` gives it)
  under a private module name through the exercise's checks and prints one line per
  check, ``PASS`` or ``FAIL``, what was checked, the measured error against its
  tolerance and, for a failure, what is wrong ("backward: gradient of W is wrong:
  relative error 4.0e-01 (tolerance 1e-07); ..."). An exception
  in the learner's code is a FAIL line naming the method, the exception and the line.

Exit status: 0 when every check passes, 1 when one fails; 2 for a usage error (an unknown
exercise, a missing FILE, an --out that exists), one line on stderr.
"""

from __future__ import annotations

import errno
import os
import shlex
import tempfile

from .common import Files, UsageError
from ..exercises import EXERCISES, Exercise

# os.link is refused on file systems without hard links: there the copy is created with
# O_EXCL instead (never over a file, but not atomic)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK,
             errno.ENOSYS}


def exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise UsageError(f"unknown exercise {name!r}; the exercises are "
                         f"{', '.join(EXERCISES)} (lastlayer exercise list)")
    return EXERCISES[name]


def _exists(path: str) -> UsageError:
    return UsageError(f"{path}: the file exists and was left as it is; move it away or give "
                      f"another --out FILE")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def create_new(path: str, text: str) -> None:
    """Write ``text`` to the new file ``path``, whole or not at all, never over a file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        try:
            os.link(tmp, path)  # unlike os.replace, fails if path exists
        except FileExistsError:
            raise _exists(path) from None
        except OSError as err:
            if err.errno not in _NO_LINKS:
                raise
            try:
                with open(path, "x", encoding="utf-8") as f:
                    f.write(text)
            except FileExistsError:
                raise _exists(path) from None
    finally:
        os.unlink(tmp)


def cmd_list() -> int:
    width = max(len(name) for name in EXERCISES)
    for e in EXERCISES.values():
        print(f"{e.name:<{width}}  {e.title}")
    print("start one with `lastlayer exercise start NAME`, check it with "
          "`lastlayer exercise check NAME [FILE]`")
    return 0


def cmd_start(ex: Exercise, out: str | None) -> int:
    out = ex.template if out is None else out
    if os.path.lexists(out):
        raise _exists(out)
    files = Files()
    files.output(out, "--out")
    create_new(out, ex.template_path.read_text(encoding="utf-8"))
    print(f"wrote {out}: write {ex.implement} where the template raises NotImplementedError "
          f"(its docstring says what and how), then check it with")
    print(f"  lastlayer exercise check {ex.name} {shlex.quote(out)}")
    return 0


def cmd_check(ex: Exercise, path: str | None) -> int:
    path = ex.template if path is None else path  # the file ``start`` writes by default
    files = Files()
    files.input(path, "FILE", "Python file")
    results = ex.check(path)
    for r in results:
        print(r.line())
    failed = sum(not r.passed for r in results)
    print(f"{ex.name}: {len(results)} checks: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_exercise(args) -> int:
    if args.action == "list":
        return cmd_list()
    ex = exercise(args.name)
    if args.action == "start":
        return cmd_start(ex, args.out)
    return cmd_check(ex, args.file)
