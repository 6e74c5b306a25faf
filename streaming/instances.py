"""Generator instances inside one worker (a thread or a process): one per stream, or one for all.

A generator that keeps per-stream state (lite's face tracking, its still cache) needs an instance per
session, but not a process per session: a worker process hosts the instances of several sessions, so
that a session's start costs no process start, no imports and no cold caches (a spawned worker takes
about a second of CPU and 200 MB), and what a process loads once is loaded once. A shared generator (a GPU
model) has one instance, whatever the stream.

Touched only by the worker's own thread.
"""

from __future__ import annotations

from collections.abc import Hashable

from model.base import ChunkRequest, ChunkResult


class Instances:
    """The worker's instances of one generator: ``first`` (built at the worker's start) serves stream
    None (warm-ups) and, when not ``per_stream``, every stream; other streams get their own, built with
    ``build()`` on their first request and closed when the stream is forgotten."""

    def __init__(self, first, build, per_stream: bool) -> None:
        self._build = build
        self.per_stream = per_stream
        self._instances: dict[Hashable, object] = {None: first}

    @property
    def first(self):
        return self._instances[None]

    def __len__(self) -> int:
        return len(self._instances)

    def generate(self, request: ChunkRequest, stream: Hashable | None) -> ChunkResult:
        key = stream if self.per_stream else None
        generator = self._instances.get(key)
        if generator is None:
            generator = self._instances[key] = self._build()
        return generator.generate(request)

    def forget(self, stream: Hashable | None) -> None:
        """The stream has ended: its instance (not the first) is closed."""
        if stream is None or not self.per_stream:
            return
        generator = self._instances.pop(stream, None)
        if generator is not None:
            generator.close()

    def close(self) -> None:
        instances, self._instances = list(self._instances.values()), {}
        for generator in instances:
            generator.close()
