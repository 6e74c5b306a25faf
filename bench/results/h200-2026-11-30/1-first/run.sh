#!/bin/bash
# The one device call: environment, the CUDA-only tests, the GPU benchmark (bf16, then fp8 compute).
# The planner runs on the CPU machine with the calibration this writes (server.plan imports PyAV, absent here).
# Each step has its own timeout and its own log under $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
ROOT=$PWD
log() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }

log env
{ nvidia-smi; python3 -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); print(torch.cuda.get_device_name(), torch.cuda.get_device_capability(), torch.cuda.get_device_properties(0).total_memory / 2**30, 'GiB')"; } 2>&1 | tee "$OUT/env.log"

log install wheels
if [ -z "$LOCAL_DRY_RUN" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3 | tee -a "$OUT/env.log" || { log "wheel install failed"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$ROOT LIVEDUB_CALIBRATION=/nonexistent/calibration.json
python3 -c "import diffusers, transformers, huggingface_hub, tokenizers, safetensors, accelerate, numpy, triton; print('diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'hub', huggingface_hub.__version__, 'tokenizers', tokenizers.__version__, 'safetensors', safetensors.__version__, 'accelerate', accelerate.__version__, 'numpy', numpy.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$OUT/env.log"

if [ -d .gpu/overlay ]; then log "overlay: $(cd .gpu/overlay && find . -type f | tr '\n' ' ')"; cp -r .gpu/overlay/. . ; fi
cp .gpu/test_group_gpu_device.py tests/

log matmul ceiling
timeout 60 python3 - <<'PY' 2>&1 | tee -a "$OUT/env.log"
import torch, time
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
s.record(); [a @ b for _ in range(10)]; e.record(); torch.cuda.synchronize()
print(f"bf16 8192^3 matmul: {2 * 8192**3 * 10 / (s.elapsed_time(e) / 1e3) / 1e12:.0f} TFLOP/s (random data, mean of 10)")
PY

log tests
TIMEOUT_FLAG=; python3 -c "import pytest_timeout" 2>/dev/null && TIMEOUT_FLAG="--timeout 150"
timeout 180 python3 -m pytest -q -p no:cacheprovider -p no:asyncio -rA $TIMEOUT_FLAG --durations 0 \
  tests/test_infinitetalk_gpu.py tests/test_infinitetalk_fp8.py tests/test_group_gpu_device.py -m "gpu or not slow" 2>&1 | tee "$OUT/tests.log"
log "tests rc=$?"

for d in bf16 fp8-compute; do
  t=200; [ $d = fp8-compute ] && t=140
  log "bench $d (timeout $t)"
  timeout $t python3 bench/bench_infinitetalk_gpu.py --dtypes $d --tiers 4:1 8:audio --repeats 1 \
    --calibration "$OUT/calibration_$d.json" 2>&1 | grep --line-buffered -v 'it/s\]' | tee "$OUT/bench_$d.log"
  log "bench $d rc=$?"
done

log done
