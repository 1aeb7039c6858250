"""Face-mesh landmarks (mediapipe FaceMesh, 478 points with irises).

Landmarks are returned in pixel units of the image they were measured on: ``x`` and ``y`` in
pixels, ``z`` in the same scale as ``x`` (mediapipe's relative depth multiplied by the width).
"""

from __future__ import annotations

import os
from types import TracebackType

import numpy as np

from keyface.face._native_log import native_stderr_silenced
from keyface.types import check_image

NUM_LANDMARKS = 478
QUIET_FRAMES = 3


class LandmarkTracker:
    """Per-frame face-mesh landmarks for one video (tracking mode) or for still images.

    ``video=True`` lets mediapipe track the face from frame to frame (faster, steadier); feed
    the frames of one video in order. Not thread-safe; one instance per stream.
    """

    def __init__(self, video: bool = True, min_confidence: float = 0.5) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp  # imported lazily: it is slow to import

        with native_stderr_silenced():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=not video,
                max_num_faces=1,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )
        self._frames = 0

    def process(self, image: np.ndarray) -> np.ndarray | None:
        """``(478, 3)`` float32 landmarks of the most prominent face, or ``None``."""
        check_image(image)
        if self._frames < QUIET_FRAMES:  # the graph starts its models (and logs) on these
            with native_stderr_silenced():
                result = self._mesh.process(np.ascontiguousarray(image))
        else:
            result = self._mesh.process(np.ascontiguousarray(image))
        self._frames += 1
        if not result.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        lm = result.multi_face_landmarks[0].landmark
        pts = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float32)
        pts[:, 0] *= w
        pts[:, 1] *= h
        pts[:, 2] *= w
        return pts

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> LandmarkTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
