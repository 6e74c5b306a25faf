"""GPU benchmark of the full-size InfiniteTalk chunk: per-stage times, the critical path, peak memory, the
real-time factor of each tier, and the planner's calibration file.

Builds the 14B DiT (18.9 B parameters, random weights: speed does not depend on the values), the Wan2.1
VAE, the CLIP ViT-H/14 tower and a wav2vec2-base on CUDA, and times one 81-frame chunk (9 context frames)
stage by stage: wav2vec2 features, CLIP, the VAE encoding of [reference, 80 zeros], the motion encode of
the 9 context frames, one DiT forward (one guidance pass), the DiT steps of each tier, the decode (+
colour correction). realtime_factor = 2.88 s (the 72 new frames of a chunk at 25 fps) / chunk seconds:
>= 1 keeps up with live speech. Three chunk times per tier:

- sequential: every stage one after the other (the loop without overlap);
- critical (official motion): motion encode + DiT steps + decode, the rest prepared beside the DiT;
- critical (motion_source=latents): the DiT steps alone, the decode beside the next chunk's DiT (a lower
  bound, reached when the decode runs on its own device, ``vae_device``).

It writes the planner's calibration (``--calibration``, default ``$LIVEDUB_CALIBRATION`` else
``~/.cache/livedub/calibration.json``) from the first bf16 or fp8-compute run.

    python bench/bench_infinitetalk_gpu.py                         # bf16 and fp8 compute, the tiers
    python bench/bench_infinitetalk_gpu.py --tiers 4:1 --dtypes bf16 --attention flash
    python bench/bench_infinitetalk_gpu.py --smoke --calibration /tmp/c.json   # tiny, CPU: checks the script
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch

NEW_FRAME_SECONDS = 72 / 25
FRAMES, CONTEXT = 81, 9
TIERS = {"40:cfg": (40, 5.0, 4.0), "8:audio": (8, 1.0, 2.0), "8:1": (8, 1.0, 1.0), "4:1": (4, 1.0, 1.0)}
DTYPES = {"bf16": "off", "fp8": "storage", "fp8-compute": "compute"}  # --dtypes name -> fp8 mode
CALIBRATION_DTYPE = {"bf16": "bf16", "fp8-compute": "fp8"}  # fp8 storage computes in bf16: not a calibration
FULL_14B = {"dim": 5120, "eps": 1e-06, "ffn_dim": 13824, "freq_dim": 256, "in_dim": 36, "model_type": "i2v",
            "num_heads": 40, "num_layers": 40, "out_dim": 16, "text_len": 512}
SMOKE = {**FULL_14B, "dim": 64, "ffn_dim": 128, "num_heads": 2, "num_layers": 2, "intermediate_dim": 16,
         "output_dim": 32, "audio_layers": 1}
STAGES = ("wav2vec2", "clip", "vae_encode", "audio_tokens", "motion_encode", "dit_forward", "vae_decode", "decode_color")


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


def build_pipeline(dtype: torch.dtype, fp8: str, attention: str | None, compile: bool, smoke: bool = False):
    from diffusers import AutoencoderKLWan
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
    from transformers import CLIPVisionConfig, CLIPVisionModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from model.infinitetalk.acceleration import place_transformer
    from model.infinitetalk.audio_features import Wav2VecEncoder
    from model.infinitetalk.clip import ClipImageEncoder
    from model.infinitetalk.fp8 import convert_to_fp8_compute
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
    # the CPU build runs _scaled_mm too: the smoke run converts directly (the option refuses the CPU)
    place_transformer(transformer, device, fp8="off" if smoke and fp8 == "compute" else fp8, attention=attention,
                      compile=compile)
    if smoke and fp8 == "compute":
        convert_to_fp8_compute(transformer)
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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, job, repeats: int, warmup: bool = True) -> tuple[float, object]:
    """Median seconds of ``repeats`` runs (after one warm-up unless told not to), and the last result."""
    result = job() if warmup else None
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        result = job()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


class ChunkInputs:
    """One chunk's inputs at ``size``: 12 s of audio (8 s context, the window, 1 s lookahead), a
    reference, 9 context frames, the text contexts."""

    def __init__(self, pipeline, size: tuple[int, int], frames: int, context: int, seed: int = 0) -> None:
        self.frames = frames
        rng = np.random.default_rng(seed)
        device = pipeline.device
        height, width = size
        self.speech = (rng.standard_normal(16000 * 12) * 0.1).astype(np.float32)
        self.reference = torch.rand(1, 3, 1, height, width, device=device) * 2 - 1
        self.context = torch.rand(1, 3, context, height, width, device=device) * 2 - 1
        self.prompt, self.negative = torch.randn(12, 4096), torch.randn(126, 4096)

    def features(self, audio_encoder) -> torch.Tensor:
        from model.infinitetalk.audio_features import chunk_features

        return chunk_features(audio_encoder, self.speech, 72 * 640 - 8 * 16000, 72, self.frames, None)[None]

    def conditions(self, audio_encoder):
        from model.infinitetalk.pipeline import ChunkConditions

        return ChunkConditions(reference=self.reference, audio=self.features(audio_encoder), prompt=self.prompt,
                               negative_prompt=self.negative, motion_frames=self.context,
                               color_reference=self.reference[0, :, 0].permute(1, 2, 0), color_strength=1.0)


def stage_times(pipeline, audio_encoder, inputs: ChunkInputs, repeats: int, warmup: bool = True) -> dict[str, float]:
    """Seconds of each stage of one chunk, each timed on its own."""
    from model.infinitetalk.pipeline import SamplingSettings

    device, vae = pipeline.device, pipeline.vae
    height, width = inputs.reference.shape[-2:]
    seconds = {}
    seconds["wav2vec2"], features = timed(device, lambda: inputs.features(audio_encoder), repeats, warmup)
    seconds["clip"], _ = timed(device, lambda: pipeline.clip(inputs.reference), repeats, warmup)
    window = torch.cat([inputs.reference, inputs.reference.new_zeros(1, 3, inputs.frames - 1, height, width)], dim=2)
    seconds["vae_encode"], _ = timed(device, lambda: vae.encode(window), repeats, warmup)
    seconds["audio_tokens"], _ = timed(device, lambda: pipeline.audio_tokens(features), repeats, warmup)
    seconds["motion_encode"], _ = timed(device, lambda: pipeline.motion_latents(inputs.context), repeats, warmup)
    prepared = pipeline.prepare(inputs.conditions(audio_encoder), SamplingSettings(steps=1),
                                torch.Generator(device=device).manual_seed(0))
    texts = {"cond": inputs.prompt, "null": inputs.negative}
    audio = {"cond": prepared.audio_tokens, "null": prepared.null_audio_tokens}
    seconds["dit_forward"], _ = timed(device, lambda: pipeline.predict(
        prepared.latent, prepared.timesteps[0], ("cond",), prepared.y, prepared.clip_tokens, texts, audio,
        prepared.masks), repeats, warmup)
    seconds["vae_decode"], _ = timed(device, lambda: vae.decode(prepared.latent), repeats, warmup)
    reference = inputs.reference[0, :, 0].permute(1, 2, 0)
    seconds["decode_color"], _ = timed(device, lambda: pipeline.decode(prepared.latent, reference, 1.0), repeats, warmup)
    return seconds


def tier_times(pipeline, audio_encoder, inputs: ChunkInputs, settings, stages: dict[str, float],
               repeats: int, warmup: bool = True) -> dict[str, float]:
    """DiT seconds per step (all guidance passes) of a tier, and its chunk time three ways (module doc)."""
    device = pipeline.device

    motion = pipeline.motion_latents(inputs.context)

    def denoise() -> float:
        prepared = pipeline.prepare(inputs.conditions(audio_encoder), settings, torch.Generator(device=device).manual_seed(1))
        synchronize(device)
        started = time.perf_counter()
        pipeline.denoise(prepared, motion, settings, False, inputs.conditions(audio_encoder))
        synchronize(device)
        return time.perf_counter() - started

    if warmup:
        denoise()  # warm-up (and compile)
    dit = statistics.median(denoise() for _ in range(repeats))
    prepare = stages["wav2vec2"] + stages["clip"] + stages["vae_encode"] + stages["audio_tokens"]
    critical = stages["motion_encode"] + dit + stages["decode_color"]
    return {"dit_step": dit / settings.steps, "dit": dit, "sequential": prepare + critical, "critical": critical,
            "critical_latents": max(dit, stages["decode_color"])}


def peak_gib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device.type == "cuda" else "n/a"


def run(args, smoke: bool) -> int:
    from model.calibration import write_calibration
    from model.infinitetalk.pipeline import SamplingSettings
    from model.infinitetalk.sampler import Guidance

    width, height = (int(v) for v in args.size.lower().split("x"))
    size = (height, width)
    gpu_name = "cpu (smoke: tiny random model)" if smoke else torch.cuda.get_device_name()
    calibration = None
    print(f"device: {gpu_name}; torch {torch.__version__}; {width}x{height}, {args.frames}-frame chunks ({args.context} "
          f"context), attention {args.attention or 'native'}, compile {args.compile}, batch_cfg {args.batch_cfg}")
    for name in args.dtypes:
        if not smoke:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        pipeline, audio = build_pipeline(torch.bfloat16, DTYPES[name], args.attention, args.compile, smoke)
        inputs = ChunkInputs(pipeline, size, args.frames, args.context)
        stages = stage_times(pipeline, audio, inputs, args.repeats, not smoke)
        print(f"[{name}] stage seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()), flush=True)
        print(f"{'weights':>11} {'tier':>7} {'steps':>5} {'passes':>6} {'DiT/step':>8} {'seq s':>7} {'RTF':>5} "
              f"{'crit s':>7} {'RTF':>5} {'latent s':>8} {'RTF':>5} {'peak GiB':>8}")
        for tier in args.tiers:
            steps, text, audio_scale = TIERS[tier]
            steps = min(steps, 2) if smoke else steps
            settings = SamplingSettings(steps=steps, shift=7.0 if text != 1 else 2.0,
                                        guidance=Guidance(text, audio_scale), batch_branches=args.batch_cfg)
            t = tier_times(pipeline, audio, inputs, settings, stages, args.repeats, not smoke)
            rtf = {k: NEW_FRAME_SECONDS / t[k] for k in ("sequential", "critical", "critical_latents")}
            print(f"{name:>11} {tier:>7} {steps:5d} {len(settings.guidance.branches):6d} {t['dit_step']:8.3f} "
                  f"{t['sequential']:7.2f} {rtf['sequential']:5.2f} {t['critical']:7.2f} {rtf['critical']:5.2f} "
                  f"{t['critical_latents']:8.2f} {rtf['critical_latents']:5.2f} {peak_gib(pipeline.device):>8}",
                  flush=True)
        if calibration is None and name in CALIBRATION_DTYPE and (args.calibration or not smoke):
            # model.calibration: the planner's own writer (schema version 1; size as width x height)
            calibration = write_calibration(args.calibration, gpu_name, CALIBRATION_DTYPE[name], (width, height),
                                            args.frames, stages)
            print(f"calibration ({CALIBRATION_DTYPE[name]}) written to {calibration}")
        del pipeline, audio
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", "--configs", nargs="+", default=["40:cfg", "8:audio", "4:1"], choices=list(TIERS),
                        help="steps:guidance (40:cfg = 3 passes, text 5 / audio 4; 8:audio = 2 passes, audio 2; "
                             "8:1 and 4:1 = CFG-free, 1 pass)")
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp8-compute"], choices=list(DTYPES),
                        help="bf16; fp8 = fp8 storage (bf16 compute); fp8-compute = fp8 tensor cores (CC 8.9+)")
    parser.add_argument("--size", default="480x480", help="WxH (default 480x480)")
    parser.add_argument("--frames", type=int, default=FRAMES, help="frames per chunk (default 81)")
    parser.add_argument("--context", type=int, default=CONTEXT, help="context frames (default 9)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measure, after one warm-up")
    parser.add_argument("--attention", default=None, help="diffusers attention backend (default: native SDPA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the repeated blocks")
    parser.add_argument("--batch-cfg", action="store_true", help="run the guidance passes as one batch")
    parser.add_argument("--calibration", default=None,
                        help="calibration file to write (default $LIVEDUB_CALIBRATION, else "
                             "~/.cache/livedub/calibration.json; --smoke writes only to a path given here)")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, to check the script")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.repeats = ("64x64" if args.size == "480x480" else args.size), 1
        args.frames, args.context = (17, 5) if args.frames == FRAMES else (args.frames, args.context)
        return run(args, smoke=True)
    if not torch.cuda.is_available():
        print("bench_infinitetalk_gpu: no CUDA device; this benchmark needs a GPU (the figures are GPU figures)",
              file=sys.stderr)
        return 2
    return run(args, smoke=False)


if __name__ == "__main__":
    sys.exit(main())
