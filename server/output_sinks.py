"""Where an output's packets go: FLV over RTMP/RTMPS (PyAV's FFmpeg), or MPEG-TS into srt-live-transmit.

A sink is opened (connected) and written in the output's own thread, never on the event loop. The
session's H.264 packets carry their SPS/PPS in band at each keyframe (x264 without global headers):
FFmpeg's FLV muxer turns them into the AVC sequence header RTMP servers need, and MPEG-TS carries them as
they are. AAC's AudioSpecificConfig comes from the output stream's own AAC context (the same settings
as the session's encoder, so the same bytes: checked). PyAV's FFmpeg has no SRT protocol, so SRT goes
through Debian's ``srt-live-transmit`` (package srt-tools): MPEG-TS into its stdin, it calls the
receiver; the process is started, watched and killed here (and always waited for: no zombies).
"""

from __future__ import annotations

import collections
import fractions
import shutil
import socket
import subprocess
import threading
import time

import av

from model.base import FPS
from server.output_url import OutputUrl
from streaming.timeline import AUDIO_CLOCK

CONNECT_TIMEOUT = 5.0  # seconds to reach an RTMP receiver, or for srt-live-transmit to say it connected
SRT_BINARY = "srt-live-transmit"
SRT_DRAIN = 1.0  # seconds the relay may take to send what it holds (SRT's latency) when an output ends
PIPE_BUFFER = 7 * 188 * 4  # MPEG-TS into the relay: four SRT payloads (1316 bytes) per write at most
VIDEO_TIME_BASE = fractions.Fraction(1, FPS)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_CLOCK)


class SinkError(Exception):
    """The connection failed or was lost; the message says why in one line."""


class MuxSink:
    """A PyAV output container with one H.264 and one AAC stream, its packets' times in output seconds
    from the connection's first keyframe."""

    def __init__(self, target, format_name: str, size: tuple[int, int], aac_config: bytes | None,
                 process: subprocess.Popen | None = None) -> None:
        self._process = process
        # PyAV arms FFmpeg's interrupt callback for inputs only: an RTMP connect or write blocks until
        # TCP gives up (a refused or reset connection fails at once).
        # flush_packets: each packet leaves at once (a live stream; FFmpeg would buffer 32 KB of a pipe).
        self.container = av.open(target, "w", format=format_name, options={"flush_packets": "1"},
                                 buffer_size=PIPE_BUFFER)
        height, width = size
        self.video = self.container.add_mux_stream("h264", rate=FPS, width=width, height=height)
        self.audio = self.container.add_stream("aac", rate=AUDIO_CLOCK, layout="stereo")
        self.audio.codec_context.format = "fltp"
        self.container.start_encoding()  # connects, writes the header
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
        except (av.FFmpegError, OSError, ValueError):
            pass  # the receiver is gone: nothing more to tell it
        finally:
            if self._process is not None:
                stop_process(self._process, SRT_DRAIN)


def stop_process(process: subprocess.Popen, drain: float = 0.0) -> None:
    """Give it ``drain`` seconds to send what it holds, then kill and reap it (a killed child left unwaited
    is a zombie). The relay is not told to end by closing its input: it would close its SRT socket at
    once, and SRT's live mode drops what was not yet acknowledged."""
    if drain:
        try:
            process.wait(drain)
        except subprocess.TimeoutExpired:
            pass
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


class SrtRelay:
    """``srt-live-transmit file://con srt://...`` calling the receiver; what it prints is kept (its last
    lines name the reason it stopped), and whether it said it connected."""

    def __init__(self, url: OutputUrl) -> None:
        binary = shutil.which(SRT_BINARY)
        if binary is None:
            raise SinkError(f"{SRT_BINARY} not found: SRT outputs need Debian's srt-tools package")
        separator = "&" if "?" in url.url else "?"
        # -a:no: a lost receiver ends the process, and this side decides when to try again (and says so).
        self.process = subprocess.Popen([binary, "-a:no", "file://con", f"{url.url}{separator}mode=caller"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: collections.deque[str] = collections.deque(maxlen=5)
        self.connected = threading.Event()
        threading.Thread(target=self._read, name="srt-relay-log", daemon=True).start()

    def _read(self) -> None:
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.lines.append(line)
            if "target connected" in line:
                self.connected.set()

    def wait_connected(self) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT + 1.0  # the relay's own timeout is 3 s
        while not self.connected.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                stop_process(self.process)
                raise SinkError(f"SRT connection failed: {self.reason()}")

    def reason(self) -> str:
        lines = [line for line in self.lines if not line.startswith(("Media path", "SrtCommon"))]
        return (lines[-1] if lines else "srt-live-transmit ended")[:200]


def open_sink(url: OutputUrl, size: tuple[int, int], aac_config: bytes | None) -> MuxSink:
    """Connect to ``url`` (blocking: call it off the event loop)."""
    if url.kind == "rtmp":
        try:
            # PyAV opens an output URL holding the GIL (avio_open): while FFmpeg connects, the whole
            # process waits. A receiver that does not answer is found here first, GIL released, in at
            # most CONNECT_TIMEOUT, instead of in TCP's minutes inside FFmpeg.
            socket.create_connection((url.host, url.port), timeout=CONNECT_TIMEOUT).close()
            return MuxSink(url.url, "flv", size, aac_config)
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"RTMP connection failed: {describe(exc)}") from None
    relay = SrtRelay(url)
    relay.wait_connected()
    try:
        return MuxSink(relay.process.stdin, "mpegts", size, aac_config, relay.process)
    except BaseException:
        stop_process(relay.process)
        raise


def describe(exc: BaseException) -> str:
    """One line for an event: the error without FFmpeg's long call context."""
    if isinstance(exc, av.FFmpegError):
        return (exc.strerror or type(exc).__name__)[:200]
    return f"{type(exc).__name__}: {exc}"[:200]
