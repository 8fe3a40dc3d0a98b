"""The journal of a run's finished tasks (``lastlayer.models.tasks``, "Resuming"): one
file per task, written atomically with a SHA-256 of its contents, under the run's identity;
read back by ``--resume``."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

from lastlayer.engine.training.io import atomic_write

JOURNAL_MAGIC = b"lastlayer task result v1\n"
IDENTITY = "identity.json"


class ResumeError(ValueError):
    """``resume``: the journal kept is of a run with other settings."""


class Journal:
    """Finished tasks' results on disk (module docstring). ``folder`` None: nothing kept."""

    def __init__(self, folder: Path | None, identity: dict, resume: bool, *, quiet: bool):
        self.folder, self.results = folder, {}
        if folder is None:
            return
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        marker = folder / IDENTITY
        if folder.exists():
            try:
                earlier = json.loads(marker.read_text())
            except (OSError, ValueError):
                earlier = None
            if resume and earlier is not None and earlier != self.identity:
                raise ResumeError(f"--resume: the interrupted run kept in {folder} has other "
                                f"settings ({_difference(earlier, self.identity)}); run without "
                                f"--resume to start afresh")
            if resume and earlier is not None:
                self.results = self._read(quiet)
            else:
                if not quiet and earlier is not None:
                    print(f"discarding the {len(list(folder.glob('*.task')))} finished tasks of "
                          f"an interrupted run kept in {folder} (--resume continues it)",
                          flush=True)
                shutil.rmtree(folder)
        elif resume and not quiet:
            print(f"--resume: no interrupted run kept in {folder}; starting afresh", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(marker) as f:
            f.write(json.dumps(self.identity, sort_keys=True, indent=1) + "\n")

    @staticmethod
    def name(label: str) -> str:
        return hashlib.sha256(label.encode()).hexdigest()[:24] + ".task"

    def write(self, label: str, value) -> None:
        if self.folder is None:
            return
        payload = pickle.dumps((label, value), protocol=pickle.HIGHEST_PROTOCOL)
        with atomic_write(self.folder / self.name(label), "wb") as f:
            f.write(JOURNAL_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)

    def _read(self, quiet: bool) -> dict:
        results, damaged = {}, []
        for path in sorted(self.folder.glob("*.task")):
            data = path.read_bytes()
            head, _, rest = data[len(JOURNAL_MAGIC):].partition(b"\n")
            if (not data.startswith(JOURNAL_MAGIC) or hashlib.sha256(rest).hexdigest().encode()
                    != head):
                damaged.append(path.name)
                continue
            label, value = pickle.loads(rest)
            if path.name == self.name(label):
                results[label] = value
            else:
                damaged.append(path.name)
        if damaged and not quiet:
            print(f"--resume: {len(damaged)} damaged task file(s) in {self.folder} ignored "
                  f"(first {damaged[0]}); those tasks run again", flush=True)
        return results


def _difference(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(f"{k}: {a.get(k)!r} then, {b.get(k)!r} now" for k in keys[:3]) or "?"
