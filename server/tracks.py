"""The WebRTC output tracks of one viewer: the session's frames and delayed speech, paced by its clock.

aiortc sends whatever ``recv()`` returns at once, so ``recv()`` is the pacer: it sleeps until the next
frame (or 20 ms audio block) is due on the session's schedule, and when it wakes up more than a few
frames late (a busy loop) it skips ahead instead of sending a burst. It never waits on the generator:
the playout always has a frame (generated, fallback or the last one shown). The tracks read only the
session's ``Playout`` (streaming/playout.py): its clock, schedule, frames and speech. Each viewer has its
own pair of tracks; all of them read one schedule, and both tracks of a viewer stamp their frames from
the same origin.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from model.base import FPS
from streaming.playout import Playout
from streaming.timeline import AUDIO_BLOCK, AUDIO_CLOCK, VIDEO_CLOCK

SKIP_AFTER_FRAMES = 6  # this late (240 ms), the frame due now is sent instead: no long burst
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = Fraction(1, AUDIO_CLOCK)


class _PacedTrack(MediaStreamTrack):
    def __init__(self, playout: Playout, viewer_id: str) -> None:
        super().__init__()
        self.playout = playout
        self.stats = playout.viewer(viewer_id)
        self._next: int | None = None

    async def _pace(self, due, at) -> int:
        """Sleep until the next index is due; the index to send (skipping ahead when far behind)."""
        if self.readyState != "live":
            raise MediaStreamError
        now = self.playout.now()
        if self._next is None:
            self._next = at(now) + 1
        index = self._next
        wait = due(index) - now
        if wait > 0:
            await self.playout.sleep(wait)
        elif -wait > SKIP_AFTER_FRAMES * (due(index + 1) - due(index)):
            index = at(now)
        self._next = index + 1
        return index

    def _end_if_past(self, seconds: float) -> None:
        if self.playout.ended(seconds):
            self.stop()
            raise MediaStreamError


class SessionVideoTrack(_PacedTrack):
    kind = "video"

    def __init__(self, playout: Playout, viewer_id: str) -> None:
        super().__init__(playout, viewer_id)
        self._last_sent: int | None = None

    async def recv(self) -> av.VideoFrame:
        schedule = self.playout.schedule
        n = await self._pace(schedule.frame_due, schedule.frame_at)
        if self._last_sent is not None and n - self._last_sent > 1:
            self.stats.skipped += n - self._last_sent - 1
        self._last_sent = n
        self._end_if_past(n / FPS)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.playout.frame(n)), format="rgb24")
        frame.pts = schedule.video_pts(n)
        frame.time_base = VIDEO_TIME_BASE
        self.playout.frame_sent(self.stats, n)
        return frame


class SessionAudioTrack(_PacedTrack):
    kind = "audio"

    async def recv(self) -> av.AudioFrame:
        schedule = self.playout.schedule
        j = await self._pace(schedule.block_due, schedule.block_at)
        self._end_if_past(j * AUDIO_BLOCK / AUDIO_CLOCK)
        pcm = (np.clip(self.playout.speech(j), -1.0, 1.0) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = schedule.audio_pts(j)
        frame.time_base = AUDIO_TIME_BASE
        self.stats.audio_block_sent(j, self.playout.now())
        return frame
