"""Writing the dubbed result: H.264 + AAC mp4 at 25 fps, frames streamed in, atomic on success.

The file is written under a temporary name next to the target and renamed only when complete, so a
failed or interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction

import av
import numpy as np

from model.base import AUDIO_RATE, FPS
from streaming.errors import InputError

AAC_FRAME = 1024
AAC_BITRATE_PER_CHANNEL = 96_000  # 192 kbps stereo: the usual broadcast contribution rate for AAC-LC


def check_output_path(path: str | os.PathLike, what: str = "output", example: str = "out.mp4") -> str:
    """The output path as a string, after checking a file can be created in its folder (by creating and
    removing one: permission bits say nothing about /proc, read-only mounts or full disks)."""
    path = os.fspath(path)
    if not path.strip():
        raise InputError(f"empty {what} path: accepted is a file name such as {example}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{what} folder does not exist: {folder} (create it first, or write elsewhere)")
    if os.path.isdir(path):
        raise InputError(f"{what} path is a folder: {path} (give a file name such as {example})")
    try:
        with tempfile.NamedTemporaryFile(prefix=".probe-", dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write a file in {folder} ({exc.strerror or type(exc).__name__}); "
                         "accepted is a path in a writable folder") from None
    return path


class Mp4Writer:
    """Streams RGB frames and one audio track (mono or stereo) into an mp4; call ``close()`` to publish it."""

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], audio: np.ndarray | None = None,
                 audio_rate: int = AUDIO_RATE, crf: int = 18, preset: str = "veryfast") -> None:
        self.path = check_output_path(path)
        height, width = size
        handle, self._partial = tempfile.mkstemp(prefix=".partial-", suffix=".mp4",
                                                 dir=os.path.dirname(os.path.abspath(self.path)))
        os.close(handle)
        self._container = av.open(self._partial, mode="w", format="mp4")
        self._video = self._container.add_stream("libx264", rate=FPS)
        self._video.width, self._video.height = width, height
        self._video.pix_fmt = "yuv420p"
        self._video.time_base = Fraction(1, FPS)
        self._video.options = {"crf": str(crf), "preset": preset}
        # [n] mono or [n, channels] (1 or 2) samples; a memmap stays on disk: only blocks are read.
        audio = None if audio is None else np.asarray(audio, np.float32)  # no copy of a float32 memmap
        self._audio_samples = None if audio is None else (audio if audio.ndim == 2 else audio.reshape(-1, 1))
        self._audio_rate = audio_rate
        self._audio_written = 0
        self._audio_total: int | None = None  # set at close: the video's length, past the samples is silence
        if self._audio_samples is not None:
            channels = self._audio_samples.shape[1]
            if channels not in (1, 2):
                raise ValueError(f"audio with {channels} channels: accepted are 1 and 2")
            self._layout = "mono" if channels == 1 else "stereo"
            self._audio = self._container.add_stream("aac", rate=audio_rate)
            self._audio.layout = self._layout
            self._audio.bit_rate = AAC_BITRATE_PER_CHANNEL * channels
            self._audio.time_base = Fraction(1, audio_rate)
        self.frames_written = 0
        self._closed = False

    def write(self, frames: np.ndarray) -> None:
        """Append RGB uint8 frames ``[T, H, W, 3]`` (or one ``[H, W, 3]``)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            self._container.mux(self._video.encode(frame))
            self.frames_written += 1
        # Interleave: audio up to the video written so far.
        self._write_audio(self.frames_written * self._audio_rate // FPS)

    def _write_audio(self, until: int) -> None:
        if self._audio_samples is None:
            return
        end = self._audio_total if self._audio_total is not None else len(self._audio_samples)
        until = min(until, end)
        # Whole AAC frames only, until the last one at close: the encoder takes one short frame, at the end.
        while self._audio_written + AAC_FRAME <= until or (self._audio_total is not None
                                                          and self._audio_written < until):
            last = min(self._audio_written + AAC_FRAME, until)
            # Past the speech's end (it is shorter than the video): silence, padded block by block.
            block = np.zeros((last - self._audio_written, self._audio_samples.shape[1]), np.float32)
            part = self._audio_samples[self._audio_written : last]
            block[: len(part)] = part
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout=self._layout)
            frame.sample_rate = self._audio_rate
            frame.pts = self._audio_written
            self._container.mux(self._audio.encode(frame))
            self._audio_written = last

    def close(self) -> str:
        """Flush, finish the file and move it to its final name; returns the path."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            self._container.mux(self._video.encode(None))
            if self._audio_samples is not None:
                # Audio as long as the video: the speech cut (or padded with silence) to the frame count.
                self._audio_total = self.frames_written * self._audio_rate // FPS
                self._write_audio(self._audio_total)
                self._container.mux(self._audio.encode(None))
            self._container.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._partial, 0o666 & ~umask)  # mkstemp made it private
            os.replace(self._partial, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        self._closed = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the container may be half-open; the file goes anyway
            pass
        if os.path.exists(self._partial):
            os.unlink(self._partial)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
