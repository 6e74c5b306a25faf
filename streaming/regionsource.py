"""A source-size source as the generator sees it: each chunk's region, at the generator's size.

Source frames are read once, in order, and cut at once into the region of every chunk whose window holds
them (two chunks at their overlap); the source-size frame is then dropped, so a session holds the
generator-size crops of its window and a few source keyframes, never seconds of source-size frames. A
chunk's region is chosen (streaming/region.py) when its first frame is read. Composing the output (the
generator's frames put back into source-size frames, streaming/composite.py) reads the source a second
time, in order, with its own reader (``reader``): a second decoder of a file, or the same frames where
they are held anyway (a still, a shared clip, a live window).
"""

from __future__ import annotations

import threading

import numpy as np

from streaming.chunker import ChunkPlan
from streaming.composite import crop, paste
from streaming.region import Framing, RegionFinder

KEPT_KEYFRAMES = 3  # source-size keyframes kept for references that lie before a window


def reader_of(source):
    """What reads ``source``'s frames a second time for composing (its ``reader()``, or itself when its
    frames are held anyway and can be read from any thread)."""
    make = getattr(source, "reader", None)
    return source if make is None else make()


SEEK_AHEAD = 2 * 25  # frames: further ahead than this, the reader seeks instead of decoding its way there


class SequentialReader:
    """Frames of a source opened on first use (``open_source(start)``), read in order by any thread, with
    a short look-back (two output encoders may ask for neighbouring frames). Asked for a frame far ahead
    (the first viewer may join minutes into a session), it opens the source again there."""

    def __init__(self, open_source, size: tuple[int, int], look_back: int = 2) -> None:
        self._open = open_source
        self._source = None
        self._lock = threading.Lock()
        self.size = size
        self.is_still = False
        self.look_back = look_back

    def frame(self, index: int) -> np.ndarray:
        with self._lock:
            if self._source is None or index > self._source.next_read + SEEK_AHEAD:
                self._source = self._open(index)
            try:
                image = self._source.frame(index)
            except IndexError:  # asked for a frame already let go: the oldest one held is the nearest
                image = self._source.frame(self._source.first_held)
            self._source.release_before(index - self.look_back)
            return image


class RegionSource:
    """Crops of a source-size source (VideoSource's surface for the chunk engine, per chunk)."""

    def __init__(self, native, finder: RegionFinder, plan: ChunkPlan, keyframe_interval: int = 72) -> None:
        self.finder = finder
        self.plan = plan
        self.keyframe_interval = keyframe_interval
        self.native = None
        self.reader = None
        self._framings: dict[int, Framing] = {}  # by chunk index
        self._crops: dict[tuple[int, int], np.ndarray] = {}  # (frame, chunk) -> crop
        self._keyframes: dict[int, np.ndarray] = {}  # source-size
        self._still: tuple[Framing, np.ndarray] | None = None  # a still's crop, in its region
        self._next = 0  # the next source frame to read
        if native is not None:
            self.retarget(native, 0)

    def retarget(self, native, start: int) -> None:
        """Read ``native`` from frame ``start`` on (a swapped-in source, or a live chunk's window)."""
        self.native = native
        self.reader = reader_of(native)
        self.is_still = native.is_still
        self.size = tuple(native.size)
        self._next = start
        self._still = None
        for key in [k for k in self._crops if k[0] >= start]:
            del self._crops[key]
        for key in [k for k in self._keyframes if k >= start]:
            del self._keyframes[key]
        for chunk in [c for c in self._framings if self.plan.chunk(c).start_frame >= start]:
            del self._framings[chunk]  # chosen on the frames being replaced

    # ---- the chunk engine's view ------------------------------------------------------------------------
    def framing(self, index: int) -> Framing:
        """Chunk ``index``'s region (read up to its first frame to choose it)."""
        if index not in self._framings and self.is_still:  # the same picture: the same region
            previous = max(self._framings, default=None)
            self._framings[index] = (self._framings[previous] if previous is not None
                                     else self._choose(0, self.native.frame(0)))
        if index not in self._framings:
            start = self.plan.chunk(index).start_frame
            self._read_to(start)
            if index not in self._framings:  # its first frame was read before it was a chunk's
                self._framings[index] = self._choose(start, self.native.frame(start))
        return self._framings[index]

    def crop(self, index: int, frame: int) -> np.ndarray:
        """Source frame ``frame`` as the generator sees it in chunk ``index``."""
        framing = self.framing(index)
        if self.is_still:
            return self._still_crop(framing)
        self._read_to(frame)
        image = self._crops.get((frame, index))
        if image is None:  # a reference outside the window: a kept keyframe
            native = self._keyframes.get(frame)
            image = crop(native if native is not None else self.native.frame(frame), framing)
        return image

    def crops(self, index: int, start: int, count: int) -> np.ndarray:
        return np.stack([self.crop(index, i) for i in range(start, start + count)])

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` in the region of the last chunk that holds it (prefetching reads ahead with it)."""
        return self.crop(index // self.plan.stride, index)

    def frames(self, start: int, count: int) -> np.ndarray:
        return np.stack([self.frame(i) for i in range(start, start + count)])

    def release_before(self, index: int) -> None:
        for key in [k for k in self._crops if k[0] < index]:
            del self._crops[key]
        for chunk in [c for c in self._framings if self.plan.chunk(c).end_frame <= index]:
            del self._framings[chunk]

    def compose(self, index: int, first: int, frames: np.ndarray) -> list[np.ndarray]:
        """Output frames ``first...``: chunk ``index``'s generated frames put back into the source frames."""
        framing = self.framing(index)
        return [paste(self.reader.frame(first + k), image, framing) for k, image in enumerate(frames)]

    # ---- reading --------------------------------------------------------------------------------------
    def _read_to(self, last: int) -> None:
        while self._next <= last:
            position = self._next
            image = self.native.frame(position)
            made: dict[Framing, np.ndarray] = {}  # two chunks in the same region share the crop
            for chunk in self._chunks_holding(position):
                if chunk not in self._framings and position == self.plan.chunk(chunk).start_frame:
                    self._framings[chunk] = self._choose(position, image)  # its first frame: choose its region
                framing = self._framings.get(chunk)
                if framing is not None:
                    if framing not in made:
                        made[framing] = crop(image, framing)
                    self._crops[(position, chunk)] = made[framing]
            if position % self.keyframe_interval == 0:
                self._keyframes[position] = image
                for old in sorted(self._keyframes)[:-KEPT_KEYFRAMES]:
                    del self._keyframes[old]
            self._next += 1
            if not self.is_still:
                self.native.release_before(position + 1)  # only the crops are kept

    def _choose(self, position: int, image: np.ndarray) -> Framing:
        """The region chosen on source frame ``position``: with the face the source's shared analysis found
        there (sessions on one source find each frame's face once), or one found here."""
        analysis = getattr(self.native, "analysis", None)
        return self.finder.choose([image], None if analysis is None else [analysis.detected(position)])

    def _chunks_holding(self, frame: int) -> list[int]:
        stride = self.plan.stride
        last = frame // stride
        return [c for c in (last - 1, last) if c >= 0 and self.plan.chunk(c).start_frame <= frame
                < self.plan.chunk(c).end_frame]

    def _still_crop(self, framing: Framing) -> np.ndarray:
        if self._still is None or self._still[0] != framing:
            self._still = (framing, crop(self.native.frame(0), framing))
        return self._still[1]


class ComposedFrames:
    """A live slot's frames, composed when playout asks: the generator's frames (None: the source's own)
    put back into the source frames ``first...``, read by ``reader``."""

    def __init__(self, frames: np.ndarray | None, count: int, framing: Framing, first: int, reader) -> None:
        self._frames = frames
        self._count = count
        self._framing = framing
        self._first = first
        self._reader = reader
        self._last: tuple[int, np.ndarray] | None = None  # two encoders ask for the same frame in turn

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, k: int) -> np.ndarray:
        last = self._last
        if last is not None and last[0] == k:
            return last[1]
        source = self._reader.frame(self._first + k)
        image = source if self._frames is None else paste(source, self._frames[k], self._framing)
        self._last = (k, image)
        return image
