"""Whether the real-GPU tests can run: a CUDA device, CuPy, and not the CUDA simulator."""

from __future__ import annotations

import numba
import pytest


def real_gpu() -> bool:
    if numba.config.ENABLE_CUDASIM:
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, or no driver / device
        return False


skip_without_gpu = pytest.mark.skipif(not real_gpu(), reason="needs a CUDA GPU and CuPy")
