"""The ``lite`` generator: re-animates the lower face from the speech on the CPU, with no downloaded weights.

Per chunk: mouth opening and width per frame from the audio (model/lite/speech.py), face landmarks from
mediapipe's face mesh (model/lite/face.py), a displacement-field warp of lips and jaw with the inner mouth
painted in (model/lite/mouth.py). A still source animates the reference frame (its landmarks are measured
once and cached); a video source animates each source frame, so its head and camera motion are kept.
Frames without a face pass unchanged, and the result says so.

Chunk borders: the mouth parameters are a function of absolute time and the frame animated is the same,
so consecutive chunks agree on the frames they share; when the previous chunk came from elsewhere (a
fallback, another generator) the difference to its last frame is faded out over the first new frames.

One generator owns one face tracker, which is stateful (video tracking) and not thread-safe: calls to
``generate`` on the same instance are serialised by a lock; use one instance per worker for parallelism.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from model.base import ChunkRequest, ChunkResult
from model.lite import mouth, speech
from model.lite.face import FaceLandmarks

FADE_FRAMES = 4  # frames over which a jump to the previous chunk's last frame is faded out


class LiteGenerator:
    name = "lite"
    audio_margins = speech.MARGINS
    default_color_correction = 0.0  # colours already match: the frame is warped, not synthesised
    applies_color_correction = False

    def __init__(self) -> None:
        self._faces = FaceLandmarks()
        self._lock = threading.Lock()
        self._still: np.ndarray | None = None  # the last still reference and its geometry
        self._still_geometry: mouth.MouthGeometry | None = None

    def generate(self, request: ChunkRequest) -> ChunkResult:
        with self._lock:
            return self._generate(request)

    def _generate(self, request: ChunkRequest) -> ChunkResult:
        started = time.perf_counter()
        track = speech.mouth_track(request)
        first_new = request.num_context
        # With context, also remake the last context frame to see whether it joins our frames.
        first = first_new - 1 if first_new > 0 else 0
        frames: list[np.ndarray] = []
        found: list[bool] = []
        for index in range(first, request.num_frames):
            image, geometry = self._frame_geometry(request, index)
            found.append(geometry is not None)
            if geometry is None:
                frames.append(image)
            else:
                frames.append(mouth.render(image, geometry, float(track.opening[index]), float(track.width[index])))
        if first < first_new:
            frames = self._join(request.context_frames[-1], frames[0], frames[1:])
            found = found[1:]
        new_opening = track.opening[first_new:]
        info = {"face_found": bool(any(found)), "face_frames": int(sum(found)), "frames": len(found),
                "mean_opening": round(float(new_opening.mean()), 3) if new_opening.size else 0.0,
                "animated": bool(any(found))}
        return ChunkResult(np.stack(frames), time.perf_counter() - started, info)

    def _frame_geometry(self, request: ChunkRequest, index: int) -> tuple[np.ndarray, mouth.MouthGeometry | None]:
        if request.source_frames is None:
            return request.reference_frame, self._still_geometry_of(request.reference_frame)
        image = request.source_frames[index]
        landmarks = self._faces.track(image)
        return image, None if landmarks is None else mouth.measure(image, landmarks)

    def _still_geometry_of(self, image: np.ndarray) -> mouth.MouthGeometry | None:
        if self._still is None or self._still.shape != image.shape or not np.array_equal(self._still, image):
            landmarks = self._faces.detect(image)
            self._still_geometry = None if landmarks is None else mouth.measure(image, landmarks)
            self._still = image.copy()
        return self._still_geometry

    @staticmethod
    def _join(previous: np.ndarray, remade: np.ndarray, new: list[np.ndarray]) -> list[np.ndarray]:
        """Fade out the difference between the previous chunk's last frame and our remake of it."""
        residual = previous.astype(np.float32) - remade.astype(np.float32)
        if float(np.abs(residual).mean()) < 0.25:
            return new
        joined = list(new)
        for k in range(min(FADE_FRAMES, len(new))):
            weight = 1.0 - (k + 1) / (FADE_FRAMES + 1)
            joined[k] = np.clip(new[k] + weight * residual + 0.5, 0, 255).astype(np.uint8)
        return joined

    def close(self) -> None:
        self._faces.close()


def build(device: str | None = None, **options) -> LiteGenerator:
    """The lite generator. It always runs on the CPU (``device`` is accepted and ignored, so that callers
    can pass the same options to every generator) and takes no weights or other options."""
    if options:
        from model.errors import InputError

        raise InputError(f"the lite generator takes no {', '.join(sorted(options))} option "
                         "(it needs no weights and runs on the CPU)")
    return LiteGenerator()
