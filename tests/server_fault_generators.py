"""Generators that misbehave on purpose, for the live server's fault tests (built by name through a
registry entry the tests add; importable by worker processes because tests/ is on their path)."""

from __future__ import annotations

import time

from model.base import ChunkRequest, ChunkResult
from model.passthrough import PassthroughGenerator


class RaisingGenerator(PassthroughGenerator):
    """The source frames, except that chunks in ``fail_chunks`` raise."""

    name = "raising"

    def __init__(self, fail_chunks=(1,)) -> None:
        self.fail_chunks = set(fail_chunks)

    def generate(self, request: ChunkRequest) -> ChunkResult:
        if request.index in self.fail_chunks:
            raise RuntimeError(f"deliberate failure on chunk {request.index}")
        return super().generate(request)


class SlowGenerator(PassthroughGenerator):
    """The source frames after ``seconds`` (``fast_seconds`` for tiers other than the first)."""

    name = "slow"

    def __init__(self, seconds: float = 1.0, fast_seconds: float | None = None) -> None:
        self.seconds = seconds
        self.fast_seconds = seconds if fast_seconds is None else fast_seconds

    def generate(self, request: ChunkRequest) -> ChunkResult:
        started = time.perf_counter()
        time.sleep(self.seconds if request.tier.name == "full" else self.fast_seconds)
        result = super().generate(request)
        result.info["tier"] = request.tier.name
        result.seconds = time.perf_counter() - started  # what it took, the sleep included
        return result


class ColdGenerator(PassthroughGenerator):
    """Slow on its first chunk only (``cold`` seconds: set-up done lazily), ``warm`` seconds after."""

    name = "cold"

    def __init__(self, cold: float = 0.5, warm: float = 0.02) -> None:
        self.cold, self.warm = cold, warm
        self.calls = 0

    def generate(self, request: ChunkRequest) -> ChunkResult:
        started = time.perf_counter()
        time.sleep(self.cold if self.calls == 0 else self.warm)
        self.calls += 1
        result = super().generate(request)
        result.seconds = time.perf_counter() - started
        return result


class CountingGenerator(PassthroughGenerator):
    """Counts its chunks (its per-stream state): ``info["calls"]`` is this instance's count so far."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, request: ChunkRequest) -> ChunkResult:
        self.calls += 1
        result = super().generate(request)
        result.info["calls"] = self.calls
        return result


def build_counting(**options) -> CountingGenerator:
    return CountingGenerator()


def build_cold(**options) -> ColdGenerator:
    return ColdGenerator(**options)


def build_raising(**options) -> RaisingGenerator:
    return RaisingGenerator(**options)


def build_raising_first(**options) -> RaisingGenerator:
    return RaisingGenerator(fail_chunks=(0,))


def build_slow(**options) -> SlowGenerator:
    return SlowGenerator(**options)


REGISTRY = {
    "raising": (__name__, "build_raising", "raises on chosen chunks"),
    "raising_first": (__name__, "build_raising_first", "raises on the first chunk"),
    "slow": (__name__, "build_slow", "sleeps per chunk"),
    "cold": (__name__, "build_cold", "slow on its first chunk only"),
    "counting": (__name__, "build_counting", "counts its chunks per instance"),
}
