"""Output frames kept the way the encoders take them: I420 (planar YUV 4:2:0), half the bytes of RGB.

A session's output timeline holds every frame from the moment its chunk is ready until two seconds after
it has played (about 7 s of frames at a 5.5 s delay): as RGB at 512x512, 150 MiB a session, the largest
thing a session holds. Every encoder (server/egress.py) converted each frame to I420 anyway, with OpenCV's
conversion; a slot's generated frames are now converted once, with that same conversion, when they come
back from the generator, so what is encoded is unchanged to the bit, and the timeline holds half as much.

An I420 image is a 2-D ``uint8`` array ``(height * 3 // 2, width)``: the Y plane, then U and V, as
``cv2.COLOR_RGB2YUV_I420`` writes it and ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` reads it.
Odd sizes have no I420 layout: their frames stay RGB (the encoder converts those itself).
"""

from __future__ import annotations

import cv2
import numpy as np


def has_i420(size: tuple[int, int]) -> bool:
    """Whether frames of ``size`` (height, width) have an I420 layout (both sides even)."""
    return size[0] % 2 == 0 and size[1] % 2 == 0


def rgb_to_i420(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)


def i420_to_rgb(image: np.ndarray) -> np.ndarray:
    """An image as RGB, whichever way it is kept (I420 back to RGB is within a few levels, not exact)."""
    return cv2.cvtColor(image, cv2.COLOR_YUV2RGB_I420) if image.ndim == 2 else image


def image_size(image: np.ndarray) -> tuple[int, int]:
    """(height, width) of an RGB or I420 image."""
    return (image.shape[0] * 2 // 3, image.shape[1]) if image.ndim == 2 else tuple(image.shape[:2])


class I420Frames:
    """A slot's frames as I420, one array each (the timeline's sequence surface: ``len`` and ``[k]``)."""

    def __init__(self, frames: np.ndarray) -> None:
        self._frames: list[np.ndarray | None] = [rgb_to_i420(image) for image in frames]
        self._released = 0  # frames before this one are let go

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, k: int) -> np.ndarray | None:
        """Frame ``k``, or None once released."""
        return self._frames[k]

    def release_before(self, k: int) -> None:
        """Let go of the frames before ``k`` (played, every viewer past them): a slot's memory goes a
        frame at a time instead of all at once after its last frame."""
        for i in range(self._released, min(k, len(self._frames))):
            self._frames[i] = None
        self._released = max(self._released, k)


def compact(frames: np.ndarray):
    """``frames`` (RGB, one chunk's) as the timeline should keep them: I420 where the size has a layout."""
    return I420Frames(frames) if len(frames) and has_i420(frames.shape[1:3]) else frames
