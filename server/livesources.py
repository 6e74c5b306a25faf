"""The operator's live programme sources: ``[live_sources]`` in the config file, name -> URL, checked at
start-up and used by sessions by name, like library files.

Clients only ever name a source; no URL a client sends is opened (the operator's config is the only
place a URL comes from). A source is read while sessions use it, and for ``live_source_idle`` seconds
after the last one ended (a session swapped or restarted meanwhile finds it running); an SRT listener
listens from start-up on (its sender may call at any time) but decodes only while used
(streaming/programme.py). ``live_source_idle`` 0 reads every source from start-up to shutdown.
"""

from __future__ import annotations

import dataclasses
import shutil
import urllib.parse
from typing import Callable

from server.sources import NAME_PATTERN, UnknownSource, jpeg_thumbnail
from streaming.clock import SYSTEM_CLOCK, Clock
from streaming.demand import IDLE_AFTER
from streaming.errors import InputError
from streaming.programme import Programme
from streaming.programmereader import ProgrammeState
from streaming.srtrelay import RELAY, srt_mode

SCHEMES = ("srt", "rtmp", "rtmps", "rtsp", "rtsps", "http", "https")
# Seconds a thumbnail of an idle programme waits for its first frame: its reading starts with the request
# (a pulled stream's connection and probe, a listener's next keyframe). A pulled stream's open times out at 10 s.
PICTURE_WAIT = 10.0
ACCEPTED = ("srt://HOST:PORT?mode=listener|caller, rtmp(s)://HOST[:PORT]/APP/STREAM, rtsp(s)://HOST[:PORT]/PATH "
            "or http(s)://HOST/PATH.m3u8 (HLS)")


@dataclasses.dataclass(frozen=True)
class LiveSourceSpec:
    name: str
    url: str


def parse_live_sources(table) -> tuple[LiveSourceSpec, ...]:
    """The ``[live_sources]`` table (name = "URL"), checked; one-line errors say what is accepted."""
    if table is None:
        return ()
    if not isinstance(table, dict):
        raise InputError(f"bad live_sources {str(table)[:80]!r}: accepted is a table of NAME = \"URL\" "
                         "([live_sources] in the config file)")
    specs = tuple(LiveSourceSpec(_check_name(name), _check_url(name, url)) for name, url in table.items())
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.url in seen:  # two readers of one stream (or two listeners on one port) never both work
            raise InputError(f"live sources {seen[spec.url]} and {spec.name} have the same URL: give each stream "
                             "one name")
        seen[spec.url] = spec.name
    return specs


def _check_name(name: str) -> str:
    if name == "live":
        raise InputError("bad live source name 'live': it names a session's own WebRTC video; choose another")
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InputError(f"bad live source name {name[:80]!r}: accepted are letters, digits, '.', '_', '-' "
                         "(at most 64, starting with a letter or digit)")
    return name


def _check_url(name: str, url) -> str:
    if not isinstance(url, str):
        raise InputError(f"bad live source {name}: its value must be a URL string: {ACCEPTED}")
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or port == -1:
        raise InputError(f"bad live source {name} = {url[:120]!r}: accepted are {ACCEPTED}")
    if scheme == "srt":
        mode = srt_mode(url)
        if port is None or mode not in ("listener", "caller") or (mode == "caller" and not parts.hostname):
            raise InputError(f"bad live source {name} = {url[:120]!r}: an SRT source needs a port and "
                             "mode=listener (srt://0.0.0.0:PORT?mode=listener) or mode=caller with a host")
        if shutil.which(RELAY) is None:
            raise InputError(f"live source {name} is SRT, which needs {RELAY} (Debian package srt-tools; "
                             "scripts/setup.sh installs it)")
        return url
    if not parts.hostname:
        raise InputError(f"bad live source {name} = {url[:120]!r}: no host; accepted are {ACCEPTED}")
    if scheme in ("http", "https") and not parts.path.lower().endswith(".m3u8"):
        raise InputError(f"bad live source {name} = {url[:120]!r}: an http(s) source must be an HLS "
                         "playlist (a path ending in .m3u8)")
    return url


def check_no_clash(specs, file_names) -> None:
    """A live source's name must not also name a file of the sources folder (a name means one thing)."""
    clash = sorted({spec.name for spec in specs} & set(file_names))
    if clash:
        raise InputError(f"live source name(s) {', '.join(clash)} also name files in the sources folder: "
                         "rename the live source(s) in [live_sources] or the file(s)")


def programme_thumbnail(programme: Programme, latest: tuple | None) -> bytes:
    """The programme's last frame (``Programme.picture``) as a picker's tile (blocking: call in a thread)."""
    if latest is None:
        raise UnknownSource(f"live source {programme.name} has no picture yet ({programme.state})")
    return jpeg_thumbnail(latest[0].to_ndarray(format="rgb24"))


class Programmes:
    """The configured live sources by name; ``start`` with the server (listeners listen from then on)."""

    def __init__(self, specs, on_state: Callable[[ProgrammeState], None], idle_after: float = IDLE_AFTER,
                 idle_clock: Clock = SYSTEM_CLOCK) -> None:
        self._by_name = {spec.name: Programme(spec.name, spec.url, on_state, idle_after=idle_after,
                                              idle_clock=idle_clock) for spec in specs}

    def get(self, name) -> Programme | None:
        return self._by_name.get(name) if isinstance(name, str) else None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def start(self) -> None:
        for programme in self._by_name.values():
            programme.start()

    async def close(self) -> None:
        for programme in self._by_name.values():
            await programme.close()

    def stats(self) -> list[dict]:
        return [programme.stats() for programme in self._by_name.values()]
