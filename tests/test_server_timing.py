"""Live timing pieces: the sample rings, ingest placement, the session clock, the output timeline and
the scheduler."""

from __future__ import annotations

import numpy as np
import pytest

from _server_support import audio_frame
from model.base import Tier
from streaming.chunker import ChunkPlan
from streaming.ingest import PLAYOUT_RATE, LiveAudioIngest, SampleRing
from streaming.scheduler import Scheduler
from streaming.timeline import OutputTimeline, SessionClock


def test_ring_reads_what_was_written_and_zeros_elsewhere():
    ring = SampleRing(rate=10, capacity_seconds=1.0)  # 10 samples
    ring.write(0, np.arange(1, 5))
    assert ring.read(-2, 6).tolist() == [0, 0, 1, 2, 3, 4, 0, 0]
    ring.write(7, [8, 9])  # a gap becomes zeros
    assert ring.read(3, 9).tolist() == [4, 0, 0, 0, 8, 9]
    assert ring.end == 9


def test_ring_keeps_only_its_capacity_and_wraps():
    ring = SampleRing(rate=10, capacity_seconds=1.0)
    for start in range(0, 35, 5):
        ring.write(start, np.arange(start, start + 5) + 1)
    assert ring.start == 25 and ring.end == 35
    assert ring.read(20, 36).tolist() == [0] * 5 + list(range(26, 36)) + [0]
    ring.write(0, [7, 7])  # older than the ring holds: ignored
    assert ring.read(25, 27).tolist() == [26, 27]
    ring.write(100, np.arange(30))  # longer than the capacity: its tail is kept
    assert ring.read(118, 131).tolist() == [0, 0] + list(range(20, 30)) + [0]


def test_ingest_places_frames_by_timestamp_from_the_first_arrival():
    ingest = LiveAudioIngest(capacity_seconds=5, receive_latency=0.0)
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(PLAYOUT_RATE) / PLAYOUT_RATE)
    # First frame arrives at session time 1.0 s with pts 5000; later frames arrive with jitter.
    for k in range(50):
        jitter = 0.03 * ((k * 7) % 3)
        ingest.push(audio_frame(tone[k * 960 : (k + 1) * 960], 5000 + k * 960), 1.0 + k * 0.02 + jitter)
    assert ingest.reanchors == 0
    playout = ingest.playout.read(48_000, 96_000)
    # Placed at 1.0 s exactly, jitter ignored; mono on both channels at its own level.
    np.testing.assert_allclose(playout, np.stack([tone, tone]), atol=2e-4)
    assert ingest.playout.read(0, 48_000).max() == 0
    model = ingest.model.read(16_000, 32_000)
    assert abs(ingest.model.end - 32_000) <= 480
    spectrum = np.abs(np.fft.rfft(model[2000:14000]))
    assert abs(np.argmax(spectrum) * 16_000 / 12_000 - 440) < 3  # resampled, same tone


def test_ingest_gap_in_timestamps_stays_a_gap_and_far_jumps_reanchor():
    ingest = LiveAudioIngest(capacity_seconds=10, receive_latency=0.0)
    ones = np.full(960, 0.25)
    ingest.push(audio_frame(ones, 0), 0.0)
    ingest.push(audio_frame(ones, 960 + 9600), 0.22)  # 200 ms of missing packets
    assert np.all(ingest.playout.read(960, 960 + 9600) == 0)
    assert ingest.playout.read(960 + 9600, 960 + 9600 + 960).min() > 0.2
    assert ingest.model.end == pytest.approx((960 + 9600 + 960) // 3, abs=200)
    ingest.push(audio_frame(ones, 10), 3.0)  # the sender restarted its timestamps
    assert ingest.reanchors == 1
    assert ingest.playout.read(3 * PLAYOUT_RATE, 3 * PLAYOUT_RATE + 960).min() > 0.2


def test_clock_places_video_and_audio_on_one_timeline():
    clock = SessionClock(origin=100.0, delay=4.0, lead=0.1)
    assert clock.frame_due(0) == pytest.approx(103.9)
    assert clock.frame_due(25) == pytest.approx(104.9)
    assert clock.block_due(50) == pytest.approx(104.9)
    assert clock.frame_at(104.9) == 25 and clock.frame_at(104.899) == 24
    assert clock.block_at(104.9) == 50
    # Both tracks' timestamps count from one origin: frame 25 and block 50 are the same instant.
    assert clock.video_pts(25) / 90_000 == pytest.approx(clock.audio_pts(50) / 48_000)


def test_timeline_plays_slots_and_holds_the_last_frame_where_none_is():
    plan = ChunkPlan(window=9, context=3)  # chunk 0: frames 0-8, chunk k: 6k+3 .. 6k+8
    idle = np.zeros((2, 2, 3), np.uint8)
    timeline = OutputTimeline(plan, idle)
    frames0 = np.arange(9, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    timeline.offer(0, frames0, "fallback")
    assert timeline.frame(-1)[1] == "idle"
    assert timeline.frame(4)[0][0, 0, 0] == 4 and timeline.frame(4)[1] == "fallback"
    timeline.offer(0, frames0 + 100, "generated")
    assert timeline.frame(8) [0][0, 0, 0] == 108
    assert timeline.frame(9)[1] == "idle" and timeline.frame(9)[0][0, 0, 0] == 108  # holds the last frame
    timeline.offer(1, frames0[:6] + 50, "generated")
    assert [timeline.frame(n)[0][0, 0, 0] for n in (9, 14)] == [50, 55]
    assert timeline.frame(15)[1] == "idle"
    timeline.release_before(9)
    assert timeline.slot(0) is None and timeline.slot(1) is not None


def test_scheduler_degrades_when_the_budget_shrinks_and_recovers():
    full, fast = Tier("full"), Tier("fast", scale=0.5)
    scheduler = Scheduler((full, fast), safety=1.2, recovery=0.9)
    assert scheduler.choose(1.0).tier == full  # unknown cost: tried
    scheduler.record(full, 1.0)
    decision = scheduler.choose(1.0)
    assert decision.tier == fast and decision.degraded
    scheduler.record(fast, 0.3)
    # Estimates of unused better tiers shrink, so the full tier is tried again once it could fit.
    assert [scheduler.choose(1.0).level for _ in range(3)] == [1, 0, 0]
    gamble = scheduler.choose(0.32)  # the cheapest fits, just not with the safety margin: tried
    assert gamble.tier == fast and not gamble.skipped
    assert scheduler.choose(0.2).skipped  # nothing fits
    # A skip leaves the generator idle, so estimates relax then too: 0.27 s now fits in 0.3 s.
    assert scheduler.estimate(fast) == pytest.approx(0.27)
    assert scheduler.choose(0.3).tier == fast
    assert scheduler.choose(-0.1).skipped


def test_scheduler_estimate_recovers_within_one_chunk_once_the_load_drops():
    full = Tier("full")
    scheduler = Scheduler((full,), safety=1.2)
    scheduler.record(full, 0.2)
    scheduler.record(full, 1.0)  # a loaded moment: the estimate rises (smoothed)
    assert scheduler.estimate(full) == pytest.approx(0.6)
    assert scheduler.choose(0.5).skipped
    scheduler.record(full, 0.2)  # the load has gone: the next chunk's cost is the estimate again
    assert scheduler.estimate(full) == pytest.approx(0.2) and scheduler.choose(0.3).tier == full
