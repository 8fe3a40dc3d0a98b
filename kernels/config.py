"""Tunables of the compiled kernels, in one place. Tests patch them small so that the
multi-block and multi-pass code paths run on small inputs."""

# ---- FWHT on the CPU (kernels/fwht_cpu.py) ----
# A row longer than FWHT_BLOCK elements is transformed in two cache-resident phases:
# blocks of FWHT_BLOCK contiguous elements, then tiles of FWHT_GROUP columns over the
# remaining large strides. 2^14 elements: 64 KiB of float32, 128 KiB of float64 (L2).
FWHT_BLOCK = 1 << 14
FWHT_GROUP = 16  # fewest contiguous columns per tile of the second phase (one or two cache lines)
FWHT_TILE = 1 << 12  # elements per second-phase tile: its columns = max(FWHT_GROUP, TILE // M)
# Rows of at most FWHT_BLOCK are cut into segments of max(n, FWHT_SEGMENT) elements (whole
# rows), the units of parallel work: 2^12 elements, 16 KiB (float32) to 32 KiB (float64), L1.
FWHT_SEGMENT = 1 << 12
# Inputs of at most this many elements run on one thread: a parallel launch costs more.
FWHT_SERIAL_MAX = 1 << 15
# Below this many rows, parallelise within each row instead of across rows.
FWHT_MIN_ROWS_PER_THREAD = 2

# ---- FWHT on the GPU (kernels/fwht_cuda.py) ----
CUDA_THREADS_PER_BLOCK = 256
CUDA_SHARED_MAX = 4096  # longest row (elements) transformed in one block's shared memory

# ---- Fused Layca update (kernels/layca.py, layca_cpu.py, layca_cuda.py) ----
# ||s_perp||^2 = s.s - (s.w)^2 / w.w loses log2(s.s / ||s_perp||^2) bits to cancellation
# when s is nearly parallel to w. Below this ratio (angle(s, w) < 14.5 degrees) it is
# recomputed directly, sum((s - k w)^2) with k = s.w / w.w, in one more read pass.
LAYCA_CANCELLATION_RATIO = 2.0**-4
# CPU: the tensors of one call are cut into chunks of this many elements, the units of
# parallel work (partial sums per chunk, summed in chunk order: results do not depend on the
# thread count). 2^14 elements of w and s: 128 KiB (float32) to 256 KiB (float64), in L2.
LAYCA_CHUNK = 1 << 14
# GPU: threads per block (a power of two: tree reductions in shared memory) and the most
# blocks one tensor's reduction or update uses (each thread loops over the rest).
LAYCA_CUDA_THREADS = 256
LAYCA_CUDA_MAX_BLOCKS = 1024
