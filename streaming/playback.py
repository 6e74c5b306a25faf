"""The speech listeners hear in an offline dub: the speech file's own sound, not the models' copy.

The models get 16 kHz mono at -23 LUFS (streaming/audio.py); the output file gets the input as it was:
48 kHz (resampled only when the file has another rate), its own channels (mono stays mono, stereo stays
stereo; more than two are downmixed to stereo by FFmpeg's default matrix, or averaged to mono when their
order is unknown and FFmpeg has no matrix for them), its own level. The frames come
from the models' decode (``load_audio``'s listener), so a long file is decoded once. They are spooled to
an unlinked file beside the output (an ``np.memmap``): an hour of 48 kHz stereo is 1.4 GB of float32, which
costs disk, not memory, and the page cache holds only what is being read or written.
"""

from __future__ import annotations

import os
import tempfile

import av
import numpy as np

from streaming.errors import InputError

PLAYBACK_RATE = 48_000
MAX_CHANNELS = 2
MIX_PIECE = PLAYBACK_RATE * 30  # samples per step when mixing two spools (30 s)


class PlaybackSpeech:
    """48 kHz float32 samples ``[n, channels]`` (1 or 2 channels) in a growing disk-backed array."""

    def __init__(self, folder: str | None = None, channels: int | None = None) -> None:
        self._folder = folder
        self._file = None
        self._data: np.ndarray | None = None
        self.size = 0
        self.channels = channels  # set by the first frame when None
        self.source_channels: int | None = None  # the file's own count (more than 2: downmixed)
        self._resampler: av.AudioResampler | None = None
        self._averaged = False  # channels of unknown order: their mean, as the models' copy

    @property
    def downmixed(self) -> bool:
        return (self.source_channels or 0) > MAX_CHANNELS

    def describe(self) -> str:
        """What listeners get, for a report: e.g. "48 kHz stereo (downmixed from 8 channels)"."""
        text = f"{PLAYBACK_RATE // 1000} kHz {'mono' if self.channels == 1 else 'stereo'}"
        if self._averaged:
            return text + f" (averaged from {self.source_channels} channels of unknown order)"
        return text + (f" (downmixed from {self.source_channels} channels)" if self.downmixed else "")

    # ---- filling ---------------------------------------------------------------------------------------------
    def __call__(self, frame: av.AudioFrame) -> None:
        """One decoded frame of the speech file (its timestamps cleared), in decoding order."""
        if self._resampler is None:
            self.source_channels = frame.layout.nb_channels
            self.channels = min(self.source_channels, MAX_CHANNELS)
            # Packed "flt", by layout name: the reasons are load_audio's (streaming/audio.py).
            self._resampler = av.AudioResampler(format="flt", layout="mono" if self.channels == 1 else "stereo",
                                                rate=PLAYBACK_RATE)
        try:
            pieces = self._resampler.resample(frame)
        except (av.error.FFmpegError, ValueError):
            if not self.downmixed or self._averaged or self.size:
                raise
            # FFmpeg has no downmix for this many channels of unknown order (9, say): no left or right to
            # keep, so their mean, as the models' copy.
            self._averaged, self.channels = True, 1
            self._resampler = av.AudioResampler(format="flt", layout=frame.layout.name, rate=PLAYBACK_RATE)
            pieces = self._resampler.resample(frame)
        for out in pieces:
            self._append_frame(out)

    def finish(self) -> "PlaybackSpeech":
        """The resampler's last samples, after the last frame."""
        if self._resampler is not None:
            for out in self._resampler.resample(None):
                self._append_frame(out)
            self._resampler = None
        return self

    def _append_frame(self, frame: av.AudioFrame) -> None:
        data = frame.to_ndarray().reshape(-1, frame.layout.nb_channels)
        self.append(data.mean(axis=1, keepdims=True) if self._averaged else data)

    def append(self, samples: np.ndarray) -> None:
        """Samples ``[n, channels]`` at the end."""
        if self._data is None or self.size + len(samples) > len(self._data):
            self._grow(max(2 * (0 if self._data is None else len(self._data)), self.size + len(samples),
                           60 * PLAYBACK_RATE))
        self._data[self.size : self.size + len(samples)] = samples
        self.size += len(samples)

    def _grow(self, capacity: int) -> None:
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix=".speech-", dir=self._folder)
            self._data = None  # unmapped before the file grows
            self._file.truncate(capacity * self.channels * 4)  # sparse: the disk fills as samples arrive
            self._data = np.memmap(self._file, np.float32, "r+", shape=(capacity, self.channels))
        except OSError as exc:
            raise InputError(f"cannot keep the speech beside the output in {self._folder or tempfile.gettempdir()} "
                             f"({exc.strerror or type(exc).__name__}); accepted is a folder with free space "
                             f"(48 kHz stereo needs 1.4 GB an hour)") from None

    # ---- reading ---------------------------------------------------------------------------------------------
    @property
    def samples(self) -> np.ndarray:
        """All samples ``[n, channels]`` (a view of the spool: slicing it reads only that part)."""
        if self._data is None:
            return np.zeros((0, self.channels or 1), np.float32)
        return self._data[: self.size]

    def close(self) -> None:
        self._data = None
        if self._file is not None:
            self._file.close()
            self._file = None


def mix_playback(first: PlaybackSpeech, second: PlaybackSpeech, folder: str | None = None) -> PlaybackSpeech:
    """Both speakers at their own levels in one spool (the longer one's length; stereo when either is, mono
    duplicated), scaled down as a whole when the sum would clip. Two passes over the spools, 30 s at a time."""
    channels = max(first.channels or 1, second.channels or 1)
    total = max(first.size, second.size)

    def piece(at: int) -> np.ndarray:
        out = np.zeros((min(MIX_PIECE, total - at), channels), np.float32)
        for part in (first.samples[at : at + MIX_PIECE], second.samples[at : at + MIX_PIECE]):
            out[: len(part)] += part  # a mono [n, 1] part broadcasts to both channels
        return out

    peak = max((float(np.abs(piece(at)).max()) for at in range(0, total, MIX_PIECE)), default=0.0)
    scale = np.float32(0.99 / peak) if peak > 0.99 else np.float32(1.0)
    mixed = PlaybackSpeech(folder, channels)
    mixed.source_channels = max(first.source_channels or 1, second.source_channels or 1)
    for at in range(0, total, MIX_PIECE):
        mixed.append(piece(at) * scale)
    return mixed


def spool_folder(output_path: str) -> str:
    """Where an output's speech is spooled: its own folder (known writable, and not a RAM-backed /tmp)."""
    return os.path.dirname(os.path.abspath(output_path))
