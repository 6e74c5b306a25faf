"""Real senders and media servers for the programme-source tests: an SRT caller fed MPEG-TS H.264 by
PyAV at real-time pace (Debian's srt-live-transmit). nginx is tests/_media_servers.py's.

Each programme frame carries its number ``k`` in three grey blocks along its top edge (4 bits each), so
a test can tell which programme frame a session's output frame shows, through H.264 and resizing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from fractions import Fraction

import av
import numpy as np

from media import astronaut

SIDE = 320
BAND = 32  # rows of the marker band (of SIDE)



def marked_frame(base: np.ndarray, k: int) -> np.ndarray:
    """``base`` with frame number ``k`` in its top band, and a strip of fresh noise along its bottom: a
    programme's picture changes, so its frames have the sizes of a real stream's (a still picture's
    would be a few hundred bytes, which an SRT sender holds until a packet's worth has come)."""
    image = base.copy()
    strip = max(8, image.shape[0] // 10)
    image[-strip:] = np.random.default_rng(k).integers(0, 256, (strip, *image.shape[1:]), np.uint8)
    width = image.shape[1] // 3
    for block in range(3):
        level = ((k >> (4 * block)) & 15) * 16 + 8
        image[: image.shape[0] * BAND // SIDE, block * width : (block + 1) * width] = level
    return image


def read_mark(image: np.ndarray) -> int:
    """The programme frame number an (RGB, any size) picture shows (the middle of each block)."""
    rows = max(1, image.shape[0] * BAND // SIDE)
    width = image.shape[1] // 3
    k = 0
    for block in range(3):
        patch = image[rows // 4 : rows * 3 // 4, block * width + width // 4 : block * width + width * 3 // 4]
        level = int(np.clip(round((float(patch.mean()) - 8) / 16), 0, 15))
        k |= level << (4 * block)
    return k


class _Flushing:
    """A pipe PyAV writes to: every write goes out at once (a live sender buffers nothing)."""

    def __init__(self, pipe) -> None:
        self._pipe = pipe

    def write(self, data) -> int:
        self._pipe.write(data)
        self._pipe.flush()
        return len(data)


class PacedEncoder:
    """A thread encoding marked astronaut frames ``first, first+1, ...`` at ``fps`` in real time into
    ``target`` (a file object or URL) as ``format``; ``stop()`` ends it."""

    def __init__(self, target, format: str, first: int = 0, fps: Fraction = Fraction(30)) -> None:
        self.first = first
        self.fps = fps
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._target, self._format = target, format
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        base = astronaut(SIDE)
        try:
            # Each packet leaves at once, as from a live encoder (not when PyAV's write buffer is full).
            with av.open(self._target, "w", format=self._format, options={"flush_packets": "1"}) as container:
                stream = container.add_stream("libx264", rate=self.fps)
                stream.width = stream.height = SIDE
                stream.pix_fmt = "yuv420p"
                stream.time_base = 1 / self.fps
                stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "30"}
                started = time.monotonic()
                while not self._stop.is_set():
                    frame = av.VideoFrame.from_ndarray(marked_frame(base, self.first + self.sent), format="rgb24")
                    frame.pts = self.sent
                    for packet in stream.encode(frame):
                        container.mux(packet)
                    self.sent += 1
                    self._stop.wait(max(0.0, started + self.sent / float(self.fps) - time.monotonic()))
        except (OSError, ValueError, av.FFmpegError) as exc:  # the receiver or the pipe went away
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class SrtSender:
    """An SRT caller (srt-live-transmit) sending PyAV's MPEG-TS to ``port`` on loopback; ``listener``:
    an SRT listener on ``port`` instead, which the programme calls."""

    def __init__(self, port: int, first: int = 0, fps: Fraction = Fraction(30), listener: bool = False) -> None:
        target = f"srt://127.0.0.1:{port}?mode=listener" if listener else f"srt://127.0.0.1:{port}"
        self.process = subprocess.Popen(["srt-live-transmit", "-q", "file://con", target],
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.encoder = PacedEncoder(_Flushing(self.process.stdin), "mpegts", first, fps)

    def kill(self) -> None:
        """Gone at once, as a crashed encoder or a cut link (no goodbye to the listener)."""
        self.process.kill()
        self.process.wait()
        self.encoder.stop()
        try:
            self.process.stdin.close()
        except OSError:
            pass


async def until(condition, limit: float) -> None:
    """Wait (bounded) until ``condition()`` holds; the outcome is judged on what was played, not on time."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


def relay_children() -> list[str]:
    """This process's srt-live-transmit children, zombies included (``/proc``: state and parent)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            if name.startswith("srt-live-trans") and int(rest[1]) == os.getpid():
                found.append(f"{entry} {name} {rest[0]}")
    return found
