"""A live session without WebRTC, with short chunks (9 frames, 3 context) so that many chunks pass in a
few seconds. Where no real duration matters (chunks on time, swaps, a raising generator, the idle and
ingest ends) the session runs on a virtual clock with its blocking work inline: speech is fed and frames
are read at virtual instants, and the outcome is the same on any machine. Where real durations are the
point (a slow generator, a killed worker process, the fallback generator) it runs in real time."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import pytest

import server_fault_generators
from stats_wire import check_documented
from _server_support import feed_in_real_time, speech_48k, write_still
from model.registry import GENERATORS
from model.base import Tier
from _server_support import audio_frame
from streaming.chunker import ChunkPlan
from streaming.clock import InlineExecutor, VirtualClock
from streaming.events import message
from streaming.ingest import PLAYOUT_RATE
from streaming.errors import InputError
from streaming.session import RING_SLACK, LiveSession, SessionSettings, check_delay
from streaming.source import VideoSource
from streaming.pool import GeneratorPool
from streaming.workers import GeneratorSpec
from streaming.i420 import i420_to_rgb

PLAN = ChunkPlan(window=9, context=3)  # chunk 0: 0.36 s, then one chunk every 0.24 s
RED, BLUE = (200, 30, 30), (30, 30, 200)


@pytest.fixture
def fault_registry(monkeypatch):
    for name, entry in server_fault_generators.REGISTRY.items():
        monkeypatch.setitem(GENERATORS, name, entry)


@pytest.fixture
def stills(tmp_path):
    return write_still(str(tmp_path / "red.png"), RED), write_still(str(tmp_path / "blue.png"), BLUE)


async def _pool(name: str, mode: str = "thread", clock=None, **options) -> GeneratorPool:
    if clock is None:
        pool = GeneratorPool(GeneratorSpec.from_registry(name, options), mode=mode)
    else:
        pool = GeneratorPool(GeneratorSpec.from_registry(name, options), mode=mode, clock=clock.now,
                             executor=InlineExecutor())
    await pool.start()
    return pool


async def _run_virtual(session: LiveSession, clock: VirtualClock, seconds: float, at=None):
    """Feed ``seconds`` of speech in 20 ms frames at virtual instants, end the ingest, and play every
    frame at its due instant; ``at=(after_seconds, action)`` runs ``action()`` once that far in."""
    played: list[tuple[int, str, np.ndarray]] = []
    speech = speech_48k(seconds)
    block = 960
    n = session.clock.frame_at(clock.now()) + 1
    result = None

    def play_due() -> None:
        nonlocal n
        while session.state != "ended" and session.clock.frame_due(n) <= clock.now():
            image, kind = session.timeline.frame(n)
            image = i420_to_rgb(image)  # the timeline keeps whole frames as I420
            played.append((n, kind, image))
            n += 1

    for k in range(len(speech) // block):
        session.receive_audio(audio_frame(speech[k * block : (k + 1) * block], k * block))
        await clock.advance(block / PLAYOUT_RATE)
        play_due()
        if at is not None and result is None and clock.now() - session.clock.origin >= at[0]:
            result = at[1]()
    session.end_ingest()
    while session.state != "ended":
        await clock.advance(0.02)
        play_due()
        assert clock.now() - session.clock.origin < seconds + session.clock.delay + 5, "the session never ended"
    return played, result


async def _run(session: LiveSession, seconds: float) -> list[tuple[int, str, np.ndarray]]:
    """Feed ``seconds`` of speech, end the ingest, and play every frame as a viewer would."""
    played: list[tuple[int, str, np.ndarray]] = []

    async def viewer():
        n = session.clock.frame_at(time.monotonic()) + 1
        while session.state != "ended":
            await asyncio.sleep(max(0.0, session.clock.frame_due(n) - time.monotonic()))
            image, kind = session.timeline.frame(n)
            image = i420_to_rgb(image)  # the timeline keeps whole frames as I420
            played.append((n, kind, image))
            n += 1

    watcher = asyncio.create_task(viewer())
    await feed_in_real_time(session, speech_48k(seconds))
    session.end_ingest()
    await asyncio.wait_for(session.finished.wait(), timeout=session.clock.delay + 5)
    await watcher
    return played


def _recorder(log: list[dict]):
    """The session's emit callback: its typed events, kept as the control protocol sends them."""
    return lambda event: log.append(message(event, "s1"))


def _events(log: list[dict], name: str) -> list[dict]:
    return [e for e in log if e["event"] == name]


def _colour(image: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in image[2, 2])


async def _session(pool, source_path, events, delay=1.0, clock=None, **settings) -> LiveSession:
    virtual = {} if clock is None else {"clock": clock, "executor": InlineExecutor()}
    session = LiveSession("s1", VideoSource(source_path, (64, 64)), "red", pool,
                          SessionSettings(delay=delay, **settings), _recorder(events), plan=PLAN, **virtual)
    await session.start()
    return session


async def _play(generator: str, still: str, seconds: float, options: dict | None = None, swap=None, **settings):
    """A whole session on ``generator`` on a virtual clock: the session, its events and the frames
    played; with ``swap=(after_seconds, still, mode)`` also where the reference swap took effect."""
    clock = VirtualClock()
    pool = await _pool(generator, clock=clock, **(options or {}))
    events: list[dict] = []
    try:
        session = await _session(pool, still, events, clock=clock, **settings)
        action = None if swap is None else (swap[0], lambda: session.swap_reference(
            "swapped", VideoSource(swap[1], (64, 64)), swap[2]))
        played, where = await _run_virtual(session, clock, seconds, action)
    finally:
        await pool.close()
    return (session, events, played) if swap is None else (session, events, played, where)


async def test_session_generates_every_chunk_on_time_and_ends_after_the_speech(stills):
    session, events, played = await _play("passthrough", stills[0], 2.0)
    chunks = _events(events, "chunk")
    assert len(chunks) >= 7 and all(c["status"] == "on_time" for c in chunks)
    # Voice activity per chunk (webrtcvad): real read speech is heard in most of its windows.
    fractions = [c["speech_fraction"] for c in chunks]
    assert all(0.0 <= f <= 1.0 for f in fractions) and max(fractions) > 0.5
    assert _events(events, "ended")[0]["reason"] == "ingest_ended"
    # Every frame from the first slot to the end of the speech came from a generated chunk.
    speech_frames = [kind for n, kind, _ in played if 0 <= n < session.end_frame]
    assert speech_frames and set(speech_frames) == {"generated"}
    # 2 s of speech, placed from its capture (arrival less aiortc's 80 ms of receive buffering; samples
    # before the session's start are dropped).
    assert session.end_frame == -(-session.ingest.ended_at // 640) and 48 <= session.end_frame <= 55
    stats = session.stats()
    assert stats.chunks.generated == len(chunks) and stats.chunks.late == 0
    assert 1.9 <= stats.ingest.seconds <= 2.2
    check_documented(stats.to_wire())  # the documented keys and types, from a real session


async def test_reference_swap_takes_effect_at_the_next_chunk(stills):
    _, _, played, where = await _play("passthrough", stills[0], 2.0, swap=(0.8, stills[1], "cut"))
    first_blue = PLAN.chunk(where["chunk"]).new_start
    colours = {n: _colour(image) for n, kind, image in played if kind == "generated"}
    assert all(abs(colours[n][2] - RED[2]) < 10 for n in colours if n < first_blue)
    assert all(abs(colours[n][2] - BLUE[2]) < 10 for n in colours if n >= first_blue)
    assert any(n >= first_blue for n in colours) and any(n < first_blue for n in colours)
    assert where["at"] == pytest.approx(1.0 + first_blue / 25)


async def test_blend_swap_fades_from_the_last_frame(stills):
    _, _, played, where = await _play("passthrough", stills[0], 1.5, swap=(0.6, stills[1], "blend"), blend_frames=4)
    start = PLAN.chunk(where["chunk"]).new_start
    reds = [_colour(image)[0] for n, kind, image in played if start <= n < start + 5 and kind == "generated"]
    assert len(reds) == 5 and reds == sorted(reds, reverse=True)  # red fades out over 4 frames
    assert RED[0] > reds[0] > reds[3] > reds[4] == BLUE[0]


async def test_a_raising_generator_fails_one_chunk_and_the_session_goes_on(stills, fault_registry):
    session, events, played = await _play("raising", stills[0], 1.6, {"fail_chunks": [2]})
    errors = _events(events, "error")
    assert len(errors) == 1 and errors[0]["code"] == "generator_failed" and errors[0]["chunk"] == 2
    assert "deliberate failure" in errors[0]["message"]
    statuses = {c["chunk"]: c["status"] for c in _events(events, "chunk")}
    assert statuses[2] == "failed" and statuses[3] == "on_time" and statuses[1] == "on_time"
    chunk2 = PLAN.chunk(2)
    kinds = {kind for n, kind, _ in played if chunk2.new_start <= n < chunk2.end_frame}
    assert kinds == {"fallback"}  # the slot played its fallback frames on time
    assert _events(events, "ended")[0]["reason"] == "ingest_ended"


@pytest.mark.slow
async def test_a_killed_worker_process_is_restarted_and_the_session_goes_on(stills, fault_registry):
    pool = await _pool("slow", mode="process", seconds=0.05)
    events: list[dict] = []
    try:
        session = await _session(pool, stills[0], events, delay=1.2)
        feeding = asyncio.create_task(_run(session, 4.0))
        await asyncio.sleep(1.0)
        os.kill(pool.worker_pids[0], signal.SIGKILL)
        await feeding
    finally:
        await pool.close()
    assert pool.deaths == 1 and pool.restarts == 1
    died = [e for e in _events(events, "error") if e["code"] == "worker_died"]
    assert len(died) == 1
    after = [c for c in _events(events, "chunk") if c["chunk"] > died[0]["chunk"]]
    assert any(c["status"] == "on_time" for c in after)  # generated again after the restart


async def _play_real_time(generator: str, still: str, seconds: float, options: dict) -> tuple:
    pool = await _pool(generator, **options)
    events: list[dict] = []
    try:
        session = await _session(pool, still, events)
        played = await _run(session, seconds)
    finally:
        await pool.close()
    return session, events, played


async def test_a_slow_generator_degrades_to_a_cheaper_tier_and_keeps_the_delay(stills, fault_registry):
    # The full tier takes 0.5 s (real time) for a 0.24 s chunk; the fast tiers 0.05 s.
    session, events, played = await _play_real_time("slow", stills[0], 3.0, {"seconds": 0.5, "fast_seconds": 0.05})
    degraded = _events(events, "degraded")
    assert degraded and all(d["action"] in ("tier", "skip") for d in degraded)
    tiers = session.stats().tiers
    assert tiers.get("fast", 0) + tiers.get("draft", 0) > tiers.get("full", 0)
    # The delay holds: frames are due on the clock whatever happened; the end comes on time.
    assert played[-1][0] >= session.end_frame - 1
    on_time = [c for c in _events(events, "chunk") if c["status"] == "on_time"]
    assert len(on_time) >= len(_events(events, "chunk")) // 2


async def test_idle_session_ends_by_itself(stills):
    clock = VirtualClock()
    pool = await _pool("passthrough", clock=clock)
    events: list[dict] = []
    try:
        session = await _session(pool, stills[0], events, clock=clock, idle_timeout=0.5)
        await clock.advance(0.45)
        assert session.state == "running"
        assert await clock.run_until(lambda: session.finished.is_set(), limit=5)
        # Nothing was captured: it ends at once after the timeout, with nothing to play out.
        assert clock.now() - session.clock.origin < 0.5 + 0.6
    finally:
        await pool.close()
    assert _events(events, "ended")[0]["reason"] == "idle"


def test_delay_below_one_chunk_is_refused():
    with pytest.raises(InputError, match="bad delay 2.0: accepted is 3.56 to 30 seconds"):
        check_delay(2.0, ChunkPlan(), 0.0, SessionSettings())
    assert check_delay(4.2, ChunkPlan(), 0.0, SessionSettings()) == 4.2


async def test_a_generator_too_slow_for_any_tier_hands_its_chunks_to_the_fallback_generator(stills, fault_registry):
    pool = await _pool("slow", seconds=0.6)  # every tier 0.6 s for a 0.24 s chunk
    fallback = await _pool("passthrough")
    events: list[dict] = []
    try:
        session = LiveSession("s1", VideoSource(stills[0], (64, 64)), "red", pool,
                              SessionSettings(delay=1.0, tiers=(Tier("full"),)), _recorder(events), plan=PLAN,
                              fallback_pool=fallback)
        await session.start()
        await _run(session, 2.5)
    finally:
        await pool.close()
        await fallback.close()
    tiers = session.stats().tiers
    assert tiers.get("fallback", 0) >= 4 and tiers.get("full", 0) >= 1
    fell_back = [c for c in _events(events, "chunk") if c.get("tier") == "fallback"]
    assert fell_back and all(c["status"] == "on_time" for c in fell_back)
    assert any(d["action"] == "tier" and d["tier"] == "fallback" for d in _events(events, "degraded"))


@pytest.mark.slow
async def test_process_worker_passes_frames_through_shared_memory():
    from model.base import ChunkRequest

    pool = await _pool("passthrough", mode="process")
    rng = np.random.default_rng(1)
    try:
        for size in ((32, 48), (64, 64)):  # the second request needs bigger segments
            window = rng.integers(0, 255, (9, *size, 3), dtype=np.uint8)
            request = ChunkRequest(index=1, start_frame=6, num_frames=9, audio=np.zeros(16, np.float32),
                                   audio_offset=0, reference_frame=window[0], reference_index=6,
                                   context_frames=window[:3], source_frames=window)
            result = await pool.run(request, time.monotonic() + 30)
            np.testing.assert_array_equal(result.frames, window[3:])
    finally:
        await pool.close()


async def test_the_speech_rings_keep_what_the_delay_needs_not_forty_seconds(stills):
    pool = await _pool("passthrough")
    try:
        short = await _session(pool, stills[0], [], delay=5.5)
        long = await _session(pool, stills[0], [], delay=30.0)
        kept = short.ingest.playout.capacity / PLAYOUT_RATE
        # Playout reads at the delay; a chunk's window (with its audio margins) once captured; 10 s slack.
        assert kept == pytest.approx(5.5 + PLAN.window / 25 + RING_SLACK)
        assert short.ingest.model.capacity / 16_000 == pytest.approx(kept)
        assert long.ingest.playout.capacity / PLAYOUT_RATE == 40.0  # at most buffer_seconds
        for session in (short, long):
            await session.stop("test")
    finally:
        await pool.close()
