"""Official checkpoint key layouts -> the library modules' layouts (DiT, VAE, CLIP visual, umT5).

Each function takes an official state dict (emptied as it goes, so 19B parameters never sit in memory
twice) and returns the converted one. The audio keys of the DiT keep their official names.
"""

from __future__ import annotations

import re

import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers

AUDIO_KEY = re.compile(r"^(audio_proj\.|blocks\.\d+\.(audio_cross_attn|norm_x)\.)")
DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


def strip_prefix(key: str) -> str:
    for prefix in DIT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def convert_transformer(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``WanModel`` (InfiniteTalk) keys -> ``InfiniteTalkTransformer3DModel`` keys."""
    for key in list(official):
        if strip_prefix(key) != key:
            official[strip_prefix(key)] = official.pop(key)
    audio = {key: official.pop(key) for key in list(official) if AUDIO_KEY.match(key)}
    converted = convert_wan_transformer_to_diffusers(official)
    converted.update(audio)
    return converted


def transformer_key(official_key: str) -> str:
    """One official DiT parameter name -> this model's (used to merge LoRAs written for the official code)."""
    return next(iter(convert_transformer({official_key: None})))


def convert_vae(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``Wan2.1_VAE.pth`` (``WanVAE_``) keys -> ``AutoencoderKLWan`` keys (all 194 map, spec §8)."""
    return convert_wan_vae_to_diffusers(official)


def rename(name: str, rules: list[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        name = re.sub(pattern, replacement, name)
    return name


CLIP_RENAMES = [
    (r"^patch_embedding\.", "embeddings.patch_embedding."),
    (r"^pre_norm\.", "pre_layrnorm."),
    (r"^post_norm\.", "post_layernorm."),
    (r"^transformer\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^transformer\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^transformer\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.out_proj."),
    (r"^transformer\.(\d+)\.mlp\.0\.", r"encoder.layers.\1.mlp.fc1."),
    (r"^transformer\.(\d+)\.mlp\.2\.", r"encoder.layers.\1.mlp.fc2."),
]


def convert_clip_visual(official: dict[str, torch.Tensor], keep_layers: int) -> dict[str, torch.Tensor]:
    """Official open-clip ``visual.*`` keys -> ``transformers.CLIPVisionModel`` keys.

    Only the first ``keep_layers`` blocks are kept: the official output is block L-2's (``use_31_block``),
    so the last block, ``post_norm`` and ``head`` are never used and are dropped, as are ``textual.*``.
    (The library model's own ``post_layernorm`` is left as initialised: it never touches the output.)
    """
    converted = {}
    for key in list(official):
        value = official.pop(key)
        if not key.startswith("visual."):
            continue
        name = key[len("visual."):]
        layer = re.match(r"^transformer\.(\d+)\.", name)
        if (layer and int(layer.group(1)) >= keep_layers) or name.startswith(("head", "post_norm", "proj")):
            continue
        if name == "cls_embedding":
            converted["embeddings.class_embedding"] = value.reshape(-1)
            continue
        if name == "pos_embedding":
            converted["embeddings.position_embedding.weight"] = value.reshape(value.shape[-2:])
            continue
        qkv = re.match(r"^transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)$", name)
        if qkv:
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                converted[f"encoder.layers.{qkv.group(1)}.self_attn.{part}_proj.{qkv.group(2)}"] = chunk
            continue
        converted[rename(name, CLIP_RENAMES)] = value
    return converted


T5_RENAMES = [
    (r"^token_embedding\.", "shared."),
    (r"^norm\.", "encoder.final_layer_norm."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.block.\1.layer.0.layer_norm."),
    (r"^blocks\.(\d+)\.attn\.([qkvo])\.", r"encoder.block.\1.layer.0.SelfAttention.\2."),
    (r"^blocks\.(\d+)\.pos_embedding\.embedding\.", r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.block.\1.layer.1.layer_norm."),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_0."),
    (r"^blocks\.(\d+)\.ffn\.fc1\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_1."),
    (r"^blocks\.(\d+)\.ffn\.fc2\.", r"encoder.block.\1.layer.1.DenseReluDense.wo."),
]


def convert_umt5(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``models_t5_umt5-xxl-enc-bf16.pth`` (Wan ``T5Encoder``) keys -> ``transformers.UMT5EncoderModel`` keys.
    The official gated FFN is ``fc1(x) * gelu(gate(x))``: gate -> ``wi_0``, fc1 -> ``wi_1``, fc2 -> ``wo``."""
    converted = {}
    for key in list(official):
        converted[rename(key, T5_RENAMES)] = official.pop(key)
    if "shared.weight" in converted:
        converted["encoder.embed_tokens.weight"] = converted["shared.weight"]
    return converted
