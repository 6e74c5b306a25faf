"""Speech ingest: decode any container to 16 kHz mono float32, loudness to -23 LUFS, voice activity.

Decoding uses PyAV (FFmpeg's resampler), where the official code uses librosa; the difference is the
resampling filter only. Loudness follows the official ``loudness_norm`` (pyloudnorm, ITU-R BS.1770
integrated, gated), and ``RunningLoudness`` gives the same measure incrementally for a live stream.
"""

from __future__ import annotations

import os
from typing import Callable

import av
import numpy as np
import scipy.signal
import webrtcvad

from model.base import AUDIO_RATE
from model.errors import InputError
from model.loudness import (  # noqa: F401 - re-exported: the offline loudness measure lives in model/
    ABSOLUTE_GATE_LUFS, TARGET_LUFS, _gated_loudness, _k_weighting, integrated_loudness, is_silent,
    is_silent_loudness, loudness_gain, normalize_loudness)

VAD_FRAME_SAMPLES = 480  # 30 ms at 16 kHz


def load_audio(path: str | os.PathLike, listener: Callable[[av.AudioFrame], None] | None = None) -> np.ndarray:
    """Decode the first audio stream of ``path`` (wav, flac, mp3, m4a, the audio of a video...) to 16 kHz mono.

    ``listener`` also gets every decoded frame (timestamps cleared), so that what listeners hear
    (streaming/playback.py) comes from the same single decode."""
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
        if stream.codec_context is None:  # FFmpeg has no decoder for it (or the header is damaged)
            raise InputError(f"cannot decode audio of {path}: its codec is unknown to FFmpeg; accepted: any "
                             "audio or video file FFmpeg reads (wav, flac, mp3, m4a, mp4...)")
        # Resample keeping the channels, then average them as librosa's mono does (FFmpeg's own
        # stereo->mono downmix would add the channels at -3 dB instead). Packed ("flt"), not planar:
        # PyAV 18 finds a planar frame's planes by scanning FFmpeg's plane pointers for a NULL, and from
        # 8 channels on that array has no NULL after the last plane (AV_NUM_DATA_POINTERS is 8), so
        # ``to_ndarray`` read a wild pointer and segfaulted. A packed frame has one plane whatever the count.
        resampler = None
        channels = 0
        samples = _Samples(_expected_samples(container, stream, os.path.getsize(path)))
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler follow the sample count, not broken timestamps
                if resampler is None:
                    # By name, not the layout object: PyAV's AudioLayout copies FFmpeg's struct shallowly,
                    # and a copy kept in the resampler could free a custom-order channel map twice.
                    channels, layout_name = frame.layout.nb_channels, frame.layout.name
                    resampler = av.AudioResampler(format="flt", layout=layout_name, rate=AUDIO_RATE)
                for out in resampler.resample(frame):
                    samples.append(_mono(out, channels))
                if listener is not None:
                    listener(frame)
            for out in resampler.resample(None) if resampler else []:
                samples.append(_mono(out, channels))
        except InputError:
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            # ValueError: PyAV's own refusal of a layout or format it cannot map.
            raise InputError(f"cannot decode audio of {path}: {_reason(exc)}") from None
    samples = samples.array()
    if samples.size == 0:
        raise InputError(f"audio in {path} is empty (zero length); give speech at least 0.04 s long")
    if not np.isfinite(samples).all():
        raise InputError(f"audio in {path} contains NaN or infinite samples")
    return samples


def _mono(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """A packed float frame's channels averaged."""
    return frame.to_ndarray().reshape(-1, max(channels, 1)).mean(axis=1)


class _Samples:
    """A float32 buffer filled in place: an hour of speech is decoded without a second whole copy."""

    def __init__(self, capacity: int) -> None:
        self._data = np.zeros(max(capacity, AUDIO_RATE), np.float32)
        self._size = 0

    def append(self, piece: np.ndarray) -> None:
        if self._size + piece.size > self._data.size:
            grown = np.zeros(max(2 * self._data.size, self._size + piece.size), np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : self._size + piece.size] = piece
        self._size += piece.size

    def array(self) -> np.ndarray:
        return self._data[: self._size]


# Speech codecs carry at most ~21 output samples per byte (Opus at 6 kbit/s); a header announcing more
# than this many per byte of file is not believed (a damaged one asked for 36 GiB), the buffer grows instead.
MAX_SAMPLES_PER_BYTE = 64


def _expected_samples(container, stream, file_bytes: int) -> int:
    """16 kHz samples the container announces (a little more, for resampler slack), bounded by what
    a file of ``file_bytes`` can plausibly hold; 0 when unknown."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return 0
    if not np.isfinite(seconds) or seconds <= 0:
        return 0
    return min(int(seconds * AUDIO_RATE), MAX_SAMPLES_PER_BYTE * file_bytes) + AUDIO_RATE


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


class RunningLoudness:
    """Integrated BS.1770 loudness of a stream so far, updated as audio arrives.

    K-weighting runs with carried filter state; mean squares are kept per 100 ms so that the 400 ms
    blocks with 75 % overlap of the standard can be formed as samples arrive. Memory grows by one float
    per 100 ms (36 k floats an hour).
    """

    STEP = AUDIO_RATE // 10  # 100 ms

    def __init__(self, target: float = TARGET_LUFS) -> None:
        self.target = target
        self._filters = _k_weighting()
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
        return _gated_loudness((steps[:-3] + steps[1:-2] + steps[2:-1] + steps[3:]) / (4 * self.STEP))

    def gain(self) -> float:
        """Linear gain that brings the stream so far to the target; 1.0 while it is silent."""
        return loudness_gain(self.loudness, self.target)


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
