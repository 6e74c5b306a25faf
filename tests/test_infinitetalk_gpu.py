"""GPU paths of the generator on a tiny official-layout model (skipped without CUDA), and the GPU
benchmark's script on the CPU (--smoke), so it does not rot on machines without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from it_weights import write_weights
from model.base import ChunkRequest

ROOT = Path(__file__).parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("options", [{}, {"fp8": True}, {"batch_cfg": True}, {"offload": True},
                                     {"attention": "native"}, {"compile": True}])
def test_generator_on_cuda(tmp_path, options):
    from model.infinitetalk.generator import build_generator

    generator = build_generator(weights=str(write_weights(tmp_path / "w")), device="cuda", steps=2, **options)
    rng = np.random.default_rng(0)
    request = ChunkRequest(index=0, start_frame=0, num_frames=17, audio=(rng.standard_normal(96000) * 0.1).astype(np.float32),
                           audio_offset=0, reference_frame=rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
                           reference_index=0, audio_end_frame=60, color_strength=1.0)
    result = generator.generate(request)
    assert result.frames.shape == (17, 64, 64, 3) and result.frames.dtype == np.uint8
    assert np.array_equal(result.frames, generator.generate(request).frames)


@pytest.mark.slow
def test_gpu_bench_script_smoke_on_cpu():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "bench/bench_infinitetalk_gpu.py", "--smoke", "--configs", "4:1",
                             "--dtypes", "fp8"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "smoke fp8 4:1:" in result.stdout
    if not torch.cuda.is_available():
        plain = subprocess.run([sys.executable, "bench/bench_infinitetalk_gpu.py"], capture_output=True, text=True,
                               env=env, cwd=ROOT, timeout=120)
        assert plain.returncode == 2 and "no CUDA device" in plain.stderr
