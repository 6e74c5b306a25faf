"""Chunk phases: sessions started together must not have their chunks fall due together.

A session's chunk k is ready when its speech has been captured and due ``delay`` later, at the same
offset from its clock origin for every session. Sessions started in the same second (an interpreter
booth per language, a benchmark) would all submit their chunks at the same instant, every 2.88 s, and
the generator (one CPU slot, one GPU) would serve them one after the other inside the same window:
the last one late, while the rest of the stride idles. Moving a new session's origin back by up to one
stride spreads the submissions over the stride instead. Nothing a viewer or speaker notices changes:
speech is placed by its arrival on the session clock and plays ``delay`` after it, whatever the origin;
only which chunk a syllable falls in moves.
"""

from __future__ import annotations

from collections.abc import Sequence


def spread_origin(now: float, origins: Sequence[float], stride_seconds: float, most_back: float) -> float:
    """The clock origin for a session starting at ``now``: the one at most ``most_back`` seconds
    earlier whose chunk phase (origin modulo the stride) lies in the middle of the widest gap between
    the phases of the sessions running (``origins``); ``now`` when none run."""
    if not origins or stride_seconds <= 0 or most_back <= 0:
        return now
    phases = sorted({origin % stride_seconds for origin in origins})  # one phase alone: the whole stride is a gap
    gaps = [((phases[(i + 1) % len(phases)] - phase) % stride_seconds or stride_seconds, phase)
            for i, phase in enumerate(phases)]
    width, start = max(gaps)
    target = (start + width / 2) % stride_seconds
    return now - min((now - target) % stride_seconds, most_back)
