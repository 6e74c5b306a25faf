"""One clock per session, and the output frames placed on it.

Session time 0 is the session's start (monotonic seconds ``origin``). Speech captured at session time
``c`` is played ``delay`` seconds later; output frame ``n`` shows the speech captured at ``n / 25`` s and
is due at ``origin + delay - lead + n / 25``, and 48 kHz audio block ``j`` (20 ms) at
``origin + delay - lead + j * 0.02``. Both tracks read this one clock, so they cannot drift apart.
``lead`` lets frames leave a little early to cover encoding, network and the receiver's jitter buffer,
so that glass-to-glass delay, not send time, meets the budget.

Output timestamps count from the session's origin on both tracks (pts ``90000 * t`` for video,
``48000 * t`` for audio), the shared origin a receiver needs to lip-sync from RTCP sender reports.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from model.base import FPS
from streaming.chunker import ChunkPlan

VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
AUDIO_BLOCK = 960  # 20 ms at 48 kHz, what WebRTC sends per packet


@dataclasses.dataclass(frozen=True)
class SessionClock:
    origin: float  # monotonic seconds at session time 0
    delay: float  # the latency budget, seconds
    lead: float = 0.0  # seconds frames leave before their glass-to-glass due time

    def at(self, session_seconds: float) -> float:
        """Monotonic time of a capture instant."""
        return self.origin + session_seconds

    def session_time(self, now: float) -> float:
        return now - self.origin

    def _playout(self, session_seconds: float) -> float:
        return self.origin + self.delay - self.lead + session_seconds

    def frame_due(self, n: int) -> float:
        return self._playout(n / FPS)

    def frame_at(self, now: float) -> int:
        """The latest output frame due at ``now``."""
        return math.floor((now - self._playout(0.0)) * FPS + 1e-9)

    def block_due(self, j: int) -> float:
        return self._playout(j * AUDIO_BLOCK / AUDIO_CLOCK)

    def block_at(self, now: float) -> int:
        return math.floor((now - self._playout(0.0)) * AUDIO_CLOCK / AUDIO_BLOCK + 1e-9)

    def video_pts(self, n: int) -> int:
        """Frame ``n``'s timestamp: its playout offset from the origin, in 1/90000 s."""
        return round((self.delay + n / FPS) * VIDEO_CLOCK)

    def audio_pts(self, j: int) -> int:
        return round(self.delay * AUDIO_CLOCK) + j * AUDIO_BLOCK


@dataclasses.dataclass
class Slot:
    """The output frames of one chunk: ``frames[i]`` is output frame ``start + i``."""

    start: int
    frames: np.ndarray  # or a sequence of frames (streaming/i420.py, a region's composed frames)
    kind: str  # "generated" or "fallback"


class OutputTimeline:
    """Output frames by index. Each chunk's slot holds its fallback frames until the generated ones
    replace them; whatever the slot holds when its frames are due is what plays. Frames no slot covers
    (before the first chunk, or when no chunk was prepared) repeat the last frame shown, or ``idle``.
    """

    def __init__(self, plan: ChunkPlan, idle: np.ndarray) -> None:
        self.plan = plan
        self.idle = idle
        self._slots: dict[int, Slot] = {}
        self._last_shown: np.ndarray | None = None

    def offer(self, index: int, frames: np.ndarray, kind: str) -> None:
        """Put chunk ``index``'s new frames in its slot (replacing what was there)."""
        chunk = self.plan.chunk(index)
        self._slots[index] = Slot(chunk.new_start, frames, kind)

    def slot(self, index: int) -> Slot | None:
        return self._slots.get(index)

    def frame(self, n: int) -> tuple[np.ndarray, str]:
        """Frame ``n`` and where it came from ("generated", "fallback" or "idle")."""
        index = self._chunk_of(n)
        slot = self._slots.get(index) if index is not None else None
        if slot is not None and 0 <= n - slot.start < len(slot.frames):
            image = slot.frames[n - slot.start]
            if image is not None:  # None: released, far behind every viewer
                self._last_shown = image
                return image, slot.kind
        return (self._last_shown if self._last_shown is not None else self.idle), "idle"

    def _chunk_of(self, n: int) -> int | None:
        if n < 0:
            return None
        first = self.plan.chunk(0)
        if n < first.end_frame:
            return 0
        return (n - first.end_frame) // self.plan.stride + 1

    def release_before(self, n: int) -> None:
        """Forget slots that end before output frame ``n`` (every viewer is past them), and the frames
        before ``n`` of a slot that can let go of single frames (I420 slots: a frame each)."""
        for index, slot in list(self._slots.items()):
            if slot.start + len(slot.frames) <= n:
                del self._slots[index]
            elif slot.start < n and hasattr(slot.frames, "release_before"):
                slot.frames.release_before(n - slot.start)

    def __len__(self) -> int:
        return len(self._slots)
