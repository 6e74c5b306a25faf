"""A generator's serving record (model/serving.py) decides how the server runs it: shared or per session,
thread or process, its fallback, the options it needs. The server reads only the record: a generator the
server has never heard of gets exactly what its record asks for."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from _server_support import write_still
from model.errors import InputError
from model.registry import GENERATORS, SERVING, serving_needs
from model.serving import ServingNeeds
from server.config import ServerConfig
from server.manager import GeneratorUnavailable, SessionManager
from server.sources import SourceLibrary
from streaming.chunker import ChunkPlan

PASSTHROUGH = GENERATORS["passthrough"]


@pytest.fixture
def manager_of(tmp_path, monkeypatch):
    """A session manager whose registry holds generators declared by the test."""
    folder = tmp_path / "sources"
    folder.mkdir()
    write_still(str(folder / "red.png"), (200, 30, 30))
    made = []

    def make(default: str, delay: float = 1.0, plan: ChunkPlan = ChunkPlan(window=9, context=3),
             **declared: ServingNeeds) -> SessionManager:
        for name, needs in declared.items():
            if name not in GENERATORS:  # a name only declared here builds the passthrough generator
                monkeypatch.setitem(GENERATORS, name, PASSTHROUGH)
            monkeypatch.setitem(SERVING, name, needs)
        config = ServerConfig(sources=str(folder), generator=default, delay=delay, size=(64, 64))
        manager = SessionManager(config, SourceLibrary(str(folder)), plan=plan)
        made.append(manager)
        return manager

    yield make


def test_the_record_checks_itself_and_names_what_is_missing():
    with pytest.raises(ValueError, match="bad device 'tpu'"):
        ServingNeeds(device="tpu")
    with pytest.raises(ValueError, match="bad worker mode 'fiber'"):
        ServingNeeds(worker="fiber")
    needs = ServingNeeds(required_options=(("weights", "needs --weights DIR"),))
    with pytest.raises(InputError, match="needs --weights DIR"):
        needs.check_options({})
    needs.check_options({"weights": "/w"})
    assert serving_needs("never-declared") == ServingNeeds()  # a CPU process per session, warmed up
    assert serving_needs("infinitetalk").shared and serving_needs("infinitetalk").fallback == "lite"


async def test_a_shared_generator_serves_every_session_from_one_pool(manager_of):
    manager = manager_of("one", one=ServingNeeds(worker="thread", shared=True, warm_up=False))
    try:
        first = await manager.create("red")
        second = await manager.create("red")
        assert first.pool.pool is second.pool.pool and first.pool.mode == "thread"
        assert not first.pool.pool.per_stream  # one instance, whichever session asks
        assert first.fallback_pool is None
    finally:
        await manager.close()


async def test_a_per_session_generator_gets_its_own_stream_and_its_declared_fallback(manager_of):
    manager = manager_of("own", own=ServingNeeds(worker="thread", fallback="cheap", warm_up=False),
                         cheap=ServingNeeds(worker="thread", warm_up=False))
    try:
        first = await manager.create("red")
        second = await manager.create("red")
        hosts = manager._pools["own"]
        assert first.pool.key != second.pool.key and sum(hosts.sessions()) == 2  # an instance each, hosted
        assert first.loop.engine.source is second.loop.engine.source  # one programme, decoded once
        assert first.fallback_pool is not None and first.fallback_pool.mode == "thread"
        assert [t.name for t in first.scheduler.tiers][-1] == "fallback"
    finally:
        await manager.close()


async def test_a_missing_required_option_is_refused_before_any_worker(manager_of):
    manager = manager_of("lite", heavy=ServingNeeds(required_options=(("weights", "heavy needs --weights DIR"),)))
    try:
        with pytest.raises(GeneratorUnavailable, match="heavy needs --weights DIR"):
            await manager.create("red", generator="heavy")
        assert not manager.sessions
    finally:
        await manager.close()


@pytest.fixture
def fault_registry(monkeypatch):
    import server_fault_generators

    for name, entry in server_fault_generators.REGISTRY.items():
        monkeypatch.setitem(GENERATORS, name, entry)


async def test_a_session_warms_its_generator_before_its_first_chunk_and_starts_from_the_warm_cost(
        manager_of, fault_registry):
    # Chunk 0 (25 frames) is ready 1.06 s in: time for the cold run (0.5 s) and the warm one.
    manager = manager_of("cold", delay=2.0, plan=ChunkPlan(window=25, context=3), cold=ServingNeeds(worker="thread"))
    try:
        session = await manager.create("red")
        ok = await _until(lambda: session.warm_up is not None)
        assert ok, "no warm-up"
        # The cold first run (0.5 s) happened in the warm-up; the scheduler only ever saw the warm one.
        assert session.warm_up.cold >= 0.5 > session.warm_up.warm
        full = session.scheduler.tiers[0]
        assert session.scheduler.measured(full) and session.scheduler.estimate(full) < 0.5
        assert manager.warm_cost("cold") == session.warm_up.warm
    finally:
        await manager.close()


async def test_a_warm_up_still_waiting_gives_way_to_chunk_0_which_starts_from_the_known_warm_cost(
        manager_of, fault_registry):
    """Sessions started together queue their warm-ups behind each other's chunks: a warm-up that has not
    run by the time chunk 0 is ready is dropped (it must not keep the host, or chunk 0, waiting for a CPU
    slot), and the scheduler starts from the warm cost measured at start-up."""
    manager = manager_of("slow", delay=2.0, slow=ServingNeeds(worker="thread"))
    manager.config = dataclasses.replace(manager.config, generator_options=(("seconds", 0.02),))
    try:
        await manager.prepare()
        known = manager.warm_cost("slow")
        await manager.cpu_slots.acquire(deadline=0.0)  # another session's chunk holds the one CPU slot
        session = await manager.create("red")
        full = session.scheduler.tiers[0]
        assert await _until(lambda: session.scheduler.measured(full)), "chunk 0 never became ready"
        assert session.warm_up is None and session.scheduler.estimate(full) == known
        manager.cpu_slots.release()
        assert await _until(lambda: session.counts["generated"] + session.counts["late"] > 0)
        assert session.counts["generated"] == 1 and session.counts["late"] == 0  # chunk 0 was not held up
    finally:
        await manager.close()


async def test_a_session_on_a_source_measured_before_skips_its_warm_up_the_others_warm_up(
        manager_of, fault_registry):
    """The hosts are warmed at start-up on the library's first source: a session there starts from that
    warm cost and runs no warm-up (it would only take the host from other sessions' chunks); a session on
    another source warms its instance up on it."""
    manager = manager_of("slow", delay=2.0, slow=ServingNeeds(worker="thread"))
    manager.config = dataclasses.replace(manager.config, generator_options=(("seconds", 0.02),))
    write_still(os.path.join(manager.config.sources, "blue.png"), (30, 30, 200))  # first by name
    try:
        await manager.prepare()
        known = manager.source_warm_cost("slow", "blue", None)
        assert known is not None and manager.source_warm_cost("slow", "red", None) is None
        measured = await manager.create("blue")
        full = measured.scheduler.tiers[0]
        assert measured.scheduler.measured(full) and measured.scheduler.estimate(full) == known
        other = await manager.create("red")
        assert await _until(lambda: other.warm_up is not None), "the session on red never warmed up"
        assert measured.warm_up is None
        assert manager.source_warm_cost("slow", "red", None) == other.warm_up.warm
    finally:
        await manager.close()


async def test_a_delay_below_what_the_generator_needs_is_refused_at_start_up(manager_of, fault_registry):
    # Window 9 frames (0.36 s) + grace, margin, lead (0.22 s) + a 0.3 s warm chunk x 1.2: at least 0.94 s.
    manager = manager_of("slow", slow=ServingNeeds(worker="thread"), delay=0.8)
    manager.config = dataclasses.replace(manager.config, generator_options=(("seconds", 0.3),))
    try:
        with pytest.raises(InputError, match=r"^--delay: bad delay 0.8: accepted is 0\.9\d to 30 seconds"):
            await manager.prepare()
    finally:
        await manager.close()
    good = manager_of("slow", slow=ServingNeeds(worker="thread"), delay=1.2)
    good.config = dataclasses.replace(good.config, generator_options=(("seconds", 0.3),))
    try:
        assert await good.prepare() == "slow" and 0.3 <= good.warm_cost("slow") < 0.45
    finally:
        await good.close()


async def _until(condition, limit: float = 10.0) -> bool:
    import asyncio
    import time

    end = time.monotonic() + limit
    while not condition() and time.monotonic() < end:
        await asyncio.sleep(0.05)
    return condition()


async def test_sessions_on_one_source_share_its_decoded_frames(tmp_path):
    from server.demo import make_demo_source
    from streaming.sharedsource import SourceCache
    from streaming.source import VideoSource

    clip = make_demo_source(str(tmp_path / "clip.mp4"), seconds=1.0, size=64)
    cache = SourceCache()
    first, second = cache.open(clip, (64, 64), 72), cache.open(clip, (64, 64), 72)
    assert first is second and cache.decoded == 1 and first.length == 25
    own = VideoSource(clip, (64, 64), "loop", 72)
    for n in (0, 7, 24, 25, 31, 60):  # frame n of the loop, as a session's own decoder gives it
        np.testing.assert_array_equal(first.frame(n), own.frame(n))
    with pytest.raises(ValueError):
        first.frame(3)[0, 0, 0] = 1  # read-only: shared by sessions
    small = SourceCache(max_bytes=10 * 64 * 64 * 3)  # 10 frames: a 25-frame clip does not fit
    a, b = small.open(clip, (64, 64), 72), small.open(clip, (64, 64), 72)
    assert isinstance(a, VideoSource) and a is not b and small.decoded == 0


def test_the_region_a_generator_works_on_comes_from_its_record(monkeypatch):
    """At an output size of its own choosing, a generator gets the region its record names, at the
    region's own pixels when it declares it works at any size (no generator names in streaming/)."""
    from streaming.region import region_finder, session_region
    from streaming.source import OutputSize

    monkeypatch.setitem(SERVING, "tight", ServingNeeds(region="face", any_size=True))
    assert session_region(OutputSize(), None, "tight") == "face"
    assert session_region(OutputSize(), None, "never-declared") == "upper_body"
    assert session_region(OutputSize(), "full", "tight") == "full"  # the operator's choice wins
    assert session_region((480, 480), None, "tight") is None  # a size the generator works at: whole frames
    tight, _ = region_finder(OutputSize(), "tight", {}, (1080, 1920))
    bucketed, _ = region_finder(OutputSize(), "never-declared", {}, (1080, 1920))
    try:
        assert (tight.kind, tight.any_size, bucketed.kind, bucketed.any_size) == ("face", True, "upper_body", False)
    finally:
        tight.close()
        bucketed.close()


async def test_the_configured_options_go_to_the_configured_generator_only(manager_of, fault_registry):
    """--weights and -o options are the configured generator's: its declared fallback, or another generator a
    session asks for, is built without them (lite would refuse an infinitetalk's --weights)."""
    manager = manager_of("own", own=ServingNeeds(worker="thread", fallback="raising", warm_up=False),
                         raising=ServingNeeds(worker="thread", warm_up=False))
    manager.config = dataclasses.replace(manager.config, generator_options=(("weights", "/models/x"),))
    try:
        session = await manager.create("red")  # RaisingGenerator(weights=...) would fail to build
        assert session.fallback_pool is not None and session.fallback_pool.profile is not None
        other = await manager.create("red", generator="raising")
        assert other.pool.name == "raising"
    finally:
        await manager.close()
