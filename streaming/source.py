"""The source video (or still image): decoded to 25 fps by timestamp, resized and centre-cropped.

Deliberate deviation from the official code, which indexes source frames directly as 25 fps frames (a
29.97 fps source drifts by 20 % against the audio): output frame n shows the last source frame whose
presentation time is <= n/25 s. Frames are read sequentially into a bounded look-ahead buffer, so a
source of any length is held in memory only a window at a time.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from model.base import FPS
from model.frames import BUCKETS, bucket_size, resize_and_centercrop  # noqa: F401 - re-exported
from streaming.errors import InputError

MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 64, 2048, 16
MAX_OUTPUT_LONG, MAX_OUTPUT_SHORT = 3840, 2160  # the largest output: 4K UHD, either orientation
SIZE_HELP = ("480, 720 (the official buckets), WxH with sides multiples of 16 in [64, 2048] (the generator works "
             "on the whole frame at that size), source (the source's own size, up to 3840x2160) or WxH with even "
             "sides in [64, 3840] up to 3840x2160, e.g. 1920x1080 (the generator works on a region around the speaker)")
SOURCE_ENDS = ("hold", "loop")
KEYFRAME_HORIZON = 96  # frames; more than one 81-frame window
ACCEPTED_SOURCES = "accepted: any video FFmpeg decodes, or a png/jpg/webp image"
# FFmpeg "video" codecs that render text files as pictures (its tty demuxer takes any .txt): not a source.
NOT_PICTURES = ("ansi", "bintext", "xbin", "idf")


@dataclasses.dataclass(frozen=True)
class OutputSize:
    """An output size the generator does not work at: the source's own (no height and width given) or any
    WxH up to 3840x2160. The generator then works on a region around the speaker at its own bucket size
    (streaming/region.py) and its result is composited back into the frame (streaming/composite.py)."""

    height: int | None = None
    width: int | None = None

    def resolve(self, native_height: int, native_width: int) -> tuple[int, int]:
        """(height, width) of the output for a source of the given size."""
        if self.height is not None:
            return self.height, self.width
        # The source's own size, scaled down to fit 3840x2160 when larger, with even sides (yuv420p
        # output: an odd last row or column is cropped off).
        long, short = max(native_height, native_width), min(native_height, native_width)
        scale = min(1.0, MAX_OUTPUT_LONG / long, MAX_OUTPUT_SHORT / short)
        return (max(2, int(native_height * scale) // 2 * 2), max(2, int(native_width * scale) // 2 * 2))

    def __str__(self) -> str:
        return "source" if self.height is None else f"{self.width}x{self.height}"


SOURCE_SIZE = OutputSize()


def parse_size(text: str) -> int | tuple[int, int] | OutputSize:
    """``480`` / ``720`` -> bucket; ``WxH`` the generator can work at -> (height, width); ``source`` or a
    larger (or not 16-aligned) ``WxH`` -> an OutputSize (the generator works on a region of it)."""
    text = str(text).strip().lower()
    if text.isdigit() and int(text) in BUCKETS:
        return int(text)
    if text == "source":
        return SOURCE_SIZE
    parts = text.split("x")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        width, height = int(parts[0]), int(parts[1])
        if all(MIN_SIDE <= s <= MAX_SIDE and s % SIDE_MULTIPLE == 0 for s in (width, height)):
            return height, width
        if (all(MIN_SIDE <= s and s % 2 == 0 for s in (width, height))
                and max(width, height) <= MAX_OUTPUT_LONG and min(width, height) <= MAX_OUTPUT_SHORT):
            return OutputSize(height, width)
    raise InputError(f"bad size {text!r}: accepted are {SIZE_HELP}")


def format_size(size) -> int | str:
    """A size setting as users write it: 480, 512x512, source, 1920x1080."""
    if isinstance(size, (int, OutputSize)):
        return size if isinstance(size, int) else str(size)
    return f"{size[1]}x{size[0]}"


class VideoSource:
    """Frames of a video or still image on the 25 fps output timeline, at the output size.

    Reads are sequential: ``frame(n)`` decodes ahead as far as ``n`` and ``release_before(n)`` frees what
    is no longer needed. Keyframes (every ``keyframe_interval`` frames) are kept a little longer, so a
    chunk's reference may lie before its window. Past the source's end the last frame is held, or the
    source plays again from its start.
    """

    def __init__(self, path: str | os.PathLike, size: int | tuple[int, int] | OutputSize = 480, end: str = "hold",
                 keyframe_interval: int = 72, start: int = 0, length: int | None = None) -> None:
        if end not in SOURCE_ENDS:
            raise InputError(f"bad source end {end!r}: accepted are {', '.join(SOURCE_ENDS)}")
        if keyframe_interval < 1:
            raise InputError(f"bad keyframe interval {keyframe_interval}: accepted is a whole number of frames >= 1")
        self.path = os.fspath(path)
        self.end = end
        self.keyframe_interval = keyframe_interval
        if not os.path.exists(self.path):
            raise InputError(f"source not found: {self.path} ({ACCEPTED_SOURCES})")
        if os.path.isdir(self.path):
            raise InputError(f"source path is a folder: {self.path} ({ACCEPTED_SOURCES})")
        self._still = _read_image(self.path)
        native = self._still if self._still is not None else self._probe_first_frame()
        self.native_size = native.shape[:2]
        self.size = output_size(size, *self.native_size)
        if self._still is not None:
            self._still = fit_frame(self._still, self.size)
        self._buffer: deque[np.ndarray] = deque()
        self._buffer_start = start  # output index of _buffer[0]
        self._keyframes: dict[int, np.ndarray] = {}
        self._frames: Iterator[np.ndarray] | None = None
        self._decoded = 0
        self._last: np.ndarray | None = self._still
        # Frames in one pass of the source on the output timeline; known once decoding reached the end.
        self.length: int | None = 1 if self._still is not None else length
        # A reader that joins late starts at output frame ``start`` (its pass's frame, when the length of a
        # pass is known), seeking the file; it counts a pass's length only when it read one from its start.
        self._seek = start % length if length else start
        self._counting = start == 0

    @property
    def is_still(self) -> bool:
        return self._still is not None

    def _probe_first_frame(self) -> np.ndarray:
        try:
            with av.open(self.path) as container:
                if not container.streams.video:
                    raise InputError(f"no video stream in {self.path} ({ACCEPTED_SOURCES})")
                context = container.streams.video[0].codec_context
                if context is None:  # FFmpeg has no decoder for it (or the header is damaged)
                    raise InputError(f"cannot read source {self.path}: its video codec is unknown to FFmpeg; "
                                     f"{ACCEPTED_SOURCES}")
                codec = context.name
                if codec in NOT_PICTURES:
                    raise InputError(f"source {self.path} is text, not a video or image (FFmpeg reads it as "
                                     f"{codec!r} art); {ACCEPTED_SOURCES}")
                for frame in container.decode(video=0):
                    return frame.to_ndarray(format="rgb24")
        except InputError:
            raise
        except (av.error.FFmpegError, ValueError) as exc:  # ValueError: a pixel format PyAV cannot convert
            raise _unreadable(self.path, exc) from None
        raise InputError(f"source video {self.path} has no decodable frames ({ACCEPTED_SOURCES})")

    def _next_frame(self) -> np.ndarray:
        if self._frames is None:
            self._frames = _decode(self.path, self.size, self._seek)
        image = next(self._frames, None)  # not ``except StopIteration``: a pass started while handling
        if image is None:  # it would keep that exception (and its traceback, and so self) alive
            if self.length is None and self._counting:
                self.length = self._decoded
            if self.end == "hold":
                return self._last
            self._frames = _decode(self.path, self.size)
            image = next(self._frames)
        if self.length is None:
            self._decoded += 1
        self._last = image
        return image

    def frame(self, index: int) -> np.ndarray:
        """Output-timeline frame ``index`` (RGB uint8 [H, W, 3])."""
        if self._still is not None:
            return self._still
        if index < self._buffer_start:
            if index in self._keyframes:
                return self._keyframes[index]
            raise IndexError(f"frame {index} was released (buffer starts at {self._buffer_start})")
        while index >= self._buffer_start + len(self._buffer):
            position = self._buffer_start + len(self._buffer)
            image = self._next_frame()
            self._buffer.append(image)
            if position % self.keyframe_interval == 0:
                self._keyframes[position] = image
                # Keep the keyframes a later chunk can still pick: within a window and two intervals.
                horizon = position - 2 * self.keyframe_interval - KEYFRAME_HORIZON
                for old in [k for k in self._keyframes if k < horizon]:
                    del self._keyframes[old]
        return self._buffer[index - self._buffer_start]

    def frames(self, start: int, count: int) -> np.ndarray:
        return np.stack([self.frame(i) for i in range(start, start + count)])

    def release_before(self, index: int) -> None:
        while self._buffer and self._buffer_start < index:
            self._buffer.popleft()
            self._buffer_start += 1

    @property
    def first_held(self) -> int:
        """The first frame still in the look-ahead buffer."""
        return self._buffer_start

    @property
    def next_read(self) -> int:
        """The frame the next decode gives."""
        return self._buffer_start + len(self._buffer)

    def reader(self):
        """A second reader of the same frames, in order from any thread (composing a region's output reads
        the source again instead of holding its frames): its own decoder, opened on first use."""
        if self._still is not None:
            return self
        from streaming.regionsource import SequentialReader

        path, size, end = self.path, self.size, self.end
        # A keyframe interval no index reaches past 0: the reader keeps no keyframes. It starts where it
        # is first asked (a viewer may join minutes in), knowing a pass's length once this source does.
        return SequentialReader(lambda start: VideoSource(path, size, end, 1 << 40, start, self.length), size)


def fit_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size``: the official resize and centre crop, except that a source at its own size
    (``--size source``, less an odd last row or column) is only cropped, so that it stays pixel for pixel."""
    height, width = image.shape[:2]
    if 0 <= height - size[0] <= 1 and 0 <= width - size[1] <= 1:
        return np.ascontiguousarray(image[: size[0], : size[1]])
    return resize_and_centercrop(image, size)


def output_size(size: int | tuple[int, int] | OutputSize, native_height: int, native_width: int) -> tuple[int, int]:
    """(height, width) of the frames a source of the given native size gives for a size setting."""
    if isinstance(size, OutputSize):
        return size.resolve(native_height, native_width)
    return bucket_size(native_height, native_width, BUCKETS[size]) if isinstance(size, int) else tuple(size)


def _decode(path: str, size: tuple[int, int], start: int = 0) -> Iterator[np.ndarray]:
    """One pass of the source resampled to 25 fps: frame n is the last with pts <= n/25 s.

    A function of the path, not a method: a suspended generator holding its VideoSource, which holds the
    generator, was a reference cycle that kept the open decoder (and its threads) of every ended
    session's source until a full garbage collection."""
    try:
        yield from _decode_pass(path, size, start)
    except InputError:
        raise
    except (av.error.FFmpegError, ValueError) as exc:  # damaged past the first frame
        raise _unreadable(path, exc) from None


def _decode_pass(path: str, size: tuple[int, int], start: int = 0) -> Iterator[np.ndarray]:
    """From output frame ``start`` of the pass on (seeking to the keyframe before it, when the file has
    timestamps)."""
    out_index = 0
    previous: np.ndarray | None = None
    previous_end = Fraction(0)
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = None
        if start > 0:
            origin = _seek(container, stream, start)
            out_index = start if origin is not None else 0
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                time = previous_end  # no timestamps: frames follow each other
            else:
                pts = Fraction(frame.pts) * frame.time_base
                origin = pts if origin is None else origin
                time = pts - origin
            image = fit_frame(frame.to_ndarray(format="rgb24"), size)
            if previous is not None:
                while Fraction(out_index, FPS) < time:
                    if out_index >= start:  # (not seeking: the frames before ``start`` are passed over)
                        yield previous
                    out_index += 1
            previous = image
            previous_end = time + _frame_duration(frame, stream)
    if previous is None:
        raise InputError(f"source video {path} has no decodable frames ({ACCEPTED_SOURCES})")
    # The last frame lasts its duration, rounded to whole output frames (at least one).
    while out_index == 0 or Fraction(2 * out_index + 1, 2 * FPS) < previous_end:
        if out_index >= start:
            yield previous
        out_index += 1


def _seek(container, stream, start: int) -> Fraction | None:
    """Seek to the keyframe at or before output frame ``start``; the pass's origin (its first frame's
    time), or None when the file has no timestamps to seek by (then the pass is read from its start)."""
    first = next(container.decode(stream), None)
    if first is None or first.pts is None or first.time_base is None:
        container.seek(0)
        return None
    origin = Fraction(first.pts) * first.time_base
    container.seek(int((origin + Fraction(start, FPS)) / stream.time_base), stream=stream, backward=True)
    return origin


def _unreadable(path: str, exc: BaseException) -> InputError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
    return InputError(f"cannot read source {path}: not a video or image ({reason}); {ACCEPTED_SOURCES}")


def _frame_duration(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> Fraction:
    if getattr(frame, "duration", None) and frame.time_base is not None:
        return Fraction(frame.duration) * frame.time_base
    rate = stream.average_rate or stream.guessed_rate or FPS
    return 1 / Fraction(rate)


def _read_image(path: str) -> np.ndarray | None:
    """RGB array of a still image, or None when ``path`` is not an image PIL knows."""
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                return None  # animated: decode as video
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise InputError(f"source image {path} is too large ({exc}); accepted are images up to "
                         f"{Image.MAX_IMAGE_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None  # not an image PIL reads whole (PIL raises SyntaxError on a broken PNG): FFmpeg may
