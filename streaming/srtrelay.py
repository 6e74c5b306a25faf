"""SRT in through Debian's ``srt-live-transmit``: PyAV's bundled FFmpeg has no SRT protocol, so the
relay receives SRT and writes the MPEG-TS it carries to its stdout, which PyAV reads as a file.

``RelayStream`` owns one relay process: it starts it, hands PyAV a read-only file object on its stdout,
and kills and reaps it when closed (no zombies). Reads wait in short polls so that a stop request or a
stalled sender (no bytes for ``stall_timeout`` once bytes have flowed) ends the stream as end of file
instead of blocking the reading thread for good; a listener waiting for its first caller just waits.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse

RELAY = "srt-live-transmit"
POLL = 0.1  # seconds between checks of the stop flag while no bytes come
STALL_TIMEOUT = 2.0  # seconds without bytes, once the sender had started, before the stream counts as lost


# The relay's stdout is block-buffered (a pipe): at a low bitrate a buffer takes a second to fill, and
# the frames in it come that late. coreutils' stdbuf makes it write each SRT packet as it comes.
UNBUFFERED = ("stdbuf", "-o0") if shutil.which("stdbuf") else ()


class RelayMissing(RuntimeError):
    pass


def relay_path() -> str:
    path = shutil.which(RELAY)
    if path is None:
        raise RelayMissing(f"SRT needs {RELAY} (Debian package srt-tools; scripts/setup.sh installs it)")
    return path


def relay_url(url: str) -> str:
    """The URL as srt-live-transmit takes it: FFmpeg's ``srt://0.0.0.0:9000?mode=listener`` is the same
    there; only its option names that the relay spells differently would need mapping (none so far)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(("srt", parts.netloc, "", parts.query, ""))


def srt_mode(url: str) -> str:
    """An srt:// URL's mode as FFmpeg reads it: ``mode=``, else caller with a host, listener without."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.parse_qs(parts.query).get("mode", ["caller" if parts.hostname else "listener"])[-1]


class RelayStream:
    """A running relay and the read end of its MPEG-TS output (``read`` only: PyAV sees a pipe)."""

    def __init__(self, url: str, stop: threading.Event, stall_timeout: float = STALL_TIMEOUT) -> None:
        self._stop = stop
        self._stall_timeout = stall_timeout
        self._last_data: float | None = None  # when bytes last came (None: the sender has not started)
        self.stalled = False
        self._closed = False  # its output ended
        self._problem: str | None = None
        # -a:no: when the caller goes, the relay exits and the reader reports the loss at once. Its
        # messages go to a file, not a pipe: a pipe nobody reads while the stream runs could fill and stall it.
        self._messages = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [*UNBUFFERED, relay_path(), "-a:no", "-ll:error", relay_url(url), "file://con"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._messages)
        self._fd = self.process.stdout.fileno()

    def read(self, size: int = -1) -> bytes:
        size = 1 << 16 if size is None or size < 0 else size
        while not self._stop.is_set() and not self.stalled:  # once stalled, PyAV's retries get EOF too
            ready, _, _ = select.select([self._fd], [], [], POLL)
            if ready:
                data = os.read(self._fd, size)
                if data:
                    self._last_data = time.monotonic()
                else:
                    self._closed = True  # the relay is exiting
                return data
            if self._last_data is not None and time.monotonic() - self._last_data >= self._stall_timeout:
                self.stalled = True  # the sender stalled: end of stream, the reader reconnects
        return b""

    @property
    def ended(self) -> bool:
        """No more live data: the sender stalled or the relay exited (what PyAV still has is stale)."""
        return self.stalled or self._closed or self.process.poll() is not None

    def problem(self) -> str | None:
        """Why the stream ended, in one line (None: it has not)."""
        if self._problem is None and self.ended:
            self._problem = self._why()
        return self._problem

    def _why(self) -> str:
        if self.stalled:
            return f"no data for {self._stall_timeout:g} s"
        try:
            self.process.wait(timeout=2)  # its output closed as it exits: its status is a moment away
        except subprocess.TimeoutExpired:
            return f"{RELAY} closed its output"
        if self.process.returncode == 0:
            return "the sender disconnected"
        self._messages.seek(0)
        lines = [line for line in self._messages.read(1 << 16).decode(errors="replace").splitlines()
                 if line.strip() and not line.startswith("Media path")]
        return (f"{RELAY}: {lines[-1].strip()}" if lines else f"{RELAY} exited with status {self.process.returncode}")[:200]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()  # reaped: no zombie
        self.process.stdout.close()
        self._messages.close()
