"""Frame arrays passed to and from a worker process through shared memory instead of the pipe.

A chunk's source frames and its result are tens of megabytes: pickled through a pipe they cost about
0.4 s per chunk at 512x512; copied through shared memory, a few tens of milliseconds. The parent owns
the segments (one for the request's frames, one for the result's), grows them when a chunk needs more,
and unlinks them when the worker closes; the child only attaches to them by name.
"""

from __future__ import annotations

import dataclasses
from multiprocessing import shared_memory

import numpy as np


@dataclasses.dataclass(frozen=True)
class FrameSlot:
    """Where an array lies: a segment's name, the array's shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "uint8"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


class SharedSegment:
    """A parent-owned segment, grown on demand."""

    def __init__(self) -> None:
        self._memory: shared_memory.SharedMemory | None = None

    def reserve(self, shape: tuple[int, ...], dtype: str = "uint8") -> FrameSlot:
        needed = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        if self._memory is None or self._memory.size < needed:
            self.close()
            self._memory = shared_memory.SharedMemory(create=True, size=needed)
        return FrameSlot(self._memory.name, tuple(shape), dtype)

    def put(self, array: np.ndarray) -> FrameSlot:
        slot = self.reserve(array.shape, str(array.dtype))
        self.view(slot)[...] = array
        return slot

    def view(self, slot: FrameSlot) -> np.ndarray:
        return np.ndarray(slot.shape, slot.dtype, buffer=self._memory.buf)

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory.unlink()
            self._memory = None


class AttachedSegments:
    """The child's side: segments attached by name (kept while the name stays the same)."""

    def __init__(self) -> None:
        self._attached: dict[str, shared_memory.SharedMemory] = {}

    def view(self, slot: FrameSlot) -> np.ndarray:
        memory = self._attached.get(slot.name)
        if memory is None:
            # Attaching registers the name with the resource tracker again; a spawned child shares its
            # parent's tracker, where the name is already registered, so this changes nothing.
            memory = shared_memory.SharedMemory(name=slot.name)
            self._attached[slot.name] = memory
        return np.ndarray(slot.shape, slot.dtype, buffer=memory.buf)

    def forget_except(self, names: set[str]) -> None:
        """Detach from segments the parent has replaced."""
        for name in [n for n in self._attached if n not in names]:
            self._attached.pop(name).close()
