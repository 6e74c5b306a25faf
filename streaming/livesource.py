"""A live video track as a session's source: received frames on the 25 fps capture timeline.

A frame arriving at session time ``t`` becomes source frame ``floor(t * 25)``; source frame ``i`` is the
latest received frame at or before ``i`` (a slow or stalled sender holds its last frame). Received frames
stay as decoded ``av.VideoFrame``s in a bounded deque; ``window`` freezes the frames one chunk needs into
a ``FrameWindow``, which has VideoSource's surface for the chunk engine and converts (RGB, resize and
centre crop) in whatever thread builds the request, while the live deque goes on changing on the loop.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import av
import numpy as np

from model.base import FPS
from streaming.source import OutputSize, fit_frame, output_size

PLACEHOLDER_SIZE = (480, 640)  # (height, width) shown until the first frame says what the size is


class FrameWindow:
    """The frames ``[first, last)`` of a live source, frozen for one chunk request."""

    is_still = False

    def __init__(self, stamped: list[tuple[int, av.VideoFrame]], size: tuple[int, int], shared=None) -> None:
        self._indices = [index for index, _ in stamped]
        self._frames = [frame for _, frame in stamped]
        self.size = size
        self._converted: tuple[int, np.ndarray] | None = None  # the last one: a source-size window is large
        # A programme's frames: their face analysis is the programme's, shared by its sessions
        # (streaming/programmeanalysis.py); None for a session's own video.
        self.analysis = None if shared is None else shared.window(self._indices, self._frames, size)

    def frame(self, index: int) -> np.ndarray:
        if not self._frames:
            return np.zeros((*self.size, 3), np.uint8)
        at = max(0, bisect.bisect_right(self._indices, index) - 1)
        converted = self._converted
        if converted is None or converted[0] != at:
            image = fit_frame(self._frames[at].to_ndarray(format="rgb24"), self.size)
            converted = self._converted = (at, image)
        return converted[1]

    def reader(self) -> "FrameWindow":
        """The same received frames, converted again on demand (composing a region's output)."""
        return FrameWindow(list(zip(self._indices, self._frames)), self.size)

    def frames(self, start: int, count: int) -> np.ndarray:
        return np.stack([self.frame(i) for i in range(start, start + count)])

    def release_before(self, index: int) -> None:
        pass  # a frozen window is dropped as a whole


class LiveVideoSource:
    """Received video frames by capture index (bounded), from which chunk windows are frozen."""

    def __init__(self, size: int | tuple[int, int] | OutputSize = 480, capacity_frames: int = 300,
                 analysis=None) -> None:
        self._size_spec = size
        self._analysis = analysis  # a programme's shared face analysis (streaming/programmeanalysis.py)
        known = isinstance(size, tuple) or (isinstance(size, OutputSize) and size.height is not None)
        self.size: tuple[int, int] = output_size(size, 0, 0) if known else PLACEHOLDER_SIZE
        self._sized = known
        self._frames: deque[tuple[int, av.VideoFrame]] = deque(maxlen=capacity_frames)
        self.frames_received = 0

    def push(self, frame: av.VideoFrame, arrival: float) -> None:
        """A frame arrived at session time ``arrival`` (seconds)."""
        if not self._sized:
            self.size = output_size(self._size_spec, frame.height, frame.width)
            self._sized = True
        index = max(0, math.floor(arrival * FPS))
        if self._frames and self._frames[-1][0] >= index:
            self._frames[-1] = (self._frames[-1][0], frame)  # two frames in one slot: keep the newer
        else:
            self._frames.append((index, frame))
        self.frames_received += 1

    @property
    def has_frames(self) -> bool:
        return bool(self._frames)

    def window(self, first: int, last: int) -> FrameWindow:
        """Freeze what frames ``[first, last)`` need: those stamped inside, and the one before."""
        stamped = [(i, f) for i, f in self._frames if i < last]
        before = [item for item in stamped if item[0] <= first]
        inside = [item for item in stamped if item[0] > first]
        return FrameWindow(before[-1:] + inside, self.size, self._analysis)
