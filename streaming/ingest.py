"""Live speech ingest: received audio frames placed on the session clock in two bounded ring buffers.

Sample ``i`` of a ring was captured at session time ``i / rate`` (see streaming/timeline.py). Frames are
placed by their timestamps, anchored once to the arrival time of the first frame, so network jitter does
not move them and a gap in the sender's stream stays a gap (zeros). The playout ring keeps the speech as
received at 48 kHz, in stereo (mono duplicated), at the sender's level (what viewers hear, delayed); the
model ring keeps 16 kHz mono, loudness-normalised as it arrives (what generators get). Both keep only the
last ``capacity`` seconds: 40 s (the default buffer) is 15.4 MB of playout and 2.6 MB of model ring.
"""

from __future__ import annotations

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
# aiortc's receiver holds 4 audio packets (80 ms) in its jitter buffer before it releases the first
# (video: none), so speech reaches us that much after it was captured: placed by arrival minus this, it
# lines up with live video frames captured at the same instant.
RECEIVE_LATENCY = 0.08
# Loudness normalisation never amplifies more than this (quiet noise before speech stays quiet).
MAX_GAIN_DB = 24.0
# The model ring follows the resampler's output count; it re-synchronises to the timestamps when they
# disagree by more than the resampler's own delay could explain (30 ms).
MODEL_SLACK = AUDIO_RATE * 3 // 100


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
            self._restart(arrival_index - stamp, arrival_index)
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

    def _restart(self, anchor: int, position: int) -> None:
        if self._anchor is not None:
            self.reanchors += 1
        self._anchor = anchor
        # The model ring continues from this frame's place; fresh resamplers carry no stale state.
        self._model_next = max(0, position) * AUDIO_RATE // PLAYOUT_RATE
        self._playout_layout = ""  # made for the next frame's channels
        self._to_model = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)

    def end(self) -> None:
        """The sender is gone: what arrived so far is the whole speech."""
        if self.ended_at is None:
            self.ended_at = self.model.end


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
