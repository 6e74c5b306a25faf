"""When to try a lost connection again: exponential backoff, capped, reset by a connection that held.

A receiver that refuses, or accepts and drops at once, is tried after 0.5 s, 1 s, 2 s ... up to the cap;
a connection that stayed up ``stable`` seconds starts the count afresh, so that a receiver restarted
hours later is tried again at once. Time comes from the caller (the session's clock), so the same
failures give the same delays on any machine. Used by broadcast outputs (server/outputs.py) and live
programme sources (streaming/programmereader.py).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Backoff:
    first: float = 0.5
    cap: float = 30.0
    stable: float = 10.0  # a connection up this long was a success: the next failure waits ``first``
    give_up_after: int = 0  # failures in a row before giving up (0: never)
    failures: int = 0  # in a row, since the last connection that held
    _connected_at: float | None = None

    def connected(self, now: float) -> None:
        self._connected_at = now

    def failed(self, now: float) -> float | None:
        """A connection attempt failed or a connection was lost at ``now``: seconds to wait before the
        next attempt, or None when it is time to give up."""
        if self._connected_at is not None and now - self._connected_at >= self.stable:
            self.failures = 0
        self._connected_at = None
        self.failures += 1
        if self.give_up_after and self.failures >= self.give_up_after:
            return None
        return self.delay(self.failures)

    def delay(self, attempt: int) -> float:
        """Seconds before try ``attempt`` (1, 2, ...) after a failure: ``first`` doubled each time, capped."""
        return min(self.cap, self.first * 2.0 ** max(0, attempt - 1))
