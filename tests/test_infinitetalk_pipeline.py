"""The chunk pipeline's knobs on the fixture's tiny components: SDEdit start, batched guidance passes,
the streamed decode, fp8 layerwise casting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.infinitetalk.conformance import read_json
from model.infinitetalk.conformance_pipeline import load_pipeline
from model.infinitetalk.pipeline import ChunkConditions, SamplingSettings
from model.infinitetalk.sampler import Guidance, add_noise, shifted_timesteps

PIPELINE = Path(__file__).parent / "fixtures" / "conformance" / "public" / "pipeline"


@pytest.fixture(scope="module")
def pipeline():
    torch.set_num_threads(2)
    return load_pipeline(PIPELINE, read_json(PIPELINE / "config.json"))


@pytest.fixture(scope="module")
def conditions():
    tensors = load_file(PIPELINE / "trace_tensors.safetensors")
    audio = load_file(PIPELINE / "audio_emb.safetensors")["audio_emb"]
    texts = load_file(PIPELINE / "t5_context.safetensors")
    source = tensors["chunk1.decoded"]  # any 17 frames at 64x64 stand in for the source window
    return ChunkConditions(reference=tensors["chunk1.cond_image"], audio=audio[tensors["chunk1.audio_index"]][None],
                           prompt=texts["prompt"], negative_prompt=texts["neg_prompt"],
                           motion_frames=tensors["chunk0.color_corrected"][:, :, -5:], source_frames=source)


def test_sdedit_starts_from_the_noised_source_latents(pipeline, conditions):
    settings = SamplingSettings(steps=6, shift=3.0, sdedit_strength=0.5)
    timesteps = shifted_timesteps(6, 3.0)
    start = int((timesteps[:-1] > 500).sum())
    assert 0 < start < 6
    trace = {}
    pipeline.generate(conditions, settings, torch.Generator().manual_seed(1),
                      lambda name, value: trace.__setitem__(name, value.clone()))
    assert f"step{start - 1}.x_in" not in trace and f"step{start}.x_in" in trace
    expected = add_noise(pipeline.vae.encode(conditions.source_frames), trace["noise"][None], timesteps[start])[0]
    count = trace["motion_latent"].shape[1]
    expected[:, :count] = trace["motion_latent"]
    assert torch.allclose(trace[f"step{start}.x_in"], expected, atol=1e-5)


def test_batched_guidance_passes_equal_separate_ones(pipeline, conditions):
    results = []
    for batch in (False, True):
        settings = SamplingSettings(steps=2, shift=7.0, guidance=Guidance(5.0, 4.0), batch_branches=batch)
        results.append(pipeline.generate(conditions, settings, torch.Generator().manual_seed(2)))
    assert (results[0] - results[1]).abs().max() < 1e-4


def test_streamed_decode_equals_one_shot_decode(pipeline):
    latents = torch.randn(1, 16, 5, 8, 8, generator=torch.Generator().manual_seed(3))
    pieces = list(pipeline.vae.decode_stream(latents))
    assert [p.shape[2] for p in pieces] == [1, 4, 4, 4, 4]
    mean, inv_std = pipeline.vae._stats(latents)
    one_shot = pipeline.vae.model.decode(latents / inv_std + mean).sample
    assert torch.equal(torch.cat(pieces, dim=2), one_shot)


def test_fp8_layerwise_casting_runs_close_to_bf16():
    from it_weights import TINY_DIT, official_dit_shapes, random_tensors
    from model.infinitetalk.loading import build_transformer
    from test_infinitetalk_dit import tiny_inputs

    state = {k: v.to(torch.bfloat16) for k, v in random_tensors(official_dit_shapes(TINY_DIT), seed=11).items()}
    model = build_transformer(TINY_DIT, state)
    inputs = tiny_inputs(model, persons=1)
    with torch.no_grad():
        bf16 = model(**inputs)[0]
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        fp8 = model(**inputs)[0]
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert model.proj_out.weight.dtype == torch.bfloat16  # the head stays out of fp8
    relative = (fp8 - bf16).norm() / bf16.norm()
    assert 0 < relative < 0.2


def test_teacache_skips_after_warmup_and_reuses_the_residual(pipeline, conditions):
    calls = []
    hook = pipeline.transformer.blocks[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        settings = SamplingSettings(steps=8, shift=7.0, teacache=1e9)  # never recompute after the warm-up
        cached = pipeline.generate(conditions, settings, torch.Generator().manual_seed(4))
        assert len(calls) == 5 * 3  # 5 warm-up steps x 3 passes, then the residuals are reused
        calls.clear()
        exact = pipeline.generate(conditions, SamplingSettings(steps=8, shift=7.0, teacache=-1e9),
                                  torch.Generator().manual_seed(4))
        assert len(calls) == 8 * 3
        plain = pipeline.generate(conditions, SamplingSettings(steps=8, shift=7.0), torch.Generator().manual_seed(4))
    finally:
        hook.remove()
    assert torch.equal(exact, plain)
    assert (cached - plain).abs().max() > 1e-4
