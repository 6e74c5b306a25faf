#!/bin/bash
# Second device call: the fp8 fixes (overlay), the fp8 linear breakdown, the 14B chunk with the fixed fp8 compute,
# and bf16 with the cuDNN attention backend and with regional torch.compile. One timeout and one log per step.
set -o pipefail
export PYTHONUNBUFFERED=1
ROOT=$PWD
log() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }
log env
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$OUT/env.log"
if [ -z "$LOCAL_DRY_RUN" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3 | tee -a "$OUT/env.log" || { log "wheel install failed"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$ROOT LIVEDUB_CALIBRATION=/nonexistent/calibration.json
log "overlay: $(cd .gpu/overlay && find . -type f | tr '\n' ' ')"; cp -r .gpu/overlay/. .

log tests
timeout 90 python3 -m pytest -q -p no:cacheprovider -p no:asyncio -rA --durations 5 tests/test_infinitetalk_fp8.py \
  -m "gpu or not slow" 2>&1 | tee "$OUT/tests.log"
log "tests rc=$?"

log fp8 linear
timeout 90 python3 bench/bench_fp8_linear.py 2>&1 | tee "$OUT/fp8_linear.log"
log "fp8 linear rc=$?"

bench() {  # name timeout args...
  local name=$1 t=$2; shift 2
  log "bench $name (timeout $t): $*"
  timeout $t python3 bench/bench_infinitetalk_gpu.py --tiers 4:1 --repeats 1 "$@" 2>&1 \
    | grep --line-buffered -v 'it/s\]' | grep --line-buffered -v '^DEBUG' | tee "$OUT/bench_$name.log"
  log "bench $name rc=$?"
}
bench fp8 100 --dtypes fp8-compute --calibration "$OUT/calibration_fp8.json"
bench cudnn 100 --dtypes bf16 --attention _native_cudnn --calibration /tmp/unused_cudnn.json
bench compile 140 --dtypes bf16 --compile --calibration /tmp/unused_compile.json
log done
