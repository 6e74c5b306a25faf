"""Face landmarks from mediapipe 0.10.21's face mesh, which ships its models inside the wheel (Apache-2.0).

One ``FaceLandmarks`` per generator: it holds two mediapipe graphs (a detector for still images and a
tracker for video, which reuses the previous frame's face region) and is not safe for concurrent use; the
generator serialises calls. mediapipe's native code logs start-up noise (TF-Lite delegate, feedback-tensor
warnings) straight to file descriptor 2 when a graph first runs; that happens once, at construction, while
stderr is captured and everything else that was written is passed on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import numpy as np

# mediapipe face-mesh indices (FACEMESH_LIPS, FACEMESH_FACE_OVAL), image-left to image-right on a frontal face.
INNER_UPPER_LIP = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LOWER_LIP = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
OUTER_UPPER_LIP = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
OUTER_LOWER_LIP = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
JAW = [132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361]
MOUTH_CORNERS = (61, 291)
INNER_LIP_MIDDLE = (13, 14)  # upper, lower
OUTER_LIP_MIDDLE = (0, 17)
BELOW_MOUTH_SKIN = [18, 200, 199, 175, 32, 262]  # chin and beside it
SUBNASALE = 2
CROP_SIDE = 2.2  # several faces: each is measured on a square this many face-box sides wide
CHIN = 152

NOISE = ("TensorFlow Lite XNNPACK delegate", "absl::InitializeLog", "inference_feedback_manager",
         "landmark_projection_calculator")


@contextlib.contextmanager
def quiet_native_stderr():
    """Capture file descriptor 2 for the block; afterwards re-emit what was written, minus mediapipe's noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(marker in line for marker in NOISE)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class FaceLandmarks:
    """478 face landmarks in pixels (x, y), or None when there is no face."""

    def __init__(self, min_confidence: float = 0.5, max_faces: int = 1) -> None:
        with quiet_native_stderr():
            from mediapipe.python.solutions import face_detection, face_mesh

            options = dict(max_num_faces=1, refine_landmarks=True, min_detection_confidence=min_confidence,
                           min_tracking_confidence=min_confidence)
            self._still = face_mesh.FaceMesh(static_image_mode=True, **options)
            self._video = face_mesh.FaceMesh(static_image_mode=False, **options)
            # The graphs log on their first face; run them once now, on a bundled public-domain portrait.
            warm = _warm_up_image()
            self._still.process(warm)
            self._video.process(warm)
            self._video.process(np.zeros((64, 64, 3), np.uint8))  # forget the warm-up face
            # Several faces (two speakers): the face mesh's own detector is short-range and, on a wide
            # picture of two people, finds one; the full-range detector finds each face, which the mesh
            # then measures on a crop around it.
            self.max_faces = max_faces
            self._finder = None
            if max_faces > 1:
                self._finder = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)
                self._finder.process(warm)

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks of a still image (full detection, no tracking)."""
        return _points(self._still.process(image), image.shape)

    def track(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks of the next video frame (tracks the face from the previous call)."""
        return _points(self._video.process(image), image.shape)

    def detect_all(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face (up to ``max_faces``; each measured on its own), left to right."""
        if self._finder is None:
            raise RuntimeError("detect_all needs FaceLandmarks(max_faces=2 or more)")
        height, width = image.shape[:2]
        faces = []
        for detection in self._finder.process(image).detections or []:
            box = detection.location_data.relative_bounding_box
            centre_x, centre_y = (box.xmin + box.width / 2) * width, (box.ymin + box.height / 2) * height
            half = CROP_SIDE / 2 * max(box.width * width, box.height * height)
            left, top = max(int(centre_x - half), 0), max(int(centre_y - half), 0)
            right, bottom = min(int(centre_x + half), width), min(int(centre_y + half), height)
            if right - left < 16 or bottom - top < 16:
                continue
            points = self.detect(np.ascontiguousarray(image[top:bottom, left:right]))
            if points is not None:
                faces.append(points + np.array([left, top], np.float32))
        faces.sort(key=lambda points: float(points[:, 0].mean()))
        return faces[: self.max_faces]

    def close(self) -> None:
        if self._finder is not None:
            self._finder.close()
        self._still.close()
        self._video.close()


def _points(result, shape) -> np.ndarray | None:
    if not result.multi_face_landmarks:
        return None
    height, width = shape[:2]
    marks = result.multi_face_landmarks[0].landmark
    return np.array([(p.x * width, p.y * height) for p in marks], np.float32)


def _warm_up_image() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[::2, ::2])
