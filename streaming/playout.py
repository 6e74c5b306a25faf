"""Playout: the narrow interface the output tracks read, and what they report back.

A track needs four things and nothing else of its session: the clock (``now``, ``sleep`` and the
session's schedule: when frame ``n`` and speech block ``j`` are due, their timestamps), the frame due
(``frame(n)``, from the output timeline), the speech due (``speech(j)``: what viewers hear, from the
speakers' playout rings),
and whether output has ended (``ended(seconds)``). The session keeps this object current (``end_at``,
``close``); the tracks never see the session, its engine or its scheduler.
"""

from __future__ import annotations

import collections
from typing import Callable

import numpy as np

from model.base import FPS
from streaming.clock import Clock
from streaming.timeline import AUDIO_BLOCK, OutputTimeline, SessionClock

SPEECH_CHANNELS = 2


class ViewerStats:
    """What one viewer's tracks sent: frame send times (fps, delay) and the A/V offset at sending."""

    def __init__(self) -> None:
        self.sent = collections.deque(maxlen=100)
        self.frames = 0
        self.skipped = 0
        self._audio_sent: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.av_offsets = collections.deque(maxlen=250)  # video send time - audio send time, same instant

    def audio_block_sent(self, j: int, now: float) -> None:
        self._audio_sent[j] = now
        while len(self._audio_sent) > 200:
            self._audio_sent.popitem(last=False)

    def video_frame_sent(self, n: int, now: float) -> None:
        self.sent.append(now)
        self.frames += 1
        audio = self._audio_sent.get(2 * n)  # block 2n (20 ms) starts at frame n (40 ms)
        if audio is not None:
            self.av_offsets.append(now - audio)

    def fps(self, now: float, window: float = 2.0) -> float:
        recent = [t for t in self.sent if now - t <= window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


class Playout:
    def __init__(self, clock: Clock, schedule: SessionClock, timeline: OutputTimeline,
                 speech: Callable[[int, int], np.ndarray]) -> None:
        self.clock = clock
        self.schedule = schedule
        self._timeline = timeline
        self._speech = speech
        self.end_frame: int | None = None  # output ends here once the speech has ended
        self.closed = False
        self.viewers: dict[str, ViewerStats] = {}
        self.played = collections.Counter()  # frames played, by where they came from
        self.send_delays = collections.deque(maxlen=250)

    def now(self) -> float:
        return self.clock.now()

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds)

    # ---- what the tracks read -------------------------------------------------------------------------
    def frame(self, n: int) -> np.ndarray:
        """Output frame ``n`` (generated, fallback, or the last one shown)."""
        image, kind = self._timeline.frame(n)
        self.played[kind] += 1
        # Every viewer plays within a few frames of the clock; two seconds back is safely behind them all.
        self._timeline.release_before(min(n, self.schedule.frame_at(self.now())) - 2 * FPS)
        return image

    def speech(self, j: int) -> np.ndarray:
        """48 kHz speech block ``j`` (20 ms): float32 planar stereo ``[2, 960]`` at the sender's level (a
        mono sender duplicated), silence before the delay has passed."""
        if j < 0:
            return np.zeros((SPEECH_CHANNELS, AUDIO_BLOCK), np.float32)
        block = self._speech(j * AUDIO_BLOCK, (j + 1) * AUDIO_BLOCK)
        return np.vstack([block, block]) if block.ndim == 1 else block  # a mono source: both channels

    def ended(self, seconds: float) -> bool:
        """Whether output at ``seconds`` of output time is past the end (or the session is over)."""
        return self.closed or (self.end_frame is not None and seconds >= self.end_frame / FPS)

    # ---- what the tracks report -------------------------------------------------------------------------
    def viewer(self, viewer_id: str) -> ViewerStats:
        return self.viewers.setdefault(viewer_id, ViewerStats())

    def forget_viewer(self, viewer_id: str) -> None:
        self.viewers.pop(viewer_id, None)

    def frame_sent(self, viewer: ViewerStats, n: int) -> None:
        now = self.now()
        viewer.video_frame_sent(n, now)
        self.send_delays.append(now - self.schedule.at(n / FPS))

    # ---- kept current by the session ------------------------------------------------------------------------
    def end_at(self, frame: int) -> None:
        self.end_frame = frame

    def close(self) -> None:
        self.closed = True
