"""Conformance part C: VAE encode/decode, CLIP preprocessing + tower, the wav2vec2 feature path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from model.infinitetalk.clip import ClipImageEncoder, clip_pixel_values
from model.infinitetalk.conformance import Report, file_reference, read_json
from model.infinitetalk.loading import build_clip, build_vae
from model.infinitetalk.vae import WanVae

# README tolerances (max abs, fp32)
VAE_MU, VAE_DECODE = 1e-5, 1e-4
CLIP_PIXELS, CLIP_HIDDEN = 1e-5, 1e-4
W2V_VALUES, W2V_EMBEDDING = 1e-5, 1e-4


def vae_from_config(part_dir: Path, vae: dict) -> WanVae:
    config = dict(vae.get("config", {}))
    architecture = {"base_dim": config.get("dim"), "z_dim": config.get("z_dim"), "dim_mult": config.get("dim_mult"),
                    "num_res_blocks": config.get("num_res_blocks"), "attn_scales": config.get("attn_scales"),
                    "temperal_downsample": config.get("temperal_downsample"), "dropout": config.get("dropout"),
                    "latents_mean": vae.get("mean"), "latents_std": vae.get("std")}
    architecture = {k: v for k, v in architecture.items() if v is not None}
    return WanVae(build_vae(load_file(file_reference(part_dir, vae["weights"])), **architecture))


def clip_from_config(part_dir: Path, clip: dict) -> ClipImageEncoder:
    weights = {k: v.float() for k, v in load_file(file_reference(part_dir, clip["weights"])).items()}
    config = clip.get("config", {})
    return ClipImageEncoder(build_clip(weights, heads=config.get("num_heads", 16), layers=config.get("num_layers")))


def run(part_dir: Path, label: str, report: Report) -> None:
    config = read_json(part_dir / "config.json")
    if "vae" in config:
        check = load_file(part_dir / "vae_check.safetensors")
        vae = vae_from_config(part_dir, config["vae"])
        mu_raw = vae.encode_raw(check["input"])[0]
        report.compare(f"{label}/vae/mu_raw", mu_raw, check["mu_raw"], VAE_MU)
        report.compare(f"{label}/vae/mu_normalized", vae.normalize(mu_raw[None])[0], check["mu_normalized"], VAE_MU)
        latents = check["mu_normalized"][None]
        report.compare(f"{label}/vae/decoded", vae.decode(latents)[0], check["decoded"], VAE_DECODE)
        if "decoded_unclamped" in check:
            report.compare(f"{label}/vae/decoded_unclamped", vae.decode(latents, clamp=False)[0],
                           check["decoded_unclamped"], VAE_DECODE)
    if "clip" in config:
        check = load_file(part_dir / "clip_check.safetensors")
        encoder = clip_from_config(part_dir, config["clip"])
        pixels = clip_pixel_values(check["input_frame"])
        report.compare(f"{label}/clip/pixel_values", pixels, check["pixel_values"], CLIP_PIXELS)
        hidden = encoder.model(pixel_values=check["pixel_values"], output_hidden_states=True).hidden_states
        if "embeddings" in check:
            report.compare(f"{label}/clip/embeddings", hidden[0], check["embeddings"], CLIP_HIDDEN)
        for name in sorted(k for k in check if k.startswith("block")):
            index = int(name[len("block"):])
            if index + 1 < len(hidden):
                report.compare(f"{label}/clip/{name}", hidden[index + 1], check[name], CLIP_HIDDEN)
        report.compare(f"{label}/clip/output", encoder(check["input_frame"]), check["output"], CLIP_HIDDEN)
    if "wav2vec2" in config:
        run_wav2vec2(part_dir, label, config["wav2vec2"], report)


def run_wav2vec2(part_dir: Path, label: str, config: dict, report: Report) -> None:
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from model.infinitetalk.audio_features import Wav2VecEncoder
    from model.loudness import normalize_loudness

    model_dir = file_reference(part_dir, config.get("model_dir", "wav2vec2/"))
    encoder = Wav2VecEncoder(Wav2Vec2Model.from_pretrained(model_dir, local_files_only=True),
                             Wav2Vec2FeatureExtractor.from_pretrained(model_dir, local_files_only=True))
    check = load_file(part_dir / "wav2vec2_check.safetensors")
    if "waveform" in check and "waveform_loudnorm" in check:
        loud = normalize_loudness(check["waveform"].numpy())
        report.compare(f"{label}/wav2vec2/waveform_loudnorm", torch.from_numpy(np.asarray(loud)),
                       check["waveform_loudnorm"], W2V_VALUES)
    samples = check["waveform_loudnorm"].numpy()
    report.compare(f"{label}/wav2vec2/input_values", encoder.input_values(samples), check["input_values"], W2V_VALUES)
    features = encoder.cnn_features(samples)
    if "extract_features_50fps" in check:
        report.compare(f"{label}/wav2vec2/extract_features_50fps", features, check["extract_features_50fps"],
                       W2V_EMBEDDING)
    if "extract_features_25fps" in check:
        frames = check["extract_features_25fps"].shape[1]
        resampled = torch.nn.functional.interpolate(features.transpose(1, 2), size=frames, mode="linear",
                                                    align_corners=True).transpose(1, 2)
        report.compare(f"{label}/wav2vec2/extract_features_25fps", resampled, check["extract_features_25fps"],
                       W2V_EMBEDDING)
    report.compare(f"{label}/wav2vec2/embedding", encoder.embed(samples), check["embedding"], W2V_EMBEDDING)
