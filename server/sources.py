"""The library of source videos and images, addressed by name only.

A name is a file's stem (``astronaut`` for ``astronaut.mp4``) in the sources folder. Names are looked
up in a listing of the folder, never joined into a path, so no name can reach outside it; a file that
is a link leading out of the folder is not listed.
"""

from __future__ import annotations

import os
import re

from streaming.errors import InputError

EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".png", ".jpg", ".jpeg", ".webp")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class UnknownSource(InputError):
    pass


class BadName(InputError):
    pass


class SourceLibrary:
    def __init__(self, folder: str) -> None:
        self.folder = os.path.realpath(folder)
        if not os.path.isdir(self.folder):
            raise InputError(f"sources folder not found: {folder} (give a folder of videos or images)")

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

    def path(self, name) -> str:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
            raise BadName(f"bad source name {str(name)[:80]!r}: a source is named, not a path "
                          "(letters, digits, '.', '_', '-'; at most 64)")
        names = self.names()
        if name not in names:
            listed = ", ".join(sorted(names)[:20]) or "none"
            raise UnknownSource(f"unknown source {name!r}: available are {listed}")
        return names[name]
