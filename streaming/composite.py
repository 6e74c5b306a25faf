"""Cutting the generator's region out of a source-size frame, and putting its result back.

``crop`` gives the generator its view: the region's pixels resized to the generator's size. ``paste``
puts a result back: resized to the region, blended in with a feathered mask (a linear ramp over the
region's inner border, so no seam shows where generated and source pixels meet) and nothing else
touched: outside the region the frame is the source, pixel for pixel. Borders that lie on the frame's
edge are not feathered (the whole-frame region covers the picture up to its edges).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from streaming.region import Box, Framing

FEATHER = 0.08  # the ramp's width, as a share of the region's shorter side
MIN_FEATHER = 2


def crop(frame: np.ndarray, framing: Framing) -> np.ndarray:
    """The region of ``frame`` at the generator's size (RGB uint8 [h, w, 3])."""
    patch = frame[framing.box.slices]
    height, width = framing.work
    if patch.shape[:2] == (height, width):
        return np.ascontiguousarray(patch)
    # Area averaging when shrinking (no aliasing), bilinear when enlarging.
    shrinking = height * width < patch.shape[0] * patch.shape[1]
    return cv2.resize(patch, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def paste(frame: np.ndarray, generated: np.ndarray, framing: Framing) -> np.ndarray:
    """A copy of ``frame`` with ``generated`` (at the generator's size) blended into the region."""
    box = framing.box
    out = np.array(frame, copy=True)
    patch = generated
    if patch.shape[:2] != (box.height, box.width):
        shrinking = box.height * box.width < patch.shape[0] * patch.shape[1]
        patch = cv2.resize(generated, (box.width, box.height),
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    region = out[box.slices]
    top, bottom, left, right = _feathers(box, framing.frame)
    inner = (slice(top, box.height - bottom), slice(left, box.width - right))
    region[inner] = patch[inner]  # the mask is 1 here: a copy
    alpha = feather_mask(box.height, box.width, top, bottom, left, right)
    # The ramp: four strips along the borders (the corners in the top and bottom ones).
    for rows, cols in ((slice(0, top), slice(None)), (slice(box.height - bottom, box.height), slice(None)),
                       (inner[0], slice(0, left)), (inner[0], slice(box.width - right, box.width))):
        a = alpha[rows, cols]
        if a.size:
            src = region[rows, cols].astype(np.uint16)
            gen = patch[rows, cols].astype(np.uint16)
            region[rows, cols] = ((gen * a + src * (255 - a) + 127) // 255).astype(np.uint8)
    return out


def _feathers(box: Box, frame: tuple[int, int]) -> tuple[int, int, int, int]:
    """The ramp's width at the top, bottom, left and right borders (0 on the frame's edges)."""
    width = max(MIN_FEATHER, round(FEATHER * min(box.height, box.width)))
    width = min(width, box.height // 2, box.width // 2)
    return (0 if box.top == 0 else width, 0 if box.bottom >= frame[0] else width,
            0 if box.left == 0 else width, 0 if box.right >= frame[1] else width)


@functools.lru_cache(maxsize=16)
def feather_mask(height: int, width: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Blend weights 0..255 (uint16 [h, w, 1]): 0 on a feathered border's outermost pixels, rising
    linearly to 255 ``feather`` pixels in."""
    def ramp(length: int, start: int, end: int) -> np.ndarray:
        i = np.arange(length, dtype=np.float32)
        up = np.minimum(i / start, 1.0) if start else np.ones(length, np.float32)
        down = np.minimum((length - 1 - i) / end, 1.0) if end else np.ones(length, np.float32)
        return np.minimum(up, down)

    weight = np.minimum(ramp(height, top, bottom)[:, None], ramp(width, left, right)[None, :])
    mask = np.round(weight * 255).astype(np.uint16)[:, :, None]
    mask.flags.writeable = False
    return mask
