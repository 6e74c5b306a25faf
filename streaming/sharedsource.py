"""Sources shared by the sessions that play them: one programme decoded once, whatever the number of
sessions on it (one per interpreter language).

A library clip short enough to hold (``MAX_SHARED_BYTES`` of frames at the output size) is decoded once,
in full, into frames every session reads by index (a loop: frame ``n`` is ``n % length``); the frames are
read-only, so sessions read them from their own threads without a lock. A longer clip, which would not
fit, gets a decoder per session (``VideoSource``), as does any clip whose one pass cannot be held. Stills
are one frame: shared the same way. The shared copy lives while a session uses it (a weak cache).

Its face analysis is shared too (``SharedClip.analysis``, model/lite/analysis.py): the landmarks of each
clip frame are computed once, by the first session that needs them, for all of them (lite's animation,
a source-size output's region). They are held with the clip: a few kilobytes a frame of its one pass.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from model.lite.analysis import Landmarks, SourceAnalysis
from streaming.source import VideoSource

MAX_SHARED_BYTES = 400 * 2**20  # a 12 s clip at 512x512 is 236 MiB


class SharedClip:
    """All frames of one pass of a clip at the output size, played in a loop (VideoSource's surface)."""

    def __init__(self, frames: list[np.ndarray], is_still: bool, keyframe_interval: int) -> None:
        for frame in frames:
            frame.flags.writeable = False  # shared by sessions: nobody may change a frame in place
        self._frames = frames
        self.is_still = is_still
        self.keyframe_interval = keyframe_interval
        self.size = frames[0].shape[:2]
        self.length = len(frames)
        self.analysis = LoopedAnalysis(self)

    def frame(self, index: int) -> np.ndarray:
        return self._frames[index % self.length]

    def frames(self, start: int, count: int) -> np.ndarray:
        return np.stack([self.frame(i) for i in range(start, start + count)])

    def release_before(self, index: int) -> None:
        pass  # held for every session until the last one is gone


class LoopedAnalysis:
    """A clip's shared face analysis by session frame index (frame ``n`` is clip frame ``n % length``)."""

    def __init__(self, clip: SharedClip, make_faces=None) -> None:
        self._length = clip.length
        # By clip frame; made on first use, held with the clip. It reads the clip through a weak proxy: no
        # cycle, so the clip (236 MiB at 512x512) is freed as its last session lets go, not whenever the
        # cyclic collector next makes a full pass.
        self.of_clip = SourceAnalysis(weakref.proxy(clip), make_faces)

    def tracked(self, index: int) -> Landmarks:
        return self.of_clip.tracked(index % self._length)

    def detected(self, index: int) -> Landmarks:
        return self.of_clip.detected(index % self._length)

    def release_before(self, index: int) -> None:
        pass  # one pass of the clip, held with it (its frames are)


class SourceCache:
    """Sources by (path, size, keyframe interval): one SharedClip per programme while sessions use it."""

    def __init__(self, max_bytes: int = MAX_SHARED_BYTES) -> None:
        self.max_bytes = max_bytes
        self._clips: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._lock = threading.Lock()  # two sessions created at once decode the clip once
        self.decoded = 0  # clips decoded whole (a test and the stats read it)

    def open(self, path: str, size, keyframe_interval: int):
        """A source for one session: the shared clip, or a decoder of its own for a clip too long to hold."""
        key = (path, str(size), keyframe_interval)
        with self._lock:
            clip = self._clips.get(key)
            if clip is None:
                clip = self._decode_whole(path, size, keyframe_interval)
                if clip is None:
                    return VideoSource(path, size, "loop", keyframe_interval)
                self._clips[key] = clip
            return clip

    def _decode_whole(self, path: str, size, keyframe_interval: int) -> SharedClip | None:
        source = VideoSource(path, size, "loop", keyframe_interval)
        if source.is_still:
            return SharedClip([source.frame(0)], True, keyframe_interval)
        limit = self.max_bytes // (source.size[0] * source.size[1] * 3)
        frames = []
        while source.length is None or len(frames) < source.length:
            if len(frames) >= limit:
                return None  # longer than we hold: each session decodes it
            frames.append(source.frame(len(frames)))
            source.release_before(len(frames) - 1)
            if source.length is not None and len(frames) > source.length:
                frames = frames[: source.length]
        self.decoded += 1
        return SharedClip(frames, False, keyframe_interval)
