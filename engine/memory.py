"""Freed memory kept for reuse: glibc's allocator set up for a training loop's arrays.

A training step allocates and frees the same arrays every iteration (activations, im2col
matrices, gradients: 0.1-10 MB each). glibc serves an allocation above its mmap threshold
(128 KiB at start, raised to the largest chunk freed so far) with a fresh mapping, and
returns the top of its heap to the system once more than twice that threshold is free
there. Either way the next step's arrays are new pages, faulted in and zeroed by the kernel
one 4 KiB page at a time. Measured on the project's 2-core machine, one float32 training
step of bench/test_step_vs_torch.py (medians of 40 steps, 2 runs each):

    MLP 784-1024-1024-10, b128, 1 thread:   21.3-22.2 ms  ->  18.5-18.9 ms
    CNN c32-c64 on 28x28, b64, 1 thread:    32.9-40.6 ms  ->  25.6-25.7 ms
    CNN, 2 threads:                          35.6-42.8 ms  ->  23.3-26.6 ms

``keep_freed_memory()`` sets glibc's mmap threshold to its largest value (32 MiB: larger
arrays are still mapped and unmapped, their page faults small beside the work on them) and
its trim threshold to 1 GiB, so the heap keeps what a step freed for the next step. The
process then keeps up to its peak heap instead of shrinking between steps. ``train``
(``lastlayer.engine.training.loop``) calls it once per process; so does every process that
runs its steps. Elsewhere than glibc (macOS, musl, Windows) it does nothing, and
``LASTLAYER_MALLOC=system`` leaves the allocator as it is. It changes no number: only
where the arrays live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ENV", "keep_freed_memory"]

ENV = "LASTLAYER_MALLOC"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30
_done: bool | None = None  # None: not yet asked; then whether glibc took the settings


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once for this process (module docstring); True if they are
    set (now or before), False where this is not glibc or LASTLAYER_MALLOC=system. Any
    other value of LASTLAYER_MALLOC than 'system' or 'keep' is an error naming it."""
    global _done
    choice = os.environ.get(ENV, "keep").strip() or "keep"
    if choice not in ("keep", "system"):
        raise ValueError(f"{ENV}: expected 'keep' or 'system', got {choice!r}")
    if choice == "system":  # asked each time: a later call with 'keep' may still set them
        return False
    if _done is not None:
        return _done
    _done = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: musl has no mallopt, macOS none
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mmap_set = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))  # each set on its own: a
    trim_set = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))  # refused one skips no other
    _done = mmap_set and trim_set
    return _done
