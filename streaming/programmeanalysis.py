"""The face analysis of a live programme's frames, shared by every session on it.

Each session puts the programme's frames on its own capture timeline (streaming/livesource.py), so its
frame ``i`` is not another session's; what they share is the decoded ``av.VideoFrame`` itself. The
programme numbers each frame it hands over (``add``) and keeps the last ``capacity`` of them (by
reference: the sessions hold them anyway); a session's chunk window maps its frames to those numbers
(``window``), and the landmarks of programme frame ``k`` at an output size are computed once
(model/lite/analysis.py: tracked in programme order, so one session alone gets exactly the same).
Bounded: frames older than the last ``capacity`` are forgotten with their analysis.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict

import av
import numpy as np

from model.lite.analysis import Landmarks, SourceAnalysis
from streaming.source import fit_frame

CAPACITY = 300  # frames (12 s at 25 fps), as a session's LiveVideoSource holds


class _NumberedFrames:
    """The kept programme frames at one output size, by programme frame number."""

    def __init__(self, owner: "ProgrammeAnalysis", size: tuple[int, int]) -> None:
        self._owner = owner
        self._size = size

    def frame(self, number: int) -> np.ndarray:
        return fit_frame(self._owner.frame(number).to_ndarray(format="rgb24"), self._size)


class ProgrammeAnalysis:
    """Programme frames by number, and their face analysis per output size."""

    def __init__(self, capacity: int = CAPACITY, make_faces=None) -> None:
        self.capacity = capacity
        self._make_faces = make_faces
        self._lock = threading.Lock()  # frames are added on the loop, analysed from sessions' threads
        self._frames: OrderedDict[int, av.VideoFrame] = OrderedDict()
        self._numbers: dict[int, int] = {}  # id(frame) -> its number, while it is kept (ids stay unique)
        self._next = 0
        self._by_size: dict[tuple[int, int], SourceAnalysis] = {}

    def add(self, frame: av.VideoFrame) -> None:
        """The programme handed over ``frame`` (its next one)."""
        with self._lock:
            self._frames[self._next] = frame
            self._numbers[id(frame)] = self._next
            self._next += 1
            while len(self._frames) > self.capacity:
                _, old = self._frames.popitem(last=False)
                self._numbers.pop(id(old), None)
            oldest = next(iter(self._frames))
            analyses = list(self._by_size.values())
        for analysis in analyses:
            analysis.release_before(oldest)

    def number(self, frame: av.VideoFrame) -> int | None:
        with self._lock:
            return self._numbers.get(id(frame))

    def frame(self, number: int) -> av.VideoFrame:
        with self._lock:
            found = self._frames.get(number)
            # Forgotten while a very late chunk asked (over ``capacity`` frames late): the oldest kept.
            return found if found is not None else next(iter(self._frames.values()))

    def at_size(self, size: tuple[int, int]) -> SourceAnalysis:
        with self._lock:
            analysis = self._by_size.get(size)
            if analysis is None:
                analysis = self._by_size[size] = SourceAnalysis(_NumberedFrames(self, size), self._make_faces,
                                                                           first=None)
            return analysis

    def window(self, indices: list[int], frames: list[av.VideoFrame], size: tuple[int, int]) -> "WindowAnalysis | None":
        """The analysis of a session's chunk window (its frame indices and the frames at them), or None
        when a frame did not come from the programme as it is kept now."""
        numbers = [self.number(frame) for frame in frames]
        if not frames or None in numbers:
            return None
        return WindowAnalysis(indices, numbers, self.at_size(tuple(size)))

    @property
    def kept(self) -> int:
        return len(self._frames)

    def clear(self) -> None:
        """Forget every kept frame and its analysis (the programme stopped; numbers go on from where they were)."""
        with self._lock:
            self._frames.clear()
            self._numbers.clear()
        self.close()

    def close(self) -> None:
        with self._lock:
            analyses = list(self._by_size.values())
            self._by_size.clear()
        for analysis in analyses:
            analysis.close()


class WindowAnalysis:
    """A chunk window's face analysis by the session's frame index (the shared analysis's surface)."""

    def __init__(self, indices: list[int], numbers: list[int], analysis: SourceAnalysis) -> None:
        self._indices = indices
        self._numbers = numbers
        self._analysis = analysis

    def _number(self, index: int) -> int:
        return self._numbers[max(0, bisect.bisect_right(self._indices, index) - 1)]

    def tracked(self, index: int) -> Landmarks:
        return self._analysis.tracked(self._number(index))

    def detected(self, index: int) -> Landmarks:
        return self._analysis.detected(self._number(index))
