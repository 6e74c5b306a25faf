"""A live stream's own timestamps put on the server's clock, so that its frames land on the 25 fps
capture timeline by when they were filmed, not by when they happened to arrive.

A frame stamped ``s`` is due at ``s + offset``. The first frame sets the offset (due when it arrived);
frames that then come in bursts (a sender that writes a group of pictures at once, a TCP stall, an
HLS segment fetched whole) are due at their own pace, not at their arrival. The offset is set afresh
when the timestamps break (a restart, a jump of more than ``jump_limit``) or when a frame arrives more
than ``late_limit`` behind its due time (the sender's clock runs slow against ours, or we stalled).

With ``tighten`` (streams that arrive at their own pace: SRT, RTMP, RTSP), the latency that the first
frame happened to set (it waited for the opening probe) is shed: when every frame of ``window`` seconds
came at least ``slack`` before it was due, the offset drops by that surplus, at most ``step`` at a time
(the frames skipped at a drop are at most ``step`` long). Due times never go backwards.
"""

from __future__ import annotations

import dataclasses

JUMP_LIMIT = 2.0  # seconds between consecutive timestamps beyond which the stream has restarted
LATE_LIMIT = 0.5  # seconds a frame may arrive behind its due time before the offset is set afresh
WINDOW = 2.0  # seconds of a stream over which the least lead of its frames is measured
SLACK = 0.05  # seconds of lead kept when the offset is tightened
STEP = 0.2  # seconds the offset drops at most per window


@dataclasses.dataclass
class Restamper:
    tighten: bool = True
    jump_limit: float = JUMP_LIMIT
    late_limit: float = LATE_LIMIT
    anchors: int = 0  # how often the offset was set afresh: once, plus every break or late frame
    tightened: float = 0.0  # seconds of latency shed in all
    _offset: float | None = None
    _last_stamp: float | None = None
    _last_due: float = float("-inf")
    _window_start: float = 0.0
    _least_lead: float = float("inf")

    def due(self, stamp: float | None, arrival: float) -> float:
        """When the frame stamped ``stamp`` (seconds, the stream's scale; None: unknown) that arrived at
        ``arrival`` (seconds, the server's clock) is due on the server's clock."""
        if stamp is None:  # no timestamp: by arrival, and the next stamped frame sets the offset
            self.reset()
            return self._keep(arrival)
        if (self._offset is None or stamp < self._last_stamp or stamp - self._last_stamp > self.jump_limit
                or arrival - (stamp + self._offset) > self.late_limit):
            self._offset = arrival - stamp
            self._window_start, self._least_lead = stamp, float("inf")
            self.anchors += 1
        self._last_stamp = stamp
        due = stamp + self._offset
        self._least_lead = min(self._least_lead, due - arrival)
        if self.tighten and stamp - self._window_start >= WINDOW:
            surplus = min(STEP, self._least_lead - SLACK)
            if surplus > 0:
                self._offset -= surplus
                self.tightened += surplus
            self._window_start, self._least_lead = stamp, float("inf")
        return self._keep(due)

    def reset(self) -> None:
        """The stream was reopened: its next frame sets the offset (due times still never go back)."""
        self._offset = self._last_stamp = None

    def _keep(self, due: float) -> float:
        self._last_due = max(self._last_due, due)
        return self._last_due
