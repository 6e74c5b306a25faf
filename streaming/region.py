"""The region of a source-size frame the generator works on: around the speaker, steady over time.

With an output size the generator does not work at (``--size source``, ``1920x1080``), the generator sees
one region of the frame (the speaker's face, or face and shoulders), cropped and resized to its own
bucket size; streaming/composite.py puts its result back. The region comes from face landmarks (mediapipe,
model/lite/face.py) measured on a chunk's first and last source frames, and it stays put while the face
stays well inside it: it moves only when the face leaves its inner margin or changes size a lot
(hysteresis), so the generator's crops never jitter from frame to frame. No face: the last region is
kept, or, before any face was seen, the whole frame (today's behaviour) is used, and the framing says so.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from model.frames import BUCKETS, bucket_size
from model.lite.analysis import find_face
from model.registry import serving_needs
from streaming.errors import InputError

REGIONS = ("face", "upper_body", "full")
# Each generator declares its default region (face and shoulders, "upper_body", unless it needs less) and
# whether it works at any size (model/serving.py): those get the region at its own pixels (no resampling
# round trip), up to the bucket's area; the others (a diffusion model trained on buckets) at the bucket size.
BUCKET = 480  # the generator's bucket table for regions (its standard resolution)
# Region shape in face-box units (width, height of the landmarks' box): margins left/right, above, below.
SHAPES = {"face": (0.55, 0.6, 0.55), "upper_body": (1.4, 0.7, 1.8)}
# Region aspect (bucket key, h/w) per kind: fixed, so the generator's size does not change with the face.
ASPECTS = {"face": "1.00", "upper_body": "1.22"}
INNER_MARGIN = 0.15  # the face (grown by this share of its size) must stay inside the region
MAX_SCALE_CHANGE = 1.4  # the face this much larger or smaller than when the region was chosen: choose again


@dataclasses.dataclass(frozen=True)
class Box:
    """A rectangle of the frame in pixels."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    def contains(self, top: float, left: float, bottom: float, right: float) -> bool:
        return self.top <= top and self.left <= left and bottom <= self.bottom and right <= self.right


@dataclasses.dataclass(frozen=True)
class Framing:
    """Where the generator works in the frame: ``box`` (source pixels) at ``work`` (height, width) pixels."""

    box: Box
    work: tuple[int, int]
    frame: tuple[int, int]  # (height, width) of the whole frame
    kind: str  # the region asked for (face, upper_body, full)
    found: bool = True  # False: no face was found and this is a fallback (the last region, or the whole frame)
    face_width: float = 0.0  # of the face the region was chosen around


def framing_info(framing: Framing | None) -> dict:
    """What a chunk's report says of its region (nothing without one)."""
    if framing is None:
        return {}
    box = framing.box
    used = "region" if framing.found else ("last region (no face found)" if framing.face_width
                                          else "whole frame (no face found)")
    return {"region": framing.kind, "region_box": f"{box.width}x{box.height}+{box.left}+{box.top}",
            "region_used": used}


def region_option(generator: str, options: dict) -> tuple[str, dict]:
    """The ``region`` generator option (handled here, for any generator) and the generator's other options."""
    rest = dict(options)
    region = str(rest.pop("region", serving_needs(generator).region)).strip().lower()
    if region not in REGIONS:
        raise InputError(f"bad region {region!r}: accepted are {', '.join(REGIONS)}")
    return region, rest


def whole_frame(frame: tuple[int, int], kind: str = "full", found: bool = True, any_size: bool = False) -> Framing:
    """The whole frame at the bucket of its shape: the centre crop the generator works on at a bucket size."""
    height, width = frame
    work = bucket_size(height, width, BUCKETS[BUCKET])
    scale = max(work[0] / height, work[1] / width)
    box_h, box_w = min(height, round(work[0] / scale)), min(width, round(work[1] / scale))
    box = Box((height - box_h) // 2, (width - box_w) // 2, box_h, box_w)
    return Framing(box, _own_size(box, work) if any_size else work, frame, kind, found)


def _own_size(box: Box, bucket: tuple[int, int]) -> tuple[int, int]:
    """The region's own size, scaled down to the bucket's area when larger."""
    scale = min(1.0, ((bucket[0] * bucket[1]) / (box.height * box.width)) ** 0.5)
    return max(16, round(box.height * scale)), max(16, round(box.width * scale))


def nominal_work(kind: str, frame: tuple[int, int]) -> tuple[int, int]:
    """The size a bucket generator works at for a region of ``kind`` (a face found): what its costs are
    predicted at."""
    return whole_frame(frame).work if kind == "full" else BUCKETS[BUCKET][ASPECTS[kind]]


def framing_around(face: tuple[float, float, float, float], kind: str, frame: tuple[int, int],
                   any_size: bool = False, face_width: float | None = None) -> Framing:
    """The region of ``kind`` around a face box (top, left, bottom, right), at the kind's fixed aspect,
    moved (and if need be shrunk) to lie inside the frame."""
    top, left, bottom, right = face
    face_w, face_h = right - left, bottom - top
    side, above, below = SHAPES[kind]
    x0, x1 = left - side * face_w, right + side * face_w
    y0, y1 = top - above * face_h, bottom + below * face_h
    work = BUCKETS[BUCKET][ASPECTS[kind]]
    aspect = work[0] / work[1]
    width, height = x1 - x0, y1 - y0
    if height / width < aspect:
        height = width * aspect
    else:
        width = height / aspect
    shrink = min(1.0, frame[0] / height, frame[1] / width)
    height, width = max(16, int(height * shrink)), max(16, int(width * shrink))
    centre_y, centre_x = (y0 + y1) / 2, (x0 + x1) / 2
    box_top = int(np.clip(round(centre_y - height / 2), 0, frame[0] - height))
    box_left = int(np.clip(round(centre_x - width / 2), 0, frame[1] - width))
    box = Box(box_top, box_left, height, width)
    return Framing(box, _own_size(box, work) if any_size else work, frame, kind, True, face_width or face_w)


def face_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """(top, left, bottom, right) of landmark points (x, y)."""
    return float(points[:, 1].min()), float(points[:, 0].min()), float(points[:, 1].max()), float(points[:, 0].max())


def union(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


class RegionFinder:
    """Chooses each chunk's region from the faces in its frames, keeping the last one while it still fits.

    ``landmarks`` finds a face's landmark points (x, y) in an RGB frame, or None; by default mediapipe's
    face mesh, then its full-range detector for faces too small for the mesh's own."""

    def __init__(self, kind: str, frame: tuple[int, int] = (0, 0),
                 landmarks: Callable[[np.ndarray], np.ndarray | None] | None = None, any_size: bool = False) -> None:
        if kind not in REGIONS:
            raise InputError(f"bad region {kind!r}: accepted are {', '.join(REGIONS)}")
        self.kind = kind
        self.frame = tuple(frame)  # (height, width): taken from the frames it is given
        self.any_size = any_size  # the generator works at any size: the region at its own pixels
        self._finder = None
        self._landmarks = landmarks
        self.current: Framing | None = None
        self.moves = 0  # times the region moved after it was first chosen

    def choose(self, frames: list[np.ndarray], faces: list | None = None) -> Framing:
        """The region for a stretch of frames (e.g. a chunk's first and last); ``faces``: their landmarks
        when already known (a shared source's analysis, model/lite/analysis.py), else found here."""
        if tuple(frames[0].shape[:2]) != self.frame:  # a live source's first frame said its size
            self.frame, self.current = tuple(frames[0].shape[:2]), None
        if self.kind == "full":
            return whole_frame(self.frame, any_size=self.any_size)
        found = map(self._find, frames) if faces is None else faces
        faces = [face_box(points) for points in found if points is not None]
        if not faces:
            if self.current is not None and self.current.found:
                return dataclasses.replace(self.current, found=False)  # the last region, said to be kept
            return whole_frame(self.frame, self.kind, False, self.any_size)
        face, width = union(faces), max(b[3] - b[1] for b in faces)
        if self.current is None or not self.current.found or not all(map(self._still_fits, faces)):
            self.moves += self.current is not None and self.current.found
            self.current = framing_around(face, self.kind, self.frame, self.any_size, width)
        return self.current

    def _still_fits(self, face: tuple[float, float, float, float]) -> bool:
        top, left, bottom, right = face
        width = right - left
        scale = width / max(self.current.face_width, 1e-6)
        if not 1 / MAX_SCALE_CHANGE <= scale <= MAX_SCALE_CHANGE:
            return False
        margin_x, margin_y = INNER_MARGIN * width, INNER_MARGIN * (bottom - top)
        return self.current.box.contains(top - margin_y, left - margin_x, bottom + margin_y, right + margin_x)

    def _find(self, image: np.ndarray) -> np.ndarray | None:
        if self._landmarks is not None:
            return self._landmarks(image)
        if self._finder is None:
            from model.lite.face import FaceLandmarks  # mediapipe: only once a region is needed

            self._finder = FaceLandmarks(max_faces=2)
        return find_face(self._finder, image)

    def close(self) -> None:
        if self._finder is not None:
            self._finder.close()
            self._finder = None


def region_finder(size, generator: str, options: dict, frame: tuple[int, int],
                  speakers: int = 1) -> tuple[RegionFinder | None, dict]:
    """The finder of a session's or dub's region (None: the generator works on whole frames, as with a
    bucket or a generator size), and the generator options without ``region``."""
    from streaming.source import OutputSize

    if not isinstance(size, OutputSize):
        if "region" in options:
            raise InputError(f"region={options['region']} needs an output size the region is cut from: accepted "
                             "are --size source or a WxH such as 1920x1080")
        return None, dict(options)
    kind, rest = region_option(generator, options)
    # Two speakers: both faces must be in the generator's view; the whole frame has them.
    return RegionFinder("full" if speakers > 1 else kind, frame, any_size=serving_needs(generator).any_size), rest


def session_region(size, region: str | None, generator: str) -> str | None:
    """The region a live session's generator works on (None: whole frames, as with a bucket size)."""
    from streaming.source import OutputSize

    if not isinstance(size, OutputSize):
        return None
    return region or serving_needs(generator).region
