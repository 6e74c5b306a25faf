"""Egress on a virtual clock: one encode per session and codec shared by its viewers, packets on the
session's schedule, a keyframe for each viewer that joins or asks, skip-ahead instead of bursts, the end
of the output. The packets are decoded back to check what they carry."""

from __future__ import annotations

import asyncio
import math

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from model.base import FPS
from server.egress import ENCODE_AHEAD, SKIP_AFTER, Egress, bitrate_for
from streaming.chunker import ChunkPlan
from streaming.clock import InlineExecutor, VirtualClock
from streaming.ingest import PLAYOUT_RATE, SampleRing
from streaming.playout import Playout
from streaming.timeline import OutputTimeline, SessionClock

SIZE = (64, 96)


def _playout():
    """A playout on a virtual clock whose frame n is grey level 8n (n < 30), with a tone as speech."""
    clock = VirtualClock()
    schedule = SessionClock(origin=clock.now(), delay=1.0, lead=0.0)
    timeline = OutputTimeline(ChunkPlan(window=30, context=3), np.zeros((*SIZE, 3), np.uint8))
    levels = (np.arange(30, dtype=np.uint8) * 8)[:, None, None, None]
    timeline.offer(0, np.broadcast_to(levels, (30, *SIZE, 3)).copy(), "generated")
    ring = SampleRing(PLAYOUT_RATE, 5.0)
    ring.write(0, (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * PLAYOUT_RATE) / PLAYOUT_RATE)).astype(np.float32))
    return clock, schedule, Playout(clock, schedule, timeline, ring.read)


async def _started():
    """A playout and its egress, just before output frame 0 is due."""
    clock, schedule, playout = _playout()
    egress = Egress(playout, SIZE, InlineExecutor())
    await clock.advance(schedule.frame_due(0) - ENCODE_AHEAD - 0.01 - clock.now())
    return clock, schedule, playout, egress


async def _pull(clock, tracks, count: int, sink: dict) -> None:
    """Receive ``count`` packets on each track, noting the virtual time each came."""
    async def one(track):
        for _ in range(count):
            packet = await track.recv()
            sink.setdefault(track, []).append((clock.now(), packet))

    tasks = [asyncio.ensure_future(one(t)) for t in tracks]
    assert await clock.run_until(lambda: all(t.done() for t in tasks), limit=5.0, step=0.005)
    for task in tasks:
        task.result()


def _decode(mime: str, packets) -> list[float]:
    codec = av.CodecContext.create("libvpx" if mime == "video/VP8" else "h264", "r")
    return [float(f.to_ndarray(format="rgb24").mean()) for p in packets for f in codec.decode(p)]


@pytest.mark.parametrize("mime", ["video/VP8", "video/H264"])
async def test_viewers_of_a_session_share_one_encode_on_the_schedule(mime):
    clock, schedule, playout, egress = await _started()  # the output starts at frame 0
    viewers = [egress.video_track(mime, f"v{i}") for i in range(3)]
    got: dict = {}
    await _pull(clock, viewers, 20, got)
    encoder = egress.video[mime]
    # 20 frames encoded once for 3 viewers (the next one may be encoded already: ENCODE_AHEAD).
    assert len(egress.video) == 1 and 20 <= encoder.encoded <= 20 + math.ceil(ENCODE_AHEAD * FPS)
    first = got[viewers[0]]
    assert all([p for _, p in got[v]] == [p for _, p in first] for v in viewers)  # the same packets
    assert [p.pts for _, p in first] == [schedule.video_pts(n) for n in range(20)]
    assert all(abs(t - schedule.frame_due(n)) < 1e-9 for n, (t, _) in enumerate(first))  # sent when due
    assert first[0][1].is_keyframe and not any(p.is_keyframe for _, p in first[1:])
    levels = _decode(mime, [p for _, p in first])
    assert len(levels) == 20 and all(abs(level - 8 * n) < 6 for n, level in enumerate(levels))
    stats = playout.viewers["v0"]
    assert stats.frames == 20 and stats.skipped == 0
    egress.close()


async def test_a_joining_or_asking_viewer_gets_a_keyframe_and_codecs_get_an_encoder_each():
    clock, schedule, playout, egress = await _started()
    early = egress.video_track("video/VP8", "early")
    got: dict = {}
    await _pull(clock, [early], 5, got)
    late = egress.video_track("video/VP8", "late")  # joins mid-stream: starts at a keyframe
    h264 = egress.video_track("video/H264", "other-codec")
    await _pull(clock, [early, late, h264], 3, got)
    joined_at = got[late][0][1]
    assert joined_at.is_keyframe
    same = [p for _, p in got[early] if p.pts == joined_at.pts]
    assert same and same[0].is_keyframe  # the one keyframe serves every viewer of the codec
    assert set(egress.video) == {"video/VP8", "video/H264"} and got[h264][0][1].is_keyframe
    egress.video["video/VP8"].request_keyframe()  # what a viewer's PLI/FIR does
    await _pull(clock, [early], 5, got)
    # The next frame encoded is whole (two may have been encoded ahead already), and only that one.
    assert [p.is_keyframe for _, p in got[early][8:]].count(True) == 1 and not got[early][-1][1].is_keyframe
    egress.close()


async def test_speech_is_encoded_once_as_opus_on_the_schedule_and_decodes_to_the_tone():
    clock, schedule, playout, egress = await _started()
    await clock.advance(schedule.block_due(0) - 0.005 - clock.now())  # the speech starts at block 0
    listeners = [egress.speech_track("a"), egress.speech_track("b")]
    got: dict = {}
    await _pull(clock, listeners, 50, got)
    packets = [p for _, p in got[listeners[0]]]
    assert egress.speech.encoded == 50 and packets == [p for _, p in got[listeners[1]]]
    assert [p.pts for p in packets] == [schedule.audio_pts(j) for j in range(50)]
    decoder = av.CodecContext.create("opus", "r")
    frames = [f for p in packets for f in decoder.decode(p)]
    assert frames[0].format.is_planar  # fltp: channel 0 is the first row
    pcm = np.concatenate([f.to_ndarray()[0] for f in frames])
    spectrum = np.abs(np.fft.rfft(pcm[24_000:48_000].astype(np.float64)))
    assert abs(np.argmax(spectrum) * PLAYOUT_RATE / 24_000 - 440) < 5
    egress.close()


async def test_a_late_encoder_skips_ahead_and_the_output_ends_with_the_speech():
    clock, schedule, playout, egress = await _started()
    viewer = egress.video_track("video/VP8", "v")
    got: dict = {}
    await _pull(clock, [viewer], 2, got)
    # The loop cannot run for a while (a busy event loop): time jumps far past the next frame.
    clock.jump((SKIP_AFTER + 4) / FPS)
    await _pull(clock, [viewer], 2, got)  # the frame it slept for, then the one due now: no burst
    skipped_to = schedule.frame_at(clock.now())
    assert [p.pts for _, p in got[viewer][2:]] == [schedule.video_pts(2), schedule.video_pts(skipped_to)]
    assert playout.viewers["v"].skipped == skipped_to - 3
    playout.end_at(skipped_to + 2)
    await _pull(clock, [viewer], 1, got)
    with pytest.raises(MediaStreamError):
        await _pull(clock, [viewer], 1, got)
    assert viewer.readyState == "ended"


def test_bitrate_follows_the_frame_size_within_bounds():
    assert bitrate_for((512, 512)) == 524_288
    assert bitrate_for((64, 64)) == 250_000 and bitrate_for((1080, 1920)) == 4_147_200
    assert bitrate_for((2160, 3840)) == 10_000_000  # 4K: the cap
