"""A live session's speakers: speaker 1's speech ingest (always there), speaker 2's (once a second WHIP
ingest arrives), which face each animates, and what viewers hear (both, mixed).

Kept apart from the session's chunk loop so that the loop only asks two things: the second speaker's
samples for a chunk (None with one speaker) and the faces to put in the request. Speaker 2's ingest
ending (or never arriving) leaves silence: the session lives and ends with speaker 1's ingest.
"""

from __future__ import annotations

import numpy as np

from model.speakers import FacePick, SpeakerError, SpeakerFaces
from streaming.errors import InputError
from streaming.ingest import LiveAudioIngest
from streaming.stats import SpeakerStats


class LiveSpeakers:
    def __init__(self, first: LiveAudioIngest, capacity_seconds: float) -> None:
        self.first = first
        self.second: LiveAudioIngest | None = None
        self.capacity_seconds = capacity_seconds
        self.faces = SpeakerFaces()

    @property
    def count(self) -> int:
        return 1 if self.second is None else 2

    def ingest(self, speaker: int) -> LiveAudioIngest:
        """The ingest that speaker ``speaker`` (1 or 2) feeds; speaker 2's is made on first use."""
        if speaker == 1:
            return self.first
        if speaker != 2:
            raise InputError(f"bad speaker {str(speaker)[:20]!r}: accepted are 1 and 2")
        if self.second is None:
            self.second = LiveAudioIngest(self.capacity_seconds, self.first.receive_latency)
        return self.second

    def forget_unused_second(self) -> None:
        """Back to one speaker when speaker 2's ingest never received anything (its offer failed)."""
        if self.second is not None and self.second.frames_received == 0:
            self.second = None

    def second_samples(self, first: int, last: int) -> np.ndarray | None:
        """Speaker 2's model samples [first, last) (zeros where none arrived); None with one speaker."""
        return None if self.second is None else self.second.model.read(first, last)

    def playout(self, first: int, last: int) -> np.ndarray:
        """What viewers hear at 48 kHz, stereo ``[2, n]``: speaker 1, plus speaker 2 when there is one (clipped, not scaled:
        two people rarely peak together, and a constant gain would make speaker 1 quieter for good)."""
        samples = self.first.playout.read(first, last)
        if self.second is not None:
            samples = np.clip(samples + self.second.playout.read(first, last), -1.0, 1.0)
        return samples

    def assign(self, speaker: int, face: FacePick) -> SpeakerFaces:
        """Speaker ``speaker`` animates ``face`` (a rank from the left, or a horizontal position 0..1) from
        the next chunk on."""
        try:
            self.faces = self.faces.with_pick(speaker, face)
        except SpeakerError as exc:
            raise InputError(str(exc)) from None
        return self.faces

    def stats(self) -> SpeakerStats | None:
        """The second speaker's ingest (None with one speaker)."""
        if self.second is None:
            return None
        return SpeakerStats(self.second.frames_received, self.second.ended, list(self.faces.picks))
