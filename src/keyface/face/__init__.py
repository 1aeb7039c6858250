"""Faces: detection, landmarks, a stable square crop per clip, and pasting a crop back."""

from keyface.face.crop import (
    ALREADY_CROPPED,
    CropTracker,
    apply_crop,
    box_for_face,
    frame_coverage,
    plan_crop,
    settle_crop,
    snap_to_grid,
)
from keyface.face.detect import FaceBox, FaceDetector, FaceNotFoundError
from keyface.face.landmarks import LandmarkTracker
from keyface.face.paste import blend_mask, paste_back

__all__ = [
    "ALREADY_CROPPED",
    "CropTracker",
    "FaceBox",
    "FaceDetector",
    "FaceNotFoundError",
    "LandmarkTracker",
    "apply_crop",
    "blend_mask",
    "box_for_face",
    "frame_coverage",
    "paste_back",
    "plan_crop",
    "settle_crop",
    "snap_to_grid",
]
