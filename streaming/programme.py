"""A live programme source shared by every session on it (one programme, one session per interpreter
language): one reader thread (streaming/programmereader.py) decodes it once; its frames are handed to
the event loop through a bounded queue and pushed from there into each session's own
``LiveVideoSource`` (streaming/livesource.py), which puts them on that session's 25 fps capture
timeline, holds the last frame while the programme is down, and freezes each chunk's frames (its
reference keyframe and context included) as a ``FrameWindow``, exactly as for live WebRTC video.

Frames stay decoded ``av.VideoFrame``s at their native size, shared by reference: nobody writes to one
after the reader hands it over, and each session converts (RGB, its size) in its own thread. Their face
analysis is shared too (streaming/programmeanalysis.py): done once per programme frame for every session.

A programme costs nothing while unused (streaming/demand.py): a pulled one (SRT caller, RTMP, RTSP, HLS)
is read from its first use (a session, a thumbnail) until a grace period after its last session ended; a
listener keeps listening, so that its sender can call at any time, but decodes only while used
(streaming/gateddecoder.py). When it stops, the frames it held are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import urllib.parse
from typing import Callable

import av

from streaming.clock import SYSTEM_CLOCK, Clock, sleep_unless
from streaming.demand import IDLE_AFTER, Demand
from streaming.heap import release_free_heap
from streaming.livesource import LiveVideoSource
from streaming.programmeanalysis import ProgrammeAnalysis
from streaming.programmereader import ProgrammeReader, ProgrammeState
from streaming.readerthread import ReaderThread
from streaming.srtrelay import srt_mode

log = logging.getLogger("livedub.programme")
QUEUE_FRAMES = 50  # two seconds of frames between the reader and a busy event loop; beyond, frames drop

Push = Callable[[av.VideoFrame, float], None]


class Programme:
    """One configured live source: its reader thread, its last frame and the sessions it feeds.

    ``clock`` puts frames on the sessions' timeline; ``idle_clock`` times the grace period ``idle_after``
    (0: read from start-up to shutdown)."""

    def __init__(self, name: str, url: str, on_state: Callable[[ProgrammeState], None] = lambda state: None,
                 clock: Clock = SYSTEM_CLOCK, idle_after: float = IDLE_AFTER,
                 idle_clock: Clock = SYSTEM_CLOCK) -> None:
        self.name = name
        self.url = url
        # An SRT listener: its sender calls us (any other source is pulled: we call it).
        self.listener = urllib.parse.urlsplit(url).scheme.lower() == "srt" and srt_mode(url) == "listener"
        on_demand = idle_after > 0
        self.state = "idle" if on_demand and not self.listener else "connecting"
        self.reason: str | None = None
        self.latest: tuple[av.VideoFrame, float] | None = None  # the last frame and when it is due
        self.frames = 0  # handed to the loop
        self.dropped = 0  # dropped because the loop had not taken the earlier ones
        self._on_state = on_state
        self._clock = clock
        self._subscribers: dict[int, Push] = {}
        self.analysis = ProgrammeAnalysis()  # its frames' face analysis, done once for all its sessions
        self._next_id = 0
        self._queue: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._loop: asyncio.AbstractEventLoop | None = None
        # A listener on demand decodes only while this is set; its reader runs from start-up on.
        self._decode = threading.Event() if on_demand and self.listener else None
        self._demand = Demand(self._begin, self._end, idle_after, idle_clock)
        self._idle_clock = idle_clock
        self._pictured = asyncio.Event()  # set while it has a last frame
        self._reading = ReaderThread(name)

    # ---- lifecycle (loop) -----------------------------------------------------------------------------
    def start(self) -> None:
        """At server start-up: a listener starts listening; with no grace period, every source is read."""
        if self._demand.idle_after <= 0:
            self._demand.touch()
        elif self.listener:
            self._start_reader()

    @property
    def decoding(self) -> bool:
        """Whether its frames are decoded now (used, or within the grace period after its last use)."""
        return self._demand.running and self._reading.reader is not None

    def touch(self) -> None:
        """A use with no session behind it (a thumbnail): read it, until the grace period has passed."""
        self._demand.touch()

    async def picture(self, wait: float) -> tuple[av.VideoFrame, float] | None:
        """Its last frame (a thumbnail's). An idle programme is read from now on, and its first frame
        waited for up to ``wait`` seconds (on the idle clock); None if none came."""
        self.touch()
        if self.latest is None:
            await sleep_unless(self._idle_clock, wait, self._pictured)
        return self.latest

    def _begin(self) -> None:
        if self._decode is not None:
            self._decode.set()  # from the next keyframe on
        else:
            self._start_reader()

    def _end(self) -> None:
        log.info("programme %s: unused for %g s, %s", self.name, self._demand.idle_after,
                 "decoding stops" if self._decode is not None else "reading stops")
        if self._decode is not None:
            self._decode.clear()
        else:
            self._reading.stop()
            self._changed(ProgrammeState(self.name, "idle", reason=f"unused for {self._demand.idle_after:g} s"))
        self._drop_frames()
        # The frames' memory back to the system, not kept by malloc for the next ones (blocking: a thread).
        asyncio.get_running_loop().run_in_executor(None, release_free_heap)

    def _start_reader(self) -> None:
        self._loop = asyncio.get_running_loop()
        reader = ProgrammeReader(self.name, self.url, lambda frame, due: self._offer(reader, frame, due),
                                 lambda state: self._call_soon(reader, self._changed_by, reader, state),
                                 self._clock.now, decode=self._decode)
        self._reading.start(reader)
        self.state, self.reason = "connecting", None

    def _drop_frames(self) -> None:
        """Nothing decoded is kept while unused: the last frame, the shared analysis' frames, the queue."""
        self.latest = None
        self._pictured.clear()
        self.analysis.clear()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    @property
    def readers(self) -> list[threading.Thread]:
        """Its reader threads still running (a stopped one blocked in a pulled read ends at its timeout)."""
        return self._reading.alive

    async def close(self) -> None:
        self._demand.close()
        await self._reading.close()
        self._subscribers.clear()
        self._drop_frames()

    # ---- sessions (loop) ------------------------------------------------------------------------------
    def live_source(self, size) -> LiveVideoSource:
        """A session's own view of the programme: starts with the last frame (which also sizes it)."""
        self.touch()  # a session is being made: reading starts now (its subscription keeps it going)
        source = LiveVideoSource(size, analysis=self.analysis)
        if self.latest is not None:
            source.push(self.latest[0], 0.0)
        return source

    def subscribe(self, push: Push) -> Callable[[], None]:
        """``push(frame, due)`` for every frame from now on (on the loop); returns the unsubscribe. The
        programme is read while it has subscribers (and for the grace period after the last one)."""
        key, self._next_id = self._next_id, self._next_id + 1
        self._subscribers[key] = push
        release = self._demand.acquire()

        def unsubscribe() -> None:
            if self._subscribers.pop(key, None) is not None:
                release()

        return unsubscribe

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def stats(self) -> dict:
        return {"source": self.name, "state": self.state, "reason": self.reason, "frames": self.frames,
                "dropped": self.dropped, "sessions": self.subscribers, "decoding": self.decoding}

    # ---- the reader's hand-off (its thread) -----------------------------------------------------------
    def _offer(self, reader: ProgrammeReader, frame: av.VideoFrame, due: float) -> None:
        if reader.stop.is_set():
            return  # a stopped reader's last frame: nobody wants it
        try:
            self._queue.put_nowait((frame, due))
        except queue.Full:
            self.dropped += 1  # written by the reader thread only
            return
        self._call_soon(reader, self._drain)

    def _call_soon(self, reader: ProgrammeReader, fn, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed (the server is shutting down): nobody to hand to
            reader.stop.set()

    # ---- on the loop ----------------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                frame, due = self._queue.get_nowait()
            except queue.Empty:
                return
            if not self._demand.running:
                continue  # decoded as it stopped: not kept
            self.latest = (frame, due)
            self._pictured.set()
            self.frames += 1
            self.analysis.add(frame)
            for push in list(self._subscribers.values()):
                push(frame, due)

    def _changed_by(self, reader: ProgrammeReader, state: ProgrammeState) -> None:
        if not reader.stop.is_set():  # a stopped reader's news is old
            self._changed(state)

    def _changed(self, state: ProgrammeState) -> None:
        self.state, self.reason = state.state, state.reason
        log.info("programme %s: %s%s", self.name, state.state, f" ({state.reason})" if state.reason else "")
        self._on_state(state)
