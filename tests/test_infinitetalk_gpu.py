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
                                     {"attention": "native"}, {"compile": True}, {"motion_source": "latents"}])
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


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("motion_source", ["frames", "latents"])
def test_prefetch_on_cuda_streams_equals_the_sequential_chain(tmp_path, motion_source):
    """The side worker's own CUDA stream (prepare) and the DiT worker's (latents) change no result."""
    from test_infinitetalk_overlap import run_chain, with_mode

    from model.infinitetalk.generator import build_generator

    generator = build_generator(weights=str(write_weights(tmp_path / "w")), device="cuda", steps=2,
                                audio_context=1.0, audio_lookahead=0.2)
    try:
        plain = run_chain(with_mode(generator, motion_source), chunks=3)
        overlapped = run_chain(with_mode(generator, motion_source), chunks=3, prefetch=True)
    finally:
        generator.close()
    for a, b in zip(plain, overlapped):
        assert np.array_equal(a, b)


@pytest.mark.slow
def test_gpu_bench_script_smoke_on_cpu(tmp_path):
    """The benchmark's code path on tiny models on the CPU, and the planner's calibration file it writes."""
    import json

    calibration = tmp_path / "calibration.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIVEDUB_CALIBRATION": str(tmp_path / "default.json")}
    result = subprocess.run([sys.executable, "bench/bench_infinitetalk_gpu.py", "--smoke", "--tiers", "4:1",
                             "--dtypes", "fp8-compute", "--calibration", str(calibration)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stage seconds: wav2vec2" in result.stdout and "fp8-compute     4:1" in result.stdout
    record = json.loads(calibration.read_text())
    assert set(record) == {"version", "gpu_name", "dtype", "width", "height", "frames", "seconds", "measured_at"}
    assert (record["version"], record["dtype"], record["width"], record["height"], record["frames"]) == (1, "fp8", 64, 64, 17)
    assert set(record["seconds"]) == {"dit_forward", "vae_decode", "vae_encode", "clip", "wav2vec2"}
    assert all(isinstance(v, float) and v > 0 for v in record["seconds"].values())
    assert record["gpu_name"] and record["measured_at"].startswith("20")
    assert not (tmp_path / "default.json").exists()  # a given path wins over $LIVEDUB_CALIBRATION
    if not torch.cuda.is_available():
        plain = subprocess.run([sys.executable, "bench/bench_infinitetalk_gpu.py"], capture_output=True, text=True,
                               env=env, cwd=ROOT, timeout=120)
        assert plain.returncode == 2 and "no CUDA device" in plain.stderr
