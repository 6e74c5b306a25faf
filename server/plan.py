"""``livedub plan``: the capacity planner on the command line (model/planner.py does the arithmetic).

It also says what a live session needs: the smallest latency budget (``serve --delay``) in which each
tier's chunk fits, from the session's own timing (streaming/session.py): a chunk can start once its
81-frame window and the generator's lookahead are captured, and its 72 new frames are due ``delay``
after they were spoken, so the generation time left is ``delay - 2.88 s - lookahead - margins``.
"""

from __future__ import annotations

import argparse
import json

from model.base import FPS
from streaming.errors import InputError

ASSUMPTIONS = (
    "DiT: sequence parallel (Ulysses) over the GPUs: token-wise work and attention split N ways, the "
    "context K/V and embeddings on every GPU, 4 all-to-alls per block not overlapped with compute",
    "VAE decode: on one GPU after the last step, wholly on the critical path (the next chunk's context "
    "frames are the last decoded frames)",
    "VAE encode of the 9 context frames: on the critical path; wav2vec2, CLIP and the reference-window "
    "encode: overlapped with the previous chunk's DiT (they add only what exceeds it)",
    "memory: every GPU holds the whole DiT; rank 0 also the VAE and the encoders",
)


def add_plan(commands) -> None:
    from model.gpus import GPUS
    from server.cli import _positive_int, _size

    parser = commands.add_parser(
        "plan", help="predict an InfiniteTalk chunk's FLOPs, time and memory on given GPUs",
        description="The capacity planner: FLOPs per stage of one chunk, the predicted chunk time and "
                    "real-time factor (= 2.88 s of new video per chunk / chunk time; >= 1 is real time), "
                    "memory per GPU, and which live tiers are real time on that hardware.")
    parser.add_argument("--size", type=_size, default=(480, 480), metavar="WxH", help="output size (default 480x480)")
    parser.add_argument("--frames", type=_positive_int, default=81, help="frames per chunk window, 4k+1 (default 81)")
    parser.add_argument("--steps", type=_positive_int, default=4, help="sampler steps (default 4)")
    parser.add_argument("--passes", type=int, choices=(1, 2, 3), default=1,
                        help="DiT passes per step: 1 CFG-free, 2 audio CFG, 3 text + audio CFG (default 1)")
    parser.add_argument("--gpu", default="h100", metavar="KIND", help=f"GPU kind: {', '.join(GPUS)} (default h100)")
    parser.add_argument("--gpus", type=_positive_int, default=1, metavar="N", help="GPUs, sequence parallel (default 1)")
    parser.add_argument("--dtype", choices=("bf16", "fp8"), default="bf16", help="DiT matmul precision (default bf16)")
    parser.add_argument("--calibration", metavar="PATH", help="calibration JSON from the GPU benchmark (default: "
                                                             "$LIVEDUB_CALIBRATION, else ~/.cache/livedub/calibration.json)")
    parser.add_argument("--delay", type=float, default=None, metavar="SECONDS",
                        help="latency budget to check the tiers against (default: the server's, 5.5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    if not isinstance(args.size, tuple):  # a bucket, or an output size (the generator works on a region)
        raise InputError(f"bad size {args.size}: the planner needs the WxH the generator works at, e.g. 480x480 "
                         "(with --size source it works on a region: 640x640 for face, 576x704 for upper_body)")
    height, width = args.size
    try:
        report = make_report(width, height, args.frames, args.steps, args.passes, args.gpu, args.gpus, args.dtype,
                             args.calibration, args.delay)
    except InputError:
        raise
    except ValueError as exc:  # the planner's one-line messages about bad input
        raise InputError(str(exc)) from None
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def min_delay(chunk_seconds: float, frames: int, context: int, lookahead: float) -> float:
    """The smallest ``serve --delay`` in which a chunk of this cost fits with the scheduler's safety factor."""
    from streaming.scheduler import SAFETY
    from streaming.session import SessionSettings

    s = SessionSettings()
    return chunk_seconds * SAFETY + (frames - context) / FPS + lookahead + s.capture_grace + s.playout_margin + s.lead


def make_report(width: int, height: int, frames: int, steps: int, passes: int, gpu_kind: str, gpus: int,
                dtype: str, calibration_path: str | None = None, delay: float | None = None) -> dict:
    from model.calibration import read_calibration
    from model.gpus import gpu
    from model.infinitetalk.live_tiers import live_ladder, scaled_size
    from model.planner import CONTEXT_FRAMES, Hardware, choose_efficiency, chunk_flops, chunk_time, memory_per_gpu
    from model.simulated import SimulatedOptions
    from server.config import ServerConfig

    spec = gpu(gpu_kind)
    hardware = Hardware(spec, gpus, dtype)
    calibration = read_calibration(calibration_path)
    efficiency = choose_efficiency(calibration, spec)
    stages = chunk_flops(width, height, frames)
    timing = chunk_time(hardware, efficiency, width, height, steps, passes, frames, stages=stages)
    memory = memory_per_gpu(hardware, width, height, frames)
    lookahead = SimulatedOptions().audio_lookahead  # the infinitetalk generator's default lookahead
    delay = ServerConfig().delay if delay is None else delay
    tiers = []
    for work in live_ladder():
        h, w = scaled_size((height, width), work.tier.scale)
        t = chunk_time(hardware, efficiency, w, h, work.steps, work.passes, frames)
        needed = min_delay(t.chunk_seconds, frames, CONTEXT_FRAMES, lookahead)
        tiers.append({"name": work.tier.name, "steps": work.steps, "passes": work.passes, "scale": work.tier.scale,
                      "width": w, "height": h, "chunk_seconds": round(t.chunk_seconds, 4),
                      "realtime_factor": round(t.realtime_factor, 4), "realtime": t.realtime,
                      "min_delay": round(needed, 2), "fits_delay": t.realtime and needed <= delay})
    return {
        "hardware": {"gpu": spec.kind, "label": spec.label, "count": gpus, "dtype": dtype, "link": spec.link,
                     "peak_flops": hardware.gpu.peak(dtype), "bf16_peak_flops": spec.bf16_flops,
                     "interconnect_bytes_per_s": spec.interconnect},
        "width": width, "height": height, "frames": frames, "steps": steps, "passes": passes,
        "dit_flops_per_forward": stages.dit.total,
        "flops": {"dit_forward": stages.dit.total, "dit_linear": stages.dit.linear,
                  "dit_attention": stages.dit.attention, "dit_replicated": stages.dit.replicated,
                  "dit_tokens": stages.dit.tokens, "audio_proj": stages.audio_proj, "vae_decode": stages.vae_decode,
                  "vae_encode": stages.vae_encode, "vae_encode_context": stages.vae_encode_context,
                  "clip": stages.clip, "wav2vec2": stages.wav2vec2},
        "efficiency": dataclasses_dict(efficiency),
        "seconds": {"dit_forward": round(timing.dit_forward_seconds, 4),
                    "all_to_all_per_forward": round(timing.all_to_all_seconds, 4),
                    "dit": round(timing.dit_seconds, 4), "vae_decode": round(timing.vae_decode_seconds, 4),
                    "vae_encode_context": round(timing.vae_encode_context_seconds, 4),
                    "encoders_overlapped": round(timing.encoders_seconds, 4)},
        "chunk_seconds": round(timing.chunk_seconds, 4),
        "new_video_seconds": timing.new_seconds,
        "realtime_factor": round(timing.realtime_factor, 4),
        "realtime": timing.realtime,
        "realtime_factor_means": f"{timing.new_seconds:g} s of new video per chunk / chunk_seconds; >= 1 is real time",
        "min_delay": round(min_delay(timing.chunk_seconds, frames, CONTEXT_FRAMES, lookahead), 2),
        "delay": delay,
        "memory_per_gpu": {"weights": memory.weights, "activations": memory.activations, "vae": memory.vae,
                           "encoders": memory.encoders, "total": memory.total, "gpu_memory": spec.memory_bytes,
                           "fits": memory.total <= spec.memory_bytes},
        "tiers": tiers,
        "assumptions": list(ASSUMPTIONS),
    }


def dataclasses_dict(value) -> dict:
    import dataclasses

    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dataclasses.asdict(value).items()}


def _tflops(flops: float) -> str:
    return f"{flops / 1e12:,.1f} TFLOP"


def _gb(size: float) -> str:
    return f"{size / 1e9:.1f} GB"


def format_report(r: dict) -> str:
    hw, f, s, e, m = r["hardware"], r["flops"], r["seconds"], r["efficiency"], r["memory_per_gpu"]
    lines = [
        f"livedub plan: {hw['count']} x {hw['label']} ({hw['dtype']}, {hw['link']}), {r['width']}x{r['height']}, "
        f"{r['frames']}-frame chunks, {r['steps']} steps x {r['passes']} pass{'es' * (r['passes'] > 1)}",
        "",
        "FLOPs of one chunk (2 x multiply-accumulates of every matmul, convolution and attention product):",
        f"  DiT, per forward (one pass)  {_tflops(f['dit_forward']):>18}  ({f['dit_tokens']} tokens; "
        f"linear {_tflops(f['dit_linear'])}, attention {_tflops(f['dit_attention'])}, "
        f"context {_tflops(f['dit_replicated'])})",
        f"  VAE decode                   {_tflops(f['vae_decode']):>18}",
        f"  VAE encode (reference window){_tflops(f['vae_encode']):>18}",
        f"  VAE encode (context frames)  {_tflops(f['vae_encode_context']):>18}",
        f"  CLIP                         {_tflops(f['clip']):>18}",
        f"  wav2vec2 (12.2 s window)     {_tflops(f['wav2vec2']):>18}",
        "",
        f"efficiency: DiT {e['dit']:.2f}, VAE decode {e['vae_decode']:.2f}, VAE encode {e['vae_encode']:.2f}, "
        f"CLIP {e['clip']:.2f}, wav2vec2 {e['wav2vec2']:.2f}  [{e['source']}]",
        f"time: DiT forward {s['dit_forward']:.3f} s (all-to-all {s['all_to_all_per_forward']:.4f} s) x "
        f"{r['steps'] * r['passes']} = {s['dit']:.2f} s; VAE decode {s['vae_decode']:.2f} s; context encode "
        f"{s['vae_encode_context']:.3f} s; encoders {s['encoders_overlapped']:.2f} s (overlapped)",
        f"chunk: {r['chunk_seconds']:.2f} s -> real-time factor {r['realtime_factor']:.2f} "
        f"({r['realtime_factor_means']}): {'REAL TIME' if r['realtime'] else 'not real time'}; "
        f"needs serve --delay >= {r['min_delay']:.1f} s",
        f"memory per GPU (estimate): {_gb(m['total'])} of {_gb(m['gpu_memory'])} (DiT weights {_gb(m['weights'])}, "
        f"activations {_gb(m['activations'])}, VAE {_gb(m['vae'])}, encoders {_gb(m['encoders'])})"
        + ("" if m["fits"] else "  DOES NOT FIT"),
        "",
        f"live tiers of the infinitetalk generator on this hardware (delay {r['delay']:g} s):",
        f"  {'tier':<12} {'steps':>5} {'passes':>6} {'size':>9} {'chunk s':>8} {'RTF':>6}  real time  min delay",
    ]
    for t in r["tiers"]:
        verdict = "yes" if t["realtime"] else "no"
        if t["realtime"]:
            verdict += ", fits" if t["fits_delay"] else ", not in delay"
        lines.append(f"  {t['name']:<12} {t['steps']:>5} {t['passes']:>6} {t['width']:>4}x{t['height']:<4} "
                     f"{t['chunk_seconds']:>8.2f} {t['realtime_factor']:>6.2f}  {verdict:<18} {t['min_delay']:>5.1f} s")
    lines += ["", "assumptions:"] + [f"  - {a}" for a in r["assumptions"]]
    return "\n".join(lines)
