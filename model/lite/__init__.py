"""The ``lite`` generator: re-animates the lower face from the speech on the CPU, with no downloaded weights.

Per chunk: mouth opening and width per frame from the audio (model/lite/speech.py), face landmarks from
mediapipe's face mesh (model/lite/face.py), a displacement-field warp of lips and jaw with the inner mouth
painted in (model/lite/mouth.py). A still source animates the reference frame (its landmarks are measured
once and cached); a video source animates each source frame, so its head and camera motion are kept.
Frames without a face pass unchanged, and the result says so.

Two speakers (a request with ``second_audio``): each speaker's mouth track comes from their own speech
and animates the face ``request.speaker_faces`` picks for them (model/speakers.py), one after the other
on the same frame; a frame where the two faces are not both found passes unchanged.

Chunk borders: the mouth parameters are a function of absolute time and the frame animated is the same,
so consecutive chunks agree on the frames they share; when the previous chunk came from elsewhere (a
fallback, another generator) the difference to its last frame is faded out over the first new frames.

A request may carry the window's landmarks (``source_landmarks``, from the source's shared analysis,
model/lite/analysis.py: sessions on one source track its faces once); the generator then animates those.
One generator owns one face tracker, which is stateful (video tracking) and not thread-safe: calls to
``generate`` on the same instance are serialised by a lock; use one instance per worker for parallelism.
"""

from __future__ import annotations

import functools
import threading
import time

import numpy as np

from model.base import SAMPLES_PER_FRAME, ChunkRequest, ChunkResult
from model.lite import mouth, speech
from model.lite.face import FaceLandmarks
from model.speakers import MAX_FACES, SpeakerError, SpeakerFaces

FADE_FRAMES = 4  # frames over which a jump to the previous chunk's last frame is faded out


class LiteGenerator:
    name = "lite"
    audio_margins = speech.MARGINS
    default_color_correction = 0.0  # colours already match: the frame is warped, not synthesised
    applies_color_correction = False
    uses_source_landmarks = True  # a request's shared landmarks replace its own tracking of the frames

    def __init__(self) -> None:
        _load_face_models()
        self._own_faces: FaceLandmarks | None = None  # made on first use (see _faces)
        self._lock = threading.Lock()
        self._still: np.ndarray | None = None  # the last still reference and its geometry
        self._still_geometry: mouth.MouthGeometry | None = None
        self._all_faces: FaceLandmarks | None = None  # made on the first two-speaker request
        self._still_pair: tuple | None = None  # a still, the picks and the two faces' geometry

    @property
    def _faces(self) -> FaceLandmarks:
        """This instance's own face tracker, made when first needed: a request that carries its source's
        shared landmarks (a video source's, every session's on it) never needs one, and each is two
        mediapipe graphs, 51 MiB (a host worker holds an instance per session)."""
        if self._own_faces is None:
            self._own_faces = FaceLandmarks()
        return self._own_faces

    def generate(self, request: ChunkRequest) -> ChunkResult:
        with self._lock:
            return self._generate(request)

    def _generate(self, request: ChunkRequest) -> ChunkResult:
        started = time.perf_counter()
        tracks = [speech.mouth_track(request)]  # one per speaker
        if request.second_audio is not None:
            window_start = request.start_frame * SAMPLES_PER_FRAME
            tracks.append(speech.mouth_track_for(request.second_audio, window_start - request.audio_offset,
                                                 window_start, request.num_frames))
        first_new = request.num_context
        # With context, also remake the last context frame to see whether it joins our frames.
        first = first_new - 1 if first_new > 0 else 0
        frames: list[np.ndarray] = []
        found: list[bool] = []
        for index in range(first, request.num_frames):
            image, geometries = self._geometries(request, index)
            found.append(geometries is not None)
            for geometry, track in zip(geometries or (), tracks):
                image = mouth.render(image, geometry, float(track.opening[index]), float(track.width[index]))
            frames.append(image)
        if first < first_new:
            frames = self._join(request.context_frames[-1], frames[0], frames[1:])
            found = found[1:]
        info = {"face_found": bool(any(found)), "face_frames": int(sum(found)), "frames": len(found),
                "animated": bool(any(found))}
        openings = [track.opening[first_new:] for track in tracks]
        means = [round(float(o.mean()), 3) if o.size else 0.0 for o in openings]
        if len(tracks) == 1:
            info["mean_opening"] = means[0]
        else:
            info.update(speakers=2, mean_opening_1=means[0], mean_opening_2=means[1])
        return ChunkResult(np.stack(frames), time.perf_counter() - started, info)

    def _geometries(self, request: ChunkRequest, index: int) -> tuple[np.ndarray, tuple | None]:
        """The frame to animate and each speaker's mouth geometry on it (None: not every face found)."""
        if request.second_audio is not None:
            return self._pair_geometry(request, index, request.speaker_faces or SpeakerFaces())
        image, geometry = self._frame_geometry(request, index)
        return image, None if geometry is None else (geometry,)

    def _pair_geometry(self, request: ChunkRequest, index: int, picks: SpeakerFaces):
        """The frame and (speaker 1's, speaker 2's) mouth geometry; None when two faces are not found."""
        if self._all_faces is None:
            self._all_faces = FaceLandmarks(max_faces=MAX_FACES)
        if request.source_frames is None:
            image = request.reference_frame
            cached = self._still_pair
            if cached is None or cached[1] != picks or cached[0].shape != image.shape or not np.array_equal(
                    cached[0], image):
                self._still_pair = (image.copy(), picks, _measure_pair(image, self._all_faces.detect_all(image), picks))
            return image, self._still_pair[2]
        image = request.source_frames[index]
        return image, _measure_pair(image, self._all_faces.detect_all(image), picks)

    def _frame_geometry(self, request: ChunkRequest, index: int) -> tuple[np.ndarray, mouth.MouthGeometry | None]:
        if request.source_frames is None:
            return request.reference_frame, self._still_geometry_of(request.reference_frame)
        image = request.source_frames[index]
        shared = request.source_landmarks
        landmarks = self._faces.track(image) if shared is None else shared[index]
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
        if self._own_faces is not None:
            self._own_faces.close()
        if self._all_faces is not None:
            self._all_faces.close()


def _measure_pair(image: np.ndarray, faces: list[np.ndarray], picks: SpeakerFaces) -> tuple | None:
    """(speaker 1's, speaker 2's) mouth geometry, or None when the picks do not find two faces (or a
    mouth is too small to animate)."""
    try:
        pair = picks.pick(faces, image.shape[1], "the frame")
    except SpeakerError:
        return None
    geometries = tuple(mouth.measure(image, landmarks) for landmarks in pair)
    return None if None in geometries else geometries


@functools.cache
def _load_face_models() -> None:
    """Load mediapipe's face models once per process, with its first generator (0.4 s; a tracker made
    after that takes 0.04 s): a session's first chunk that needs its own tracker does not pay for it."""
    FaceLandmarks().close()


def build(device: str | None = None, **options) -> LiteGenerator:
    """The lite generator. It always runs on the CPU (``device`` is accepted and ignored, so that callers
    can pass the same options to every generator) and takes no weights or other options."""
    if options:
        from model.errors import InputError

        raise InputError(f"the lite generator takes no {', '.join(sorted(options))} option "
                         "(it needs no weights and runs on the CPU)")
    return LiteGenerator()
