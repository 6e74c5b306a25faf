"""A session's broadcast outputs: its dub pushed to RTMP/RTMPS/SRT receivers, never slowing the session.

Each output is one more subscriber of the session's H.264 encoder (shared with WebRTC viewers that chose
H.264) and of its one AAC encoder (shared by all its outputs): nothing is encoded per output. Packets go
from the event loop into the output's small bounded queue; its own thread starts the connection's relay
process and writes into its pipe with a timeout (server/output_sinks.py): FFmpeg's network code never
runs in this process. When the queue is full (a slow receiver, a stalled network) what it holds is
dropped and the output resumes at the next keyframe, which it asks for. When the connection fails or is
lost, the output waits (streaming/backoff.py: exponential, capped, on the session's clock) and tries again;
every change is an ``OutputChanged`` event, and ``stats()`` lists the outputs with their state.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import threading
from typing import Callable

from model.base import FPS
from streaming.backoff import Backoff
from server.egress import AacEncoder, Egress, Encoded, VideoEncoder
from server.output_sinks import RelayLimits, SinkError, describe, open_sink
from server.output_url import OutputUrl
from streaming.clock import Clock, sleep_unless
from streaming.errors import InputError
from streaming.events import OutputChanged, SessionEvent
from streaming.timeline import AUDIO_CLOCK

log = logging.getLogger("livedub.outputs")
OUTPUT_QUEUE = 64  # items (a frame or a speech block each: under a second) before the output drops them
MAX_OUTPUTS = 8  # per session
GIVE_UP_AFTER = 40  # failures in a row (about 18 minutes at the 30 s cap) before an output is given up
_STOP = object()


class UnknownOutput(InputError):
    pass


class OutputLimit(InputError):
    pass


class _Tap:
    """What an encoder delivers to: one per encoder, into the output's queue."""

    def __init__(self, output: "Output", kind: str) -> None:
        self.output, self.kind = output, kind

    def deliver(self, encoded: Encoded | None) -> None:
        self.output.deliver(self.kind, encoded)


class Output:
    def __init__(self, output_id: str, url: OutputUrl, video: VideoEncoder, audio: AacEncoder, clock: Clock,
                 emit: Callable[[SessionEvent], None], backoff: Backoff | None = None,
                 limits: RelayLimits = RelayLimits()) -> None:
        self.id = output_id
        self.url = url
        self._video, self._audio = video, audio
        self._taps = (_Tap(self, "video"), _Tap(self, "audio"))
        self._clock = clock
        self._emit = emit
        self.backoff = backoff or Backoff(give_up_after=GIVE_UP_AFTER)
        self.limits = limits
        self.sink = None  # this connection's, while there is one (its relay process: tests reach it)
        self._queue: queue.Queue = queue.Queue(OUTPUT_QUEUE)
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._streaming = False  # connected: packets are queued
        self._synced = False  # a keyframe was queued since connecting (or since dropping)
        self.state = "connecting"
        self.attempts = 0
        self.connects = 0
        self.frames = 0  # video frames queued for sending
        self.dropped = 0  # items dropped from a full queue
        self.error: str | None = None
        self.retry_in: float | None = None
        self._stream_size: tuple[int, int] | None = None  # the picture size this connection's header says
        self.stream_start: float | None = None  # output seconds at time 0 of the receiver's stream (this connection)

    # ---- on the event loop ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"output-{self.id}")

    def deliver(self, kind: str, encoded: Encoded | None) -> None:
        if encoded is None:  # the session's output has ended
            self._streaming = False
            self._put_stop()
            return
        if not self._streaming:
            return
        if kind == "video":
            if self._video.size != self._stream_size:  # a live source's first frame set a new size
                self._streaming = False
                self._put_stop("the picture size changed")  # the receiver's stream header says the old one
                return
            if not self._synced and not encoded.keyframe:
                return
            self._synced = True
        elif not self._synced:
            return  # speech before the first keyframe: the receiver's stream starts with the picture
        try:
            self._queue.put_nowait((kind, encoded))
            self.frames += kind == "video"
        except queue.Full:
            with self._queue.mutex:
                self.dropped += len(self._queue.queue) + 1
                self._queue.queue.clear()
            self._synced = False  # resume at a keyframe
            self._video.request_keyframe()

    def _connected(self, size: tuple[int, int]) -> None:
        """The connection thread connected, with a stream header for pictures of ``size``."""
        if self._stop.is_set():
            return  # removed while connecting
        self._stream_size = size
        self.connects += 1
        self.backoff.connected(self._clock.now())
        self.state, self.error, self.retry_in = "connected", None, None
        self._streaming, self._synced = True, False
        for tap in self._taps:
            (self._video if tap.kind == "video" else self._audio).subscribe(tap)
        self._video.request_keyframe()
        log.info("output %s connected to %s", self.id, self.url.shown)
        self._emit(OutputChanged(self.id, "connected", self.url.shown, attempt=self.attempts))

    def _unsubscribe(self) -> None:
        self._streaming = False
        self._video.unsubscribe(self._taps[0])
        self._audio.unsubscribe(self._taps[1])

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._stop.is_set():
                self.attempts += 1
                error = await self._attempt(loop)
                self._unsubscribe()
                if self._stop.is_set():
                    break
                if error is None:  # the session's output ended: close() says so
                    break
                delay = self.backoff.failed(self._clock.now())
                if delay is None:
                    self._set_state("failed", error)
                    break
                self.retry_in = delay
                self._set_state("retrying", error, retry_in=round(delay, 3), attempt=self.attempts + 1)
                if await sleep_unless(self._clock, delay, self._stop):
                    break
                self.retry_in = None
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug ends this output only, never the session
            log.exception("output %s failed", self.id)
            self._set_state("failed", "internal error")

    async def _attempt(self, loop: asyncio.AbstractEventLoop) -> str | None:
        """One connection, in a thread of its own (a daemon: a write into a relay that stopped reading waits
        for its timeout, and must not hold the process at exit)."""
        done = loop.create_future()

        def run() -> None:
            result = self._connect_and_send(loop)
            try:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))
            except RuntimeError:  # the loop has closed (server stopped): nobody waits for the result
                pass

        threading.Thread(target=run, name=f"output-{self.id}", daemon=True).start()
        return await done

    def _set_state(self, state: str, error: str | None, **fields) -> None:
        self.state, self.error = state, error
        (log.warning if error else log.info)("output %s %s (%s)%s", self.id, state, self.url.shown,
                                             f": {error}" if error else "")
        self._emit(OutputChanged(self.id, state, self.url.shown, error=error, **fields))

    def _put_stop(self, reason: str | None = None) -> None:
        """End the connection: with ``reason``, as a failure (tried again), else as the output's end."""
        with self._queue.mutex:
            self._queue.queue.clear()
        self._queue.put_nowait((_STOP, reason))

    async def close(self, reason: str = "removed") -> None:
        """Stop sending, disconnect, and say so (``removed``, or ``ended`` with the session)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._unsubscribe()
        self._put_stop()  # the thread writes the stream's end and disconnects
        if self._task is not None:  # the thread ends by itself at the STOP (or its blocked write's failure)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.state = reason
        self._emit(OutputChanged(self.id, reason, self.url.shown))

    def stats(self) -> dict:
        return {"output": self.id, "url": self.url.shown, "state": self.state, "connects": self.connects,
                "attempts": self.attempts, "frames": self.frames, "dropped": self.dropped,
                "retry_in": self.retry_in, "error": self.error, "stream_start": self.stream_start}

    # ---- in the output's thread -------------------------------------------------------------------------
    def _connect_and_send(self, loop: asyncio.AbstractEventLoop) -> str | None:
        """Connect, then write what the queue brings until the connection fails (its reason), the
        session's output ends or the output is removed (None)."""
        with self._queue.mutex:
            self._queue.queue.clear()  # what was queued belongs to the previous connection
        size = self._video.size
        try:
            sink = open_sink(self.url, size, self._audio.extradata, self.limits, self._stop.is_set)
        except SinkError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is retried, and reported
            return describe(exc)
        if self._stop.is_set():
            sink.close()
            return None
        self.sink = sink
        loop.call_soon_threadsafe(self._connected, size)  # the loop is alive: the attempt awaits this thread
        origin: int | None = None  # the first keyframe's index: time 0 of this connection's stream
        try:
            while True:
                kind, encoded = self._queue.get()
                if kind is _STOP:
                    return encoded  # None (the end) or why this connection ends
                if origin is None:
                    origin = encoded.index  # a keyframe: deliver() queues nothing before one
                    self.stream_start = origin / FPS
                if kind == "video":
                    for packet in encoded.packets:
                        sink.write_video(bytes(packet), encoded.index - origin, encoded.keyframe)
                else:
                    start = round(origin / FPS * AUDIO_CLOCK)  # samples of output time at the origin
                    for packet in encoded.packets:
                        if packet.pts is not None and packet.pts >= start:
                            sink.write_audio(bytes(packet), packet.pts - start)
        except Exception as exc:  # noqa: BLE001 - a lost receiver (or a muxer refusal) ends this connection
            return "connection lost: " + describe(exc)
        finally:
            sink.close()
            self.sink = None


class SessionOutputs:
    """The outputs of one session, added and removed by id."""

    def __init__(self, egress: Egress, clock: Clock, emit: Callable[[SessionEvent], None],
                 limits: RelayLimits = RelayLimits()) -> None:
        self._egress = egress
        self._limits = limits
        self._clock = clock
        self._emit = emit
        self.outputs: dict[str, Output] = {}

    def add(self, url: OutputUrl) -> Output:
        if len(self.outputs) >= MAX_OUTPUTS:
            raise OutputLimit(f"output limit reached ({MAX_OUTPUTS} per session); remove one first")
        video, audio = self._egress.broadcast_encoders()
        output = Output(secrets.token_hex(4), url, video, audio, self._clock, self._emit, limits=self._limits)
        self.outputs[output.id] = output
        output.start()
        return output

    async def remove(self, output_id) -> None:
        output = self.outputs.pop(output_id, None) if isinstance(output_id, str) else None
        if output is None:
            raise UnknownOutput(f"unknown output {str(output_id)[:40]!r}: this session's are "
                                f"{', '.join(self.outputs) or 'none'}")
        await output.close()

    async def close(self) -> None:
        outputs, self.outputs = list(self.outputs.values()), {}
        await asyncio.gather(*(o.close("ended") for o in outputs), return_exceptions=True)

    def stats(self) -> list[dict]:
        return [o.stats() for o in self.outputs.values()]
