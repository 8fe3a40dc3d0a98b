#!/usr/bin/env bash
# One prepared GPU run (issue 12): on a machine with a CUDA GPU, install the GPU extras,
# run every `gpu`-marked test and the GPU benchmarks (bench/test_gpu.py: fwht against the
# device's memory floor and a dense CuPy product, fused Layca against unfused CuPy), and
# write a summary file. Budget: under 8 minutes (each step has its own timeout).
#
#   bash bench/gpu.sh [SUMMARY]      default SUMMARY: $OUT/gpu-summary.txt if $OUT is set,
#                                    else ./gpu-summary.txt
#
# PYTHON=/path/to/python uses an environment that already has CuPy and numba-cuda (no
# install); otherwise a virtual environment .venv-gpu is made and the extra matching the
# driver's CUDA major version is installed: gpu (CUDA 12) or gpu-cuda13.
set -uo pipefail
cd "$(dirname "$0")/.."
summary="${1:-${OUT:-.}/gpu-summary.txt}"
mkdir -p "$(dirname "$summary")"
log() { echo "$@" | tee -a "$summary"; }
: > "$summary"
started=$(date +%s)

log "lastlayer GPU run, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! command -v nvidia-smi > /dev/null || ! nvidia-smi > /dev/null 2>&1; then
    log "no CUDA GPU (nvidia-smi absent or failing): nothing to run"
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$summary"

if [ -n "${PYTHON:-}" ]; then
    py="$PYTHON"
else
    cuda_major=$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)
    extra=gpu
    if [ "${cuda_major:-12}" -ge 13 ]; then extra=gpu-cuda13; fi
    log "installing .[dev,bench,$extra] into .venv-gpu (driver CUDA ${cuda_major:-unknown})"
    python3 -m venv .venv-gpu
    if ! timeout 240 .venv-gpu/bin/pip install -q -e ".[dev,bench,$extra]" >> "$summary" 2>&1; then
        log "install failed (no network? set PYTHON to an environment with CuPy): stopping"
        exit 3
    fi
    py=.venv-gpu/bin/python
fi
"$py" -c "import cupy; print('cupy', cupy.__version__, 'device count', cupy.cuda.runtime.getDeviceCount())" \
    2>&1 | tee -a "$summary"

status=0
log ""
log "== gpu-marked tests =="
timeout 180 "$py" -m pytest -q -n 0 -m gpu -p no:cacheprovider tests 2>&1 | tail -15 | tee -a "$summary"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

log ""
log "== GPU benchmarks (bench/test_gpu.py) =="
timeout 240 "$py" -m pytest -q -p no:cacheprovider bench/test_gpu.py 2>&1 \
    | sed -n '/lastlayer benchmark report/,$p' | tee -a "$summary"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

log ""
log "done in $(( $(date +%s) - started )) s, status $status (0: every test passed)"
exit $status
