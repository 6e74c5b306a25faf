"""Which face is which speaker, when two people speak (each with their own speech track).

A face is picked either by its rank from the left among the faces found (``0`` the leftmost, ``1`` the
next; negative ranks count from the right, ``-1`` the rightmost) or by a horizontal position in the
picture (a float 0..1: the face whose centre is nearest). The default is speaker 1 = the leftmost face,
speaker 2 = the next; ``right-left`` reverses it. Kept free of torch and of face detection, so that the
engine, the server and every generator share one rule.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SPEAKERS = 2
MAX_FACES = 4  # faces looked for in a two-speaker picture (the speakers pick two of them)
ORDERS = {"left-right": (0, 1), "right-left": (-1, -2)}


class SpeakerError(ValueError):
    """A speaker assignment that cannot be met (one line: what was wrong and what is accepted). The
    callers in streaming/ and server/ turn it into their input error."""


FacePick = int | float  # int: rank from the left (negative: from the right); float: horizontal position 0..1


@dataclasses.dataclass(frozen=True)
class SpeakerFaces:
    """The face each speaker animates: ``picks[0]`` for speaker 1, ``picks[1]`` for speaker 2."""

    picks: tuple[FacePick, FacePick] = ORDERS["left-right"]

    def __post_init__(self) -> None:
        if len(self.picks) != SPEAKERS:
            raise SpeakerError(f"bad speaker faces {self.picks!r}: accepted is one face per speaker (two)")
        for pick in self.picks:
            check_pick(pick)

    @classmethod
    def ordered(cls, order: str) -> "SpeakerFaces":
        if order not in ORDERS:
            raise SpeakerError(f"bad speaker order {order!r}: accepted are {', '.join(ORDERS)}")
        return cls(ORDERS[order])

    @classmethod
    def parse_positions(cls, text: str) -> "SpeakerFaces":
        """``"0.25,0.75"``: speaker 1's face nearest x = 0.25 of the width, speaker 2's nearest 0.75."""
        accepted = "accepted are two horizontal positions from 0 (left) to 1 (right), e.g. 0.25,0.75"
        parts = str(text).split(",")
        try:
            positions = tuple(float(p) for p in parts)
        except ValueError:
            positions = ()
        if len(positions) != SPEAKERS or not all(0.0 <= p <= 1.0 for p in positions):
            raise SpeakerError(f"bad speaker faces {str(text)[:40]!r}: {accepted}")
        return cls(positions)

    def with_pick(self, speaker: int, pick: FacePick) -> "SpeakerFaces":
        """The same assignment with speaker ``speaker`` (1 or 2) moved to the face ``pick``."""
        if speaker not in (1, 2) or isinstance(speaker, bool):
            raise SpeakerError(f"bad speaker {speaker!r}: accepted are 1 and 2")
        picks = list(self.picks)
        picks[speaker - 1] = check_pick(pick)
        return SpeakerFaces(tuple(picks))

    def resolve(self, centres_x: list[float], width: int, where: str = "the reference") -> tuple[int, int]:
        """Indices into ``centres_x`` (face centres in pixels, any order) of speaker 1's and speaker 2's faces."""
        if len(centres_x) < SPEAKERS:
            count = len(centres_x)
            raise SpeakerError(f"found {count} face{'' if count == 1 else 's'} in {where}; two speakers need two")
        order = list(np.argsort(centres_x, kind="stable"))
        chosen = []
        for speaker, pick in enumerate(self.picks, start=1):
            if isinstance(pick, float):
                chosen.append(int(np.argmin([abs(x / width - pick) for x in centres_x])))
            elif -len(order) <= pick < len(order):
                chosen.append(int(order[pick]))
            else:
                raise SpeakerError(f"speaker {speaker} asks for face {pick} but {where} has {len(order)} faces: "
                                   f"accepted are 0..{len(order) - 1} from the left or a position 0..1")
        if chosen[0] == chosen[1]:
            found = ", ".join(f"{centres_x[i] / width:.2f}" for i in order)
            raise SpeakerError(f"both speakers picked the same face (faces at x = {found} of the width): "
                               "accepted are picks that name two different faces")
        return chosen[0], chosen[1]

    def pick(self, faces: list[np.ndarray], width: int, where: str = "the reference") -> tuple[np.ndarray, np.ndarray]:
        """Speaker 1's and speaker 2's faces among ``faces`` (each an array of [x, y] points, e.g. landmarks)."""
        first, second = self.resolve([float(np.mean(points[:, 0])) for points in faces], width, where)
        return faces[first], faces[second]


def check_pick(pick) -> FacePick:
    """A face pick as accepted from a user (CLI, control message): an int rank or a float position 0..1."""
    if isinstance(pick, bool) or not isinstance(pick, (int, float)):
        raise SpeakerError(f"bad face {str(pick)[:40]!r}: accepted is a face number from the left (0, 1, ...) "
                           "or a horizontal position from 0.0 to 1.0")
    if isinstance(pick, float) and not 0.0 <= pick <= 1.0:
        raise SpeakerError(f"bad face position {pick}: accepted is a horizontal position from 0.0 to 1.0")
    if isinstance(pick, int) and not -MAX_FACES <= pick < MAX_FACES:
        raise SpeakerError(f"bad face number {pick}: accepted are 0..{MAX_FACES - 1} from the left "
                           f"(-1..-{MAX_FACES} from the right) or a horizontal position from 0.0 to 1.0")
    return pick
