"""Who is using a shared resource, and when it may stop: started by its first user, stopped a grace period
after its last one left, so that a session swapped or restarted at once finds it still running.

``acquire`` counts a user and returns its release; ``touch`` is a use with no user left behind (a picker's
thumbnail): it starts the resource if it was stopped and lets it go after the grace period. The grace
period runs on an injected clock (streaming/clock.py), so tests decide it without sleeping. All calls are
made on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from streaming.clock import SYSTEM_CLOCK, Clock

IDLE_AFTER = 30.0  # seconds without users before a live source stops being read (0: never)


class Demand:
    """Calls ``start()`` when the first use comes while stopped, ``stop()`` once nothing used it for
    ``idle_after`` seconds (never, for 0)."""

    def __init__(self, start: Callable[[], None], stop: Callable[[], None], idle_after: float = IDLE_AFTER,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._start = start
        self._stop = stop
        self.idle_after = idle_after
        self._clock = clock
        self.users = 0
        self.running = False
        self._timer: asyncio.Task | None = None

    def acquire(self) -> Callable[[], None]:
        """One more user; the returned release (idempotent) ends its use."""
        self.users += 1
        self._run()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.users -= 1
                self._arm()

        return release

    def touch(self) -> None:
        """A use without a user: starts it if stopped; it stops again after the grace period if unused."""
        self._run()
        self._arm()

    def _run(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.running:
            self.running = True
            self._start()

    def _arm(self) -> None:
        if self.users or not self.running or self.idle_after <= 0:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        await self._clock.sleep(self.idle_after)
        self._timer = None
        if not self.users and self.running:
            self.running = False
            self._stop()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
