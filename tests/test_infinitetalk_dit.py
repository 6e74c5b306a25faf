"""The DiT subclass: official key layout (the real 14B on the meta device), audio routing, batching."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from it_weights import FULL_DIT, TINY_DIT, official_dit_shapes, random_tensors
from model.infinitetalk.audio_attention import reference_attention_map, route_positions
from model.infinitetalk.convert import AUDIO_KEY, convert_transformer, transformer_key
from model.infinitetalk.loading import build_transformer
from model.infinitetalk.transformer import InfiniteTalkTransformer3DModel, transformer_config_from_official

KEYS_14B = Path(__file__).parent / "fixtures" / "conformance" / "keys_14b.json"


def test_official_shapes_rule_reproduces_keys_14b():
    expected = {k: tuple(v) for k, v in json.loads(KEYS_14B.read_text()).items()}
    assert len(expected) == 1633
    assert official_dit_shapes(FULL_DIT) == expected
    assert sum(1 for k in expected if AUDIO_KEY.match(k)) == 330


def test_14b_keys_map_onto_the_model_on_meta_device():
    official = {k: torch.empty(tuple(v), device="meta") for k, v in json.loads(KEYS_14B.read_text()).items()}
    with torch.device("meta"):
        model = InfiniteTalkTransformer3DModel(**transformer_config_from_official(FULL_DIT))
    converted = convert_transformer(dict(official))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    params = sum(v.numel() for v in model.state_dict().values())
    assert abs(params - 18.882e9) < 0.01e9  # spec §3.1
    # audio parameters keep their official names
    assert "blocks.7.audio_cross_attn.kv_linear.weight" in expected and "audio_proj.proj1_vf.weight" in expected
    assert transformer_key("blocks.3.self_attn.q.weight") == "blocks.3.attn1.to_q.weight"
    assert transformer_key("blocks.3.cross_attn.k_img.bias") == "blocks.3.attn2.add_k_proj.bias"
    assert transformer_key("head.modulation") == "scale_shift_table"


def tiny_model(**overrides) -> InfiniteTalkTransformer3DModel:
    config = {**TINY_DIT, **overrides}
    return build_transformer(config, random_tensors(official_dit_shapes(config), seed=11))


def tiny_inputs(model, persons: int, batch: int = 1, frames: int = 2, height: int = 6, width: int = 10):
    g = torch.Generator().manual_seed(3)
    config = model.config
    pixel_frames = 4 * (frames - 1) + 1
    audio = torch.randn(persons, pixel_frames, 5, config.audio_layers, config.audio_channels, generator=g)
    masks = torch.zeros(3, height, width)
    masks[0, :, : width // 2] = 1
    masks[1, :, width // 2:] = 1
    return dict(hidden_states=torch.randn(batch, 16, frames, height, width, generator=g),
                timestep=torch.full((batch,), 700.0),
                encoder_hidden_states=torch.randn(batch, 5, config.text_dim, generator=g),
                encoder_hidden_states_image=torch.randn(batch, 257, 1280, generator=g),
                condition=torch.randn(batch, 20, frames, height, width, generator=g),
                audio_tokens=model.encode_audio(audio), reference_masks=masks)


@torch.no_grad()
def test_two_speakers_with_odd_head_count_and_aspect_ratio():
    """3 heads: the official split uses heads 0 and 1 (one per group); head 2 is in no group."""
    model = tiny_model(dim=96, num_heads=3)
    inputs = tiny_inputs(model, persons=2)
    assert inputs["audio_tokens"].shape == (1, 2, 64, TINY_DIT["output_dim"])
    out = model(**inputs)[0]
    assert out.shape == (1, 16, 2, 6, 10) and torch.isfinite(out).all()
    q, k = torch.randn(1, 30, 3, 32), torch.randn(1, 30, 3, 32)
    masks = (torch.rand(3, 15) > 0.5).float() + 0.0
    masks[:, 0] = 1
    got = reference_attention_map(q, k, masks)
    expected = 0
    for head in (0, 1):  # one head per group, then the mean of the two groups
        probs = ((q[0, :, head] / 32**0.5) @ k[0, :15, head].T).softmax(-1)
        expected = expected + (probs @ masks.T).T / masks.sum(1, keepdim=True)
    assert torch.allclose(got[0], expected / 2, atol=1e-6)
    positions = route_positions(got)
    classes = got[0].argmax(0)
    assert ((positions[0] >= 0) & (positions[0] <= 4))[classes == 0].all()
    assert ((positions[0] >= 20) & (positions[0] <= 24))[classes == 1].all()
    assert (positions[0] == 12)[classes == 2].all()


@torch.no_grad()
def test_audio_tokens_change_the_output_and_batching_is_exact():
    model = tiny_model()
    inputs = tiny_inputs(model, persons=1, batch=1)
    single = model(**inputs)[0]
    silent = dict(inputs, audio_tokens=model.encode_audio(torch.zeros(1, 5, 5, 3, 32)))
    assert (model(**silent)[0] - single).abs().max() > 1e-3
    batched = {k: (v.expand(3, *v.shape[1:]) if k not in ("reference_masks",) else v) for k, v in inputs.items()}
    out = model(**batched)[0]
    for item in out:
        assert (item - single[0]).abs().max() < 1e-5
