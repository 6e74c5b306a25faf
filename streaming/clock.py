"""The one source of time for a session and everything downstream of it (scheduler, pools, tracks).

Every stage reads ``now()`` and waits with ``sleep()`` of the clock it was given, never ``time`` or
``asyncio.sleep`` directly: the server runs on ``SystemClock``; tests run on ``VirtualClock``, whose
time moves only when the test advances it, so deadlines, pacing and timeouts decide the same outcome on
a loaded machine as on an idle one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""


class SystemClock:
    """Monotonic wall time."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()
SETTLE_ROUNDS = 50  # event-loop turns a virtual step lets run (callbacks that schedule callbacks)


class VirtualClock:
    """Time that moves only in ``advance``: sleepers wake in due order, each wake followed by the event
    loop running until nothing is ready. Work handed to other threads is not waited for: tests keep
    blocking work inline or await it themselves before advancing."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), woken))
        await woken

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper due on the way at its own instant."""
        target = self._now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, woken = heapq.heappop(self._sleepers)
            if woken.done():
                continue  # cancelled (a wait that ended another way)
            self._now = max(self._now, due)
            woken.set_result(None)
            await settle()
        self._now = target
        await settle()

    def jump(self, seconds: float) -> None:
        """Time passes with nothing running (a blocked event loop): sleepers wake late, at the next step."""
        self._now += seconds

    async def run_until(self, condition, limit: float, step: float = 0.02) -> bool:
        """Advance in ``step``s until ``condition()`` holds (True) or ``limit`` seconds passed (False)."""
        end = self._now + limit
        while not condition():
            if self._now >= end:
                return False
            await self.advance(min(step, end - self._now))
        return True


async def settle() -> None:
    for _ in range(SETTLE_ROUNDS):
        await asyncio.sleep(0)


async def sleep_unless(clock: Clock, seconds: float, stop: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock`` unless ``stop`` is set first; whether it was."""
    if stop.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, stopper):
            task.cancel()
    return stop.is_set()


class InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in the caller's thread: on a VirtualClock, work that would go to
    a thread finishes within the step that started it, so no real duration can change an outcome."""

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
            future.set_exception(exc)
        return future
