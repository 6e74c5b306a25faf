"""A live programme source shared by every session on it (one programme, one session per interpreter
language): one reader thread (streaming/programmereader.py) decodes it once; its frames are handed to
the event loop through a bounded queue and pushed from there into each session's own
``LiveVideoSource`` (streaming/livesource.py), which puts them on that session's 25 fps capture
timeline, holds the last frame while the programme is down, and freezes each chunk's frames (its
reference keyframe and context included) as a ``FrameWindow``, exactly as for live WebRTC video.

Frames stay decoded ``av.VideoFrame``s at their native size, shared by reference: nobody writes to one
after the reader hands it over, and each session converts (RGB, its size) in its own thread. Their face
analysis is shared too (streaming/programmeanalysis.py): done once per programme frame for every session.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Callable

import av

from streaming.clock import SYSTEM_CLOCK, Clock
from streaming.livesource import LiveVideoSource
from streaming.programmeanalysis import ProgrammeAnalysis
from streaming.programmereader import ProgrammeReader, ProgrammeState

log = logging.getLogger("livedub.programme")
QUEUE_FRAMES = 50  # two seconds of frames between the reader and a busy event loop; beyond, frames drop
# Seconds to wait for a reader to notice its stop. One blocked in a pulled stream's read notices only at
# the read timeout (PyAV's reads cannot be interrupted); it is a daemon thread and ends by itself then.
JOIN_TIMEOUT = 1.0

Push = Callable[[av.VideoFrame, float], None]


class Programme:
    """One configured live source: its reader thread, its last frame and the sessions it feeds."""

    def __init__(self, name: str, url: str, on_state: Callable[[ProgrammeState], None] = lambda state: None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.name = name
        self.url = url
        self.state = "connecting"
        self.reason: str | None = None
        self.latest: tuple[av.VideoFrame, float] | None = None  # the last frame and when it is due
        self.frames = 0  # handed to the loop
        self.dropped = 0  # dropped because the loop had not taken the earlier ones
        self._on_state = on_state
        self._subscribers: dict[int, Push] = {}
        self.analysis = ProgrammeAnalysis()  # its frames' face analysis, done once for all its sessions
        self._next_id = 0
        self._queue: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader = ProgrammeReader(name, url, self._offer, self._state_from_thread, clock.now)
        self._thread: threading.Thread | None = None

    # ---- lifecycle (loop) -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._reader.run, name=f"programme-{self.name}", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._reader.stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, JOIN_TIMEOUT)
            if self._thread.is_alive():
                log.info("programme %s: its reader ends at its read timeout", self.name)
        self._subscribers.clear()

    # ---- sessions (loop) ------------------------------------------------------------------------------
    def live_source(self, size) -> LiveVideoSource:
        """A session's own view of the programme: starts with the last frame (which also sizes it)."""
        source = LiveVideoSource(size, analysis=self.analysis)
        if self.latest is not None:
            source.push(self.latest[0], 0.0)
        return source

    def subscribe(self, push: Push) -> Callable[[], None]:
        """``push(frame, due)`` for every frame from now on (on the loop); returns the unsubscribe."""
        key, self._next_id = self._next_id, self._next_id + 1
        self._subscribers[key] = push
        return lambda: self._subscribers.pop(key, None)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def stats(self) -> dict:
        return {"source": self.name, "state": self.state, "reason": self.reason, "frames": self.frames,
                "dropped": self.dropped, "sessions": self.subscribers}

    # ---- the reader's hand-off (its thread) -----------------------------------------------------------
    def _offer(self, frame: av.VideoFrame, due: float) -> None:
        try:
            self._queue.put_nowait((frame, due))
        except queue.Full:
            self.dropped += 1  # written by the reader thread only
            return
        self._call_soon(self._drain)

    def _state_from_thread(self, state: ProgrammeState) -> None:
        self._call_soon(self._changed, state)

    def _call_soon(self, fn, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed (the server is shutting down): nobody to hand to
            self._reader.stop.set()

    # ---- on the loop ----------------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                frame, due = self._queue.get_nowait()
            except queue.Empty:
                return
            self.latest = (frame, due)
            self.frames += 1
            self.analysis.add(frame)
            for push in list(self._subscribers.values()):
                push(frame, due)

    def _changed(self, state: ProgrammeState) -> None:
        self.state, self.reason = state.state, state.reason
        log.info("programme %s: %s%s", self.name, state.state, f" ({state.reason})" if state.reason else "")
        self._on_state(state)
