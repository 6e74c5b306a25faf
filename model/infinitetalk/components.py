"""Loading every component from a checked weights directory onto a device."""

from __future__ import annotations

import dataclasses

import torch
from transformers import AutoTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from model.infinitetalk.audio_features import Wav2VecEncoder
from model.infinitetalk.clip import ClipImageEncoder
from model.infinitetalk.layout import WeightsLayout, read_dit_state
from model.infinitetalk.loading import WeightsMismatch, build_clip, build_transformer, build_umt5, build_vae, load_torch_file
from model.infinitetalk.text import PromptEncoder
from model.infinitetalk.transformer import InfiniteTalkTransformer3DModel
from model.infinitetalk.vae import WanVae
from model.errors import InputError


@dataclasses.dataclass
class Components:
    transformer: InfiniteTalkTransformer3DModel  # on the CPU until the generator places it
    vae: WanVae
    clip: ClipImageEncoder
    audio: Wav2VecEncoder
    prompts: PromptEncoder


def _mismatch(path, exc: Exception) -> InputError:
    return InputError(f"weights in {path} do not fit the model: {exc}")


def load_transformer(layout: WeightsLayout, dtype: torch.dtype) -> InfiniteTalkTransformer3DModel:
    import json

    config = json.loads(layout.config.read_text())
    try:
        model = build_transformer(config, read_dit_state(layout, dtype),
                                  what=f"DiT ({layout.wan_dir.name} shards + {layout.infinitetalk.name})")
    except (WeightsMismatch, KeyError, ValueError) as exc:
        raise _mismatch(layout.wan_dir, exc) from None
    for name, param in model.named_parameters():  # diffusers' fp32 islands (modulation, time MLP, norms)
        if any(part in name.split(".") for part in model._keep_in_fp32_modules):
            param.data = param.data.float()
    return model


def load_components(layout: WeightsLayout, device: torch.device, dtype: torch.dtype,
                    prompts: tuple[str, ...]) -> Components:
    """All components; the prompts are encoded now and the 5.7B text encoder released."""
    transformer = load_transformer(layout, dtype)
    try:
        vae = WanVae(build_vae(load_torch_file(layout.vae)).to(device))
        clip_dtype = torch.float16 if device.type == "cuda" else torch.float32  # official: fp16 autocast
        clip = ClipImageEncoder(build_clip(load_torch_file(layout.clip)).to(device, clip_dtype), clip_dtype)
        umt5 = build_umt5(load_torch_file(layout.t5))
    except (WeightsMismatch, KeyError, ValueError) as exc:
        raise _mismatch(layout.wan_dir, exc) from None
    tokenizer = AutoTokenizer.from_pretrained(str(layout.tokenizer), local_files_only=True)
    text_dtype = dtype if device.type == "cuda" else torch.float32
    encoder = PromptEncoder(tokenizer, umt5.to(device, text_dtype), transformer.config.text_len)
    for prompt in prompts:
        encoder(prompt)
    encoder.release()
    del umt5
    wav2vec = Wav2Vec2Model.from_pretrained(str(layout.wav2vec), local_files_only=True).to(device)
    expected = (transformer.config.audio_layers, transformer.config.audio_channels)
    if (wav2vec.config.num_hidden_layers, wav2vec.config.hidden_size) != expected:
        raise InputError(f"{layout.wav2vec} has {wav2vec.config.num_hidden_layers} layers x {wav2vec.config.hidden_size}; "
                         f"the DiT's audio projection expects {expected[0]} x {expected[1]} (chinese-wav2vec2-base)")
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(layout.wav2vec), local_files_only=True)
    return Components(transformer, vae, clip, Wav2VecEncoder(wav2vec, extractor), encoder)
