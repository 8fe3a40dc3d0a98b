"""lastlayer.engine.memory: a training step's freed arrays are reused, not faulted in anew.
Counted, not timed: the minor page faults (getrusage) of 20 rounds of a step's pattern,
four 2 MiB arrays allocated, filled and freed, in a fresh process each time (the
allocator's settings are the process's). glibc alone gives the 8 MiB freed at the top of
its heap back to the system every round (more than twice its raised mmap threshold)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from lastlayer.engine import memory

PROBE = """
import json, resource, sys
import numpy as np
from lastlayer.engine.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():
    arrays = [np.ones(1 << 19, dtype=np.float32) for _ in range(4)]  # 2 MiB each
    del arrays
step()  # one round first: the heap grows once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(mode: str, env: dict | None = None) -> dict:
    import os

    base = {k: v for k, v in os.environ.items() if k != memory.ENV}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, env={**base, **(env or {})})
    return json.loads(out.stdout)


def _huge_pages_always() -> bool:
    try:
        return "[always]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
@pytest.mark.skipif(_huge_pages_always(), reason="a heap in 2 MiB huge pages faults rarely "
                                                  "either way: nothing to count")
def test_freed_arrays_are_reused_instead_of_faulted_in_again():
    default, kept = _probe("default"), _probe("keep")
    assert kept["kept"] is True
    pages = 20 * 4 * (2 << 20) // 4096  # every page of every round, if each is new
    assert default["faults"] >= pages // 2  # glibc alone: fresh pages each round
    assert kept["faults"] < pages // 10  # kept: the heap's pages again


def test_system_leaves_the_allocator_alone_and_a_bad_value_is_named(monkeypatch):
    assert _probe("keep", {memory.ENV: "system"})["kept"] is False
    monkeypatch.setenv(memory.ENV, "jemalloc")
    with pytest.raises(ValueError, match="LASTLAYER_MALLOC: expected 'keep' or 'system', "
                                         "got 'jemalloc'"):
        memory.keep_freed_memory()
