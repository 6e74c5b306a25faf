"""Live speech ingest: received audio frames placed on the session clock in two bounded ring buffers.

Sample ``i`` of a ring was captured at session time ``i / rate`` (see streaming/timeline.py). Frames are
placed by their timestamps, anchored to the arrival time of the first frame (moved earlier during the
first second if a later frame arrives earlier than that anchor says, then fixed), so network jitter does
not move them and a gap in the sender's stream stays a gap (zeros). The playout ring keeps the speech as
received at 48 kHz, in stereo (mono duplicated), at the sender's level (what viewers hear, delayed); the
model ring keeps 16 kHz mono, loudness-normalised as it arrives (what generators get). Both keep only the
last ``capacity`` seconds: 40 s (the default buffer) is 15.4 MB of playout and 2.6 MB of model ring.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from model.base import AUDIO_RATE
from streaming.audio import RunningLoudness

PLAYOUT_RATE = 48_000
PLAYOUT_CHANNELS = 2  # WebRTC's Opus is stereo on the wire: a stereo sender stays stereo, mono is duplicated
# A frame whose timestamp places it further than this from its arrival re-anchors the stream (a sender
# that restarted its timestamps, or a stall that outlasted the jitter buffer).
REANCHOR_SECONDS = 0.5
# The first frame can arrive late (six sessions starting at once kept the event loop busy 30-110 ms), and
# an anchor taken from it would add that wait to the whole session's delay. For this long after anchoring
# (arrival seconds), a frame whose arrival puts the anchor earlier moves it, and what was placed, back.
# A second covers such start-up stalls several times over, with about 50 frames, most on time, to find
# the earliest; after it the anchor is fixed, so generators never see placed speech move.
SETTLE_SECONDS = 1.0
# Below this, an earlier arrival is jitter and not worth moving placed audio for.
SETTLE_TOLERANCE = 0.005
# aiortc's receiver holds 4 audio packets (80 ms) in its jitter buffer before it releases the first
# (video: none), so speech reaches us that much after it was captured: placed by arrival minus this, it
# lines up with live video frames captured at the same instant.
RECEIVE_LATENCY = 0.08
# Loudness normalisation never amplifies more than this (quiet noise before speech stays quiet).
MAX_GAIN_DB = 24.0
# The model ring follows the resampler's output count; it re-synchronises to the timestamps when they
# disagree by more than the resampler's own delay could explain (30 ms).
MODEL_SLACK = AUDIO_RATE * 3 // 100
# Settling moves both rings by whole model samples, so each stays exact: that many playout samples per one.
PLAYOUT_PER_MODEL = PLAYOUT_RATE // AUDIO_RATE
assert PLAYOUT_RATE == PLAYOUT_PER_MODEL * AUDIO_RATE


class SampleRing:
    """Float32 samples at absolute indices; only the most recent ``capacity`` samples are kept.

    Mono rings read and write ``[n]``; a ring of more channels reads ``[channels, n]`` and takes
    ``[channels, n]`` or mono ``[n]`` (put on every channel)."""

    def __init__(self, rate: int, capacity_seconds: float, channels: int = 1) -> None:
        self.rate = rate
        self.channels = channels
        self.capacity = int(round(rate * capacity_seconds))
        if self.capacity < 1:
            raise ValueError("ring capacity must hold at least one sample")
        self._data = np.zeros((channels, self.capacity), np.float32)
        self.end = 0  # one past the highest index written

    @property
    def start(self) -> int:
        """Lowest index still held."""
        return max(0, self.end - self.capacity)

    def write(self, first: int, samples: np.ndarray) -> None:
        """Store ``samples`` at indices ``[first, first + len)``; a gap before them becomes zeros."""
        samples = np.asarray(samples, np.float32)
        if samples.ndim == 1:
            samples = samples[None, :]
        last = first + samples.shape[1]
        new_end = max(self.end, last)
        new_start = max(0, new_end - self.capacity)
        if samples.size == 0 or last <= new_start:
            return  # nothing, or only samples older than what the ring holds
        gap_from = max(self.end, new_start)
        if first > gap_from:
            self._put(gap_from, np.zeros((1, first - gap_from), np.float32))
        lo = max(first, new_start)
        self._put(lo, samples[:, lo - first :])
        self.end = new_end

    def _put(self, first: int, samples: np.ndarray) -> None:
        """``samples`` [channels or 1, n] at ``first`` (one row is put on every channel)."""
        at = first % self.capacity
        count = samples.shape[1]
        head = min(count, self.capacity - at)
        self._data[:, at : at + head] = samples[:, :head]
        self._data[:, : count - head] = samples[:, head:]

    def read(self, first: int, last: int) -> np.ndarray:
        """Samples ``[first, last)``; zeros where nothing was written or the ring no longer holds them."""
        out = np.zeros((self.channels, max(0, last - first)), np.float32)
        lo, hi = max(first, self.start), min(last, self.end)
        if hi > lo:
            at = lo % self.capacity
            count = hi - lo
            head = min(count, self.capacity - at)
            out[:, lo - first : lo - first + head] = self._data[:, at : at + head]
            out[:, lo - first + head : hi - first] = self._data[:, : count - head]
        return out[0] if self.channels == 1 else out

    def move_back(self, first: int, count: int) -> None:
        """Move the samples ``[first, end)`` to ``[first - count, end - count)``; the ring ends ``count``
        earlier. What was at ``[first - count, first)`` is overwritten."""
        if count <= 0:
            return
        if first - count < 0:
            raise ValueError(f"cannot move samples from {first} back by {count}: indices start at 0")
        lo = max(first, self.start)
        moved = self.read(lo, self.end).reshape(self.channels, -1)
        old_end = self.end
        self.end -= count
        # The freed slots also hold the ``count`` indices just above the new start: zeros there, not the
        # moved tail's old copy (moved samples that belong there are put back just below).
        freed = min(count, self.capacity)
        self._put(old_end - freed, np.zeros((1, freed), np.float32))
        if moved.shape[1]:
            self._put(lo - count, moved)


class LiveAudioIngest:
    """Turns received ``av.AudioFrame``s into the playout and model rings of one session."""

    def __init__(self, capacity_seconds: float, receive_latency: float = RECEIVE_LATENCY) -> None:
        self.receive_latency = receive_latency
        self.playout = SampleRing(PLAYOUT_RATE, capacity_seconds, PLAYOUT_CHANNELS)
        self.model = SampleRing(AUDIO_RATE, capacity_seconds)
        self._loudness = RunningLoudness()
        self._anchor: int | None = None  # playout index minus the frame's timestamp in 48 kHz samples
        self._model_next = 0
        self._to_playout: av.AudioResampler | None = None
        self._playout_layout = ""  # the playout resampler's output: "mono" for a mono sender, else "stereo"
        self._to_model: av.AudioResampler | None = None
        self.frames_received = 0
        self.reanchors = 0
        self.settled_seconds = 0.0  # how far settling moved the anchor earlier, all told
        # How much later the current anchor is than the earliest arrival seen after its settling ended: what
        # a start-up stall longer than the settling added to the session's delay (0: none).
        self.anchor_late = 0.0
        # Settling, for the current anchor: the arrival up to which it may move, where the anchored
        # stream begins in each ring, and how far back each may go without overwriting earlier samples.
        self._settle_until = float("-inf")
        self._segment = _Segment(0, 0, 0, 0)
        self.last_arrival: float | None = None  # session seconds of the last frame's arrival
        self.ended_at: int | None = None  # model-ring index where the ingest ended, once it has

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def push(self, frame: av.AudioFrame, arrival: float) -> None:
        """Place one received frame; ``arrival`` is its arrival time in session seconds."""
        arrival_index = int(round((arrival - self.receive_latency) * PLAYOUT_RATE))
        stamp = _stamp_in_samples(frame)
        if self._anchor is None or stamp is None or abs(self._anchor + stamp - arrival_index) > (
                REANCHOR_SECONDS * PLAYOUT_RATE):
            stamp = stamp or 0
            self._restart(arrival_index - stamp, arrival_index, arrival)
        elif arrival <= self._settle_until and self._anchor - (arrival_index - stamp) > (
                SETTLE_TOLERANCE * PLAYOUT_RATE):
            self._settle(self._anchor - (arrival_index - stamp))  # only earlier: a later one is delay
        elif self._anchor - (arrival_index - stamp) > self.anchor_late * PLAYOUT_RATE:
            self.anchor_late = (self._anchor - (arrival_index - stamp)) / PLAYOUT_RATE  # fixed: only noted
        position = self._anchor + stamp
        layout = "mono" if frame.layout.nb_channels == 1 else "stereo"  # more than 2: FFmpeg's downmix
        if layout != self._playout_layout:  # by hand, not FFmpeg's upmix: that puts mono at -3 dB
            self._to_playout = av.AudioResampler(format="flt", layout=layout, rate=PLAYOUT_RATE)
            self._playout_layout = layout
        channels = 1 if layout == "mono" else 2
        playout = _convert(self._to_playout, frame, channels)
        self.playout.write(position, playout)
        model = _convert(self._to_model, frame)
        expected = position * AUDIO_RATE // PLAYOUT_RATE
        if abs(expected - self._model_next) > MODEL_SLACK:
            self._model_next = expected  # a gap (or overlap) in the sender's timestamps
        self._loudness.push(model)
        gain = min(self._loudness.gain(), 10 ** (MAX_GAIN_DB / 20))
        self.model.write(self._model_next, model * gain)
        self._model_next += model.size
        self.frames_received += 1
        self.last_arrival = arrival

    def _restart(self, anchor: int, position: int, arrival: float) -> None:
        if self._anchor is not None:
            self.reanchors += 1
        self._anchor = anchor
        self.anchor_late = 0.0
        # The model ring continues from this frame's place; fresh resamplers carry no stale state.
        self._model_next = max(0, position) * AUDIO_RATE // PLAYOUT_RATE
        self._playout_layout = ""  # made for the next frame's channels
        self._to_model = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        # A re-anchor may be late for the same reasons as the first frame, so it settles too, but never
        # back over what the previous anchor placed.
        self._settle_until = arrival + SETTLE_SECONDS
        self._segment = _Segment(position, self.playout.end, self._model_next, self.model.end)

    def _settle(self, earlier: int) -> None:
        """Move the anchor ``earlier`` playout samples back (rounded down to whole model samples), and
        the stream placed since anchoring with it: nothing received is lost or doubled."""
        segment = self._segment
        steps = min(earlier // PLAYOUT_PER_MODEL, (segment.playout - segment.playout_floor) // PLAYOUT_PER_MODEL,
                    segment.model - segment.model_floor)
        if steps <= 0:
            return
        back = steps * PLAYOUT_PER_MODEL
        self.playout.move_back(segment.playout, back)
        self.model.move_back(segment.model, steps)
        self._segment = _Segment(segment.playout - back, segment.playout_floor, segment.model - steps,
                                 segment.model_floor)
        self._anchor -= back
        self._model_next -= steps
        self.settled_seconds += back / PLAYOUT_RATE

    def end(self) -> None:
        """The sender is gone: what arrived so far is the whole speech."""
        if self.ended_at is None:
            self.ended_at = self.model.end


@dataclass(frozen=True)
class _Segment:
    """Where the current anchor's stream begins in each ring, and the lowest index a settle may reach
    (each ring's end when it was anchored)."""

    playout: int
    playout_floor: int
    model: int
    model_floor: int


def _stamp_in_samples(frame: av.AudioFrame) -> int | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return int(Fraction(frame.pts) * frame.time_base * PLAYOUT_RATE)


def _convert(resampler: av.AudioResampler, frame: av.AudioFrame, channels: int = 1) -> np.ndarray:
    """The frame through ``resampler`` (packed float, ``channels`` out): ``[n]`` mono, ``[channels, n]`` else."""
    frame.pts = None  # the resampler follows the sample count; placement uses the saved stamp
    pieces = [out.to_ndarray().reshape(-1, channels).T for out in resampler.resample(frame)]
    samples = np.concatenate(pieces, axis=1) if pieces else np.zeros((channels, 0), np.float32)
    return samples[0] if channels == 1 else samples
