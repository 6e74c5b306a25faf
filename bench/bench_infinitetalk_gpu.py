"""GPU benchmark of the full-size InfiniteTalk chunk: time, peak memory and real-time factor.

Builds the 14B DiT (18.9 B parameters, random weights: speed does not depend on the values), the
Wan2.1 VAE, the CLIP ViT-H/14 tower and a wav2vec2-base on CUDA, and runs whole chunks (81 frames at
480x480 by default, 9 context frames, colour correction on): wav2vec2 features, CLIP + VAE conditions,
the sampler, the streamed decode. Real-time factor = chunk time / 2.88 s (the 72 new frames a chunk
adds at 25 fps); below 1 keeps up with live speech.

    python bench/bench_infinitetalk_gpu.py                       # the issue's table, bf16 and fp8
    python bench/bench_infinitetalk_gpu.py --configs 4:1 --dtypes bf16 --attention flash
    python bench/bench_infinitetalk_gpu.py --smoke        # tiny sizes on the CPU: checks the script only
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

NEW_FRAME_SECONDS = 72 / 25
CONFIGS = {"40:cfg": (40, 5.0, 4.0), "8:1": (8, 1.0, 1.0), "4:1": (4, 1.0, 1.0), "8:audio": (8, 1.0, 2.0)}
FULL_14B = {"dim": 5120, "eps": 1e-06, "ffn_dim": 13824, "freq_dim": 256, "in_dim": 36, "model_type": "i2v",
            "num_heads": 40, "num_layers": 40, "out_dim": 16, "text_len": 512}
SMOKE = {**FULL_14B, "dim": 64, "ffn_dim": 128, "num_heads": 2, "num_layers": 2, "intermediate_dim": 16,
         "output_dim": 32, "audio_layers": 1}


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """In-place random values of a sensible scale (matrices N(0, 1/fan_in), norms 1, biases 0)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0, 1 / math.sqrt(math.prod(param.shape[1:])), generator=generator)
            elif "norm" in name or name.endswith(("weight", "gamma")):
                param.fill_(1.0)
            else:
                param.zero_()


def build_pipeline(dtype: torch.dtype, fp8: bool, attention: str | None, compile: bool, smoke: bool = False):
    from diffusers import AutoencoderKLWan
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
    from transformers import CLIPVisionConfig, CLIPVisionModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from model.infinitetalk.acceleration import place_transformer
    from model.infinitetalk.audio_features import Wav2VecEncoder
    from model.infinitetalk.clip import ClipImageEncoder
    from model.infinitetalk.pipeline import ChunkPipeline
    from model.infinitetalk.transformer import InfiniteTalkTransformer3DModel, transformer_config_from_official
    from model.infinitetalk.vae import WanVae

    device = torch.device("cpu" if smoke else "cuda")
    with torch.device("meta"):
        config = transformer_config_from_official(SMOKE if smoke else FULL_14B)
        transformer = InfiniteTalkTransformer3DModel(**config)
        for name, param in transformer.named_parameters():  # bf16, with diffusers' fp32 islands
            keep = any(part in name.split(".") for part in transformer._keep_in_fp32_modules)
            param.data = param.data.to(torch.float32 if keep else dtype)
    transformer.to_empty(device=device)
    randomize_(transformer)
    config = transformer.config
    transformer.rope = WanRotaryPosEmbed(config.attention_head_dim, config.patch_size, config.rope_max_seq_len).to(device)
    transformer.eval().requires_grad_(False)
    place_transformer(transformer, device, fp8=fp8, attention=attention, compile=compile)
    vae = AutoencoderKLWan(base_dim=8 if smoke else 96).to(device).eval()
    randomize_(vae, 1)
    clip_config = CLIPVisionConfig(hidden_size=1280, intermediate_size=64 if smoke else 5120,
                                   num_hidden_layers=1 if smoke else 31, num_attention_heads=16, image_size=224,
                                   patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5)
    clip_dtype = torch.float32 if smoke else torch.float16
    clip = CLIPVisionModel(clip_config).to(device, clip_dtype).eval()
    wav2vec = Wav2Vec2Model(Wav2Vec2Config(num_hidden_layers=1) if smoke else Wav2Vec2Config()).to(device).eval()
    audio = Wav2VecEncoder(wav2vec, Wav2Vec2FeatureExtractor(do_normalize=True))
    return ChunkPipeline(transformer, WanVae(vae), ClipImageEncoder(clip, clip_dtype), device), audio


def run_chunk(pipeline, audio_encoder, settings, size: tuple[int, int], seed: int) -> float:
    from model.infinitetalk.audio_features import chunk_features
    from model.infinitetalk.pipeline import ChunkConditions

    rng = np.random.default_rng(seed)
    height, width = size
    device = pipeline.device
    speech = (rng.standard_normal(16000 * 12) * 0.1).astype(np.float32)  # 8 s context + window + 1 s lookahead
    synchronize(device)
    started = time.perf_counter()
    window = chunk_features(audio_encoder, speech, 72 * 640 - 8 * 16000, 72, 81, None)[None]
    reference = torch.rand(1, 3, 1, height, width, device=device) * 2 - 1
    conditions = ChunkConditions(reference=reference, audio=window,
                                 prompt=torch.randn(12, 4096), negative_prompt=torch.randn(126, 4096),
                                 motion_frames=torch.rand(1, 3, 9, height, width, device=device) * 2 - 1,
                                 color_reference=reference[0, :, 0].permute(1, 2, 0), color_strength=1.0)
    video = pipeline.generate(conditions, settings, torch.Generator(device=device).manual_seed(seed))
    frames = ((video[9:] + 1) / 2 * 255).clamp(0, 255).to(torch.uint8).cpu()
    synchronize(device)
    assert frames.shape[0] == 72
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["40:cfg", "8:1", "4:1"], choices=sorted(CONFIGS),
                        help="steps:guidance (40:cfg = 3 passes, text 5 / audio 4; 8:1 and 4:1 = CFG-free)")
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp8"], choices=["bf16", "fp8"])
    parser.add_argument("--size", default="480x480", help="WxH (default 480x480)")
    parser.add_argument("--chunks", type=int, default=2, help="timed chunks per setting, after one warm-up")
    parser.add_argument("--attention", default=None, help="diffusers attention backend (default: native SDPA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the repeated blocks")
    parser.add_argument("--batch-cfg", action="store_true", help="run the guidance passes as one batch")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, to check the script")
    args = parser.parse_args()
    if args.smoke:
        return smoke(args)
    if not torch.cuda.is_available():
        print("bench_infinitetalk_gpu: no CUDA device; this benchmark needs a GPU (the figures are GPU figures)",
              file=sys.stderr)
        return 2
    from model.infinitetalk.pipeline import SamplingSettings
    from model.infinitetalk.sampler import Guidance

    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; {width}x{height}, 81-frame chunks "
          f"(9 context), attention {args.attention or 'native'}, compile {args.compile}, batch_cfg {args.batch_cfg}")
    print(f"{'weights':>7} {'steps':>5} {'passes':>6} {'chunk s':>8} {'RTF':>6} {'peak GiB':>9}")
    for name in args.dtypes:
        torch.cuda.empty_cache()
        pipeline, audio = build_pipeline(torch.bfloat16, name == "fp8", args.attention, args.compile)
        for config in args.configs:
            steps, text, audio_scale = CONFIGS[config]
            settings = SamplingSettings(steps=steps, shift=7.0 if text != 1 else 2.0, guidance=Guidance(text, audio_scale),
                                        batch_branches=args.batch_cfg)
            run_chunk(pipeline, audio, settings, (height, width), 0)  # warm-up (and compile)
            torch.cuda.reset_peak_memory_stats()
            times = [run_chunk(pipeline, audio, settings, (height, width), i + 1) for i in range(args.chunks)]
            seconds = float(np.median(times))
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"{name:>7} {steps:5d} {len(settings.guidance.branches):6d} {seconds:8.2f} "
                  f"{seconds / NEW_FRAME_SECONDS:6.2f} {peak:9.1f}", flush=True)
        del pipeline, audio
    return 0


def smoke(args) -> int:
    """The same code path with tiny models on the CPU (no figures worth reporting)."""
    from model.infinitetalk.pipeline import SamplingSettings
    from model.infinitetalk.sampler import Guidance

    for name in args.dtypes:
        fp8 = name == "fp8"
        pipeline, audio = build_pipeline(torch.bfloat16, fp8, None, False, smoke=True)
        for config in args.configs:
            steps, text, audio_scale = CONFIGS[config]
            settings = SamplingSettings(steps=min(steps, 2), guidance=Guidance(text, audio_scale))
            seconds = run_chunk(pipeline, audio, settings, (64, 64), 0)
            print(f"smoke {name} {config}: {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
