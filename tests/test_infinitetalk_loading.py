"""Weights directory (official layout) -> components -> generator; LoRA merging; clear errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from it_weights import TINY_DIT, official_dit_shapes, random_tensors, write_weights
from model.base import ChunkRequest, Tier
from model.infinitetalk.convert import transformer_key
from model.infinitetalk.layout import WeightsLayout
from model.infinitetalk.loading import build_transformer
from model.infinitetalk.lora import merge_lora
from streaming.errors import InputError


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def generator(weights):
    from model.infinitetalk.generator import build_generator

    torch.set_num_threads(2)
    return build_generator(weights=str(weights), device="cpu", steps=2, audio_context=2.0, audio_lookahead=0.5)


def test_layout_found_and_missing_files_listed_in_one_error(weights, tmp_path):
    layout = WeightsLayout.find(weights)
    assert len(layout.shards) == 2 and layout.infinitetalk.name == "infinitetalk.safetensors"
    broken = tmp_path / "broken"
    shutil.copytree(weights, broken)
    (broken / "Wan2.1-I2V-14B-480P" / "Wan2.1_VAE.pth").unlink()
    (broken / "Wan2.1-I2V-14B-480P" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    shutil.rmtree(broken / "chinese-wav2vec2-base")
    with pytest.raises(InputError) as error:
        WeightsLayout.find(broken)
    message = str(error.value)
    assert "\n" not in message
    for name in ("Wan2.1_VAE.pth", "diffusion_pytorch_model-00002-of-00002.safetensors",
                 "chinese-wav2vec2-base/config.json", "expected the official layout"):
        assert name in message
    with pytest.raises(InputError, match="multi/infinitetalk.safetensors"):
        WeightsLayout.find(weights, speakers="multi")


def test_mismatched_weights_give_a_clear_error(weights, tmp_path):
    from model.infinitetalk.generator import build_generator

    broken = tmp_path / "mismatch"
    shutil.copytree(weights, broken)
    path = broken / "InfiniteTalk" / "single" / "infinitetalk.safetensors"
    audio = load_file(path)
    audio["blocks.0.norm_x.weight"] = torch.ones(7)
    del audio["blocks.1.norm_x.bias"]
    save_file(audio, path)
    with pytest.raises(InputError) as error:
        build_generator(weights=str(broken), device="cpu")
    message = str(error.value)
    assert "1 missing keys (e.g. blocks.1.norm_x.bias)" in message and "shape mismatch" in message


def test_generator_chunk_shapes_seed_and_tier(generator):
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 * 6) * 0.1).astype(np.float32)
    reference = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
    first = ChunkRequest(index=0, start_frame=0, num_frames=17, audio=audio, audio_offset=0,
                         reference_frame=reference, reference_index=0, audio_end_frame=60, color_strength=1.0, seed=7)
    result = generator.generate(first)
    assert result.frames.shape == (17, 64, 48, 3) and result.frames.dtype == np.uint8
    assert result.info["steps"] == 2 and result.info["passes"] == 3
    again = generator.generate(first)
    assert np.array_equal(result.frames, again.frames)  # reproducible from the seed
    other_seed = generator.generate(ChunkRequest(**{**first.__dict__, "seed": 8}))
    assert not np.array_equal(result.frames, other_seed.frames)
    offset = 12 * 640 - 2 * 16000
    later = ChunkRequest(index=1, start_frame=12, num_frames=17, audio=audio[max(offset, 0):], audio_offset=12 * 640,
                         reference_frame=reference, reference_index=12, context_frames=result.frames[-5:],
                         audio_end_frame=60, tier=Tier(steps=1, text_guidance=1.0, audio_guidance=1.0), seed=9)
    out = generator.generate(later)
    assert out.frames.shape == (12, 64, 48, 3)
    assert out.info == {"steps": 1, "passes": 1, "shift": 7.0}
    big = np.repeat(np.repeat(reference, 2, axis=0), 2, axis=1)  # 128 x 96
    cheap = generator.generate(ChunkRequest(**{**first.__dict__, "reference_frame": big, "tier": Tier(steps=1, scale=0.5)}))
    assert cheap.frames.shape == (17, 128, 96, 3) and cheap.info["render_size"] == (64, 64)


def test_bad_options_are_input_errors(weights):
    from model.infinitetalk.generator import build_generator

    with pytest.raises(InputError, match="needs --weights"):
        build_generator()
    with pytest.raises(InputError, match="unknown infinitetalk options bogus"):
        build_generator(weights=str(weights), bogus=1)
    with pytest.raises(InputError, match="bad value 'many' for infinitetalk option steps"):
        build_generator(weights=str(weights), steps="many")
    with pytest.raises(InputError, match="bad attention backend"):
        build_generator(weights=str(weights), device="cpu", attention="flash_hub")


def test_lora_merge_official_semantics(tmp_path):
    state = random_tensors(official_dit_shapes(TINY_DIT), seed=21)
    model = build_transformer(TINY_DIT, dict(state))
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(4, 64, generator=g), torch.randn(64, 4, generator=g)
    diff, diff_b = torch.randn(64, 64, generator=g), torch.randn(64, generator=g)
    lora = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
            "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(2.0),  # ignored, as officially
            "diffusion_model.blocks.1.cross_attn.k_img.diff": diff,
            "diffusion_model.blocks.1.audio_cross_attn.proj.diff_b": diff_b}
    save_file(lora, tmp_path / "lora.safetensors")
    params = dict(model.named_parameters())
    before = {k: params[transformer_key(k)].clone() for k in
              ("blocks.0.self_attn.q.weight", "blocks.1.cross_attn.k_img.weight", "blocks.1.audio_cross_attn.proj.bias")}
    assert merge_lora(model, tmp_path / "lora.safetensors", scale=1.2) == 3
    after = {k: params[transformer_key(k)] for k in before}
    assert torch.allclose(after["blocks.0.self_attn.q.weight"], before["blocks.0.self_attn.q.weight"] + 1.2 * up @ down, atol=1e-5)
    assert torch.allclose(after["blocks.1.cross_attn.k_img.weight"], before["blocks.1.cross_attn.k_img.weight"] + 1.2 * diff, atol=1e-6)
    assert torch.allclose(after["blocks.1.audio_cross_attn.proj.bias"], before["blocks.1.audio_cross_attn.proj.bias"] + 1.2 * diff_b, atol=1e-6)
    save_file({"diffusion_model.blocks.9.self_attn.q.diff": diff}, tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="unknown parameters blocks.9.self_attn.q.weight"):
        merge_lora(model, tmp_path / "bad.safetensors")


def test_command_line_option_values_are_typed():
    from model.infinitetalk.generator import InfiniteTalkOptions, _coerce

    defaults = InfiniteTalkOptions(weights="")
    typed = {k: _coerce(k, v, getattr(defaults, k)) for k, v in {
        "steps": "8", "fp8": "true", "offload": "no", "shift": "2", "sdedit": "none", "teacache": "0.2",
        "lora": "a.safetensors,b.safetensors", "lora_scale": "1.0", "text_guidance": "1", "attention": "flash"}.items()}
    assert typed == {"steps": 8, "fp8": True, "offload": False, "shift": 2.0, "sdedit": None, "teacache": 0.2,
                     "lora": ("a.safetensors", "b.safetensors"), "lora_scale": (1.0,), "text_guidance": 1.0,
                     "attention": "flash"}
    with pytest.raises(InputError, match="option fp8"):
        _coerce("fp8", "maybe", False)
