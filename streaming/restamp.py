"""A live stream's own timestamps put on the server's clock, so that its frames land on the 25 fps
capture timeline by when they were filmed, not by when they happened to arrive.

A frame stamped ``s`` is due at ``s + offset``. The first frame sets the offset (due when it arrived).
For streams that arrive at their own pace (SRT, RTMP, RTSP) a frame that arrives earlier than its due
time lowers the offset to it (``pull_early``): the frames read in a burst after the opening probe, or
after a network stall, then count from when the stream could have been seen, not from when the
slowest frame came, and the latency stays the least the network allows. An HLS stream arrives a
segment at a time, ahead of its frames: there the first frame's offset holds and the segments buffer.
The offset is set afresh when the timestamps break (a restart, a jump of more than ``jump_limit``) or
when a frame arrives more than ``late_limit`` behind its due time (the sender's clock runs slow
against ours, or we stalled). Due times never go backwards.
"""

from __future__ import annotations

import dataclasses

JUMP_LIMIT = 2.0  # seconds between consecutive timestamps beyond which the stream has restarted
LATE_LIMIT = 0.5  # seconds a frame may arrive behind its due time before the offset is set afresh


@dataclasses.dataclass
class Restamper:
    pull_early: bool = True
    jump_limit: float = JUMP_LIMIT
    late_limit: float = LATE_LIMIT
    anchors: int = 0  # how often the offset was set afresh: once, plus every break or late frame
    _offset: float | None = None
    _last_stamp: float | None = None
    _last_due: float = float("-inf")

    def due(self, stamp: float | None, arrival: float) -> float:
        """When the frame stamped ``stamp`` (seconds, the stream's scale; None: unknown) that arrived at
        ``arrival`` (seconds, the server's clock) is due on the server's clock."""
        if stamp is None:  # no timestamp: by arrival, and the next stamped frame sets the offset
            self.reset()
            return self._keep(arrival)
        if (self._offset is None or stamp < self._last_stamp or stamp - self._last_stamp > self.jump_limit
                or arrival - (stamp + self._offset) > self.late_limit):
            self._offset = arrival - stamp
            self.anchors += 1
        elif self.pull_early:
            self._offset = min(self._offset, arrival - stamp)
        self._last_stamp = stamp
        return self._keep(stamp + self._offset)

    def reset(self) -> None:
        """The stream was reopened: its next frame sets the offset (due times still never go back)."""
        self._offset = self._last_stamp = None

    def _keep(self, due: float) -> float:
        self._last_due = max(self._last_due, due)
        return self._last_due
