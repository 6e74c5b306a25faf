"""A programme's reader thread (streaming/programmereader.py): started when the programme is to be read,
stopped when it is not. A stopped reader blocked in a pulled stream's read notices its stop only at the
read timeout (PyAV's reads cannot be interrupted): it is kept as retired, a daemon thread that ends by
itself, and a new one may start meanwhile (its late frames are refused by the programme: its stop is set).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from streaming.programmereader import ProgrammeReader

log = logging.getLogger("livedub.programme")
JOIN_TIMEOUT = 1.0  # seconds to wait at shutdown for a reader to notice its stop


class ReaderThread:
    """The running reader (or None) of one programme, and its stopped ones until they have ended."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.reader: ProgrammeReader | None = None
        self._thread: threading.Thread | None = None
        self._retired: list[threading.Thread] = []

    def start(self, reader: ProgrammeReader) -> None:
        self.stop()
        self.reader = reader
        self._thread = threading.Thread(target=reader.run, name=f"programme-{self._name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.stop.set()
            self._retired.append(self._thread)
            self.reader = self._thread = None
        self._retired = [thread for thread in self._retired if thread.is_alive()]

    @property
    def alive(self) -> list[threading.Thread]:
        """Its threads still running, the stopped ones included."""
        return [thread for thread in (self._thread, *self._retired) if thread is not None and thread.is_alive()]

    async def close(self) -> None:
        self.stop()
        for thread in self._retired:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, JOIN_TIMEOUT)
            if thread.is_alive():
                log.info("programme %s: its reader ends at its read timeout", self._name)
