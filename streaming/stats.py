"""A live session's stats as typed values; ``SessionStats.to_wire()`` is the JSON shape the edges send.

The session builds a ``SessionStats`` (streaming/session.py ``LiveSession.stats``); only the edges turn it
into its wire form: the control channel's ``stats``/``sessions`` replies, MQTT's ``P/sessions/ID/stats`` and
the Prometheus collector (server/control.py, server/mqtt.py, server/metrics.py). docs/live-server.md
describes the wire form. Values are rounded here, once, so every edge sends the same numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclasses.dataclass(frozen=True)
class Percentiles:
    p50: float | None  # None: nothing measured yet
    p95: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> "Percentiles":
        if not len(values):
            return cls(None, None)
        data = np.asarray(values)
        return cls(_round(np.percentile(data, 50), 4), _round(np.percentile(data, 95), 4))


@dataclasses.dataclass(frozen=True)
class DelayStats:
    target: float  # the latency budget, seconds
    lead: float  # frames leave this early
    send: Percentiles  # capture to send at the server


@dataclasses.dataclass(frozen=True)
class ChunkStats:
    generated: int
    late: int
    skipped: int
    failed: int
    degraded: int  # chunks run at a tier below the best (skips included)


@dataclasses.dataclass(frozen=True)
class CostStats:
    """Seconds per chunk, submission to result (queueing and transfer included), over recent chunks."""
    last: float | None
    mean: float | None
    p50: float | None
    p95: float | None
    generator_mean: float | None  # what the generator itself reported

    @classmethod
    def of(cls, costs: Sequence[float], generator_seconds: Sequence[float]) -> "CostStats":
        spread = Percentiles.of(costs)
        return cls(_round(costs[-1], 4) if costs else None, _round(np.mean(costs), 4) if costs else None,
                   spread.p50, spread.p95,
                   _round(np.mean(generator_seconds), 4) if len(generator_seconds) else None)


@dataclasses.dataclass(frozen=True)
class WarmUpStats:
    cold: float  # the warm-up chunk's first run, loading included
    warm: float  # its second run: what a chunk costs from now on


@dataclasses.dataclass(frozen=True)
class SpeakerStats:
    """The second speaker's ingest."""
    frames: int
    ended: bool
    faces: list[int | float]  # the current face picks, speaker 1's first


@dataclasses.dataclass(frozen=True)
class IngestStats:
    frames: int  # audio frames received
    ended: bool
    seconds: float  # speech received
    video_frames: int  # live video frames received (0 without live video)
    settled: float  # seconds the speech anchor moved earlier while settling (a late first frame)
    anchor_late: float  # seconds the fixed anchor is later than the earliest arrival since (added delay)
    speaker2: SpeakerStats | None = None  # None: one speaker (left out of the wire form)


@dataclasses.dataclass(frozen=True)
class SessionStats:
    session: str
    state: str
    source: str
    generator: str
    time: float  # session time, seconds
    delay: DelayStats
    av_offset_send: Percentiles
    chunks: ChunkStats
    tiers: Mapping[str, int]  # chunks by the tier chosen ("skip" too)
    frames: Mapping[str, int]  # frames played, by where they came from (generated, fallback, idle)
    fps_out: float  # mean over viewers
    viewers: int
    frames_skipped: int  # sent late: skipped ahead
    cost: CostStats
    warm_up: WarmUpStats | None
    ingest: IngestStats
    # What the server's side adds (e.g. "outputs"), already in wire form: name -> value.
    reported: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def to_wire(self) -> dict:
        """The JSON-ready dict the edges send, keys in this order, ``reported`` merged in at the top."""
        wire = dataclasses.asdict(self)
        del wire["reported"]
        if wire["ingest"]["speaker2"] is None:
            del wire["ingest"]["speaker2"]
        wire["tiers"], wire["frames"] = dict(self.tiers), dict(self.frames)
        return {**wire, **self.reported}
