"""The planner's FLOP formulas against torch's own count (FlopCounterMode) on the modules this project runs:
tiny random InfiniteTalk DiT, Wan VAE, CLIP tower and wav2vec2 on the CPU, and the real 14B DiT on the meta
device. Attention runs on the math backend, whose products FlopCounterMode sees as matmuls (it has no
formula for the CPU flash kernel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from it_weights import FULL_DIT, TINY_DIT
from model.infinitetalk.flops import (
    ClipConfig, DitConfig, VaeConfig, Wav2Vec2Config, audio_proj_flops, clip_flops, dit_flops, dit_parameters,
    vae_decode_flops, vae_encode_flops, wav2vec2_flops)
from model.infinitetalk.transformer import InfiniteTalkTransformer3DModel, transformer_config_from_official


def counted(fn, *args, **kwargs) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as mode:
        fn(*args, **kwargs)
    return mode.get_total_flops()


def dit_inputs(config, persons: int, frames: int, height: int, width: int, device="cpu", text_tokens: int = 5):
    t, h, w = 1 + (frames - 1) // 4, height // 8, width // 8
    masks = torch.zeros(3, h, w, device=device)
    masks[0, :, : w // 2] = 1
    masks[1, :, w // 2 :] = 1
    return dict(hidden_states=torch.randn(1, 16, t, h, w, device=device), timestep=torch.full((1,), 700.0, device=device),
                encoder_hidden_states=torch.randn(1, text_tokens, config.text_dim, device=device),
                encoder_hidden_states_image=torch.randn(1, 257, config.image_dim, device=device),
                condition=torch.randn(1, 20, t, h, w, device=device),
                audio_tokens=torch.randn(1, t, persons * config.audio_tokens_per_frame, config.audio_token_dim,
                                         device=device),
                reference_masks=masks if persons > 1 else None)


@pytest.mark.parametrize("persons, frames, height, width, heads", [(1, 9, 48, 80, 2), (2, 5, 64, 48, 3)])
def test_dit_forward_and_audio_projection_match_torch_exactly(persons, frames, height, width, heads):
    model = InfiniteTalkTransformer3DModel(**transformer_config_from_official({**TINY_DIT, "num_heads": heads,
                                                                               "dim": 32 * heads})).eval()
    config = DitConfig.of(model.config)
    inputs = dit_inputs(model.config, persons, frames, height, width)
    expected = dit_flops(config, frames, height, width, persons)
    assert counted(model, **inputs) == expected.total
    assert expected.tokens == (1 + (frames - 1) // 4) * (height // 16) * (width // 16)
    audio = torch.randn(persons, frames, 5, model.config.audio_layers, model.config.audio_channels)
    assert counted(model.encode_audio, audio) == audio_proj_flops(config, frames, persons)
    assert sum(p.numel() for p in model.parameters()) == dit_parameters(config)


def test_full_14b_dit_on_the_meta_device_at_480x480_81_frames():
    with torch.device("meta"):
        model = InfiniteTalkTransformer3DModel(**transformer_config_from_official(FULL_DIT)).eval()
    config = DitConfig.of(model.config)
    assert config == DitConfig()  # the planner's defaults are the 14B model
    inputs = dit_inputs(model.config, 1, 81, 480, 480, device="meta", text_tokens=512)
    flops = dit_flops(config, 81, 480, 480)
    assert counted(model, **inputs) == flops.total == 839_894_294_200_320
    assert sum(p.numel() for p in model.parameters()) == dit_parameters(config) == 18_882_046_784


@pytest.mark.parametrize("frames, height, width", [(9, 32, 48), (5, 16, 16)])
def test_wan_vae_decode_and_encode_match_torch_exactly(frames, height, width):
    from diffusers import AutoencoderKLWan

    from model.infinitetalk.vae import WanVae

    vae = WanVae(AutoencoderKLWan(base_dim=8, z_dim=4, latents_mean=[0.0] * 4, latents_std=[1.0] * 4))
    config = VaeConfig.of(vae.model.config)
    video = torch.rand(1, 3, frames, height, width) * 2 - 1
    assert counted(vae.encode, video) == vae_encode_flops(config, frames, height, width)
    latents = torch.randn(1, 4, 1 + (frames - 1) // 4, height // 8, width // 8)
    assert counted(vae.decode, latents) == vae_decode_flops(config, frames, height, width)


def test_clip_tower_matches_torch_exactly():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from model.infinitetalk.clip import ClipImageEncoder

    tower = CLIPVisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                             image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5)
    encoder = ClipImageEncoder(CLIPVisionModel(tower))
    assert counted(encoder, torch.rand(1, 3, 64, 80) * 2 - 1) == clip_flops(ClipConfig.of(tower))


def test_wav2vec2_window_matches_torch_exactly():
    from transformers import Wav2Vec2Config as HfConfig, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from model.infinitetalk.audio_features import Wav2VecEncoder

    hf = HfConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    encoder = Wav2VecEncoder(Wav2Vec2Model(hf).eval(), Wav2Vec2FeatureExtractor(do_normalize=True))
    samples = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    assert counted(encoder.embed, samples) == wav2vec2_flops(Wav2Vec2Config.of(hf), 16000, 25)
