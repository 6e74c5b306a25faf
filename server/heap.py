"""Handing freed heap memory back to the operating system once a session has ended.

A session's media work runs in many threads (aiortc's codecs, the session's own thread, executors), and
glibc gives each thread an allocation arena of its own; memory freed in an arena stays mapped to the
process until it is trimmed. Without this the idle server's RSS kept what its busiest moment needed,
and crept up over hours of churn as arenas fragmented. ``malloc_trim`` returns free pages of every
arena; elsewhere than glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_heap() -> bool:
    """Return the heap's free pages to the OS; True when glibc released any."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
