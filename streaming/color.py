"""Colour correction of generated frames towards a reference (official ``match_and_blend_colors``, spec §2.6).

Per frame, in Lab: ``out_j = (src_j - mean_src_j) * std_ref_j / std_src_j + mean_ref_j`` (population std;
``mean_ref_j`` where the frame is flat in channel j), back to RGB, clipped, then blended with the
original by ``strength``. The official code always uses source frame 0 as the reference; the engine uses
each chunk's own reference (the nearest keyframe), so a source whose lighting changes is followed.
"""

from __future__ import annotations

import warnings

import numpy as np
from skimage.color import lab2rgb, rgb2lab


def match_colors(frames: np.ndarray, reference: np.ndarray, strength: float) -> np.ndarray:
    """Frames ``[T, H, W, 3]`` and reference ``[H, W, 3]``, float in [-1, 1]; returns float32 in [-1, 1]."""
    frames = np.asarray(frames, dtype=np.float32)
    if strength <= 0.0 or frames.size == 0:
        return frames
    src01 = np.clip((frames + 1.0) / 2.0, 0.0, 1.0)
    ref01 = np.clip((np.asarray(reference, dtype=np.float32) + 1.0) / 2.0, 0.0, 1.0)
    src_lab = rgb2lab(src01)
    ref_lab = rgb2lab(ref01)
    corrected_lab = np.empty_like(src_lab)
    # Statistics per frame and channel on 2-D slices: the official loop's reduction order, bit for bit.
    for j in range(3):
        ref_mean, ref_std = ref_lab[..., j].mean(), np.std(ref_lab[..., j])
        for t in range(len(src_lab)):
            channel = src_lab[t, ..., j]
            src_mean, src_std = channel.mean(), np.std(channel)
            if src_std == 0:
                corrected_lab[t, ..., j] = ref_mean
            else:
                corrected_lab[t, ..., j] = (channel - src_mean) * (ref_std / src_std) + ref_mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "negative Z values clipped": expected, then clipped
        corrected = np.clip(lab2rgb(corrected_lab), 0.0, 1.0)
    blended = (1.0 - strength) * src01 + strength * corrected
    return (blended * 2.0 - 1.0).astype(np.float32)


def match_colors_uint8(frames: np.ndarray, reference: np.ndarray, strength: float) -> np.ndarray:
    """``match_colors`` on RGB uint8 frames; returns uint8 (rounded)."""
    if strength <= 0.0 or len(frames) == 0:
        return frames
    corrected = match_colors(to_signed(frames), to_signed(reference), strength)
    return to_uint8(corrected, rounding=True)


def to_signed(frames: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1] (``/255``, ``(x - 0.5) * 2`` as the official pre-processing)."""
    return (np.asarray(frames, dtype=np.float32) / 255.0 - 0.5) * 2.0


def to_uint8(frames: np.ndarray, rounding: bool = False) -> np.ndarray:
    """float in [-1, 1] -> uint8. The official writer truncates; ``rounding`` halves the error."""
    scaled = np.clip((np.asarray(frames, dtype=np.float32) + 1.0) / 2.0 * 255.0, 0.0, 255.0)
    return (np.rint(scaled) if rounding else scaled).astype(np.uint8)
