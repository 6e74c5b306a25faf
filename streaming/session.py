"""One live dubbing session: speech in, chunks generated against the clock, frames placed for playout.

The chunk loop waits until chunk k's speech has been captured, builds its request (the chunk engine:
audio window, nearest keyframe, context), puts the slot's fallback frames on the timeline at once, asks
the scheduler for a tier that fits before the slot is due, and runs the generator in the pool. A result
in time replaces the fallback; a late or failed one leaves it, and the fallback becomes the context the
next chunk continues from (what viewers saw). The tracks read the timeline and the playout ring on the
session clock and never wait on any of this.

Blocking work (decoding the source, building requests, colour correction) runs in the session's own
single thread, handed one step at a time by the loop; the rings and the timeline are touched only on the
event loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import math
import time
from typing import Callable

import numpy as np

from model.base import AUDIO_RATE, FPS, SAMPLES_PER_FRAME, AudioMargins, ChunkRequest, ChunkResult, Tier
from model.passthrough import unchanged_frames
from streaming.chunker import ChunkPlan, nearest_keyframe
from streaming.engine import AudioTrack, ChunkEngine
from streaming.errors import InputError
from streaming.ingest import LiveAudioIngest
from streaming.livesource import FrameWindow, LiveVideoSource
from streaming.scheduler import DEFAULT_TIERS, Scheduler
from streaming.speakers import LiveSpeakers
from streaming.timeline import OutputTimeline, SessionClock
from streaming.workers import Expired, GeneratorFailed, GeneratorPool, PoolBusy, WorkerDied

log = logging.getLogger("livedub.session")
SWAP_MODES = ("cut", "blend")
MAX_DELAY = 30.0
FALLBACK_TIER = "fallback"  # the ladder's last rung when the session has a cheaper generator


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
    buffer_seconds: float = 40.0  # speech kept in the rings (must exceed delay + one window)
    tiers: tuple[Tier, ...] = DEFAULT_TIERS


def widest_margins(*profiles) -> AudioMargins:
    return AudioMargins(max(p.audio_margins.left for p in profiles), max(p.audio_margins.right for p in profiles))


def min_delay(plan: ChunkPlan, right_margin: float, settings: SessionSettings) -> float:
    """The smallest budget with any time left to generate the first chunk (its window is captured whole
    before it can start)."""
    return (plan.window / FPS + right_margin + settings.capture_grace + settings.playout_margin
            + settings.lead + 0.1)


def check_delay(delay: float, plan: ChunkPlan, right_margin: float, settings: SessionSettings) -> float:
    low = min_delay(plan, right_margin, settings)
    # A delay equal to the minimum as printed (3.91, computed as 3.9100000000000006) is accepted.
    if not (isinstance(delay, (int, float)) and math.isfinite(delay) and low - 1e-9 <= delay <= MAX_DELAY):
        raise InputError(f"bad delay {delay!r}: accepted is {low:.2f} to {MAX_DELAY:.0f} seconds "
                         f"(one {plan.window}-frame chunk plus generation time must fit in it)")
    return float(delay)


class ShiftedSource:
    """A library source started at output frame ``offset`` (a reference swapped in mid-session plays
    from its own beginning)."""

    def __init__(self, source, offset: int) -> None:
        self.source = source
        self.offset = offset
        self.is_still = source.is_still
        self.size = source.size

    def frame(self, index: int) -> np.ndarray:
        return self.source.frame(max(0, index - self.offset))

    def frames(self, start: int, count: int) -> np.ndarray:
        return np.stack([self.frame(i) for i in range(start, start + count)])

    def release_before(self, index: int) -> None:
        self.source.release_before(max(0, index - self.offset - self.source.keyframe_interval))


@dataclasses.dataclass
class _Swap:
    name: str
    source: object
    mode: str


class ViewerStats:
    """What one viewer's tracks sent: frame send times (fps, delay) and the A/V offset at sending."""

    def __init__(self) -> None:
        self.sent = collections.deque(maxlen=100)
        self.frames = 0
        self.skipped = 0
        self._audio_sent: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.av_offsets = collections.deque(maxlen=250)  # video send time - audio send time, same instant

    def audio_block_sent(self, j: int, now: float) -> None:
        self._audio_sent[j] = now
        while len(self._audio_sent) > 200:
            self._audio_sent.popitem(last=False)

    def video_frame_sent(self, n: int, now: float) -> None:
        self.sent.append(now)
        self.frames += 1
        audio = self._audio_sent.get(2 * n)  # block 2n (20 ms) starts at frame n (40 ms)
        if audio is not None:
            self.av_offsets.append(now - audio)

    def fps(self, now: float, window: float = 2.0) -> float:
        recent = [t for t in self.sent if now - t <= window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


def _percentiles(values) -> dict:
    if not values:
        return {"p50": None, "p95": None}
    data = np.asarray(values)
    return {"p50": round(float(np.percentile(data, 50)), 4), "p95": round(float(np.percentile(data, 95)), 4)}


class LiveSession:
    def __init__(self, session_id: str, source, source_name: str, pool: GeneratorPool,
                 settings: SessionSettings, emit: Callable[[dict], None], clock=time.monotonic,
                 plan: ChunkPlan = ChunkPlan(), fallback_pool: GeneratorPool | None = None) -> None:
        self.id = session_id
        self.pool = pool
        self.fallback_pool = fallback_pool
        # Requests carry the audio both generators need.
        self.profile = pool.profile if fallback_pool is None else dataclasses.replace(
            pool.profile, audio_margins=widest_margins(pool.profile, fallback_pool.profile))
        self.settings = settings
        self.plan = plan
        self._emit = emit
        self._now = clock
        self.clock = SessionClock(clock(), settings.delay, settings.lead)
        self.ingest = LiveAudioIngest(settings.buffer_seconds)
        self.speakers = LiveSpeakers(self.ingest, settings.buffer_seconds)  # speaker 2: a second WHIP ingest
        self.live: LiveVideoSource | None = source if isinstance(source, LiveVideoSource) else None
        self.source_name = source_name
        self.engine = ChunkEngine(source if self.live is None else None, self.profile, plan,
                                  settings.keyframe_interval, settings.color_correction, settings.seed)
        ladder = tuple(settings.tiers) + ((Tier(FALLBACK_TIER),) if fallback_pool is not None else ())
        # Tiers not measured yet are judged by the generator's predicted cost, when it declares one.
        self.scheduler = Scheduler(ladder, priors=self.profile.priors(self._source_size(), plan.window, plan.context))
        idle = np.zeros((*self._source_size(), 3), np.uint8)
        self.timeline = OutputTimeline(plan, idle)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"session-{session_id}")
        self._stop = asyncio.Event()
        self._swap: _Swap | None = None
        self._next_chunk = 0
        self.state = "running"
        self.end_reason: str | None = None
        self.end_frame: int | None = None  # output frames end here once the ingest has ended
        self.viewers: dict[str, ViewerStats] = {}
        self.counts = collections.Counter()
        self.tier_counts = collections.Counter()
        self.costs = collections.deque(maxlen=50)  # submission to result, queueing and transfer included
        self.generator_seconds = collections.deque(maxlen=50)  # what the generator itself reported
        self.send_delays = collections.deque(maxlen=250)
        self.played = collections.Counter()
        self._task: asyncio.Task | None = None
        self.finished = asyncio.Event()

    # ---- set-up -------------------------------------------------------------------------------------
    def _source_size(self) -> tuple[int, int]:
        return self.live.size if self.live is not None else self.engine.source.size

    async def start(self) -> None:
        """Prepare the idle frame (the source's first frame) and start the chunk loop."""
        if self.live is None:
            self.timeline.idle = await self._in_thread(self.engine.source.frame, 0)
        self._task = asyncio.create_task(self._run(), name=f"session-{self.id}")

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def session_time(self) -> float:
        return self.clock.session_time(self._now())

    # ---- the chunk loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            index = 0
            while not self._stop.is_set():
                if self._speech_done(index):
                    break
                if not await self._wait_capture(index):
                    break
                await self._produce(index)
                index += 1
            if not self._stop.is_set() and self.end_frame is not None:
                await self._sleep_until(self.clock.frame_due(self.end_frame) + 0.1)
        except Exception as exc:  # noqa: BLE001 - a bug ends this session only, with an error event
            log.exception("session %s failed", self.id)
            self._event("error", code="session_failed", message=f"{type(exc).__name__}: {exc}"[:300])
            self.end_reason = self.end_reason or "failed"
        finally:
            self._finish(self.end_reason or ("stopped" if self._stop.is_set() else "ingest_ended"))

    def _speech_done(self, index: int) -> bool:
        return self.end_frame is not None and self.plan.chunk(index).new_start >= self.end_frame

    async def _wait_capture(self, index: int) -> bool:
        """Wait until chunk ``index``'s audio (with the generator's lookahead) has been captured; False
        when the session stops or the ingest ends before the chunk has any speech."""
        chunk = self.plan.chunk(index)
        _, last, _ = self.plan.audio_span(chunk, self.profile.audio_margins)
        ready_at = self.clock.at(last / AUDIO_RATE) + self.settings.capture_grace
        # Decode the window's source frames while the speech is still coming in: building the request
        # then finds them ready, and the generator gets the time.
        prefetch = asyncio.get_running_loop().run_in_executor(self._executor, self._prefetch, chunk.end_frame)
        prefetch.add_done_callback(_log_failure)
        while True:
            now = self._now()
            self._check_idle(now)
            if self._speech_done(index):
                return False
            if now >= ready_at or self.ingest.ended:
                return True
            if await self._stopped_within(min(ready_at - now, 0.5)):
                return False

    def _check_idle(self, now: float) -> None:
        last = self.ingest.last_arrival if self.ingest.last_arrival is not None else 0.0
        if not self.ingest.ended and self.clock.session_time(now) - last > self.settings.idle_timeout:
            self.end_reason = "idle"
            self.end_ingest()

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=max(seconds, 0.0))
            return True
        except asyncio.TimeoutError:
            return False

    async def _sleep_until(self, when: float) -> None:
        while not self._stop.is_set() and self._now() < when:
            await self._stopped_within(min(when - self._now(), 0.5))

    async def _produce(self, index: int) -> None:
        chunk = self.plan.chunk(index)
        slot_due = self.clock.frame_due(chunk.new_start)
        deadline = slot_due - self.settings.playout_margin
        first, last, _ = self.plan.audio_span(chunk, self.profile.audio_margins)
        audio = _Window(first, self.ingest.model.read(first, last))
        second = self.speakers.second_samples(first, last)
        second = None if second is None else _Window(first, second)
        swap, self._swap = self._swap, None
        self._next_chunk = index + 1
        live_window = self._live_window(chunk) if self.live is not None and swap is None else None
        request, fallback, speech = await self._in_thread(self._build, index, audio, swap, live_window, second)
        self.timeline.offer(index, fallback, "fallback")
        decision = self.scheduler.choose(deadline - self._now())
        report = {"chunk": index, "slot_at": round(slot_due - self.clock.origin, 3), "speech_fraction": speech[0]}
        if len(speech) > 1:  # two speakers: each one's voice activity
            report["speech_fractions"] = speech
        if decision.skipped:
            self.tier_counts["skip"] += 1
            self._event("degraded", **report, action="skip", time_left=round(decision.time_left, 3),
                        reason="no tier fits the time left before the slot")
            return self._fell_back(index, request, fallback, "skipped", report)
        self.tier_counts[decision.tier.name] += 1
        if decision.degraded:
            self._event("degraded", **report, action="tier", tier=decision.tier.name,
                        time_left=round(decision.time_left, 3),
                        estimate=None if decision.estimate is None else round(decision.estimate, 3))
        started = self._now()
        pool = self.fallback_pool if decision.tier.name == FALLBACK_TIER else self.pool
        try:
            result = await pool.run(dataclasses.replace(request, tier=decision.tier), deadline)
        except (Expired, PoolBusy) as exc:
            return self._fell_back(index, request, fallback, "late", report, str(exc))
        except GeneratorFailed as exc:
            code = "worker_died" if isinstance(exc, WorkerDied) else "generator_failed"
            self._event("error", chunk=index, code=code, message=str(exc)[:300])
            return self._fell_back(index, request, fallback, "failed", report)
        cost = self._now() - started
        self.scheduler.record(decision.tier, cost)
        self.costs.append(cost)
        self.generator_seconds.append(result.seconds)
        if self._now() > deadline:
            return self._fell_back(index, request, fallback, "late", report, f"took {cost:.3f} s", cost)
        frames = await self._in_thread(self._accept, request, result, swap)
        if self._now() > slot_due:
            return self._fell_back(index, request, fallback, "late", report, "colour correction", cost)
        self.timeline.offer(index, frames, "generated")
        self.counts["generated"] += 1
        self._event("chunk", **report, status="on_time", tier=decision.tier.name, seconds=round(cost, 4),
                    generator_seconds=round(result.seconds, 4), info=_jsonable(result.info))

    def _fell_back(self, index: int, request: ChunkRequest, fallback: np.ndarray, status: str, report: dict,
                   reason: str | None = None, cost: float | None = None) -> None:
        """The slot keeps its fallback frames, and the next chunk continues from them."""
        self.engine.set_context(fallback, request.context_frames)
        self.counts[status] += 1
        extra = {} if cost is None else {"seconds": round(cost, 4)}
        self._event("chunk", **report, status=status, **extra, **({"reason": reason} if reason else {}))

    def _live_window(self, chunk):
        reference = nearest_keyframe(chunk.start_frame, self.settings.keyframe_interval)
        return self.live.window(min(chunk.start_frame, reference), max(chunk.end_frame, reference + 1))

    # Run in the session thread: the engine and the library source are touched only there.
    def _prefetch(self, end_frame: int) -> None:
        source = self.engine.source
        if source is not None and not source.is_still and not isinstance(source, FrameWindow):
            source.frame(end_frame - 1)

    def _build(self, index: int, audio: "_Window", swap: _Swap | None,
               live_window, second: "_Window | None" = None) -> tuple[ChunkRequest, np.ndarray, list[float]]:
        chunk = self.plan.chunk(index)
        if self.engine.source is not None:
            self.engine.release(index)  # frames before this chunk's window are no longer needed
        if swap is not None:
            self.engine.source = swap.source if swap.source.is_still else ShiftedSource(swap.source, chunk.start_frame)
            if swap.mode == "cut" and index > 0:
                self.engine.set_context(self.engine.source.frames(chunk.start_frame, self.plan.context))
        elif live_window is not None:
            self.engine.source = live_window
        self.engine.speaker_faces = self.speakers.faces
        request = self.engine.request(index, audio, self.end_frame, second_audio=second)
        fallback = unchanged_frames(request)
        if swap is not None and swap.mode == "blend" and request.context_frames is not None:
            fallback = _cross_fade(request.context_frames[-1], fallback, self.settings.blend_frames)
        return request, fallback, [round(self.engine.speech_fraction(request, speaker), 3)
                                   for speaker in range(1, request.speakers + 1)]

    def _accept(self, request: ChunkRequest, result: ChunkResult, swap: _Swap | None) -> np.ndarray:
        frames = self.engine.accept(request, result)
        if swap is not None and swap.mode == "blend" and request.context_frames is not None:
            frames = _cross_fade(request.context_frames[-1], frames, self.settings.blend_frames)
            self.engine.set_context(frames, request.context_frames)
        return frames

    # ---- control ------------------------------------------------------------------------------------
    def swap_reference(self, name: str, source, mode: str) -> dict:
        """Use ``source`` from the next chunk on; returns where the swap shows."""
        if mode not in SWAP_MODES:
            raise InputError(f"bad swap mode {mode!r}: accepted are {', '.join(SWAP_MODES)}")
        if tuple(source.size) != tuple(self._source_size()):
            source = _Resized(source, self._source_size())
        self._swap = _Swap(name, source, mode)
        self.source_name = name
        if self.live is not None:
            self.live = None  # a library source replaces the live video for good
        chunk = self.plan.chunk(self._next_chunk)
        return {"chunk": self._next_chunk, "at": round(self.clock.delay + chunk.new_start / FPS, 3)}

    def assign_speaker(self, speaker: int, face) -> dict:
        """Speaker ``speaker`` (1 or 2) animates ``face`` (rank from the left, or position 0..1) from the
        next chunk on; returns the faces of both speakers and the chunk where it shows."""
        faces = self.speakers.assign(speaker, face)
        return {"faces": list(faces.picks), "chunk": self._next_chunk}

    def end_ingest(self) -> None:
        """The speech has ended: play out what was captured, then end."""
        if self.ingest.ended:
            return
        self.ingest.end()
        self.end_frame = math.ceil(self.ingest.ended_at / SAMPLES_PER_FRAME)

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
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._event("ended", reason=reason)
        self.finished.set()

    # ---- playout bookkeeping (called by the tracks) ----------------------------------------------------
    def viewer_stats(self, viewer_id: str) -> ViewerStats:
        return self.viewers.setdefault(viewer_id, ViewerStats())

    def frame_for(self, n: int) -> np.ndarray:
        image, kind = self.timeline.frame(n)
        self.played[kind] += 1
        # Every viewer plays within a few frames of the clock; two seconds back is safely behind them all.
        self.timeline.release_before(min(n, self.clock.frame_at(self._now())) - 2 * FPS)
        return image

    def frame_sent(self, viewer: ViewerStats, n: int, now: float) -> None:
        viewer.video_frame_sent(n, now)
        self.send_delays.append(now - self.clock.at(n / FPS))

    # ---- reporting ------------------------------------------------------------------------------------
    def _event(self, name: str, **fields) -> None:
        self._emit({"type": "event", "event": name, "session": self.id, **fields})

    def stats(self) -> dict:
        now = self._now()
        costs = list(self.costs)
        return {
            "session": self.id, "state": self.state, "source": self.source_name,
            "generator": self.profile.name, "time": round(self.clock.session_time(now), 3),
            "delay": {"target": self.clock.delay, "lead": self.clock.lead,
                      "send": _percentiles(list(self.send_delays))},
            "av_offset_send": _percentiles([o for v in self.viewers.values() for o in v.av_offsets]),
            "chunks": {"generated": self.counts["generated"], "late": self.counts["late"],
                       "skipped": self.counts["skipped"], "failed": self.counts["failed"],
                       "degraded": sum(v for k, v in self.tier_counts.items() if k != self.settings.tiers[0].name)},
            "tiers": dict(self.tier_counts),
            "frames": dict(self.played),
            "fps_out": round(float(np.mean([v.fps(now) for v in self.viewers.values()])), 2) if self.viewers else 0.0,
            "viewers": len(self.viewers),
            "frames_skipped": sum(v.skipped for v in self.viewers.values()),  # sent late: skipped ahead
            "cost": {"last": round(costs[-1], 4) if costs else None,
                     "mean": round(float(np.mean(costs)), 4) if costs else None, **_percentiles(costs),
                     "generator_mean": round(float(np.mean(self.generator_seconds)), 4)
                     if self.generator_seconds else None},
            "ingest": {"frames": self.ingest.frames_received, "ended": self.ingest.ended,
                       "seconds": round(self.ingest.model.end / AUDIO_RATE, 3),
                       "video_frames": self.live.frames_received if self.live is not None else 0,
                       **({"speaker2": self.speakers.stats()} if self.speakers.second is not None else {})},
        }


class _Window(AudioTrack):
    """The audio one chunk needs, copied out of the ring on the loop (absolute sample indices)."""

    def __init__(self, first: int, samples: np.ndarray) -> None:
        super().__init__(samples)
        self.first = first

    def read(self, first: int, last: int) -> np.ndarray:
        return super().read(first - self.first, last - self.first)


class _Resized:
    """A swapped-in source at the session's output size (sizes cannot change mid-stream)."""

    def __init__(self, source, size: tuple[int, int]) -> None:
        from streaming.source import resize_and_centercrop

        self._resize = resize_and_centercrop
        self.source = source
        self.size = size
        self.is_still = source.is_still
        self.keyframe_interval = getattr(source, "keyframe_interval", 72)

    def frame(self, index: int) -> np.ndarray:
        return self._resize(self.source.frame(index), self.size)

    def frames(self, start: int, count: int) -> np.ndarray:
        return np.stack([self.frame(i) for i in range(start, start + count)])

    def release_before(self, index: int) -> None:
        self.source.release_before(index)


def _cross_fade(start: np.ndarray, frames: np.ndarray, count: int) -> np.ndarray:
    """``frames`` with the first ``count`` faded in from ``start``."""
    out = np.array(frames, copy=True)
    count = min(count, len(out))
    for i in range(count):
        alpha = (i + 1) / (count + 1)
        out[i] = (start.astype(np.float32) * (1 - alpha) + out[i].astype(np.float32) * alpha).round().astype(np.uint8)
    return out


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("source prefetch failed: %s", future.exception())


def _jsonable(info: dict) -> dict:
    return {str(k): v for k, v in info.items() if isinstance(v, (bool, int, float, str)) or v is None}
