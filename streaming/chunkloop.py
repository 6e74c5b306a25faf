"""The chunk loop: the only owner of the chunk engine, and what turns captured speech into output slots.

For chunk k it waits until k's speech (with the generator's lookahead) has been captured, builds the
request (the chunk engine: audio window, nearest keyframe, context), puts the slot's fallback frames on
the timeline at once, asks the scheduler for a tier that fits before the slot is due, and runs the
generator in its pool. A result in time replaces the fallback; a late or failed one leaves it, and the
fallback becomes the context the next chunk continues from (what viewers saw). Each chunk ends in a typed
event (streaming/events.py). Reference swaps take effect at the next chunk.

Blocking work (decoding the source, building requests, colour correction) runs in the session's single
worker thread, handed one step at a time; the timeline is touched only on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
from typing import Callable

import numpy as np

from model.base import AUDIO_RATE, FPS, AudioMargins, ChunkRequest, ChunkResult, Tier
from model.errors import InputError
from model.passthrough import unchanged_frames
from model.registry import serving_needs
from streaming.chunker import ChunkPlan, nearest_keyframe
from streaming.clock import Clock, sleep_unless
from streaming.composite import crop
from streaming.engine import AudioTrack, ChunkEngine
from streaming.events import ChunkDone, ChunkSlot, Degraded, SessionError, SessionEvent
from streaming.i420 import compact
from streaming.livesource import FrameWindow, LiveVideoSource
from streaming.region import RegionFinder, framing_info, nominal_work, whole_frame
from streaming.regionsource import ComposedFrames, RegionSource
from streaming.scheduler import Scheduler
from streaming.speakers import LiveSpeakers
from streaming.timeline import OutputTimeline, SessionClock
from streaming.warmup import WarmUp, warm_up, warm_up_request
from streaming.pool import GeneratorPool
from streaming.workers import Expired, GeneratorFailed, PoolBusy, WorkerDied

log = logging.getLogger("livedub.chunkloop")
SWAP_MODES = ("cut", "blend")
FALLBACK_TIER = "fallback"  # the ladder's last rung when the session has a cheaper generator


def widest_margins(*profiles) -> AudioMargins:
    return AudioMargins(max(p.audio_margins.left for p in profiles), max(p.audio_margins.right for p in profiles))


class ShiftedSource:
    """A library source started at output frame ``offset`` (a reference swapped in mid-session plays
    from its own beginning)."""

    def __init__(self, source, offset: int, keep: int | None = None) -> None:
        self.source = source
        self.offset = offset
        self.is_still = source.is_still
        self.size = source.size
        # Frames kept before a window (its reference may lie there); a region source keeps its own.
        self.keep = getattr(source, "keyframe_interval", 0) if keep is None else keep

    def frame(self, index: int) -> np.ndarray:
        return self.source.frame(max(0, index - self.offset))

    def frames(self, start: int, count: int) -> np.ndarray:
        return np.stack([self.frame(i) for i in range(start, start + count)])

    def release_before(self, index: int) -> None:
        self.source.release_before(max(0, index - self.offset - self.keep))

    def reader(self) -> "ShiftedSource":
        from streaming.regionsource import reader_of

        return ShiftedSource(reader_of(self.source), self.offset, 0)


@dataclasses.dataclass
class _Swap:
    name: str
    source: object
    mode: str


class ChunkLoop:
    def __init__(self, session_id: str, source, pool: GeneratorPool, fallback_pool: GeneratorPool | None,
                 speakers: LiveSpeakers, schedule: SessionClock, timeline: OutputTimeline, settings,
                 plan: ChunkPlan, clock: Clock, emit: Callable[[SessionEvent], None],
                 executor: concurrent.futures.Executor, stop: asyncio.Event, on_idle: Callable[[], None],
                 warm: bool = False, warm_cost: float | None = None) -> None:
        self.id = session_id
        self.pool = pool
        self.fallback_pool = fallback_pool
        # Requests carry the audio both generators need.
        self.profile = pool.profile if fallback_pool is None else dataclasses.replace(
            pool.profile, audio_margins=widest_margins(pool.profile, fallback_pool.profile))
        self.speakers = speakers  # speaker 1's ingest, and speaker 2's once it arrives
        self.ingest = speakers.first
        self.clock = schedule
        self.timeline = timeline
        self.settings = settings
        self.plan = plan
        self._clock = clock
        self._now = clock.now
        self._emit = emit
        self._executor = executor
        self._stop = stop
        self._on_idle = on_idle
        self.live: LiveVideoSource | None = source if isinstance(source, LiveVideoSource) else None
        # An output size the generator does not work at: it sees a region around the speaker.
        self._region = None if settings.region is None else RegionFinder(
            settings.region, any_size=serving_needs(self.profile.name).any_size)
        self.engine = ChunkEngine(None, self.profile, plan, settings.keyframe_interval, settings.color_correction,
                                  settings.seed)
        if self.live is None:
            self._use(source, 0)
        ladder = tuple(settings.tiers) + ((Tier(FALLBACK_TIER),) if fallback_pool is not None else ())
        # Tiers not measured yet are judged by the generator's predicted cost, when it declares one (at the
        # size it works at: a region's, with one).
        work = self.source_size() if settings.region is None else nominal_work(settings.region, self.source_size())
        self.scheduler = Scheduler(ladder, priors=self.profile.priors(work, plan.window, plan.context))
        self._swap: _Swap | None = None
        self._next_chunk = 0
        self.end_frame: int | None = None  # output frames end here once the ingest has ended
        self.counts = collections.Counter()
        self.tier_counts = collections.Counter()
        self.costs = collections.deque(maxlen=50)  # submission to result, queueing and transfer included
        self.generator_seconds = collections.deque(maxlen=50)  # what the generator itself reported
        self._warm = warm  # run a warm-up chunk on the source before the first real one
        self._warm_cost = warm_cost  # the generator's warm cost measured elsewhere, if known
        self.warm_up: WarmUp | None = None
        if not warm:
            self._start_from_known_cost()

    def release(self) -> None:
        """The session has ended: drop the callbacks into it (reference counting then frees both)."""
        self._on_idle = _no_idle

    @property
    def next_chunk(self) -> int:
        """The chunk a change made now (a swap, a speaker's face) shows from."""
        return self._next_chunk

    def source_size(self) -> tuple[int, int]:
        return self.live.size if self.live is not None else self.engine.source.size

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self) -> None:
        """Chunks until the speech has ended (or the session stops)."""
        warming = asyncio.ensure_future(self._warm_up()) if self._warm else None
        try:
            await self._chunks(warming)
        finally:
            if warming is not None:
                warming.cancel()
                await asyncio.gather(warming, return_exceptions=True)
            if self._region is not None:
                self._region.close()

    async def _chunks(self, warming: asyncio.Future | None) -> None:
        index = 0
        while not self._stop.is_set():
            if self._speech_done(index):
                break
            if not await self._wait_capture(index):
                break
            if index == 0 and warming is not None:
                await self._end_warm_up(warming)
            await self._produce(index)
            index += 1

    async def _end_warm_up(self, warming: asyncio.Future) -> None:
        """Chunk 0 is ready: a warm-up still waiting or running gives way to it (many sessions started
        together queue their warm-ups behind each other's real chunks). The scheduler then starts from
        the warm cost measured before, at start-up or by another session: never from a cold run."""
        if warming.done() and not warming.cancelled() and warming.exception() is not None:
            log.warning("session %s: warm-up failed (%s); chunk 0 runs on a cold instance", self.id,
                        warming.exception())
        if not warming.done():
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
            log.info("session %s: chunk 0 is ready before the warm-up ended; it starts from the known "
                     "warm cost %s", self.id, self._warm_cost)
        if self.warm_up is None:
            self._start_from_known_cost()

    def _start_from_known_cost(self) -> None:
        """The scheduler's first estimate of the best tier: the warm cost measured before, when known."""
        tier = self.scheduler.tiers[0]
        if self._warm_cost is not None and not self.scheduler.measured(tier):
            self.scheduler.record(tier, self._warm_cost)

    async def _warm_up(self) -> None:
        """The generator's first, cold run on this source happens now, during chunk 0's capture; the
        warm run's cost is the scheduler's first estimate of the best tier."""
        tier = self.scheduler.tiers[0]
        window = self.plan.chunk(0).num_frames
        if self.live is not None:  # no frames yet: the placeholder, as many times as a window has
            frames = np.repeat(self.timeline.idle[None], window, axis=0)
        elif self.engine.source.is_still:
            frames = None
        else:
            frames = await self._in_thread(self.engine.seen_frames, 0, 0, window)
        reference = self.timeline.idle if frames is None or self._region is None else frames[0]
        if self._region is not None and (self.live is not None or frames is None):
            # The generator sees regions at its size: a live source's placeholder (or a still) as a whole
            # frame at the bucket (a still's region is chosen with its first chunk).
            framing = whole_frame(reference.shape[:2])
            reference = crop(reference, framing)
            frames = None if frames is None else np.stack([crop(image, framing) for image in frames])
        request = warm_up_request(reference, self.plan, self.profile.audio_margins, tier, frames)
        if frames is not None and self.live is None and self._region is None:
            # A shared source's faces, as chunks will have them: the warm cost is then what a chunk costs.
            landmarks = await self._in_thread(self.engine.shared_landmarks, 0, len(frames))
            request = dataclasses.replace(request, source_landmarks=landmarks)
        try:
            self.warm_up = await warm_up(self.pool, request, self._now)
        except (Expired, PoolBusy, GeneratorFailed) as exc:
            log.warning("session %s: warm-up failed (%s); the first chunk runs cold", self.id, exc)
            return
        self.scheduler.record(tier, self.warm_up.warm)

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
            self._on_idle()

    async def _stopped_within(self, seconds: float) -> bool:
        return await sleep_unless(self._clock, seconds, self._stop)

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
        request, fallback, speech, view = await self._in_thread(self._build, index, audio, swap, live_window, second)
        blended = swap is not None and swap.mode == "blend" and request.context_frames is not None
        self.timeline.offer(index, self._shown(chunk, fallback if blended else None, view, fallback), "fallback")
        decision = self.scheduler.choose(deadline - self._now())
        # Two speakers: each one's voice activity too.
        report = ChunkSlot(index, round(slot_due - self.clock.origin, 3), speech[0],
                           tuple(speech) if len(speech) > 1 else None)
        if decision.skipped:
            self.tier_counts["skip"] += 1
            self._emit(Degraded(report, "skip", round(decision.time_left, 3),
                                reason="no tier fits the time left before the slot"))
            return await self._fell_back(index, request, fallback, "skipped", report, view)
        self.tier_counts[decision.tier.name] += 1
        if decision.degraded:
            self._emit(Degraded(report, "tier", round(decision.time_left, 3), tier=decision.tier.name,
                                estimate=None if decision.estimate is None else round(decision.estimate, 3)))
        started = self._now()
        pool = self.fallback_pool if decision.tier.name == FALLBACK_TIER else self.pool
        try:
            result = await pool.run(dataclasses.replace(request, tier=decision.tier), deadline)
        except (Expired, PoolBusy) as exc:
            return await self._fell_back(index, request, fallback, "late", report, view, str(exc))
        except GeneratorFailed as exc:
            code = "worker_died" if isinstance(exc, WorkerDied) else "generator_failed"
            self._emit(SessionError(code, str(exc)[:300], chunk=index))
            return await self._fell_back(index, request, fallback, "failed", report, view)
        cost = self._now() - started
        self.scheduler.record(decision.tier, cost)
        self.costs.append(cost)
        self.generator_seconds.append(result.seconds)
        if self._now() > deadline:
            return await self._fell_back(index, request, fallback, "late", report, view, f"took {cost:.3f} s",
                                         cost)
        shown = await self._in_thread(self._accept, request, result, swap, chunk, view)
        if self._now() > slot_due:
            return await self._fell_back(index, request, fallback, "late", report, view, "colour correction", cost)
        self.timeline.offer(index, shown, "generated")
        self.counts["generated"] += 1
        self._emit(ChunkDone(report, "on_time", decision.tier.name, round(cost, 4), round(result.seconds, 4),
                             info=_jsonable({**result.info, **framing_info(view and view[0])})))

    @staticmethod
    def _shown(chunk, frames: np.ndarray | None, view, fallback: np.ndarray | None = None):
        """What the timeline holds of a slot: the frames, or with a region (``view``: its framing and a
        reader of the source frames) the generator's frames composed into source frames when played
        (``frames`` None: the source as it is)."""
        if view is None:
            return frames if frames is not None else fallback
        framing, reader = view
        return ComposedFrames(frames, chunk.num_frames - chunk.num_context, framing, chunk.new_start, reader)

    def _use(self, source, start: int) -> None:
        """The engine reads ``source`` from frame ``start`` on (through the region, when there is one)."""
        if self._region is None:
            self.engine.source = source
        elif isinstance(self.engine.source, RegionSource):
            self.engine.source.retarget(source, start)
        else:
            self.engine.source = RegionSource(source, self._region, self.plan, self.settings.keyframe_interval)

    def first_frame(self) -> np.ndarray:
        """The source's first frame, at the output size."""
        source = self.engine.source
        return source.reader.frame(0) if isinstance(source, RegionSource) else source.frame(0)

    async def _fell_back(self, index: int, request: ChunkRequest, fallback: np.ndarray, status: str,
                         report: ChunkSlot, view, reason: str | None = None, cost: float | None = None) -> None:
        """The slot keeps its fallback frames, and the next chunk continues from them."""
        self.engine.set_context(fallback, request.context_frames)
        self.counts[status] += 1
        self._emit(ChunkDone(report, status, seconds=None if cost is None else round(cost, 4), reason=reason))
        if view is None:
            # Kept as I420 from now on (the same pixels to the encoder); only a slot that ends here is
            # converted, not every chunk's fallback, most of which generated frames replace.
            compacted = await self._in_thread(compact, fallback)
            if self.timeline.slot(index) is not None:  # not played and released meanwhile
                self.timeline.offer(index, compacted, "fallback")

    def _live_window(self, chunk):
        reference = nearest_keyframe(chunk.start_frame, self.settings.keyframe_interval)
        return self.live.window(min(chunk.start_frame, reference), max(chunk.end_frame, reference + 1))

    # Run in the session thread: the engine and the library source are touched only there.
    def _prefetch(self, end_frame: int) -> None:
        source = self.engine.source
        live = isinstance(getattr(source, "native", source), FrameWindow)  # (a region of) a frozen live window
        if source is not None and not source.is_still and not live:
            source.frame(end_frame - 1)
            # The window's faces too (a shared source's analysis, done once for all its sessions): off the
            # time between the speech being captured and the slot.
            analysis = getattr(source, "analysis", None)
            if analysis is not None and self.profile.uses_source_landmarks:
                analysis.tracked(end_frame - 1)

    def _build(self, index: int, audio: "_Window", swap: _Swap | None,
               live_window, second: "_Window | None" = None
               ) -> tuple[ChunkRequest, np.ndarray, list[float], tuple | None]:
        chunk = self.plan.chunk(index)
        if self.engine.source is not None:
            self.engine.release(index)  # frames before this chunk's window are no longer needed
        if swap is not None:
            keep = 0 if self._region is not None else None
            self._use(swap.source if swap.source.is_still else ShiftedSource(swap.source, chunk.start_frame, keep),
                      chunk.start_frame)
            if swap.mode == "cut" and index > 0:
                self.engine.set_context(self.engine.seen_frames(index, chunk.start_frame, self.plan.context),
                                        index=index)
        elif live_window is not None:
            self._use(live_window, min(chunk.start_frame, nearest_keyframe(chunk.start_frame,
                                                                           self.settings.keyframe_interval)))
        self.engine.speaker_faces = self.speakers.faces
        request = self.engine.request(index, audio, self.end_frame, second_audio=second)
        fallback = unchanged_frames(request)
        if swap is not None and swap.mode == "blend" and request.context_frames is not None:
            fallback = _cross_fade(request.context_frames[-1], fallback, self.settings.blend_frames)
        framing = self.engine.framing(index)
        view = None if framing is None else (framing, self.engine.source.reader)
        return request, fallback, [round(self.engine.speech_fraction(request, speaker), 3)
                                   for speaker in range(1, request.speakers + 1)], view

    def _accept(self, request: ChunkRequest, result: ChunkResult, swap: _Swap | None, chunk, view):
        """What the timeline holds of the chunk's generated frames (I420 for whole frames)."""
        frames = self.engine.accept(request, result)
        if swap is not None and swap.mode == "blend" and request.context_frames is not None:
            frames = _cross_fade(request.context_frames[-1], frames, self.settings.blend_frames)
            self.engine.set_context(frames, request.context_frames)
        return compact(frames) if view is None else self._shown(chunk, frames, view)

    # ---- control ------------------------------------------------------------------------------------
    def swap_reference(self, name: str, source, mode: str) -> dict:
        """Use ``source`` from the next chunk on; returns where the swap shows."""
        if mode not in SWAP_MODES:
            raise InputError(f"bad swap mode {mode!r}: accepted are {', '.join(SWAP_MODES)}")
        if tuple(source.size) != tuple(self.source_size()):
            source = _Resized(source, self.source_size())
        self._swap = _Swap(name, source, mode)
        if self.live is not None:
            self.live = None  # a library source replaces the live video for good
        chunk = self.plan.chunk(self._next_chunk)
        return {"chunk": self._next_chunk, "at": round(self.clock.delay + chunk.new_start / FPS, 3)}

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

    def reader(self) -> "_Resized":
        from streaming.regionsource import reader_of

        return _Resized(reader_of(self.source), self.size)


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


def _no_idle() -> None:
    pass
