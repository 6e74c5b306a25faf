"""Wrong tokens counted per client address, across connections.

The control websocket closes after 3 wrong ``auth`` messages, but a client can reconnect and go on
guessing. Here every wrong token an address presents (a wrong bearer token over HTTP or on the control
upgrade, a wrong ``auth`` message) is counted; ``max_failures`` of them within ``window`` seconds lock
the address out for ``lockout`` seconds: its requests that need a token, and its control connections,
get 429 (a token that is right is refused too, so that guessing cannot go on). A missing token is not a
failure (a page asking without one, before its user gave it, is not guessing).

Behind a reverse proxy every client has the proxy's address: one client's wrong tokens would lock all
out, so a proxy should do its own limiting and the server's limit be raised there.

Memory stays bounded: at most ``max_addresses`` addresses are tracked (the least recent dropped first),
and an address's old failures go when it is next seen.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from typing import Callable

MAX_FAILURES = 10
WINDOW_SECONDS = 60.0
LOCKOUT_SECONDS = 300.0
MAX_ADDRESSES = 10_000


@dataclasses.dataclass
class AuthLockout:
    max_failures: int = MAX_FAILURES
    window: float = WINDOW_SECONDS
    lockout: float = LOCKOUT_SECONDS
    clock: Callable[[], float] = time.monotonic  # injected in tests
    max_addresses: int = MAX_ADDRESSES
    # address -> times of its recent failures, and address -> end of its lock-out (least recent first)
    _failures: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict, repr=False)
    _locked: dict = dataclasses.field(default_factory=dict, repr=False)

    def refusal(self, address: str | None) -> str | None:
        """Why ``address`` is refused now (one line), or None when it is not locked out."""
        until = self._locked.get(address)
        if until is None:
            return None
        left = until - self.clock()
        if left <= 0:
            del self._locked[address]
            return None
        return (f"too many wrong tokens from {address} ({self.max_failures} within {self.window:g} s): "
                f"refused for another {math.ceil(left)} s")

    def retry_after(self, address: str | None) -> int:
        """Seconds until ``address`` may try again (0: now)."""
        return max(0, math.ceil(self._locked.get(address, 0.0) - self.clock()))

    def failed(self, address: str | None) -> bool:
        """Count one wrong token from ``address``; True when it is now locked out."""
        now = self.clock()
        times = self._failures.pop(address, None) or collections.deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        if len(times) >= self.max_failures:
            self._locked[address] = now + self.lockout
            times.clear()
        else:
            self._failures[address] = times  # most recent last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        while len(self._locked) > self.max_addresses:
            self._locked.pop(next(iter(self._locked)))
        return address in self._locked

    def tracked(self) -> int:
        """Addresses with recent failures or a lock-out (what this holds in memory)."""
        return len(self._failures.keys() | self._locked.keys())
