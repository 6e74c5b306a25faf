"""The on-device colour correction equals the official skimage formula (streaming.color.match_colors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.infinitetalk.color_transfer import lab_to_rgb, match_colors, rgb_to_lab
from streaming.color import match_colors as reference_match_colors

TRACE = "tests/fixtures/conformance/public/pipeline/trace_tensors.safetensors"


@pytest.mark.parametrize("strength", [1.0, 0.5, 0.0])
def test_matches_skimage_on_decoded_frames(strength):
    tensors = load_file(TRACE)
    frames = tensors["chunk1.decoded"][0].permute(1, 2, 3, 0)
    reference = tensors["chunk0.cond_image"][0, :, 0].permute(1, 2, 0)
    ours = match_colors(frames, reference, strength).numpy()
    theirs = reference_match_colors(frames.numpy(), reference.numpy(), strength)
    assert np.abs(ours - theirs).max() < 1e-4
    if strength == 0:
        assert np.array_equal(ours, frames.numpy())


def test_flat_frames_get_the_reference_mean_and_extremes_match():
    """A flat frame takes the reference's mean colour (the formula's intent; skimage in float32 divides by a
    rounding-level std there); saturated and ordinary frames match skimage."""
    rng = np.random.default_rng(0)
    frames = np.concatenate([np.full((1, 8, 8, 3), 0.3, np.float32), rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32),
                             np.full((1, 8, 8, 3), -1.0, np.float32)])
    reference = rng.uniform(-1, 1, (8, 8, 3)).astype(np.float32)
    ours = match_colors(torch.from_numpy(frames), torch.from_numpy(reference), 1.0).numpy()
    theirs = reference_match_colors(frames, reference, 1.0)
    assert np.abs(ours[1:] - theirs[1:]).max() < 1e-4
    mean_colour = lab_to_rgb(rgb_to_lab(torch.from_numpy((reference + 1) / 2)).mean(dim=(0, 1))).numpy() * 2 - 1
    assert np.abs(ours[0] - mean_colour).max() < 1e-4
    assert np.abs(ours[0] - ours[-1]).max() < 1e-4  # both flat frames: the same mean colour


def test_lab_round_trip():
    rgb = torch.rand(100, 3, dtype=torch.float64)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-6)
