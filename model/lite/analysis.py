"""Per-frame face analysis of a source, shared by every session that reads it.

Sessions on the same programme (one per interpreter language) see the same source frames, so the face
landmarks of frame ``n`` are the same for all of them: ``SourceAnalysis`` computes them once per source
frame and hands them to each session's engine, which puts them into its chunk requests
(``ChunkRequest.source_landmarks``) for a generator that says it can use them (``uses_source_landmarks``).

Two analyses, both deterministic functions of the source alone (so one session alone gets exactly what it
gets beside others):
- ``tracked(n)``: the landmarks the ``lite`` generator animates. mediapipe's video mode tracks the face
  from the previous frame, so frames are tracked in source order, each once, by one tracker: asked for
  frame ``n``, the analysis tracks every frame up to ``n`` it has not tracked yet.
- ``detected(n)``: the face a source-size output's region is chosen around (streaming/region.py): a still
  detection, then the full-range detector for faces too small for the mesh's own.
Thread-safe (one lock: sessions call from their own chunk threads). Memory is bounded by the caller's
frame indices: ``release_before(n)`` forgets frames before ``n``, as the sources release their frames;
a looped clip keeps its one pass (a few kilobytes a frame).
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol

import numpy as np

Landmarks = np.ndarray | None  # 478 (x, y) points in pixels, or None: no face


class FrameSource(Protocol):
    """What the analysis reads: frames by index (read-only), as the shared sources give them."""

    def frame(self, index: int) -> np.ndarray: ...


def find_face(faces, image: np.ndarray) -> Landmarks:
    """The largest face of ``image`` with a ``FaceLandmarks(max_faces=2)``: the mesh's own detection, then
    the full-range detector (a face too small for the mesh's short-range one)."""
    image = np.ascontiguousarray(image)
    points = faces.detect(image)
    if points is None:
        found = faces.detect_all(image)
        points = max(found, key=lambda p: float(np.ptp(p[:, 0])), default=None)
    return points


class SourceAnalysis:
    """Face landmarks of one source's frames, each computed once whatever the number of sessions.

    ``make_faces(max_faces)`` makes the mediapipe graphs (model/lite/face.py ``FaceLandmarks`` by default;
    made on first use). ``runs`` counts landmark computations (tracked and detected), for tests and stats.
    """

    def __init__(self, source: FrameSource, make_faces: Callable | None = None, first: int | None = 0) -> None:
        self._source = source
        self._make_faces = make_faces
        self._lock = threading.Lock()
        self._tracker = None
        self._detector = None
        self._tracked: dict[int, Landmarks] = {}
        # The tracker has seen every frame before this one; ``first`` None: the track starts at the first
        # frame asked for (a live programme, numbered long before its first session).
        self._next_tracked = first
        self._detected: dict[int, Landmarks] = {}
        self._first_kept = 0
        self._release_to = 0  # asked to forget frames before this one (applied under the lock)
        self.runs = 0

    def tracked(self, index: int) -> Landmarks:
        with self._lock:
            self._apply_release()
            if index not in self._tracked:
                if self._tracker is None:
                    self._tracker = self._faces(1)
                # A frame before what the tracker has seen (one released already) starts the track again there.
                if self._next_tracked is None:
                    self._next_tracked = index
                start = self._next_tracked if index >= self._next_tracked else index
                for position in range(min(max(start, self._first_kept), index), index + 1):
                    self._tracked[position] = self._tracker.track(np.ascontiguousarray(self._source.frame(position)))
                    self.runs += 1
                self._next_tracked = max(self._next_tracked, index + 1)
            return self._tracked[index]

    def detected(self, index: int) -> Landmarks:
        with self._lock:
            self._apply_release()
            if index not in self._detected:
                if self._detector is None:
                    self._detector = self._faces(2)
                self._detected[index] = find_face(self._detector, self._source.frame(index))
                self.runs += 1
            return self._detected[index]

    def release_before(self, index: int) -> None:
        """Forget frames before ``index``. Never waits (a programme calls it on the event loop while a
        session may be tracking): the release is applied by the next call that holds the lock."""
        self._release_to = max(self._release_to, index)

    def _apply_release(self) -> None:
        if self._release_to > self._first_kept:
            self._first_kept = self._release_to
            for held in (self._tracked, self._detected):
                for old in [k for k in held if k < self._first_kept]:
                    del held[old]

    def held(self) -> int:
        """Frames whose analysis is held (memory is bounded by it)."""
        with self._lock:
            self._apply_release()
            return len(self._tracked) + len(self._detected)

    def _faces(self, max_faces: int):
        if self._make_faces is not None:
            return self._make_faces(max_faces)
        from model.lite.face import FaceLandmarks  # mediapipe: only once an analysis is asked for

        return FaceLandmarks(max_faces=max_faces)

    def close(self) -> None:
        with self._lock:
            for faces in (self._tracker, self._detector):
                if faces is not None:
                    faces.close()
            self._tracker = self._detector = None
