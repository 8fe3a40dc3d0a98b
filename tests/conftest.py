"""Test-session setup that must run before anything imports Numba.

Without an NVIDIA GPU the Numba-CUDA kernels run on Numba's CUDA simulator, which is
chosen when ``numba.cuda`` is first imported: set NUMBA_ENABLE_CUDASIM here, at import
time, unless the environment already says otherwise. The GPU is detected without
importing Numba (no device node and no ``nvidia-smi``).
"""

import os
import shutil

if not os.path.exists("/dev/nvidia0") and shutil.which("nvidia-smi") is None:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
