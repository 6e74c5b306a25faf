"""Speech ingest: decode any container to 16 kHz mono float32, loudness to -23 LUFS, voice activity.

Decoding uses PyAV (FFmpeg's resampler), where the official code uses librosa; the difference is the
resampling filter only. Loudness follows the official ``loudness_norm`` (pyloudnorm, ITU-R BS.1770
integrated, gated), and ``RunningLoudness`` gives the same measure incrementally for a live stream.
"""

from __future__ import annotations

import os

import av
import numpy as np
import pyloudnorm
import scipy.signal
import webrtcvad

from model.base import AUDIO_RATE
from streaming.errors import InputError

TARGET_LUFS = -23.0
# BS.1770 absolute gate: blocks below it are silence.
ABSOLUTE_GATE_LUFS = -70.0
VAD_FRAME_SAMPLES = 480  # 30 ms at 16 kHz


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """Decode the first audio stream of ``path`` (wav, flac, mp3, m4a, the audio of a video...) to 16 kHz mono."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"audio file not found: {path} (give a wav, flac, mp3, m4a or a video with sound)")
    if os.path.isdir(path):
        raise InputError(f"audio path is a folder: {path} (give a wav, flac, mp3, m4a or a video with sound)")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read audio from {path}: not a media file ({_reason(exc)}); "
                         "accepted: any audio or video file FFmpeg reads (wav, flac, mp3, m4a, mp4...)") from None
    with container:
        if not container.streams.audio:
            raise InputError(f"no audio stream in {path} (give a speech file or a video with sound)")
        stream = container.streams.audio[0]
        # Resample keeping the channels, then average them as librosa's mono does (FFmpeg's own
        # stereo->mono downmix would add the channels at -3 dB instead).
        resampler = None
        pieces: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler follow the sample count, not broken timestamps
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=AUDIO_RATE)
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None) if resampler else []:
                pieces.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot decode audio of {path}: {_reason(exc)}") from None
    samples = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InputError(f"audio in {path} is empty (zero length); give speech at least 0.04 s long")
    if not np.isfinite(samples).all():
        raise InputError(f"audio in {path} contains NaN or infinite samples")
    return samples


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def integrated_loudness(samples: np.ndarray) -> float:
    """BS.1770 integrated loudness in LUFS (-inf for silence); short clips use one block of their length."""
    meter = pyloudnorm.Meter(AUDIO_RATE)
    data = samples.astype(np.float64)
    if data.size < int(0.4 * AUDIO_RATE):
        meter = pyloudnorm.Meter(AUDIO_RATE, block_size=max(data.size, 1) / AUDIO_RATE)
    with np.errstate(divide="ignore"):
        return float(meter.integrated_loudness(data))


def normalize_loudness(samples: np.ndarray, target: float = TARGET_LUFS) -> np.ndarray:
    """The official ``loudness_norm``: scale to ``target`` LUFS; unchanged when |loudness| > 100 (silence)."""
    loudness = integrated_loudness(samples)
    if not np.isfinite(loudness) or abs(loudness) > 100:
        return samples.astype(np.float32)
    gain = 10.0 ** ((target - loudness) / 20.0)
    return (samples.astype(np.float64) * gain).astype(np.float32)


def is_silent(samples: np.ndarray) -> bool:
    """No gating block above BS.1770's absolute gate (-70 LUFS)."""
    loudness = integrated_loudness(samples)
    return not np.isfinite(loudness) or loudness < ABSOLUTE_GATE_LUFS


class RunningLoudness:
    """Integrated BS.1770 loudness of a stream so far, updated as audio arrives.

    K-weighting runs with carried filter state; mean squares are kept per 100 ms so that the 400 ms
    blocks with 75 % overlap of the standard can be formed as samples arrive. Memory grows by one float
    per 100 ms (36 k floats an hour).
    """

    STEP = AUDIO_RATE // 10  # 100 ms

    def __init__(self, target: float = TARGET_LUFS) -> None:
        self.target = target
        stages = list(pyloudnorm.Meter(AUDIO_RATE)._filters.values())
        self._filters = [(stage.passband_gain, stage.b, stage.a) for stage in stages]
        self._states = [scipy.signal.lfilter_zi(b, a) * 0.0 for _, b, a in self._filters]
        self._pending = np.zeros(0, np.float64)
        self._steps = np.zeros(1024, np.float64)  # energy per 100 ms step; grows by doubling
        self._step_count = 0
        self._cached: float | None = None  # loudness for the steps so far (recomputed when one arrives)

    def push(self, samples: np.ndarray) -> None:
        data = samples.astype(np.float64)
        for i, (gain, b, a) in enumerate(self._filters):
            data, self._states[i] = scipy.signal.lfilter(b, a, data, zi=self._states[i])
            data = data * gain
        data = np.concatenate([self._pending, data])
        whole = data.size // self.STEP
        if whole:
            steps = data[: whole * self.STEP].reshape(whole, self.STEP)
            if self._step_count + whole > self._steps.size:
                self._steps = np.concatenate([self._steps, np.zeros(max(self._steps.size, whole))])
            self._steps[self._step_count : self._step_count + whole] = np.sum(steps * steps, axis=1)
            self._step_count += whole
            self._cached = None
        self._pending = data[whole * self.STEP :]

    @property
    def loudness(self) -> float:
        """Integrated loudness so far (LUFS); -inf until 400 ms of audio has arrived."""
        if self._cached is None:
            self._cached = self._integrate(self._steps[: self._step_count])
        return self._cached

    def _integrate(self, steps: np.ndarray) -> float:
        if steps.size < 4:
            return float("-inf")
        blocks = (steps[:-3] + steps[1:-2] + steps[2:-1] + steps[3:]) / (4 * self.STEP)
        with np.errstate(divide="ignore"):
            block_lufs = -0.691 + 10 * np.log10(blocks)
            above = blocks[block_lufs >= ABSOLUTE_GATE_LUFS]
            if above.size == 0:
                return float("-inf")
            relative_gate = -0.691 + 10 * np.log10(above.mean()) - 10
            gated = blocks[(block_lufs > relative_gate) & (block_lufs > ABSOLUTE_GATE_LUFS)]
            return float(-0.691 + 10 * np.log10(gated.mean())) if gated.size else float("-inf")

    def gain(self) -> float:
        """Linear gain that brings the stream so far to the target; 1.0 while it is silent."""
        loudness = self.loudness
        if not np.isfinite(loudness) or abs(loudness) > 100:
            return 1.0
        return float(10.0 ** ((self.target - loudness) / 20.0))


class VoiceActivity:
    """webrtcvad decisions per 30 ms frame of 16 kHz audio."""

    def __init__(self, mode: int = 2) -> None:
        self._vad = webrtcvad.Vad(mode)

    def frames(self, samples: np.ndarray) -> np.ndarray:
        """Boolean speech decision for each whole 30 ms frame."""
        count = samples.size // VAD_FRAME_SAMPLES
        pcm = (np.clip(samples[: count * VAD_FRAME_SAMPLES], -1.0, 1.0) * 32767).astype("<i2")
        step = VAD_FRAME_SAMPLES * 2
        raw = pcm.tobytes()
        return np.array([self._vad.is_speech(raw[i * step : (i + 1) * step], AUDIO_RATE) for i in range(count)],
                        dtype=bool)

    def speech_fraction(self, samples: np.ndarray) -> float:
        decisions = self.frames(samples)
        return float(decisions.mean()) if decisions.size else 0.0
