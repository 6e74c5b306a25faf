"""Keeping the server's heap, and its host workers', from growing with session churn (glibc's allocator).

A session's media work runs in many threads (aiortc's codecs, the session's own thread, executors), and
glibc gives threads allocation arenas of their own. Two things made the idle server's RSS creep up over
hours of churn (208 -> 307 MiB over 350 sessions, while nothing of an ended session survived):

- glibc's *dynamic* mmap threshold. Blocks of at least 128 KiB (video frames, codec buffers: a 256x256
  RGB frame is 192 KiB) start out as mmaps of their own, handed back to the OS when freed; but the first
  time such a block is freed glibc raises the threshold to its size (up to 32 MiB), so from then on these
  buffers are carved out of the arenas, where each session's frames, interleaved with small long-lived
  allocations, left holes the arenas never shrank over: in-process churn of 40 `lite` sessions at
  256x256 grew the arenas from 242 to 382 MiB, all but 44 MiB of it free. ``bound_heap`` fixes the
  threshold at 128 KiB (setting it turns the dynamic adjustment off, mallopt(3)): big buffers stay
  mmaps, freed straight back, and the arenas hold only small objects (30 sessions: 49 -> 62 MiB).
- pages freed inside an arena stay mapped until trimmed: ``release_free_heap`` (glibc's ``malloc_trim``)
  runs once a session has ended.

A host worker (streaming/hosts.py) outlives the sessions it serves, so it does the same: it bounds its heap
when it starts and trims it when a session's instance is closed.

Elsewhere than glibc (musl, macOS) both do nothing. A ``MALLOC_MMAP_THRESHOLD_`` set in the environment
is the operator's choice and is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_MMAP_THRESHOLD = -3  # mallopt(3) parameter numbers (glibc's malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default starting value, kept fixed


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc's, or AttributeError
        return libc
    except (OSError, AttributeError):  # not glibc
        return None


def bound_heap() -> bool:
    """Fix glibc's mmap threshold (big buffers are mmaps, given back when freed); True when set."""
    libc = _libc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_heap() -> bool:
    """Return the heap's free pages to the OS; True when glibc released any."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
