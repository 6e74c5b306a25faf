"""The library of source videos and images, addressed by name only.

A name is a file's stem (``astronaut`` for ``astronaut.mp4``) in the sources folder. Names are looked
up in a listing of the folder, never joined into a path, so no name can reach outside it; a file that
is a link leading out of the folder is not listed.
"""

from __future__ import annotations

import io
import os
import re
import threading

import numpy as np
from PIL import Image

from streaming.errors import InputError
from streaming.source import VideoSource

EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".png", ".jpg", ".jpeg", ".webp")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # scheme: - clients never hand the server a URL to open
THUMBNAIL_SIDE = 160  # pixels, the longer side: a picker's tile, a few kB of JPEG
THUMBNAIL_CACHE = 256  # thumbnails kept (a library is rarely larger; beyond it the oldest are dropped)


class UnknownSource(InputError):
    pass


class BadName(InputError):
    pass


class SourceLibrary:
    def __init__(self, folder: str, live_names=()) -> None:
        self.folder = os.path.realpath(folder)
        if not os.path.isdir(self.folder):
            raise InputError(f"sources folder not found: {folder} (give a folder of videos or images)")
        self.live_names = tuple(live_names)  # the operator's live programme sources (server/livesources.py)

    def names(self) -> dict[str, str]:
        """Name -> path of every usable source (the first by extension order when stems collide)."""
        found: dict[str, str] = {}
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() not in EXTENSIONS or not NAME_PATTERN.fullmatch(stem):
                continue
            real = os.path.realpath(entry.path)
            if os.path.commonpath([real, self.folder]) != self.folder or not os.path.isfile(real):
                continue
            if stem not in found or EXTENSIONS.index(ext.lower()) < EXTENSIONS.index(
                    os.path.splitext(found[stem])[1].lower()):
                found[stem] = real
        return found

    def listing(self) -> list[str]:
        """Every name a client may use: the files' and the live programme sources'."""
        return sorted({*self.names(), *self.live_names})

    def available(self) -> str:
        """The names a client may use, for error messages (the first 20)."""
        names = self.listing()
        listed = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        return listed or f"none (the sources folder {os.path.basename(self.folder)!r} has no videos or images)"

    def path(self, name) -> str:
        if name is None or name == "":
            raise BadName(f"no source given: available are {self.available()}")
        if isinstance(name, str) and URL_LIKE.match(name):
            raise BadName(f"a URL is not a source: the server opens only the live sources its operator "
                          f"configured ([live_sources]); name one: available are {self.available()}")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
            raise BadName(f"bad source name {str(name)[:80]!r}: a source is named, not a path "
                          f"(letters, digits, '.', '_', '-'; at most 64); available are {self.available()}")
        names = self.names()
        if name not in names:
            raise UnknownSource(f"unknown source {name!r}: available are {self.available()}")
        return names[name]


class Thumbnails:
    """A small JPEG of each source's first frame, as the session will show it (cropped to the output size),
    made once per file version: the page asks for every source each time it loads."""

    def __init__(self, library: SourceLibrary, size) -> None:
        self.library = library
        self.size = size
        self._cache: dict[tuple, bytes] = {}
        self._lock = threading.Lock()

    def jpeg(self, name: str) -> bytes:
        """The thumbnail of source ``name`` (decodes one frame the first time; blocking: call in a thread)."""
        path = self.library.path(name)
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        data = jpeg_thumbnail(VideoSource(path, self.size).frame(0))
        with self._lock:
            if len(self._cache) >= THUMBNAIL_CACHE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = data
        return data


def jpeg_thumbnail(image: np.ndarray) -> bytes:
    """An RGB picture as a picker's tile: ``THUMBNAIL_SIDE`` on its longer side, JPEG."""
    tile = Image.fromarray(image)
    tile.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    tile.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()
