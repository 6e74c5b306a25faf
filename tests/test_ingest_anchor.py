"""The ingest's anchor settles: a late first frame (a busy event loop at session start) does not delay the
whole session; for SETTLE_SECONDS after anchoring an earlier-arriving frame moves the anchor, and what was
placed, back, in both rings, and nothing else moves it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _server_support import audio_frame
from streaming.ingest import PLAYOUT_RATE, SETTLE_SECONDS, SETTLE_TOLERANCE, LiveAudioIngest, SampleRing

FRAME = 960  # 20 ms at 48 kHz, as WebRTC's Opus frames
PTS0 = 5000  # the sender's first timestamp (48 kHz samples)
START = 1.0  # session seconds at which the first frame was captured


def ramp(frames: int) -> np.ndarray:
    """A signal whose every sample differs, exact in int16: sample i is (100 + i) / 32768 once decoded, so a
    sample lost, doubled or misplaced by one shows."""
    return (np.arange(frames * FRAME) + 100.5) / 32767


def decoded(frames: int) -> np.ndarray:
    return ((np.arange(frames * FRAME) + 100) / 32768).astype(np.float32)


def push_all(arrivals: list[float], signal: np.ndarray | None = None, stamps: list[int] | None = None,
             ) -> LiveAudioIngest:
    """Frame k (pts PTS0 + k * FRAME unless ``stamps`` says) pushed at ``arrivals[k]``."""
    signal = ramp(len(arrivals)) if signal is None else signal
    stamps = [PTS0 + k * FRAME for k in range(len(arrivals))] if stamps is None else stamps
    ingest = LiveAudioIngest(capacity_seconds=5, receive_latency=0.0)
    for k, arrival in enumerate(arrivals):
        ingest.push(audio_frame(signal[k * FRAME : (k + 1) * FRAME], stamps[k]), arrival)
    return ingest


def on_time(frames: int, start: float = START) -> list[float]:
    return [start + k * FRAME / PLAYOUT_RATE for k in range(frames)]


def assert_same_rings(ingest: LiveAudioIngest, reference: LiveAudioIngest) -> None:
    """Both rings hold exactly the reference's samples at the reference's indices."""
    assert ingest.playout.end == reference.playout.end and ingest.model.end == reference.model.end
    np.testing.assert_array_equal(ingest.playout.read(0, ingest.playout.end),
                                  reference.playout.read(0, reference.playout.end))
    np.testing.assert_array_equal(ingest.model.read(0, ingest.model.end), reference.model.read(0, reference.model.end))


def test_ring_moves_a_tail_back_and_ends_earlier():
    ring = SampleRing(rate=10, capacity_seconds=1.0)  # 10 samples
    ring.write(0, np.arange(1, 16))  # indices 5..14 held: values 6..15
    ring.move_back(8, 3)  # values 9..15 now at 5..11
    assert ring.end == 12 and ring.start == 2
    # 2..4 are held again: zeros there, not the old tail that shared their slots.
    assert ring.read(0, 13).tolist() == [0, 0, 0, 0, 0, 9, 10, 11, 12, 13, 14, 15, 0]
    ring.write(12, [16])  # writing continues where the ring now ends
    assert ring.read(10, 13).tolist() == [14, 15, 16]
    stereo = SampleRing(rate=10, capacity_seconds=1.0, channels=2)
    stereo.write(4, np.stack([np.arange(1, 5), -np.arange(1, 5)]))
    stereo.move_back(5, 2)  # index 4 keeps its sample; 5..7 move over 3..4
    assert stereo.read(2, 7).tolist() == [[0, 2, 3, 4, 0], [0, -2, -3, -4, 0]]
    with pytest.raises(ValueError, match="indices start at 0"):
        ring.move_back(2, 3)


def test_late_first_frame_settles_onto_the_on_time_frames():
    frames = 20
    arrivals = on_time(frames)
    arrivals[0] += 0.1  # the event loop was busy when the first frame came in
    ingest = push_all(arrivals)
    assert ingest.reanchors == 0 and ingest.settled_seconds == pytest.approx(0.1)
    first = round(START * PLAYOUT_RATE)
    # Every sample where the on-time frames place it, on both channels, nothing before, no gap after.
    np.testing.assert_array_equal(ingest.playout.read(first, first + frames * FRAME),
                                  np.stack([decoded(frames)] * 2))
    assert not ingest.playout.read(0, first).any() and ingest.playout.end == first + frames * FRAME
    # The model ring as if every frame had come on time: same samples, same indices.
    assert_same_rings(ingest, push_all(on_time(frames)))
    assert abs(ingest.model.end - (first + frames * FRAME) // 3) <= 480


def test_frames_arriving_later_than_the_anchor_do_not_move_it():
    frames = 20
    arrivals = [t + (0.05 if k else 0.0) + 0.01 * (k % 3) for k, t in enumerate(on_time(frames))]
    ingest = push_all(arrivals)
    assert ingest.settled_seconds == 0 and ingest.reanchors == 0
    assert_same_rings(ingest, push_all(on_time(frames)))


@pytest.mark.parametrize("early, moves", [(SETTLE_TOLERANCE - 0.001, False), (SETTLE_TOLERANCE + 0.001, True)])
def test_jitter_below_the_tolerance_does_not_move_the_anchor(early, moves):
    arrivals = on_time(10)
    arrivals[5] -= early
    ingest = push_all(arrivals)
    assert (ingest.settled_seconds > 0) == moves
    if moves:  # by whole model samples: 3 playout samples each, at most 2 short of the frame's arrival
        assert 0 <= early * PLAYOUT_RATE - ingest.settled_seconds * PLAYOUT_RATE < 3
    else:
        assert_same_rings(ingest, push_all(on_time(10)))


def test_frames_after_the_window_do_not_move_the_anchor():
    frames = 70
    late = 0.1
    arrivals = [t + late for t in on_time(frames)]  # all late alike: the anchor is right for them
    arrivals[-1] -= late  # on time, but past the window
    assert arrivals[-1] > arrivals[0] + SETTLE_SECONDS
    ingest = push_all(arrivals)
    assert ingest.settled_seconds == 0
    assert_same_rings(ingest, push_all([t + late for t in on_time(frames)]))
    # Not moved, but noted: the session's speech is that much later than it could be (its stats say so).
    assert ingest.anchor_late == pytest.approx(late, abs=1 / PLAYOUT_RATE)


def test_on_time_frames_note_no_late_anchor():
    ingest = push_all(on_time(120))
    assert ingest.settled_seconds == 0 and ingest.anchor_late == 0


def test_settling_never_moves_back_over_what_an_earlier_anchor_placed():
    """After a re-anchor the window opens again, but the move stops at the previous stream's end."""
    first = on_time(10)
    restart = 3.0  # the sender restarted its timestamps at 0
    arrivals = first + [restart + 0.1] + [restart + k * FRAME / PLAYOUT_RATE for k in range(1, 10)]
    stamps = [PTS0 + k * FRAME for k in range(10)] + [k * FRAME for k in range(10)]
    ingest = push_all(arrivals, ramp(20), stamps)
    assert ingest.reanchors == 1 and ingest.settled_seconds == pytest.approx(0.1)
    np.testing.assert_array_equal(ingest.playout.read(round(restart * PLAYOUT_RATE), ingest.playout.end)[0],
                                  decoded(20)[10 * FRAME :])
    np.testing.assert_array_equal(ingest.playout.read(round(START * PLAYOUT_RATE), 10 * FRAME + 48_000)[0],
                                  decoded(10))

    # The sender restarts 50 ms after its last stream ended, its next frames implying a start 30 ms before
    # that end: the anchor settles only as far as the end, and the first stream stays whole.
    end = round(START * PLAYOUT_RATE) + 10 * FRAME
    restart = end / PLAYOUT_RATE
    stamps = [PTS0 + k * FRAME for k in range(10)] + [10**6 + k * FRAME for k in range(10)]
    arrivals = first + [restart + 0.05] + [restart - 0.03 + k * FRAME / PLAYOUT_RATE for k in range(1, 10)]
    ingest = push_all(arrivals, ramp(20), stamps)
    assert ingest.reanchors == 1 and ingest.settled_seconds == pytest.approx(0.05)
    np.testing.assert_array_equal(ingest.playout.read(end - 10 * FRAME, end + 10 * FRAME)[0], decoded(20))
    assert ingest.playout.end == end + 10 * FRAME


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 0.2), min_size=2, max_size=15))
def test_anchor_settles_to_the_earliest_arrival_in_the_window(delays):
    """Positive jitter only: the anchor ends at the earliest one any frame implies (to within the
    tolerance), and the playout ring holds the signal placed at that anchor, with nothing lost."""
    frames = len(delays)
    arrivals = [t + d for t, d in zip(on_time(frames), delays)]
    ingest = push_all(arrivals)
    implied = [round(a * PLAYOUT_RATE) - (PTS0 + k * FRAME) for k, a in enumerate(arrivals)]
    anchor = implied[0] - round(ingest.settled_seconds * PLAYOUT_RATE)
    assert min(implied) <= anchor <= min(implied) + SETTLE_TOLERANCE * PLAYOUT_RATE + 2
    begin = anchor + PTS0
    np.testing.assert_array_equal(ingest.playout.read(begin, begin + frames * FRAME), np.stack([decoded(frames)] * 2))
    assert not ingest.playout.read(0, begin).any() and ingest.playout.end == begin + frames * FRAME
    # The model ring too: as if every frame had arrived exactly when that anchor says.
    assert_same_rings(ingest, push_all([(anchor + PTS0 + k * FRAME) / PLAYOUT_RATE for k in range(frames)]))
