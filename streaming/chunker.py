"""Chunk arithmetic: 81-frame windows, stride 72, 9 context frames (InfiniteTalk's streaming loop).

Chunk k covers output frames ``[72k, 72k + 81)``. The first chunk has no context and contributes all 81
frames; every later chunk starts from the last 9 output frames of the previous one and contributes 72 new
frames. With L output frames (the speech length at 25 fps) the official loop generates chunks until the
*next* chunk's end reaches L, generates that one too (its audio mirror-padded) and cuts the video to L
(spec §2.2-2.3): N = 1 + min{n >= 1 : 72n + 81 >= L}. Two deliberate differences: no 1000-frame cap, and
speech of at most one window (L <= 81) takes one chunk; the official code refuses speech that short.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

from model.base import AudioMargins, SAMPLES_PER_FRAME

WINDOW_FRAMES = 81
CONTEXT_FRAMES = 9


@dataclasses.dataclass(frozen=True)
class Chunk:
    index: int
    start_frame: int  # first frame of the window (context included)
    num_frames: int  # window length
    num_context: int  # frames at the window's start already generated

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.num_frames

    @property
    def new_start(self) -> int:
        """First output frame this chunk adds."""
        return self.start_frame + self.num_context


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    window: int = WINDOW_FRAMES
    context: int = CONTEXT_FRAMES

    def __post_init__(self) -> None:
        if not 0 <= self.context < self.window:
            raise ValueError(f"context ({self.context}) must be in [0, window={self.window})")

    @property
    def stride(self) -> int:
        return self.window - self.context

    def chunk(self, index: int) -> Chunk:
        return Chunk(index, self.stride * index, self.window, 0 if index == 0 else self.context)

    def is_needed(self, index: int, total_frames: int) -> bool:
        """Whether chunk ``index`` is generated for speech of ``total_frames`` frames.

        A chunk is generated while the previous one ends before the speech does.
        """
        if total_frames <= 0:
            return False
        return index == 0 or self.stride * (index - 1) + self.window < total_frames

    def chunk_count(self, total_frames: int) -> int:
        if total_frames <= 0:
            return 0
        if total_frames <= self.window:
            return 1
        return 1 + math.ceil((total_frames - self.window) / self.stride)

    def chunks(self, total_frames: int) -> Iterator[Chunk]:
        for index in range(self.chunk_count(total_frames)):
            yield self.chunk(index)

    def generated_frames(self, total_frames: int) -> int:
        """Frames generated before the cut to ``total_frames``."""
        count = self.chunk_count(total_frames)
        return 0 if count == 0 else self.window + self.stride * (count - 1)

    def output_range(self, index: int, total_frames: int) -> range:
        """The final-video frames chunk ``index`` supplies, after the cut to ``total_frames``."""
        chunk = self.chunk(index)
        return range(min(chunk.new_start, total_frames), min(chunk.end_frame, total_frames))

    def audio_span(self, chunk: Chunk, margins: AudioMargins) -> tuple[int, int, int]:
        """Absolute 16 kHz sample range [first, last) a chunk needs, and the window start inside it.

        The left margin never reaches before sample 0; positions past the end of the speech are the
        caller's to fill (zeros).
        """
        window_start = chunk.start_frame * SAMPLES_PER_FRAME
        window_end = chunk.end_frame * SAMPLES_PER_FRAME
        first = max(0, window_start - round(margins.left * 16_000))
        last = window_end + round(margins.right * 16_000)
        return first, last, window_start - first


def frames_for_samples(num_samples: int) -> int:
    """Output length for speech of ``num_samples`` at 16 kHz: ``int(seconds * 25)`` as the official code."""
    return int(num_samples / 16_000 * 25)


def nearest_keyframe(frame: int, interval: int) -> int:
    """The keyframe (a multiple of ``interval``) nearest to ``frame``; the earlier one on a tie.

    With the default interval 72 = the chunk stride, chunk k's reference is source frame 72k, which is
    the official choice (spec §2.2).
    """
    if interval <= 0:
        raise ValueError("keyframe interval must be positive")
    base, rest = divmod(frame, interval)
    return (base + (1 if 2 * rest > interval else 0)) * interval
