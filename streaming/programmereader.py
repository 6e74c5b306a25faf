"""The reading side of a live programme source: one thread per source that opens the stream with PyAV
(through the SRT relay for ``srt://``), decodes its video, puts each frame on the server's clock by its
own timestamp (streaming/restamp.py), and hands it over; when the stream drops, it reopens it with
backoff. PyAV blocks, so none of this runs on the event loop. A listener's reader may be given a decode gate
(streaming/gateddecoder.py): it then keeps the connection and demuxes, but decodes only while the gate is set.

The thread owns the container, the decoder and the restamper; it shares nothing mutable. What leaves
it goes through the two callbacks only: ``on_frame(frame, due)`` with a decoded ``av.VideoFrame`` at its
native size that the thread never touches again, and ``on_state(ProgrammeState)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import urllib.parse
from typing import Callable, ClassVar

import av

from streaming.backoff import Backoff
from streaming.gateddecoder import GatedDecoder
from streaming.restamp import Restamper
from streaming.srtrelay import RelayMissing, RelayStream

log = logging.getLogger("livedub.programme")
OPEN_TIMEOUT = 10.0  # seconds to connect to a pulled stream (rtmp, rtsp, HLS)
READ_TIMEOUT = 5.0  # seconds without data from a pulled stream before it counts as lost
AHEAD_LIMIT = 2.0  # frames due further ahead than this (an HLS segment fetched at once) are read no faster
# Probe little: a live stream starts as soon as its video parameters are known, not 5 s of data later.
RECONNECT_CAP = 10.0  # seconds: a programme that dropped is tried at least this often (0.5 s doubling up to it)
PROBE_OPTIONS = {"probesize": "500000", "analyzeduration": "1000000"}


@dataclasses.dataclass(frozen=True)
class ProgrammeState:
    """A programme source's connection changed: ``connected``, ``lost`` or ``reconnecting``; or it stopped
    being read (``idle``: no session used it for the grace period)."""

    name: ClassVar[str] = "programme"
    source: str
    state: str
    reason: str | None = None
    attempt: int | None = None  # reconnecting: the how-manieth try since the stream was last up
    retry_in: float | None = None  # reconnecting: seconds until that try
    size: str | None = None  # connected: the stream's WIDTHxHEIGHT

    def message(self) -> dict:
        """The event as the control protocol and MQTT send it (server-wide: no session)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {"type": "event", "event": self.name, **fields}



class ProgrammeReader:
    """Run ``run`` in a thread of its own; ``stop`` ends it (within a poll, or a read timeout)."""

    def __init__(self, name: str, url: str, on_frame: Callable[[av.VideoFrame, float], None],
                 on_state: Callable[[ProgrammeState], None], now: Callable[[], float] = time.monotonic,
                 backoff: Backoff | None = None, decode: threading.Event | None = None) -> None:
        self.name = name
        self.url = url
        self._on_frame = on_frame
        self._on_state = on_state
        self._now = now
        self._backoff = backoff or Backoff(cap=RECONNECT_CAP)
        self._decode = decode  # None: decode every frame; else only while it is set
        self.stop = threading.Event()

    def run(self) -> None:
        # HLS arrives a segment at a time, ahead of its frames: it keeps its first offset and buffers.
        restamper = Restamper(tighten=urllib.parse.urlsplit(self.url).scheme not in ("http", "https"))
        attempt = 0
        while not self.stop.is_set():
            connected = False
            reason = "the stream ended"
            try:
                with self._open() as (container, ended):
                    if not container.streams.video:
                        raise OSError("the stream has no video")
                    stream = container.streams.video[0]
                    # Slice threads, not frame threads: those hold frames back (a frame per thread) and
                    # release the last ones only when the stream ends, long after they were due.
                    stream.thread_type = "SLICE"
                    decoder = GatedDecoder(stream, self._decode, restamper.reset)
                    for packet in container.demux(stream):
                        for frame in decoder.decode(packet):
                            if ended() is not None:
                                break  # the demuxer's last frame, given up at the end: stale
                            self._hand_over(frame, restamper)
                            if not connected:  # after its first frame: a connected programme has a picture
                                connected, attempt = True, 0
                                self._connected(f"{frame.width}x{frame.height}")
                        if not connected and packet.size and not decoder.wanted:
                            connected, attempt = True, 0  # a sender is there; nobody watches it yet
                            context = stream.codec_context
                            self._connected(f"{context.width}x{context.height}" if context.width else None)
                        if self.stop.is_set():
                            break
                    reason = ended() or reason
            except (av.FFmpegError, OSError, RelayMissing) as exc:
                reason = _one_line(exc)
            except Exception as exc:  # noqa: BLE001 - a bug in one stream must not end the thread for good
                log.exception("programme %s: reader failed", self.name)
                reason = _one_line(exc)
            if self.stop.is_set():
                break
            restamper.reset()
            if connected:
                self._on_state(ProgrammeState(self.name, "lost", reason=reason))
            attempt += 1
            delay = self._backoff.delay(attempt)
            self._on_state(ProgrammeState(self.name, "reconnecting", reason=None if connected else reason,
                                          attempt=attempt, retry_in=delay))
            self.stop.wait(delay)

    def _connected(self, size: str | None) -> None:
        self._on_state(ProgrammeState(self.name, "connected", size=size))

    def _hand_over(self, frame: av.VideoFrame, restamper: Restamper) -> None:
        due = restamper.due(frame.time, self._now())
        ahead = due - self._now() - AHEAD_LIMIT
        if ahead > 0:
            self.stop.wait(ahead)  # read a burst at the stream's own pace (bounded memory)
        self._on_frame(frame, due)

    @contextlib.contextmanager
    def _open(self):
        """The opened container, and a function that says why its stream ended (or None)."""
        if urllib.parse.urlsplit(self.url).scheme == "srt":
            relay = RelayStream(self.url, self.stop)
            try:
                try:
                    container = av.open(relay, format="mpegts", options=PROBE_OPTIONS)
                except av.FFmpegError:
                    raise OSError(relay.problem() or "no MPEG-TS from the SRT relay") from None
                with container:
                    yield container, relay.problem
            finally:
                relay.close()
        else:
            with av.open(self.url, options=PROBE_OPTIONS, timeout=(OPEN_TIMEOUT, READ_TIMEOUT)) as container:
                yield container, lambda: None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
