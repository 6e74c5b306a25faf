"""The scheduler against the real model's cost structure: the simulated GPU generator's costs (the
planner's) replayed on a virtual clock over streams of 81-frame chunks at 25 fps, and one session through
the live server with the simulated generator sleeping them for real."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from _server_support import feed_in_real_time, source_folder, speech_48k
from model.base import ChunkRequest, Tier
from model.simulated import SimulatedGenerator, SimulatedOptions, build
from server.config import build_config
from streaming.chunker import Chunk, ChunkPlan
from streaming.errors import InputError
from streaming.replay import replay
from streaming.scheduler import SAFETY
from streaming.session import SessionSettings

SIZE = (480, 480)


def simulated(hardware: str, slept: list | None = None) -> SimulatedGenerator:
    return SimulatedGenerator(SimulatedOptions(simulate=hardware),
                              sleep=(slept.append if slept is not None else lambda seconds: None))


def request(tier: Tier, chunk: Chunk, size=SIZE) -> ChunkRequest:
    reference = np.full((*size, 3), 90, np.uint8)
    context = None if chunk.num_context == 0 else np.zeros((chunk.num_context, *size, 3), np.uint8)
    return ChunkRequest(chunk.index, chunk.start_frame, chunk.num_frames, np.zeros(1, np.float32), 0, reference, 0,
                        context_frames=context, tier=tier)


def run(hardware: str, delay: float, chunks: int = 12):
    generator = simulated(hardware)
    settings = SessionSettings(delay=delay)
    events = replay(lambda tier, chunk: generator.cost(request(tier, chunk)), generator.tiers, chunks, settings,
                    generator.audio_margins, priors=generator.prior_costs.seconds(SIZE))
    return generator, settings, events


def best_fitting(generator: SimulatedGenerator, time_left: float) -> str | None:
    """What the planner says the scheduler should pick: the best tier that is real time and whose
    predicted cost, with the scheduler's safety factor, fits the time left (else the cheapest if it fits
    without the margin)."""
    costs = generator.prior_costs.seconds(SIZE)
    for name, seconds in costs.items():
        if seconds * SAFETY <= time_left and seconds <= 2.88:
            return name
    return list(costs)[-1] if list(costs.values())[-1] <= time_left else None


def test_simulated_generator_sleeps_the_planned_cost_and_returns_the_reference():
    slept: list[float] = []
    generator = simulated("h100x8", slept)
    chunk = ChunkPlan().chunk(1)
    result = generator.generate(request(Tier("steps4", steps=4, text_guidance=1.0, audio_guidance=1.0), chunk))
    assert slept == [result.seconds] and result.seconds == pytest.approx(generator.prior_costs.seconds(SIZE)["steps4"])
    assert result.frames.shape == (72, 480, 480, 3) and (result.frames == 90).all()
    assert result.info == {"simulated": "8xh100", "tier": "steps4"}
    full = generator.cost(request(generator.tiers[0], chunk))
    assert full == pytest.approx(generator.prior_costs.seconds(SIZE)["full"]) and full > 10 * result.seconds
    with pytest.raises(ValueError, match="accepted is KINDxN"):
        build(simulate="tpux4")
    with pytest.raises(ValueError, match="unknown simulated options colour"):
        build(colour="red")


def test_eight_h100_at_the_default_budget_run_the_best_real_time_tier_that_fits_and_none_is_late():
    generator, settings, events = run("h100x8", SessionSettings().delay)
    assert all(e.status == "on_time" for e in events)
    assert [e.tier for e in events] == [best_fitting(generator, e.time_left) for e in events]
    # 5.5 s leaves 1.4 s a chunk (1.04 s for the first, whose window is all new): 4 steps at 480x480
    # (2.2 s) is real time on 8 H100 but needs a 6.7 s budget; its half-size variant fits.
    assert {e.tier for e in events} == {"steps4_half"}
    assert [round(e.time_left, 2) for e in events[:2]] == [1.04, 1.40]
    # With the budget `livedub plan` names for it, the full-size 4-step tier runs from the second chunk on.
    _, _, events = run("h100x8", 7.0)
    assert [e.tier for e in events] == ["steps4_half"] + ["steps4"] * 11 and all(e.status == "on_time" for e in events)


def test_one_h100_degrades_to_the_draft_tier_and_the_speech_keeps_its_time():
    generator, settings, events = run("h100x1", SessionSettings().delay)
    assert all(e.degraded and e.tier == "draft" and e.status == "on_time" for e in events)
    assert [e.tier for e in events] == [best_fitting(generator, e.time_left) for e in events]
    # Every chunk's new frames, and the speech spoken with them, play `delay` after that speech was
    # captured: the video never holds the speech back.
    plan = ChunkPlan()
    assert [e.slot_due for e in events] == pytest.approx(
        [settings.delay - settings.lead + plan.chunk(e.index).new_start / 25 for e in events])
    assert all(e.finished <= e.deadline for e in events)
    # Hardware too slow for any tier: every chunk is skipped (its slot plays the fallback), none is late.
    _, _, events = run("rtx4090x1", SessionSettings().delay)
    assert all(e.status == "skipped" and e.degraded for e in events)


def test_serve_simulate_option_is_checked():
    assert dict(build_config({"simulate": "H100x4"}).generator_options)["simulate"] == "h100x4"
    assert build_config({"simulate": "h100x4"}).generator == "simulated"
    with pytest.raises(InputError, match="accepted is KINDxN .* h100"):
        build_config({"simulate": "h100"})
    with pytest.raises(InputError, match="goes with the simulated generator"):
        build_config({"simulate": "h100x4", "generator": "lite"})


async def test_live_server_session_on_simulated_h100x8(tmp_path):
    """A real session on the live server: speech fed at wall-clock pace, the simulated generator sleeping
    the planner's cost. A 6.5 s budget leaves the first chunk 2 s: the planner's pick is the half-size 4-step
    tier (0.5 s; the full-size one would need 2.6 s with the safety factor), so the margins are wide
    whatever the machine's load."""
    from server.app import LiveServer

    config = build_config({"sources": source_folder(str(tmp_path / "sources")), "port": 0, "simulate": "h100x8",
                           "delay": 6.5, "size": "480x480"})
    server = LiveServer(config)
    await server.start()
    events: list[dict] = []
    server.manager.listen(events.append)
    try:
        session = await server.manager.create("red")
        generator = simulated("h100x8")
        assert session.scheduler.estimate(session.settings.tiers[2]) == pytest.approx(
            generator.prior_costs.seconds(SIZE)["steps4"])  # seeded with the planner's priors
        await feed_in_real_time(session, speech_48k(5.5))
        session.end_ingest()
        await asyncio.wait_for(session.finished.wait(), timeout=session.clock.delay + 10)
        stats = session.stats()
    finally:
        await server.stop()
    chunks = [e for e in events if e["event"] == "chunk"]
    degraded = [e for e in events if e["event"] == "degraded"]
    assert len(chunks) == 2 and all(c["status"] == "on_time" for c in chunks)
    # Each chunk ran the tier the planner says fits the time it had (the last chunk had more: the speech
    # ended early, so it did not wait for its window's end to be captured).
    assert [d["chunk"] for d in degraded] == [0, 1] and all(d["action"] == "tier" for d in degraded)
    assert [c["tier"] for c in chunks] == [best_fitting(generator, d["time_left"]) for d in degraded]
    assert chunks[0]["tier"] in ("steps4_half", "draft") and degraded[0]["time_left"] < 2.1
    plan = ChunkPlan()
    for c in chunks:
        tier = next(t for t in generator.tiers if t.name == c["tier"])
        assert c["generator_seconds"] == pytest.approx(generator.cost(request(tier, plan.chunk(c["chunk"]))), abs=1e-3)
    assert stats.chunks.late == 0 and stats.chunks.skipped == 0 and stats.generator == "simulated"
