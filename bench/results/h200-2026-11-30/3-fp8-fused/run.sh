#!/bin/bash
# Third device call: the fused (torch.compile) row-wise quantization in Fp8Linear on CUDA: its tests, the linear
# breakdown, and the 14B chunk in fp8 compute.
set -o pipefail
export PYTHONUNBUFFERED=1
ROOT=$PWD
log() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }
if [ -z "$LOCAL_DRY_RUN" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3 || { log "wheel install failed"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$ROOT LIVEDUB_CALIBRATION=/nonexistent/calibration.json
log "overlay: $(cd .gpu/overlay && find . -type f | tr '\n' ' ')"; cp -r .gpu/overlay/. .
log tests
timeout 60 python3 -m pytest -q -p no:cacheprovider -p no:asyncio -rA --durations 5 tests/test_infinitetalk_fp8.py \
  -m gpu 2>&1 | grep -v '^DEBUG' | tee "$OUT/tests.log"
log "tests rc=$?"
log fp8 linear
timeout 50 python3 bench/bench_fp8_linear.py --repeats 10 2>&1 | tee "$OUT/fp8_linear.log"
log "fp8 linear rc=$?"
log "bench fp8"
timeout 80 python3 bench/bench_infinitetalk_gpu.py --tiers 4:1 --repeats 1 --dtypes fp8-compute \
  --calibration "$OUT/calibration_fp8.json" 2>&1 | grep --line-buffered -v 'it/s\]' | grep -v '^DEBUG' | tee "$OUT/bench_fp8.log"
log "bench fp8 rc=$?"
