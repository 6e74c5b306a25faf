"""The critical path of an InfiniteTalk chunk on the CPU, and how far the ``motion_source=latents``
deviation takes the streaming loop from the official one.

On the public conformance set's pipeline (the official loop's settings: 17-frame chunks, 5 context
frames, 3 steps with 3 guidance passes, colour correction; tiny random weights, 64x64):

1. stage shares of one chunk: what the next chunk's preparation takes off the critical path (wav2vec2
   is not part of this set: its features are given), and what stays on it (motion encode, DiT, decode);
2. the deviation: chunk k+1's motion latents taken from chunk k's last generated latents instead of the
   VAE encoding of its decoded, colour-corrected last frames. Reported: the motion latents' relative
   difference, and the final video's distance from the official loop's, beside the distance between two
   official runs that differ only in their seed (the scale of "another sample").

Random weights make the picture noise: the distances say how much the loop changes, not how it looks.

    python bench/bench_infinitetalk_critical_path.py
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from model.infinitetalk.conformance_pipeline import load_fixture, load_pipeline, official_loop  # noqa: E402
from model.infinitetalk.generator import latent_count  # noqa: E402
from model.infinitetalk.pipeline import ChunkConditions, ChunkPipeline  # noqa: E402

PIPELINE = ROOT / "tests" / "fixtures" / "conformance" / "public" / "pipeline"


class LatentMotionPipeline(ChunkPipeline):
    """The deviation: motion latents are the previous chunk's last x0 latents (no decode-then-encode)."""

    def __init__(self, base: ChunkPipeline) -> None:
        super().__init__(base.transformer, base.vae, base.clip, base.device)
        self.last: torch.Tensor | None = None
        self.motion_differences: list[float] = []

    def motion_latents(self, frames: torch.Tensor) -> torch.Tensor:
        official = super().motion_latents(frames)
        taken = self.last[:, :, -latent_count(frames.shape[2]):]
        self.motion_differences.append(((taken - official).norm() / official.norm()).item())
        return taken

    def denoise(self, *args, **kwargs) -> torch.Tensor:
        self.last = super().denoise(*args, **kwargs)
        return self.last


def distance(a: torch.Tensor, b: torch.Tensor) -> str:
    """Max and mean absolute difference in [-1, 1] units, and PSNR (peak-to-peak 2)."""
    diff = (a - b).abs()
    psnr = 10 * torch.log10(4 / diff.pow(2).mean()).item()
    return f"max {diff.max().item():.3f}, mean {diff.mean().item():.4f}, PSNR {psnr:.1f} dB"


def cpu_seconds(job, repeats: int = 3, setup=None) -> float:
    """Median process CPU seconds of ``job(setup())`` (``setup`` untimed), one torch thread: on a shared
    machine this measures the work, not the wait (and no thread spins while another computes)."""
    times = []
    for _ in range(repeats):
        argument = setup() if setup else None
        started = time.process_time()
        job(argument) if setup else job()
        times.append(time.process_time() - started)
    return statistics.median(times)


def stage_shares(pipeline: ChunkPipeline, fx) -> None:
    frames = fx.frame_num
    from model.infinitetalk.audio_features import window_index

    audio = fx.audio[0][window_index(0, frames, fx.audio[0].shape[0])][None]
    reference = fx.reference(0)
    inputs = ChunkConditions(reference, audio, fx.prompt, fx.negative, color_reference=reference[0, :, 0].permute(1, 2, 0),
                             color_strength=fx.color_strength)
    context = torch.rand(1, 3, fx.motion_frame, *fx.size) * 2 - 1
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    prepared = pipeline.prepare(inputs, fx.settings, generator())
    window = torch.cat([reference, reference.new_zeros(1, 3, frames - 1, *fx.size)], dim=2)
    motion = pipeline.motion_latents(context)
    latent = pipeline.denoise(pipeline.prepare(inputs, fx.settings, generator()), motion, fx.settings, False, inputs)
    off = {"CLIP of the reference": cpu_seconds(lambda: pipeline.clip(reference)),
           "VAE encode of [reference, zeros]": cpu_seconds(lambda: pipeline.vae.encode(window)),
           "audio tokens (audio projection)": cpu_seconds(lambda: pipeline.audio_tokens(audio)),
           "noise": cpu_seconds(lambda: torch.randn(prepared.latent.shape[1:], generator=generator()))}
    on = {"motion encode of the context frames": cpu_seconds(lambda: pipeline.motion_latents(context)),
          f"DiT: {fx.settings.steps} steps x {len(fx.settings.guidance.branches)} passes": cpu_seconds(
              lambda ready: pipeline.denoise(ready, motion, fx.settings, False, inputs),
              setup=lambda: pipeline.prepare(inputs, fx.settings, generator())),
          "decode + colour correction": cpu_seconds(
              lambda: pipeline.decode(latent, inputs.color_reference, fx.color_strength))}
    dit_key = next(k for k in on if k.startswith("DiT"))
    total = sum(off.values()) + sum(on.values())
    print(f"one chunk, {fx.size[1]}x{fx.size[0]}, {frames} frames, CPU seconds (process time, 1 thread, median of 3):")
    for title, stages in (("off the critical path (prepared beside the previous chunk)", off),
                          ("on the critical path (official motion)", on)):
        print(f"  {title}:")
        for name, seconds in stages.items():
            print(f"    {name:<40} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")
    critical = sum(on.values())
    print(f"  sequential chunk {total:.3f} s; critical path {critical:.3f} s ({100 * critical / total:.0f} %); "
          f"with motion_source=latents and the decode beside the next DiT: {on[dit_key]:.3f} s "
          f"({100 * on[dit_key] / total:.0f} %)")


def main() -> int:
    torch.set_num_threads(1)
    fx = load_fixture(PIPELINE)
    pipeline = load_pipeline(PIPELINE, fx.config)
    stage_shares(pipeline, fx)
    official = official_loop(pipeline, fx).video
    other_seed = official_loop(pipeline, dataclasses.replace(fx, seed=fx.seed + 1)).video
    deviation_pipeline = LatentMotionPipeline(pipeline)
    deviation = official_loop(deviation_pipeline, fx).video
    chunks = len(deviation_pipeline.motion_differences) + 1
    print(f"streaming loop, {chunks} chunks, {official.shape[1]} frames:")
    print("  motion latents taken vs re-encoded, relative L2 per chunk: "
          + ", ".join(f"{d:.3f}" for d in deviation_pipeline.motion_differences))
    print(f"  motion_source=latents vs official: {distance(deviation, official)}")
    print(f"  official seed {fx.seed + 1} vs official seed {fx.seed}: {distance(other_seed, official)}")
    first = official.shape[1] if chunks == 1 else fx.frame_num
    print(f"  first chunk (no motion from before) identical: {torch.equal(deviation[:, :first], official[:, :first])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
