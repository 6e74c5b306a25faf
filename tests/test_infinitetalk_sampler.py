"""Sampler: the official schedules, guidance formulas, APG, Euler, mask and SDEdit start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.infinitetalk.pipeline import first_latent_mask
from model.infinitetalk.sampler import (Guidance, Guider, MomentumBuffer, adaptive_projected_guidance, euler_step,
                                        shifted_timesteps)

TIMESTEPS = Path(__file__).parent / "fixtures" / "conformance" / "timesteps.json"


def test_schedules_match_the_official_values():
    table = json.loads(TIMESTEPS.read_text())
    assert table
    for name, values in table.items():
        steps, shift = (float(p[len(w):]) for p, w in zip(name.split("_"), ("steps", "shift")))
        ours = shifted_timesteps(int(steps), shift)
        expected = torch.tensor(values, dtype=torch.float32)
        if len(expected) == int(steps):  # tables may omit the final 0
            ours = ours[:-1]
        assert torch.equal(ours, expected), name
    assert shifted_timesteps(4, 2.0)[-1] == 0 and shifted_timesteps(4, 2.0)[0] == 1000


def test_guidance_branches_and_formulas():
    g = torch.Generator().manual_seed(0)
    cond, text, uncond, drop_audio = (torch.randn(1, 16, 2, 3, 4, generator=g) for _ in range(4))
    assert Guidance(5.0, 4.0).branches == ("cond", "drop_text", "uncond")
    assert Guidance(1.0, 2.0).branches == ("cond", "drop_audio")
    assert Guidance(1.0, 1.0).branches == ("cond",)
    three = Guider(Guidance(5.0, 4.0))({"cond": cond, "drop_text": text, "uncond": uncond})
    assert torch.allclose(three, uncond + 5 * (cond - text) + 4 * (text - uncond))
    two = Guider(Guidance(1.0, 2.0))({"cond": cond, "drop_audio": drop_audio})
    assert torch.allclose(two, drop_audio + 2 * (cond - drop_audio))
    assert torch.equal(Guider(Guidance(1.0, 1.0))({"cond": cond}), cond)


def test_apg_momentum_clipping_and_projection():
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(1, 16, 2, 3, 4, generator=g)
    diffs = [torch.randn(1, 16, 2, 3, 4, generator=g) * 30 for _ in range(2)]
    buffer = MomentumBuffer(-0.75)
    adaptive_projected_guidance(diffs[0], cond, buffer, 55.0)
    out = adaptive_projected_guidance(diffs[1], cond, buffer, 55.0)
    running = diffs[1] - 0.75 * diffs[0]
    clipped = running * min(1.0, 55.0 / running.norm().item())
    unit = cond / cond.norm()
    expected = clipped - (clipped * unit).sum() * unit
    assert torch.allclose(out, expected, atol=1e-5)
    assert abs((out * cond).sum().item()) < 1e-3  # orthogonal to the conditional prediction
    guided = Guider(Guidance(5.0, 4.0, apg=True))({"cond": cond, "drop_text": cond - diffs[0], "uncond": cond})
    assert guided.shape == cond.shape and not torch.allclose(guided, cond)


def test_euler_step_reaches_x0_at_the_last_step():
    x0, noise = torch.randn(16, 2, 3, 4), torch.randn(16, 2, 3, 4)
    t = torch.tensor([300.0])
    x_t = (1 - t / 1000) * x0 + t / 1000 * noise
    assert torch.allclose(euler_step(x_t, noise - x0, t, torch.tensor([0.0])), x0, atol=1e-5)


@pytest.mark.parametrize("frames", [1, 5, 17, 81])
def test_mask_marks_only_the_first_latent(frames):
    mask = first_latent_mask(frames, 3, 4)
    assert mask.shape == (1, 4, 1 + (frames - 1) // 4, 3, 4)
    assert mask[:, :, 0].eq(1).all() and mask[:, :, 1:].eq(0).all()
