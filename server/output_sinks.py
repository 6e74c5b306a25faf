"""Where an output's packets go: a relay process per connection, fed through a pipe with a write timeout.

The server process never runs FFmpeg's network code: PyAV opens an output URL (TCP connect, TLS, the
RTMP handshake) holding the GIL and has no write timeout, so in the server a silent receiver would freeze
every session. RTMP/RTMPS go through ``python -m server.rtmp_relay`` (the session's packets, framed, into
its stdin; it muxes FLV to the URL with PyAV, no re-encode) and SRT through Debian's ``srt-live-transmit``
(package srt-tools; PyAV's FFmpeg has no SRT; MPEG-TS muxed here into its stdin). Both are the same
``RelayProcess``: started per connection, its connect awaited with a timeout, its last lines kept as the
reason it stopped, killed and always reaped (no zombies). Every write into its pipe waits at most
``RelayLimits.write`` seconds: a receiver that stops reading blocks its relay, the pipe fills, and the
write fails instead of blocking the output's thread for ever.

The session's H.264 packets carry their SPS/PPS in band at each keyframe (x264 without global headers):
FFmpeg's FLV muxer turns them into the AVC sequence header RTMP servers need, and MPEG-TS carries them as
they are. AAC's AudioSpecificConfig comes from the output stream's own AAC context (the same settings as
the session's encoder, so the same bytes: checked).
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import fractions
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from typing import BinaryIO, Callable, Iterator

import av

from model.base import FPS
from server.output_url import OutputUrl
from streaming.srtrelay import RelayMissing, relay_path
from streaming.timeline import AUDIO_CLOCK

CONNECT_TIMEOUT = 5.0  # seconds for a relay to say it connected
WRITE_TIMEOUT = 10.0  # seconds a write into a relay may wait before its receiver counts as stalled
# Seconds an RTMP receiver may acknowledge nothing while data waits before the relay gives up on it
# (server/ack_watch.py): TCP retransmits back off to 3.2 s by the fifth try, so a brief loss is not a stall.
ACK_STALL = 10.0
RTMP_CONNECTED = "rtmp relay connected"  # what server.rtmp_relay prints once its receiver took the header
DRAIN = 1.0  # seconds a relay may take to send what it holds (SRT's latency) when an output ends
PIPE_BUFFER = 7 * 188 * 4  # MPEG-TS into the relay: four SRT payloads (1316 bytes) per write at most
# One packet into the RTMP relay: video?, keyframe?, pts (frames or 48 kHz samples), size; then its bytes.
PACKET_HEADER = struct.Struct("<??qI")
VIDEO_TIME_BASE = fractions.Fraction(1, FPS)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_CLOCK)


class SinkError(Exception):
    """The connection failed or was lost; the message says why in one line."""


@dataclasses.dataclass(frozen=True)
class RelayLimits:
    connect: float = CONNECT_TIMEOUT
    write: float = WRITE_TIMEOUT
    ack_stall: float = ACK_STALL  # RTMP relays: seconds with nothing acknowledged (0: not watched)
    pipe_bytes: int | None = None  # the relay's input pipe (None: the system's, 64 KiB); smaller finds a stall sooner


class MuxSink:
    """A PyAV output container with one H.264 and one AAC stream, its packets' times in output seconds
    from the connection's first keyframe. In the server only into a pipe; to a URL only in a relay."""

    def __init__(self, target, format_name: str, size: tuple[int, int], aac_config: bytes | None,
                 relay: "RelayProcess | None" = None) -> None:
        self.relay = relay
        # flush_packets: each packet leaves at once (a live stream; FFmpeg would buffer 32 KB of a pipe).
        self.container = av.open(target, "w", format=format_name, options={"flush_packets": "1"},
                                 buffer_size=PIPE_BUFFER)
        height, width = size
        self.video = self.container.add_mux_stream("h264", rate=FPS, width=width, height=height)
        self.audio = self.container.add_stream("aac", rate=AUDIO_CLOCK, layout="stereo")
        self.audio.codec_context.format = "fltp"
        self.container.start_encoding()  # connects (a URL), writes the header
        if aac_config is not None and self.audio.codec_context.extradata != aac_config:
            raise SinkError("the output's AAC configuration differs from the session encoder's")

    def write_video(self, data: bytes, index: int, keyframe: bool) -> None:
        packet = av.Packet(data)
        packet.pts = packet.dts = index
        packet.time_base = VIDEO_TIME_BASE
        packet.is_keyframe = keyframe
        packet.stream = self.video
        self.container.mux(packet)

    def write_audio(self, data: bytes, sample: int) -> None:
        packet = av.Packet(data)
        packet.pts = packet.dts = sample
        packet.time_base = AUDIO_TIME_BASE
        packet.stream = self.audio
        self.container.mux(packet)

    def close(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, OSError, ValueError, SinkError):
            pass  # the receiver is gone: nothing more to tell it
        finally:
            if self.relay is not None:
                # srt-live-transmit is not told to end by closing its input: it would close its SRT socket
                # at once, and SRT's live mode drops what was not yet acknowledged.
                self.relay.stop(DRAIN)


class TimedPipe:
    """The writing end of a relay's stdin, non-blocking: a write that cannot go on for ``timeout``
    seconds (the relay stopped reading) raises SinkError; a relay that ended raises it with its reason."""

    def __init__(self, relay: "RelayProcess", timeout: float) -> None:
        self.relay, self.timeout = relay, timeout
        self.fd = relay.process.stdin.fileno()
        os.set_blocking(self.fd, False)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        deadline = time.monotonic() + self.timeout
        while view:
            try:
                view = view[os.write(self.fd, view):]
                deadline = time.monotonic() + self.timeout  # it moves: the relay is reading
                continue
            except BlockingIOError:
                pass
            except OSError:  # the relay ended (a broken pipe): its last words say why
                raise SinkError(self.relay.ended_reason()) from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise SinkError(f"the receiver stopped taking the stream (nothing sent for {self.timeout:g} s)")
            select.select([], [self.fd], [], left)  # writable again, or the deadline
        return len(data)


class RelayProcess:
    """A relay child (its stdin a pipe, its stdout and stderr kept: the last lines name why it stopped)
    that prints ``marker`` once it connected to the receiver."""

    def __init__(self, argv: list[str], marker: str, label: str, limits: RelayLimits, env=None) -> None:
        self.marker, self.label, self.limits = marker, label, limits
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, bufsize=0, env=env)
        self.lines: collections.deque[str] = collections.deque(maxlen=5)
        self.connected = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"{label}-relay-log", daemon=True)
        self._reader.start()
        try:
            if limits.pipe_bytes:
                fcntl.fcntl(self.process.stdin.fileno(), fcntl.F_SETPIPE_SZ, limits.pipe_bytes)
            self.input = TimedPipe(self, limits.write)
        except OSError:
            self.stop()
            raise

    def _read(self) -> None:
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.lines.append(line)
            if self.marker in line:
                self.connected.set()

    def wait_connected(self, stopped: Callable[[], bool]) -> None:
        """Until it said it connected; killed when it ends, takes too long, or ``stopped()`` (the output
        was removed: a server that stops waits for no handshake)."""
        deadline = time.monotonic() + self.limits.connect
        while not self.connected.wait(0.05):
            if stopped():
                self.stop()
                raise SinkError(f"{self.label} connection abandoned: the output was removed")
            if self.process.poll() is not None:
                reason = self.ended_reason()
                self.stop()
                raise SinkError(f"{self.label} connection failed: {reason}")
            if time.monotonic() > deadline:
                self.stop()
                raise SinkError(f"{self.label} connection failed: no answer within {self.limits.connect:g} s")

    def reason(self) -> str:
        lines = [line for line in self.lines if not line.startswith(("Media path", "SrtCommon"))]
        code = self.process.poll()
        return (lines[-1] if lines else f"the relay ended (exit status {code})")[:200]

    def ended_reason(self) -> str:
        """Why the relay ended, once it has (its output read to the end)."""
        try:
            self.process.wait(DRAIN)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(DRAIN)
        return self.reason()

    def stop(self, drain: float = 0.0, close_input: bool = False) -> None:
        """Give it ``drain`` seconds to send what it holds (after closing its input if told to), then kill
        and reap it (a killed child left unwaited is a zombie)."""
        if close_input:
            _close(self.process.stdin)
        if drain:
            try:
                self.process.wait(drain)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            _close(stream)


def _close(stream) -> None:
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass


class PacketSink:
    """Packets framed into ``server.rtmp_relay``'s stdin: it muxes them (FLV) to the receiver."""

    def __init__(self, relay: RelayProcess) -> None:
        self.relay = relay

    def write_video(self, data: bytes, index: int, keyframe: bool) -> None:
        self.relay.input.write(PACKET_HEADER.pack(True, keyframe, index, len(data)) + data)

    def write_audio(self, data: bytes, sample: int) -> None:
        self.relay.input.write(PACKET_HEADER.pack(False, False, sample, len(data)) + data)

    def close(self) -> None:
        self.relay.stop(DRAIN, close_input=True)  # its input's end: it ends the stream and disconnects


def read_packets(stream: BinaryIO) -> Iterator[tuple[bool, bool, int, bytes]]:
    """What PacketSink framed: (video, keyframe, pts, data) until the input ends."""
    while header := stream.read(PACKET_HEADER.size):
        if len(header) < PACKET_HEADER.size:
            return
        video, keyframe, pts, size = PACKET_HEADER.unpack(header)
        data = stream.read(size)
        if len(data) < size:
            return
        yield video, keyframe, pts, data


def open_sink(url: OutputUrl, size: tuple[int, int], aac_config: bytes | None,
              limits: RelayLimits = RelayLimits(), stopped: Callable[[], bool] = lambda: False) -> MuxSink | PacketSink:
    """Start ``url``'s relay and wait until it connected (blocking, GIL released: call it off the event
    loop)."""
    if url.kind == "rtmp":
        # The URL (its stream key) goes on stdin, not the command line other users can list.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        relay = RelayProcess([sys.executable, "-m", "server.rtmp_relay"], RTMP_CONNECTED, "RTMP", limits, env)
        header = {"url": url.url, "size": list(size), "aac_config": aac_config.hex() if aac_config else None,
                  "ack_stall": limits.ack_stall}
        try:
            relay.input.write(json.dumps(header).encode() + b"\n")
            relay.wait_connected(stopped)
        except BaseException:
            relay.stop()
            raise
        return PacketSink(relay)
    try:
        binary = relay_path()  # the same srt-live-transmit as SRT programme sources
    except RelayMissing as exc:
        raise SinkError(str(exc)) from None
    separator = "&" if "?" in url.url else "?"
    # -a:no: a lost receiver ends the process, and this side decides when to try again (and says so).
    relay = RelayProcess([binary, "-a:no", "file://con", f"{url.url}{separator}mode=caller"], "target connected",
                         "SRT", limits)
    relay.wait_connected(stopped)
    try:
        return MuxSink(relay.input, "mpegts", size, aac_config, relay)
    except BaseException:
        relay.stop()
        raise


def describe(exc: BaseException) -> str:
    """One line for an event: the error without FFmpeg's long call context."""
    if isinstance(exc, av.FFmpegError):
        return (exc.strerror or type(exc).__name__)[:200]
    if isinstance(exc, SinkError):
        return str(exc)[:200]
    return f"{type(exc).__name__}: {exc}"[:200]
