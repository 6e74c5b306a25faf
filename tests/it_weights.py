"""Tiny random InfiniteTalk checkpoints in the official release layout (test helper).

Key names and shape rules follow the official files (the DiT rule reproduces keys_14b.json exactly, see
test_infinitetalk_loading.py). Values are random (matrices N(0, 1/fan_in), norm weights 1 + 0.1 N,
biases 0.05 N), so a generated video is noise: this exercises loading and plumbing, not quality.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TINY_DIT = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": 64, "eps": 1e-06, "ffn_dim": 128,
            "freq_dim": 256, "in_dim": 36, "model_type": "i2v", "num_heads": 2, "num_layers": 2, "out_dim": 16,
            "text_len": 32, "text_dim": 32, "intermediate_dim": 16, "output_dim": 32,
            "audio_layers": 3, "audio_channels": 32}  # the tiny wav2vec2 below: 3 layers x 32
FULL_DIT = {"dim": 5120, "eps": 1e-06, "ffn_dim": 13824, "freq_dim": 256, "in_dim": 36, "model_type": "i2v",
            "num_heads": 40, "num_layers": 40, "out_dim": 16, "text_len": 512}
FIXTURES = Path(__file__).parent / "fixtures" / "conformance" / "public"
TOKENIZER_WORDS = ("a person is talking the man woman bright tones overexposed static blurred details subtitles "
                   "style works paintings images overall gray worst quality low jpeg compression residue ugly "
                   "incomplete extra fingers poorly drawn hands faces deformed disfigured misshapen limbs fused "
                   "still picture messy background three legs many people in walking backwards , .").split()


def official_dit_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every key of the official InfiniteTalk ``WanModel`` state dict and its shape (spec §3.10)."""
    dim, ffn, layers = config["dim"], config["ffn_dim"], config["num_layers"]
    text_dim, freq, out_dim = config.get("text_dim", 4096), config.get("freq_dim", 256), config.get("out_dim", 16)
    inter, audio_dim = config.get("intermediate_dim", 512), config.get("output_dim", 768)
    tokens, window, scale = config.get("context_tokens", 32), config.get("audio_window", 5), config.get("vae_scale", 4)
    features = config.get("audio_layers", 12) * config.get("audio_channels", 768)
    shapes = {"patch_embedding.weight": (dim, config.get("in_dim", 36), 1, 2, 2), "patch_embedding.bias": (dim,),
              "text_embedding.0.weight": (dim, text_dim), "text_embedding.0.bias": (dim,),
              "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
              "time_embedding.0.weight": (dim, freq), "time_embedding.0.bias": (dim,),
              "time_embedding.2.weight": (dim, dim), "time_embedding.2.bias": (dim,),
              "time_projection.1.weight": (6 * dim, dim), "time_projection.1.bias": (6 * dim,)}
    for i in range(layers):
        b = f"blocks.{i}."
        shapes[b + "modulation"] = (1, 6, dim)
        for attn, names in (("self_attn", "qkvo"), ("cross_attn", ("q", "k", "v", "o", "k_img", "v_img"))):
            for name in names:
                shapes[f"{b}{attn}.{name}.weight"] = (dim, dim)
                shapes[f"{b}{attn}.{name}.bias"] = (dim,)
        for norm in ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k",
                     "cross_attn.norm_k_img"):
            shapes[f"{b}{norm}.weight"] = (dim,)
        shapes.update({b + "norm3.weight": (dim,), b + "norm3.bias": (dim,),
                       b + "ffn.0.weight": (ffn, dim), b + "ffn.0.bias": (ffn,),
                       b + "ffn.2.weight": (dim, ffn), b + "ffn.2.bias": (dim,),
                       b + "audio_cross_attn.q_linear.weight": (dim, dim), b + "audio_cross_attn.q_linear.bias": (dim,),
                       b + "audio_cross_attn.kv_linear.weight": (2 * dim, audio_dim),
                       b + "audio_cross_attn.kv_linear.bias": (2 * dim,),
                       b + "audio_cross_attn.proj.weight": (dim, dim), b + "audio_cross_attn.proj.bias": (dim,),
                       b + "norm_x.weight": (dim,), b + "norm_x.bias": (dim,)})
    shapes.update({"head.modulation": (1, 2, dim), "head.head.weight": (4 * out_dim, dim), "head.head.bias": (4 * out_dim,),
                   "img_emb.proj.0.weight": (1280,), "img_emb.proj.0.bias": (1280,),
                   "img_emb.proj.1.weight": (1280, 1280), "img_emb.proj.1.bias": (1280,),
                   "img_emb.proj.3.weight": (dim, 1280), "img_emb.proj.3.bias": (dim,),
                   "img_emb.proj.4.weight": (dim,), "img_emb.proj.4.bias": (dim,),
                   "audio_proj.proj1.weight": (inter, window * features), "audio_proj.proj1.bias": (inter,),
                   "audio_proj.proj1_vf.weight": (inter, (window + scale - 1) * features),
                   "audio_proj.proj1_vf.bias": (inter,),
                   "audio_proj.proj2.weight": (inter, inter), "audio_proj.proj2.bias": (inter,),
                   "audio_proj.proj3.weight": (tokens * audio_dim, inter), "audio_proj.proj3.bias": (tokens * audio_dim,),
                   "audio_proj.norm.weight": (audio_dim,), "audio_proj.norm.bias": (audio_dim,)})
    return shapes


def random_tensors(shapes: dict[str, tuple[int, ...]], seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        name = key.rsplit(".", 1)[-1]
        if "norm" in key and name in ("weight", "gamma") or name == "gamma":
            value = 1 + 0.1 * noise
        elif name in ("bias", "diff_b") or len(shape) == 1:
            value = 0.05 * noise
        elif "modulation" in key or "embedding" in key and len(shape) == 3:
            value = 0.1 * noise
        else:
            value = noise / math.sqrt(math.prod(shape[1:]))
        out[key] = value.to(dtype).contiguous()
    return out


def clip_shapes(dim: int = 1280, layers: int = 2, mlp: int = 64, patch: int = 14, tokens: int = 257):
    shapes = {"visual.patch_embedding.weight": (dim, 3, patch, patch), "visual.cls_embedding": (1, 1, dim),
              "visual.pos_embedding": (1, tokens, dim), "visual.pre_norm.weight": (dim,), "visual.pre_norm.bias": (dim,),
              "visual.post_norm.weight": (dim,), "visual.post_norm.bias": (dim,), "visual.head": (dim, 32),
              "textual.token_embedding.weight": (10, 8), "log_scale": ()}
    for i in range(layers):
        t = f"visual.transformer.{i}."
        shapes.update({t + "norm1.weight": (dim,), t + "norm1.bias": (dim,), t + "norm2.weight": (dim,),
                       t + "norm2.bias": (dim,), t + "attn.to_qkv.weight": (3 * dim, dim), t + "attn.to_qkv.bias": (3 * dim,),
                       t + "attn.proj.weight": (dim, dim), t + "attn.proj.bias": (dim,), t + "mlp.0.weight": (mlp, dim),
                       t + "mlp.0.bias": (mlp,), t + "mlp.2.weight": (dim, mlp), t + "mlp.2.bias": (dim,)})
    return shapes


def umt5_shapes(vocab: int, dim: int, heads: int = 4, dim_attn: int = 32, ffn: int = 64, layers: int = 2):
    shapes = {"token_embedding.weight": (vocab, dim), "norm.weight": (dim,)}
    for i in range(layers):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (dim,), b + "norm2.weight": (dim,), b + "attn.q.weight": (dim_attn, dim),
                       b + "attn.k.weight": (dim_attn, dim), b + "attn.v.weight": (dim_attn, dim),
                       b + "attn.o.weight": (dim, dim_attn), b + "ffn.gate.0.weight": (ffn, dim),
                       b + "ffn.fc1.weight": (ffn, dim), b + "ffn.fc2.weight": (dim, ffn),
                       b + "pos_embedding.embedding.weight": (32, heads)})
    return shapes


def write_tokenizer(folder: Path) -> int:
    """A tiny Unigram tokenizer saved as tokenizer.json + tokenizer_config.json (T5 style); returns its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + w, -1.0) for w in TOKENIZER_WORDS]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,▁"]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
         "extra_ids": 0, "model_max_length": 512}))
    return len(vocab) + 100  # room for sentinel ids the tokenizer class may add


def write_wav2vec2(folder: Path, seed: int = 5) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)  # transformers initialises from the global generator; tests run in their own process
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)


def write_weights(root: Path, speakers: tuple[str, ...] = ("single",), shards: int = 2) -> Path:
    """The whole official layout under ``root`` with tiny random weights; returns ``root``."""
    from model.infinitetalk.convert import AUDIO_KEY

    wan = root / "Wan2.1-I2V-14B-480P"
    wan.mkdir(parents=True, exist_ok=True)
    (wan / "config.json").write_text(json.dumps(TINY_DIT))
    dit = random_tensors(official_dit_shapes(TINY_DIT), seed=1)
    base = {k: v for k, v in dit.items() if not AUDIO_KEY.match(k)}
    keys = sorted(base)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: base[k] for k in keys[i::shards]}
        save_file(part, wan / name)
        weight_map.update({k: name for k in part})
    (wan / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for index, kind in enumerate(speakers):
        folder = root / "InfiniteTalk" / kind
        folder.mkdir(parents=True, exist_ok=True)
        audio = random_tensors({k: tuple(v.shape) for k, v in dit.items() if AUDIO_KEY.match(k)}, seed=2 + index)
        save_file(audio, folder / "infinitetalk.safetensors")
    vae_shapes = {k: tuple(v.shape) for k, v in load_file(FIXTURES / "pipeline" / "vae.safetensors").items()}
    torch.save(random_tensors(vae_shapes, seed=3), wan / "Wan2.1_VAE.pth")
    torch.save(random_tensors(clip_shapes(), seed=4, dtype=torch.float16),
               wan / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    vocab = write_tokenizer(wan / "google" / "umt5-xxl")
    torch.save(random_tensors(umt5_shapes(vocab, TINY_DIT["text_dim"]), seed=6, dtype=torch.bfloat16),
               wan / "models_t5_umt5-xxl-enc-bf16.pth")
    write_wav2vec2(root / "chinese-wav2vec2-base")
    return root


def copy_weights(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
