"""The official sampler (spec §6): shifted linspace schedule, flow-matching Euler, CFG / APG guidance.

No scheduler object: diffusers' FlowMatchEulerDiscreteScheduler would shift the schedule's minimum a
second time. Every expression keeps the official operand order and float32 arithmetic.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def shifted_timesteps(steps: int, shift: float) -> torch.Tensor:
    """``[steps + 1]`` float32: ``linspace(1000, 1, steps)`` plus a final 0, each shifted by
    ``s*u / (1 + (s-1)*u)`` with ``u = t/1000``; fed to the DiT as they are (not rounded)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    values = [*np.linspace(NUM_TRAIN_TIMESTEPS, 1, steps, dtype=np.float32), 0.0]
    t = torch.tensor(np.asarray(values, dtype=np.float32)) / NUM_TRAIN_TIMESTEPS
    return shift * t / (1 + (shift - 1) * t) * NUM_TRAIN_TIMESTEPS


def euler_step(latent: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """``x <- x - v * (t - t_next) / 1000`` (the model predicts noise - x0)."""
    dt = (t - t_next) / NUM_TRAIN_TIMESTEPS
    return latent + (-velocity) * dt


def add_noise(clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Flow-matching forward process at timestep ``t`` (official ``add_noise``); used for SDEdit."""
    sigma = t.float() / NUM_TRAIN_TIMESTEPS
    return (1 - sigma) * clean + sigma * noise


@dataclasses.dataclass(frozen=True)
class Guidance:
    text_scale: float = 5.0
    audio_scale: float = 4.0
    apg: bool = False
    apg_momentum: float = -0.75
    apg_norm_threshold: float = 55.0

    @property
    def branches(self) -> tuple[str, ...]:
        """DiT passes per step: 3 (cond, drop_text, uncond); 2 at text scale 1 (cond, drop_audio); 1 when
        both scales are 1 (the guided result then is the cond prediction; the official code still runs the
        second pass, whose contribution cancels to rounding)."""
        if math.isclose(self.text_scale, 1.0):
            return ("cond",) if math.isclose(self.audio_scale, 1.0) else ("cond", "drop_audio")
        return ("cond", "drop_text", "uncond")


class MomentumBuffer:
    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.running_average: torch.Tensor | float = 0

    def update(self, value: torch.Tensor) -> torch.Tensor:
        self.running_average = value + self.momentum * self.running_average
        return self.running_average


def adaptive_projected_guidance(diff: torch.Tensor, pred_cond: torch.Tensor, buffer: MomentumBuffer,
                                norm_threshold: float) -> torch.Tensor:
    """Official APG (eta 0): momentum, norm clipping over the whole tensor, keep the part orthogonal
    to the conditional prediction (projection in float64)."""
    diff = buffer.update(diff)
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=[-1, -2, -3, -4], keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / norm)
    v0, v1 = diff.double(), pred_cond.double()
    v1 = torch.nn.functional.normalize(v1, dim=[-1, -2, -3, -4])
    parallel = (v0 * v1).sum(dim=[-1, -2, -3, -4], keepdim=True) * v1
    return (v0 - parallel).to(diff.dtype)


class Guider:
    """Combines one step's DiT predictions; holds the APG momentum (one per chunk, as the official loop)."""

    def __init__(self, guidance: Guidance) -> None:
        self.guidance = guidance
        self.text_buffer = MomentumBuffer(guidance.apg_momentum)
        self.audio_buffer = MomentumBuffer(guidance.apg_momentum)

    def __call__(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        g = self.guidance
        cond = out["cond"]
        if len(out) == 1:
            return cond
        if not g.apg:
            if "drop_audio" in out:
                return out["drop_audio"] + g.audio_scale * (cond - out["drop_audio"])
            return (out["uncond"] + g.text_scale * (cond - out["drop_text"])
                    + g.audio_scale * (out["drop_text"] - out["uncond"]))
        if "drop_audio" in out:
            return cond + (g.audio_scale - 1) * adaptive_projected_guidance(
                cond - out["drop_audio"], cond, self.audio_buffer, g.apg_norm_threshold)
        return (cond
                + (g.text_scale - 1) * adaptive_projected_guidance(
                    cond - out["drop_text"], cond, self.text_buffer, g.apg_norm_threshold)
                + (g.audio_scale - 1) * adaptive_projected_guidance(
                    out["drop_text"] - out["uncond"], cond, self.audio_buffer, g.apg_norm_threshold))
