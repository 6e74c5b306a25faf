"""The ``infinitetalk`` generator's live tier ladder, and the planner's prior cost of each tier.

Best first (the scheduler takes the first that fits the time left before the chunk's slot):

- ``full``: the configured sampler (default 40 steps, text + audio CFG: 3 passes a step);
- ``steps8``: 8 steps, audio CFG only (text scale 1: 2 passes a step), the LoRA-distilled setting the
  official README gives;
- ``steps4``: 4 steps, CFG-free (1 pass): the step- and CFG-distilled setting (lightx2v);
- ``steps4_half``: the same at half the output size (upscaled back): the DiT's token count drops 4x and
  its attention 16x, the VAE decode 4x;
- ``draft``: 2 steps at half size, the last rung before the session's fallback: blurrier, but it keeps
  one H100 live at the default 5.5 s budget (see ``livedub plan``).

A tier not cheaper than the one above it (e.g. ``steps8`` when the configured sampler already has 4
steps) is left out. ``PriorCosts`` predicts each tier's chunk time on the generator's hardware; the live
scheduler uses it until it has measured the tier (streaming/scheduler.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math

from model.base import Tier
from model.gpus import GpuSpec, match_gpu_name
from model.planner import CONTEXT_FRAMES, Efficiency, Hardware, choose_efficiency, chunk_time

LIVE_TIERS: tuple[Tier, ...] = (
    Tier("full"),
    Tier("steps8", steps=8, text_guidance=1.0),
    Tier("steps4", steps=4, text_guidance=1.0, audio_guidance=1.0),
    Tier("steps4_half", steps=4, text_guidance=1.0, audio_guidance=1.0, scale=0.5),
    Tier("draft", steps=2, text_guidance=1.0, audio_guidance=1.0, scale=0.5),
)


def guidance_passes(text_scale: float, audio_scale: float) -> int:
    """DiT passes per step, as the sampler's ``Guidance.branches``: 3 with text CFG, 2 with audio CFG
    only (text scale 1), 1 when both scales are 1."""
    if math.isclose(text_scale, 1.0):
        return 1 if math.isclose(audio_scale, 1.0) else 2
    return 3


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """Tier.scale: render at that fraction of the output size (multiples of 16, at least 64 px)."""
    if scale >= 1.0:
        return tuple(size)
    return tuple(min(side, max(64, int(round(side * scale / 16)) * 16)) for side in size)


@dataclasses.dataclass(frozen=True)
class TierWork:
    """What a tier runs: sampler steps, guidance passes per step, and its render scale."""

    tier: Tier
    steps: int
    passes: int

    @property
    def forwards(self) -> float:
        """DiT work relative to one full-size forward (tokens ~ area; a rough ordering key)."""
        return self.steps * self.passes * self.tier.scale ** 2


def tier_work(tier: Tier, steps: int, text_guidance: float, audio_guidance: float) -> TierWork:
    """A tier resolved against the configured sampler (its ``None`` fields take the configured values)."""
    return TierWork(tier, tier.steps if tier.steps is not None else steps,
                    guidance_passes(text_guidance if tier.text_guidance is None else tier.text_guidance,
                                    audio_guidance if tier.audio_guidance is None else tier.audio_guidance))


def live_ladder(steps: int = 40, text_guidance: float = 5.0, audio_guidance: float = 4.0,
                tiers: tuple[Tier, ...] = LIVE_TIERS) -> tuple[TierWork, ...]:
    """The ladder resolved against the configured sampler; tiers not cheaper than the one above dropped."""
    ladder: list[TierWork] = []
    for tier in tiers:
        work = tier_work(tier, steps, text_guidance, audio_guidance)
        if not ladder or work.forwards < ladder[-1].forwards:
            ladder.append(work)
    return tuple(ladder)


@dataclasses.dataclass(frozen=True)
class PriorCosts:
    """The planner's chunk time per tier on given hardware (picklable: it travels in GeneratorProfile)."""

    hardware: Hardware
    efficiency: Efficiency
    ladder: tuple[TierWork, ...]

    def seconds(self, size: tuple[int, int], frames: int = 81, context: int = CONTEXT_FRAMES) -> dict[str, float]:
        """Tier name -> predicted seconds for chunks of ``frames`` (``context`` of them carried over) at
        output ``size`` (height, width)."""
        return {work.tier.name: self.tier_seconds(work, size, frames, context) for work in self.ladder}

    def tier_seconds(self, work: TierWork, size: tuple[int, int], frames: int = 81,
                     context: int = CONTEXT_FRAMES) -> float:
        height, width = scaled_size(size, work.tier.scale)
        return chunk_time(self.hardware, self.efficiency, width, height, work.steps, work.passes, frames,
                          context).chunk_seconds


def prior_costs(gpu: GpuSpec | None, count: int = 1, dtype: str = "bf16", steps: int = 40,
                text_guidance: float = 5.0, audio_guidance: float = 4.0, calibration=None) -> PriorCosts | None:
    """Priors for the ladder on ``count`` GPUs of kind ``gpu``; None for hardware the planner does not
    know (the scheduler then learns every tier's cost by running it)."""
    if gpu is None:
        return None
    return PriorCosts(Hardware(gpu, count, dtype), choose_efficiency(calibration, gpu),
                      live_ladder(steps, text_guidance, audio_guidance))


def declare_ladder(steps: int, text_guidance: float, audio_guidance: float, gpu_name: str | None,
                   count: int = 1, dtype: str = "bf16") -> tuple[tuple[Tier, ...], PriorCosts | None]:
    """What the generator declares: its tiers, and their priors when its GPU (by
    ``torch.cuda.get_device_name()``) is one the planner knows; the calibration file is read if present."""
    from model.calibration import read_calibration

    ladder = live_ladder(steps, text_guidance, audio_guidance)
    gpu = match_gpu_name(gpu_name) if gpu_name else None
    try:
        calibration = read_calibration() if gpu is not None else None
    except ValueError as exc:  # a broken calibration file must not stop the generator; the defaults apply
        logging.getLogger("livedub.planner").warning("%s: using the default efficiencies", exc)
        calibration = None
    priors = prior_costs(gpu, count, dtype, steps, text_guidance, audio_guidance, calibration)
    return tuple(work.tier for work in ladder), priors
