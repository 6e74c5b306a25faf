"""Colour correction: the official Lab mean/std transfer, blended by strength (spec §2.6)."""

import os

import numpy as np
import pytest
from safetensors.numpy import load_file
from skimage.color import lab2rgb, rgb2lab

from streaming.color import match_colors, match_colors_uint8, to_signed

pytestmark = pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB")


def official_formula(frames, reference, strength):
    """Spec §2.6 written out frame by frame, as the official loop does it."""
    out = []
    ref_lab = rgb2lab(np.clip((reference + 1) / 2, 0, 1))
    for frame in frames:
        src01 = np.clip((frame + 1) / 2, 0, 1)
        src_lab = rgb2lab(src01)
        corrected = np.empty_like(src_lab)
        for j in range(3):
            mean_src, std_src = src_lab[..., j].mean(), np.std(src_lab[..., j])
            mean_ref, std_ref = ref_lab[..., j].mean(), np.std(ref_lab[..., j])
            corrected[..., j] = mean_ref if std_src == 0 else (src_lab[..., j] - mean_src) * (std_ref / std_src) + mean_ref
        rgb = np.clip(lab2rgb(corrected), 0, 1)
        out.append(((1 - strength) * src01 + strength * rgb) * 2 - 1)
    return np.stack(out)


def test_matches_the_formula():
    rng = np.random.default_rng(1)
    frames = np.tanh(rng.normal(0.2, 0.5, (3, 24, 20, 3))).astype(np.float32)
    frames[2, ..., 0] = 0.3  # a flat channel: that Lab channel takes the reference mean
    reference = np.tanh(rng.normal(-0.1, 0.4, (24, 20, 3))).astype(np.float32)
    for strength in (1.0, 0.4):
        assert np.abs(match_colors(frames, reference, strength) - official_formula(frames, reference, strength)).max() < 1e-5
    assert np.array_equal(match_colors(frames, reference, 0.0), frames)


def test_pulls_colour_statistics_to_the_reference():
    rng = np.random.default_rng(2)
    reference = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    tinted = np.clip(reference.astype(int) + [60, -20, -40], 0, 255).astype(np.uint8)[None]
    corrected = match_colors_uint8(tinted, reference, 1.0)
    assert np.abs(corrected.astype(int).mean(axis=(0, 1, 2)) - reference.mean(axis=(0, 1))).max() < 4
    assert np.abs(tinted.astype(int).mean(axis=(0, 1, 2)) - reference.mean(axis=(0, 1))).max() > 30


def test_reproduces_the_official_trace(conformance_public):
    # The official pipeline's chunk 0: decoded frames corrected towards the resized source frame 0.
    trace = load_file(os.path.join(conformance_public, "pipeline", "trace_tensors.safetensors"))
    decoded = trace["chunk0.decoded"][0].transpose(1, 2, 3, 0)  # [T, H, W, 3]
    reference = trace["chunk0.cond_image"][0, :, 0].transpose(1, 2, 0)
    expected = trace["chunk0.color_corrected"][0].transpose(1, 2, 3, 0)
    assert np.abs(match_colors(decoded, reference, 1.0) - expected).max() < 1e-6
    assert np.abs(to_signed(np.uint8([0, 255])) - [-1, 1]).max() == 0
