"""Building the components from official-layout state dicts: the DiT on the meta device with a strict
load (19B parameters are never in memory twice), the VAE, the CLIP tower, umT5, wav2vec2.

The files themselves (and the checks that they are all there) are in ``layout.py``.
"""

from __future__ import annotations

import os

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from transformers import CLIPVisionModel, UMT5Config, UMT5EncoderModel

from model.infinitetalk.clip import VIT_H_HEADS, clip_config_from_state_dict
from model.infinitetalk.convert import convert_clip_visual, convert_transformer, convert_umt5, convert_vae
from model.infinitetalk.transformer import InfiniteTalkTransformer3DModel, transformer_config_from_official
from model.infinitetalk.vae import vae_config_from_state_dict


class WeightsMismatch(ValueError):
    """The weights do not fit the architecture their config describes."""


def check_state_dict(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} keys (e.g. {', '.join(keys[:3])})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: {tuple(given[k].shape)} given, "
                         f"{tuple(expected[k].shape)} expected)")
        raise WeightsMismatch(f"{what}: " + "; ".join(parts))


def build_transformer(official_config: dict, official_state: dict[str, torch.Tensor],
                      what: str = "InfiniteTalk DiT") -> InfiniteTalkTransformer3DModel:
    """The DiT from the official config (``WanModel`` kwargs) and merged official state dict (emptied).
    Parameters keep the dtype they are given in (the caller casts while reading)."""
    with torch.device("meta"):
        model = InfiniteTalkTransformer3DModel(**transformer_config_from_official(official_config))
    state = convert_transformer(official_state)
    check_state_dict(model.state_dict(), state, what)
    model.load_state_dict(state, strict=True, assign=True)
    config = model.config
    model.rope = WanRotaryPosEmbed(config.attention_head_dim, config.patch_size, config.rope_max_seq_len)
    return model.eval().requires_grad_(False)


def build_vae(official_state: dict[str, torch.Tensor], **config) -> AutoencoderKLWan:
    """``AutoencoderKLWan`` from official ``WanVAE_`` weights; ``config`` may set the architecture and
    ``latents_mean``/``latents_std`` (default: the Wan2.1 values)."""
    config = {**vae_config_from_state_dict(official_state), **config}
    with torch.device("meta"):
        model = AutoencoderKLWan(**config)
    state = convert_vae(official_state)
    check_state_dict(model.state_dict(), state, "VAE")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def build_clip(official_state: dict[str, torch.Tensor], heads: int = VIT_H_HEADS,
               layers: int | None = None) -> CLIPVisionModel:
    """The visual tower up to block L-2 from official ``visual.*`` weights (other keys ignored)."""
    config, layers = clip_config_from_state_dict(official_state, heads, layers)
    model = CLIPVisionModel(config)  # small enough to initialise; the unused post_layernorm keeps its init
    state = convert_clip_visual(official_state, layers - 1)
    state.update({k: v for k, v in model.state_dict().items() if k.startswith("post_layernorm.")})
    check_state_dict(model.state_dict(), state, "CLIP visual tower")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval().requires_grad_(False)


def umt5_config_from_state_dict(official_state: dict[str, torch.Tensor]) -> UMT5Config:
    vocab, dim = official_state["token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in official_state if k.startswith("blocks."))
    heads = official_state["blocks.0.pos_embedding.embedding.weight"].shape[1]
    buckets = official_state["blocks.0.pos_embedding.embedding.weight"].shape[0]
    dim_attn = official_state["blocks.0.attn.q.weight"].shape[0]
    dim_ffn = official_state["blocks.0.ffn.fc1.weight"].shape[0]
    return UMT5Config(vocab_size=vocab, d_model=dim, d_kv=dim_attn // heads, d_ff=dim_ffn, num_layers=layers,
                      num_heads=heads, relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
                      feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, is_encoder_decoder=False,
                      tie_word_embeddings=False)


def build_umt5(official_state: dict[str, torch.Tensor]) -> UMT5EncoderModel:
    """``UMT5EncoderModel`` from the official T5 encoder weights (Wan ``T5Encoder`` keys), on meta + assign."""
    config = umt5_config_from_state_dict(official_state)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    state = convert_umt5(official_state)
    check_state_dict(model.state_dict(), state, "umT5 text encoder")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_torch_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.pth`` checkpoint memory-mapped (weights only, never executed), or a safetensors file."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
