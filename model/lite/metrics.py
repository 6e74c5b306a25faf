"""Measuring a re-animated mouth: lip gap per frame against the speech loudness, and how much of the
frame outside the lower face changed; with two speakers, each face's lip gap against each speaker's
loudness (its own speech, and the other's: the cross-talk). Used by the tests and bench/bench_lite.py."""

from __future__ import annotations

import numpy as np

from model.base import SAMPLES_PER_FRAME
from model.lite import face
from model.speakers import SpeakerError, SpeakerFaces


def loudness_envelope(samples: np.ndarray, num_frames: int, floor_db: float = -60.0) -> np.ndarray:
    """Per 25 fps frame: RMS level of the speech in dB full scale, floored at ``floor_db``."""
    padded = np.zeros(num_frames * SAMPLES_PER_FRAME, np.float32)
    usable = min(samples.size, padded.size)
    padded[:usable] = samples[:usable]
    rms = np.sqrt(np.mean(padded.reshape(num_frames, SAMPLES_PER_FRAME) ** 2, axis=1))
    return np.maximum(20 * np.log10(rms + 1e-9), floor_db)


def lip_gaps(frames: np.ndarray, faces: face.FaceLandmarks) -> np.ndarray:
    """Distance between the inner lips (landmarks 13 and 14) per frame, in pixels; NaN without a face.
    Each frame is measured on its own (no tracking), so one frame cannot bias the next."""
    upper, lower = face.INNER_LIP_MIDDLE
    gaps = np.full(len(frames), np.nan)
    for i, image in enumerate(frames):
        points = faces.detect(np.ascontiguousarray(image))
        if points is not None:
            gaps[i] = float(np.linalg.norm(points[lower] - points[upper]))
    return gaps


def speaker_lip_gaps(frames: np.ndarray, faces: face.FaceLandmarks,
                     picks: SpeakerFaces = SpeakerFaces()) -> np.ndarray:
    """``[2, frames]``: the inner-lip gap of speaker 1's and speaker 2's face per frame (NaN where the two
    faces are not both found). ``faces`` must look for several faces (``max_faces`` >= 2)."""
    upper, lower = face.INNER_LIP_MIDDLE
    gaps = np.full((2, len(frames)), np.nan)
    for i, image in enumerate(frames):
        try:
            pair = picks.pick(faces.detect_all(np.ascontiguousarray(image)), image.shape[1])
        except SpeakerError:
            continue
        for speaker, points in enumerate(pair):
            gaps[speaker, i] = float(np.linalg.norm(points[lower] - points[upper]))
    return gaps


def cross_talk(gaps: np.ndarray, envelopes: np.ndarray) -> np.ndarray:
    """``[face, speech]`` correlations: the diagonal is each face against its own speech, the rest each
    face against the other speaker's speech (what a face should not follow)."""
    return np.array([[correlation(gaps[f], envelopes[s]) for s in range(len(envelopes))] for f in range(len(gaps))])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the frames where both are known."""
    known = np.isfinite(a) & np.isfinite(b)
    if known.sum() < 3 or np.std(a[known]) == 0 or np.std(b[known]) == 0:
        return float("nan")
    return float(np.corrcoef(a[known], b[known])[0, 1])


def lower_face_box(landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): from the nose base to below the chin, as wide as the jaw, with room
    for the chin to drop over the neck (as much again as the mouth-to-chin distance)."""
    jaw = landmarks[face.JAW]
    mouth_y = landmarks[list(face.MOUTH_CORNERS)][:, 1].mean()
    chin_y = landmarks[face.CHIN, 1]
    margin = 0.1 * (jaw[:, 0].max() - jaw[:, 0].min())
    top = landmarks[face.SUBNASALE, 1] - margin
    bottom = chin_y + (chin_y - mouth_y)
    left, right = jaw[:, 0].min() - margin, jaw[:, 0].max() + margin
    height, width = shape[:2]
    return (max(int(np.floor(top)), 0), min(int(np.ceil(bottom)), height),
            max(int(np.floor(left)), 0), min(int(np.ceil(right)), width))


def outside_difference(frames: np.ndarray, references: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, float]:
    """Mean and max absolute difference (0..255) between frames and references outside ``box``."""
    top, bottom, left, right = box
    outside = np.ones(frames.shape[1:3], bool)
    outside[top:bottom, left:right] = False
    diff = np.abs(frames.astype(np.int16) - np.asarray(references).astype(np.int16))[:, outside]
    return float(diff.mean()), float(diff.max())
