"""One live dubbing session: its stages wired together, in the order a chunk goes through them.

ingest (streaming/ingest.py: received speech on the session clock) -> the chunk loop
(streaming/chunkloop.py, the only owner of the chunk engine) -> the scheduler (streaming/scheduler.py:
which tier fits before the slot) -> the generator pool and its workers (streaming/pool.py, workers.py)
-> the output timeline (streaming/timeline.py: each chunk's slot) -> playout (streaming/playout.py: what
the output tracks read: the clock, the frame and the speech due) -> egress (server/egress.py: one encode
per codec for all viewers). One clock (streaming/clock.py) is injected here and reaches every stage, the
tracks included.

The session owns the speech input and the end: when the ingest ends (its sender gone or done, or idle),
what was captured plays out, then the session ends with one ``Ended`` event. Stages report typed events
(streaming/events.py); the manager turns them into messages at the edge. ``stats()`` gives typed stats
(streaming/stats.py); the control channel and MQTT serialise them with ``to_wire()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
from typing import Callable

import numpy as np

from model.base import AUDIO_RATE, FPS, SAMPLES_PER_FRAME, Tier
from model.errors import InputError
from streaming.chunker import ChunkPlan
from streaming.chunkloop import FALLBACK_TIER, SWAP_MODES, ChunkLoop, widest_margins  # noqa: F401 - re-exported
from streaming.clock import SYSTEM_CLOCK, Clock, sleep_unless
from streaming.events import Ended, SessionError, SessionEvent
from streaming.ingest import LiveAudioIngest
from streaming.livesource import LiveVideoSource
from streaming.playout import Playout, ViewerStats
from streaming.scheduler import DEFAULT_TIERS, SAFETY
from streaming.speakers import LiveSpeakers
from streaming.stats import (ChunkStats, CostStats, DelayStats, IngestStats, Percentiles, SessionStats,
                             WarmUpStats)
from streaming.timeline import OutputTimeline, SessionClock
from streaming.pool import GeneratorPool
from streaming.workers import nice_this_thread

log = logging.getLogger("livedub.session")
MAX_DELAY = 30.0
RING_SLACK = 10.0  # seconds of speech kept beyond the furthest reader's need (a chunk loop running late)


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    delay: float = 5.5  # glass-to-glass latency budget, seconds
    lead: float = 0.12  # frames leave this early to cover the output leg (encode, network, jitter buffer)
    playout_margin: float = 0.04  # a result must be in this long before its slot's first frame
    capture_grace: float = 0.06  # wait this long past a chunk's capture end for late packets
    keyframe_interval: int = 72
    color_correction: float | None = None  # None: the generator's default
    seed: int = 42
    blend_frames: int = 12  # frames a "blend" reference swap cross-fades over
    idle_timeout: float = 60.0  # seconds without ingest audio before the session ends
    buffer_seconds: float = 40.0  # the most speech kept in the rings (see ring_seconds)
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    # The region of source-size frames the generator works on (streaming/region.py: face, upper_body,
    # full); None: it works on whole frames at the session's size.
    region: str | None = None


MIN_GENERATION = 0.1  # seconds left to generate in when the generator's warm cost is not known yet


def min_delay(plan: ChunkPlan, right_margin: float, settings: SessionSettings,
              chunk_cost: float | None = None) -> float:
    """The smallest budget in which a chunk is on time: its window captured whole with the generator's
    lookahead, then generated at its warm cost (with the scheduler's safety factor) before its slot."""
    generation = MIN_GENERATION if chunk_cost is None else max(MIN_GENERATION, chunk_cost * SAFETY)
    return (plan.window / FPS + right_margin + settings.capture_grace + settings.playout_margin
            + settings.lead + generation)


def lowest_delay(plan: ChunkPlan, right_margin: float, settings: SessionSettings,
                 chunk_cost: float | None = None) -> float:
    """``min_delay`` as shown to users, to 0.01 s rounded up (3.91 for a computed 3.9100000000000006)."""
    return math.ceil(min_delay(plan, right_margin, settings, chunk_cost) * 100 - 1e-6) / 100


def ring_seconds(settings: SessionSettings, plan: ChunkPlan, margins: float) -> float:
    """Speech the session's rings keep: as far back as its readers look (playout at the delay; a chunk's
    window with the generator's audio margins, read once captured) and ``RING_SLACK`` more, at most
    ``buffer_seconds``. For `lite` at a 5.5 s delay that is 21 s instead of 40 (8 MiB less a session once written)."""
    return min(settings.buffer_seconds, settings.delay + plan.window / FPS + margins + RING_SLACK)


def check_delay(delay: float, plan: ChunkPlan, right_margin: float, settings: SessionSettings,
                chunk_cost: float | None = None) -> float:
    low = lowest_delay(plan, right_margin, settings, chunk_cost)  # the minimum as printed is accepted
    if not (isinstance(delay, (int, float)) and math.isfinite(delay) and low - 1e-9 <= delay <= MAX_DELAY):
        raise InputError(f"bad delay {delay!r}: accepted is {low:.2f} to {MAX_DELAY:.0f} seconds "
                         f"(one {plan.window}-frame chunk plus generation time must fit in it)")
    return float(delay)


class LiveSession:
    def __init__(self, session_id: str, source, source_name: str, pool: GeneratorPool,
                 settings: SessionSettings, emit: Callable[[SessionEvent], None], clock: Clock = SYSTEM_CLOCK,
                 plan: ChunkPlan = ChunkPlan(), fallback_pool: GeneratorPool | None = None,
                 executor: concurrent.futures.Executor | None = None, warm: bool = False,
                 warm_cost: float | None = None, origin: float | None = None) -> None:
        """``warm``: warm the generator up on the source before chunk 0; ``warm_cost``: its warm chunk cost
        measured before (at start-up, by another session), the scheduler's start when that warm-up has not
        finished by chunk 0. ``origin``: the clock's session time 0, when not now (streaming/phases.py)."""
        self.id = session_id
        self.settings = settings
        self.plan = plan
        self.source_name = source_name
        self._emit = emit
        self._clock = clock
        self._now = clock.now
        self.clock = SessionClock(clock.now() if origin is None else origin, settings.delay, settings.lead)
        margins = pool.profile.audio_margins if fallback_pool is None else widest_margins(pool.profile,
                                                                                        fallback_pool.profile)
        kept = ring_seconds(settings, plan, margins.left + margins.right)
        self.ingest = LiveAudioIngest(kept)
        self.speakers = LiveSpeakers(self.ingest, kept)  # speaker 2: a second WHIP ingest
        # The session's blocking steps (decoding, building requests) run one at a time off the loop
        # (inline on a virtual clock, in tests).
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"session-{session_id}", initializer=nice_this_thread)
        self._stop = asyncio.Event()
        self.timeline = OutputTimeline(plan, np.zeros((1, 1, 3), np.uint8))
        self.loop = ChunkLoop(session_id, source, pool, fallback_pool, self.speakers, self.clock, self.timeline,
                              settings, plan, clock, emit, self._executor, self._stop, self._idle, warm, warm_cost)
        self.timeline.idle = np.zeros((*self.loop.source_size(), 3), np.uint8)
        self.playout = Playout(clock, self.clock, self.timeline, self.speakers.playout)  # both speakers heard
        # What callers read of the chunk loop.
        self.pool, self.fallback_pool, self.profile = pool, fallback_pool, self.loop.profile
        self.scheduler, self.counts = self.loop.scheduler, self.loop.counts
        self.state = "running"
        self.end_reason: str | None = None
        self.end_frame: int | None = None  # output frames end here once the ingest has ended
        self._task: asyncio.Task | None = None
        self.finished = asyncio.Event()
        self.reporters: dict[str, Callable[[], object]] = {}  # more stats from the server's side (outputs)

    @property
    def warm_up(self):
        return self.loop.warm_up

    @property
    def live(self) -> LiveVideoSource | None:
        return self.loop.live

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the output frames (fixed for the session's life)."""
        return tuple(self.timeline.idle.shape[:2])

    async def start(self) -> None:
        """Prepare the idle frame (the source's first frame) and start the chunk loop."""
        if self.live is None:
            self.timeline.idle = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.loop.first_frame)
        self._task = asyncio.create_task(self._run(), name=f"session-{self.id}")

    def session_time(self) -> float:
        return self.clock.session_time(self._now())

    async def _run(self) -> None:
        try:
            await self.loop.run()
            if not self._stop.is_set() and self.end_frame is not None:
                await self._sleep_until(self.clock.frame_due(self.end_frame) + 0.1)  # the speech plays out
        except Exception as exc:  # noqa: BLE001 - a bug ends this session only, with an error event
            log.exception("session %s failed", self.id)
            self._emit(SessionError("session_failed", f"{type(exc).__name__}: {exc}"[:300]))
            self.end_reason = self.end_reason or "failed"
        finally:
            self._finish(self.end_reason or ("stopped" if self._stop.is_set() else "ingest_ended"))

    async def _sleep_until(self, when: float) -> None:
        while not self._stop.is_set() and self._now() < when:
            await sleep_unless(self._clock, min(when - self._now(), 0.5), self._stop)

    def _idle(self) -> None:
        self.end_reason = "idle"
        self.end_ingest()

    # ---- control ------------------------------------------------------------------------------------
    def swap_reference(self, name: str, source, mode: str) -> dict:
        """Use ``source`` from the next chunk on; returns where the swap shows."""
        where = self.loop.swap_reference(name, source, mode)
        self.source_name = name
        return where

    def assign_speaker(self, speaker: int, face) -> dict:
        """Speaker ``speaker`` (1 or 2) animates ``face`` (rank from the left, or position 0..1) from the
        next chunk on; returns the faces of both speakers and the chunk where it shows."""
        faces = self.speakers.assign(speaker, face)
        return {"faces": list(faces.picks), "chunk": self.loop.next_chunk}

    def end_ingest(self) -> None:
        """The speech has ended: play out what was captured, then end."""
        if self.ingest.ended:
            return
        self.ingest.end()
        self.end_frame = math.ceil(self.ingest.ended_at / SAMPLES_PER_FRAME)
        self.loop.end_frame = self.end_frame
        self.playout.end_at(self.end_frame)

    async def stop(self, reason: str = "stopped") -> None:
        self.end_reason = self.end_reason or reason
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        else:
            self._finish(self.end_reason)

    def _finish(self, reason: str) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        self.end_reason = reason
        self.playout.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._emit(Ended(reason))
        self.loop.release()  # the loop's call back into the session: no cycle keeps an ended session
        self.finished.set()

    # ---- ingest (called by the WHIP peer) ------------------------------------------------------------------
    def receive_audio(self, frame, speaker: int = 1) -> None:
        self.speakers.ingest(speaker).push(frame, self.session_time())

    def receive_video(self, frame) -> None:
        if self.live is not None:  # a library source swapped in replaces the live video for good
            self.live.push(frame, self.session_time())

    @property
    def takes_video(self) -> bool:
        return self.live is not None

    @property
    def viewers(self) -> dict[str, ViewerStats]:
        return self.playout.viewers

    # ---- reporting ------------------------------------------------------------------------------------
    def stats(self) -> SessionStats:
        """The session's stats now (``to_wire()`` gives the JSON the control channel, MQTT and metrics send)."""
        now = self._now()
        loop = self.loop
        costs = list(loop.costs)
        viewers = self.viewers.values()
        second = self.speakers.stats()
        return SessionStats(
            session=self.id, state=self.state, source=self.source_name, generator=self.profile.name,
            time=round(self.clock.session_time(now), 3),
            delay=DelayStats(self.clock.delay, self.clock.lead, Percentiles.of(list(self.playout.send_delays))),
            av_offset_send=Percentiles.of([o for v in viewers for o in v.av_offsets]),
            chunks=ChunkStats(self.counts["generated"], self.counts["late"], self.counts["skipped"],
                              self.counts["failed"],
                              sum(v for k, v in loop.tier_counts.items() if k != self.settings.tiers[0].name)),
            tiers=dict(loop.tier_counts), frames=dict(self.playout.played),
            fps_out=round(float(np.mean([v.fps(now) for v in viewers])), 2) if viewers else 0.0,
            viewers=len(viewers), frames_skipped=sum(v.skipped for v in viewers),
            cost=CostStats.of(costs, list(loop.generator_seconds)),
            warm_up=None if self.warm_up is None else WarmUpStats(round(self.warm_up.cold, 4),
                                                                  round(self.warm_up.warm, 4)),
            ingest=IngestStats(self.ingest.frames_received, self.ingest.ended,
                               round(self.ingest.model.end / AUDIO_RATE, 3),
                               self.live.frames_received if self.live is not None else 0,
                               round(self.ingest.settled_seconds, 4), round(self.ingest.anchor_late, 4), second),
            reported={name: report() for name, report in self.reporters.items()},
        )
