"""Face detection boxes (mediapipe FaceDetection / BlazeFace).

The full-range model is tried first because it finds small, far faces (a person sitting back
from a 1280x720 webcam, or standing in a portrait video); it is less reliable on faces that fill
most of the frame, so when it finds nothing the short-range model is tried on the same image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from keyface.face._native_log import native_stderr_silenced
from keyface.types import check_image

FULL_RANGE = 1
SHORT_RANGE = 0


class FaceNotFoundError(Exception):
    """No face was detected in a video (or in the frames of it that were examined)."""


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box in pixels of the image it was found in.

    ``(x, y)`` is the top-left corner, ``w`` and ``h`` the size and ``score`` the detector's
    confidence in ``[0, 1]``. The mediapipe box spans about the eyebrows/mid-forehead to the
    chin and cheek to cheek, so hair, ears and neck are outside it.
    """

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def size(self) -> float:
        """``max(w, h)``: the scale measure used for cropping."""
        return max(self.w, self.h)

    @property
    def area(self) -> float:
        return self.w * self.h


class FaceDetector:
    """Find faces in RGB images with mediapipe FaceDetection.

    ``detect`` runs the full-range model and, when that finds nothing, the short-range one.
    Use as a context manager (or call :meth:`close`). Not thread-safe.
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        self.min_confidence = min_confidence
        self._models: dict[int, Any] = {}

    def _model(self, selection: int) -> Any:
        model = self._models.get(selection)
        if model is None:
            os.environ.setdefault("GLOG_minloglevel", "2")
            import mediapipe as mp  # imported lazily: it is slow to import

            with native_stderr_silenced():
                model = mp.solutions.face_detection.FaceDetection(
                    model_selection=selection, min_detection_confidence=self.min_confidence
                )
                # The graph starts (and logs) on its first image.
                model.process(np.zeros((64, 64, 3), dtype=np.uint8))
            self._models[selection] = model
        return model

    def _run(self, image: np.ndarray, selection: int) -> list[FaceBox]:
        result = self._model(selection).process(image)
        if not result.detections:
            return []
        h, w = image.shape[:2]
        boxes = []
        for det in result.detections:
            rel = det.location_data.relative_bounding_box
            bw, bh = rel.width * w, rel.height * h
            if bw <= 1 or bh <= 1:
                continue
            score = float(det.score[0]) if det.score else 0.0
            boxes.append(FaceBox(rel.xmin * w, rel.ymin * h, bw, bh, score))
        return boxes

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """All faces in ``image`` (RGB uint8), most prominent first (by ``score * area``)."""
        check_image(image)
        image = np.ascontiguousarray(image)
        boxes = self._run(image, FULL_RANGE)
        if not boxes:
            boxes = self._run(image, SHORT_RANGE)
        return sorted(boxes, key=lambda b: b.score * b.area, reverse=True)

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
