"""The WebRTC output tracks of one viewer: the session's frames and delayed speech, paced by its clock.

aiortc sends whatever ``recv()`` returns at once, so ``recv()`` is the pacer: it sleeps until the next
frame (or 20 ms audio block) is due on the session clock, and when it wakes up more than a few frames
late (a busy loop) it skips ahead instead of sending a burst. It never waits on the generator: the
timeline always has a frame (generated, fallback or the last one shown). Each viewer has its own pair
of tracks; all of them read one session clock, and both tracks of a viewer stamp their frames from
the same origin.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streaming.session import LiveSession
from streaming.timeline import AUDIO_BLOCK, AUDIO_CLOCK, VIDEO_CLOCK

SKIP_AFTER_FRAMES = 6  # this late (240 ms), the frame due now is sent instead: no long burst
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = Fraction(1, AUDIO_CLOCK)


class _PacedTrack(MediaStreamTrack):
    def __init__(self, session: LiveSession) -> None:
        super().__init__()
        self.session = session
        self._next: int | None = None

    def _ended(self, index: int, index_rate: float) -> bool:
        session = self.session
        if session.state == "ended":
            return True
        return session.end_frame is not None and index / index_rate >= session.end_frame / 25

    async def _pace(self, due, at) -> int:
        """Sleep until the next index is due; the index to send (skipping ahead when far behind)."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._next is None:
            self._next = at(now) + 1
        index = self._next
        wait = due(index) - now
        if wait > 0:
            await asyncio.sleep(wait)
        elif -wait > SKIP_AFTER_FRAMES * (due(index + 1) - due(index)):
            index = at(now)
        self._next = index + 1
        return index


class SessionVideoTrack(_PacedTrack):
    kind = "video"

    def __init__(self, session: LiveSession, viewer_id: str) -> None:
        super().__init__(session)
        self.stats = session.viewer_stats(viewer_id)
        self._last_sent: int | None = None

    async def recv(self) -> av.VideoFrame:
        clock = self.session.clock
        n = await self._pace(clock.frame_due, clock.frame_at)
        if self._last_sent is not None and n - self._last_sent > 1:
            self.stats.skipped += n - self._last_sent - 1
        self._last_sent = n
        if self._ended(n, 25):
            self.stop()
            raise MediaStreamError
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.session.frame_for(n)), format="rgb24")
        frame.pts = clock.video_pts(n)
        frame.time_base = VIDEO_TIME_BASE
        self.session.frame_sent(self.stats, n, time.monotonic())
        return frame


class SessionAudioTrack(_PacedTrack):
    kind = "audio"

    def __init__(self, session: LiveSession, viewer_id: str) -> None:
        super().__init__(session)
        self.stats = session.viewer_stats(viewer_id)

    async def recv(self) -> av.AudioFrame:
        clock = self.session.clock
        j = await self._pace(clock.block_due, clock.block_at)
        if self._ended(j, AUDIO_CLOCK / AUDIO_BLOCK):
            self.stop()
            raise MediaStreamError
        if j >= 0:
            samples = self.session.speakers.playout(j * AUDIO_BLOCK, (j + 1) * AUDIO_BLOCK)  # both speakers
        else:
            samples = np.zeros(AUDIO_BLOCK, np.float32)  # before the delay has passed: silence
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = clock.audio_pts(j)
        frame.time_base = AUDIO_TIME_BASE
        self.stats.audio_block_sent(j, time.monotonic())
        return frame
