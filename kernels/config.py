"""Tunables of the compiled kernels, in one place. Tests patch them small so that the
multi-block and multi-pass code paths run on small inputs."""

# ---- FWHT on the CPU (kernels/fwht_cpu.py) ----
# A row longer than FWHT_BLOCK elements is transformed in two cache-resident phases:
# blocks of FWHT_BLOCK contiguous elements, then tiles of FWHT_GROUP columns over the
# remaining large strides. 2^14 elements: 64 KiB of float32, 128 KiB of float64 (L2).
FWHT_BLOCK = 1 << 14
FWHT_GROUP = 16  # fewest contiguous columns per tile of the second phase (one or two cache lines)
FWHT_TILE = 1 << 12  # elements per second-phase tile: its columns = max(FWHT_GROUP, TILE // M)
# Below this many rows, parallelise within each row instead of across rows.
FWHT_MIN_ROWS_PER_THREAD = 2

# ---- FWHT on the GPU (kernels/fwht_cuda.py) ----
CUDA_THREADS_PER_BLOCK = 256
CUDA_SHARED_MAX = 4096  # longest row (elements) transformed in one block's shared memory
