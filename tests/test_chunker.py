"""Chunk arithmetic: counts, windows, references and output lengths (spec §2.2-2.3)."""

import math

import pytest

from model.base import AudioMargins
from streaming.chunker import ChunkPlan, frames_for_samples, nearest_keyframe

PLAN = ChunkPlan()


def official_chunk_count(total_frames: int, window: int = 81, context: int = 9) -> int:
    """The official loop, simulated step by step (no 1000-frame cap)."""
    stride = window - context
    start, end, chunks = 0, window, 0
    while True:
        chunks += 1
        start += stride
        end = start + window
        if end >= total_frames:
            return chunks + 1


@pytest.mark.parametrize("seconds, frames, chunks, references", [
    (0.5, 12, 1, [0]),
    (3.24, 81, 1, [0]),
    (10.0, 250, 4, [0, 72, 144, 216]),
    (61.0, 1525, 22, [72 * k for k in range(22)]),
])
def test_chunks_for_speech_lengths(seconds, frames, chunks, references):
    total = frames_for_samples(int(seconds * 16000))
    assert total == frames
    assert PLAN.chunk_count(total) == chunks
    assert [nearest_keyframe(c.start_frame, 72) for c in PLAN.chunks(total)] == references
    # The output is every chunk's new frames cut to the speech length, with no gap or overlap.
    covered = [f for c in PLAN.chunks(total) for f in PLAN.output_range(c.index, total)]
    assert covered == list(range(total))
    assert PLAN.generated_frames(total) >= total


def test_long_speech_matches_the_official_loop():
    # Beyond one window the count follows the official loop exactly (and has no 1000-frame cap).
    for total in list(range(82, 600)) + [1000, 1001, 25 * 3600]:
        assert PLAN.chunk_count(total) == official_chunk_count(total), total
    assert PLAN.generated_frames(250) == 297  # spec §2.3 example: 297 generated, cut to 250


def test_needed_chunks_agree_with_count():
    for total in range(0, 700):
        count = PLAN.chunk_count(total)
        assert [k for k in range(count + 3) if PLAN.is_needed(k, total)] == list(range(count))


def test_window_layout():
    first, second = PLAN.chunk(0), PLAN.chunk(1)
    assert (first.start_frame, first.num_frames, first.num_context, first.new_start) == (0, 81, 0, 0)
    assert (second.start_frame, second.num_context, second.new_start, second.end_frame) == (72, 9, 81, 153)


def test_conformance_plan_shape():
    # The public conformance trace: frame_num 17, motion_frame 5, L = 50 -> 4 chunks, stride 12.
    plan = ChunkPlan(window=17, context=5)
    assert plan.stride == 12 and plan.chunk_count(50) == 4
    assert [plan.output_range(k, 50) for k in range(4)] == [range(0, 17), range(17, 29), range(29, 41),
                                                            range(41, 50)]


def test_nearest_keyframe():
    assert [nearest_keyframe(72 * k, 72) for k in range(5)] == [0, 72, 144, 216, 288]
    assert nearest_keyframe(72, 100) == 100
    assert nearest_keyframe(150, 100) == 100  # a tie takes the earlier keyframe
    assert nearest_keyframe(151, 100) == 200
    assert nearest_keyframe(13, 1) == 13
    with pytest.raises(ValueError):
        nearest_keyframe(5, 0)


def test_audio_span_margins():
    chunk = PLAN.chunk(1)
    first, last, offset = PLAN.audio_span(chunk, AudioMargins(left=1.0, right=0.08))
    assert first == 72 * 640 - 16000 and offset == 16000
    assert last == 153 * 640 + 1280
    first, _, offset = PLAN.audio_span(PLAN.chunk(0), AudioMargins(left=1.0))
    assert first == 0 and offset == 0  # never before the stream's start


def test_bad_plan():
    with pytest.raises(ValueError):
        ChunkPlan(window=9, context=9)
    assert math.isclose(frames_for_samples(16000), 25)
