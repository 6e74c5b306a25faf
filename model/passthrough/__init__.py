"""The ``passthrough`` generator: the source frames (or the reference) unchanged.

It is the cheapest fallback a live session can show for a slot, and lets the engine be tested without
any model. It reports that it did not re-animate anything.
"""

from __future__ import annotations

import time

import numpy as np

from model.base import AudioMargins, ChunkRequest, ChunkResult


def unchanged_frames(request: ChunkRequest) -> np.ndarray:
    """The new part of the window as the source shows it: its source frames, or the reference repeated."""
    if request.source_frames is not None:
        return request.source_frames[request.num_context :]
    return np.broadcast_to(request.reference_frame, (request.num_new, *request.reference_frame.shape))


class PassthroughGenerator:
    name = "passthrough"
    audio_margins = AudioMargins()
    default_color_correction = 0.0
    applies_color_correction = False

    def generate(self, request: ChunkRequest) -> ChunkResult:
        started = time.perf_counter()
        frames = np.ascontiguousarray(unchanged_frames(request))
        return ChunkResult(frames, time.perf_counter() - started, {"animated": False})

    def close(self) -> None:
        pass


def build(**options) -> PassthroughGenerator:
    return PassthroughGenerator()
