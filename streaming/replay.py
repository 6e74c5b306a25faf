"""The live chunk loop's timing replayed on a virtual clock: a deterministic discrete-event run.

It follows LiveSession's arithmetic (streaming/session.py) for one session on an idle generator: chunk
k can start once its window and the generator's lookahead are captured (plus the capture grace) and the
previous chunk is done; its deadline is its first new frame's playout time less the playout margin; the
real Scheduler picks the tier from the time left; the chunk then takes ``cost(tier, chunk)`` seconds.
Speech plays at its capture time + the delay whatever happens (the session never waits for video), so
what the replay decides is only which video each slot shows. Used by the tests and the README's figures
to see what the scheduler does with a generator's costs, in no time and independent of machine load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from model.base import AUDIO_RATE, AudioMargins, Tier
from streaming.chunker import Chunk, ChunkPlan
from streaming.scheduler import Scheduler
from streaming.session import SessionSettings
from streaming.timeline import SessionClock


@dataclasses.dataclass(frozen=True)
class ReplayedChunk:
    index: int
    tier: str | None  # None: skipped (the slot plays its fallback)
    level: int  # index in the ladder (len(ladder) for a skip)
    status: str  # on_time, late or skipped
    started: float  # seconds from the session's start
    time_left: float
    finished: float | None
    deadline: float
    slot_due: float  # when the chunk's first new frame (and the speech spoken with it) plays

    @property
    def degraded(self) -> bool:
        return self.level > 0


def replay(cost: Callable[[Tier, Chunk], float], tiers: Sequence[Tier], chunks: int,
           settings: SessionSettings = SessionSettings(), margins: AudioMargins = AudioMargins(),
           plan: ChunkPlan = ChunkPlan(), priors: Mapping[str, float] | None = None) -> list[ReplayedChunk]:
    """``chunks`` chunks of a session whose speech never pauses, at ``settings.delay``."""
    scheduler = Scheduler(tiers, priors=priors)
    clock = SessionClock(0.0, settings.delay, settings.lead)
    free_at, out = 0.0, []
    for index in range(chunks):
        chunk = plan.chunk(index)
        _, last, _ = plan.audio_span(chunk, margins)
        now = max(clock.at(last / AUDIO_RATE) + settings.capture_grace, free_at)
        slot_due = clock.frame_due(chunk.new_start)
        deadline = slot_due - settings.playout_margin
        decision = scheduler.choose(deadline - now)
        if decision.skipped:
            out.append(ReplayedChunk(index, None, decision.level, "skipped", now, decision.time_left, None,
                                     deadline, slot_due))
            free_at = now
            continue
        seconds = cost(decision.tier, chunk)
        scheduler.record(decision.tier, seconds)
        free_at = now + seconds
        status = "on_time" if free_at <= deadline else "late"
        out.append(ReplayedChunk(index, decision.tier.name, decision.level, status, now, decision.time_left,
                                 free_at, deadline, slot_due))
    return out
