"""What a session reports, as typed events; turned into JSON-ready dicts only at the edge (``message``),
where the control websocket, MQTT and the logs take them.

Every event of a chunk says which chunk, when its slot plays (seconds of session time) and how much of
its window is speech; ``ChunkDone`` then says what filled the slot (``status``: on_time, late, skipped,
failed), ``Degraded`` that the scheduler chose a cheaper tier or skipped, ``SessionError`` a generator or
session failure, ``Ended`` why the session ended, ``OutputChanged`` what a
broadcast output's connection did.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Union


@dataclasses.dataclass(frozen=True)
class ChunkSlot:
    chunk: int
    slot_at: float
    speech_fraction: float  # speaker 1's
    speech_fractions: tuple[float, ...] | None = None  # with two speakers: each one's


@dataclasses.dataclass(frozen=True)
class ChunkDone:
    name: ClassVar[str] = "chunk"
    slot: ChunkSlot
    status: str  # on_time, late, skipped or failed
    tier: str | None = None
    seconds: float | None = None  # submission to result
    generator_seconds: float | None = None  # what the generator itself reported
    reason: str | None = None
    info: dict | None = None  # the generator's facts (JSON-ready scalars)


@dataclasses.dataclass(frozen=True)
class Degraded:
    name: ClassVar[str] = "degraded"
    slot: ChunkSlot
    action: str  # "tier": a cheaper tier than the best; "skip": none fits, the slot plays its fallback
    time_left: float
    tier: str | None = None
    estimate: float | None = None
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class SessionError:
    name: ClassVar[str] = "error"
    code: str  # generator_failed, worker_died, session_failed
    message: str
    chunk: int | None = None


@dataclasses.dataclass(frozen=True)
class Ended:
    name: ClassVar[str] = "ended"
    reason: str


@dataclasses.dataclass(frozen=True)
class OutputChanged:
    """A broadcast output (RTMP/SRT) connected, lost its receiver and waits ``retry_in`` seconds before
    attempt ``attempt``, gave up (``failed``), ended with the session, or was removed."""
    name: ClassVar[str] = "output"
    output: str
    state: str  # connected, retrying, failed, ended, removed
    url: str  # without its stream key or passphrase
    retry_in: float | None = None
    attempt: int | None = None
    error: str | None = None


SessionEvent = Union[ChunkDone, Degraded, SessionError, Ended, OutputChanged]


def message(event: SessionEvent, session_id: str) -> dict:
    """The event as the control protocol sends it: flat, fields that are not set left out."""
    fields = {}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if isinstance(value, ChunkSlot):
            fields.update({k: v for k, v in dataclasses.asdict(value).items() if v is not None})
        elif value is not None:
            fields[field.name] = value
    return {"type": "event", "event": event.name, "session": session_id, **fields}
