"""Typed records passed between the stages of keyface.

Images are always ``numpy.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB order.
Landmarks and keypoints are ``float32`` arrays of shape ``(N, 2)`` (or ``(N, 3)``) in pixel
units of the image they belong to, ``x`` to the right and ``y`` down.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Raise ``ValueError`` unless ``image`` is an ``(H, W, 3)`` uint8 array; return it."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"{name} must be an (H, W, 3) array, got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {image.dtype}")
    return image


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself."""

    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    codec: str = ""

    @property
    def duration(self) -> float | None:
        if self.frame_count is None or self.fps <= 0:
            return None
        return float(self.frame_count / self.fps)


@dataclass(frozen=True)
class Frame:
    """One decoded RGB frame and its position in the video."""

    index: int
    image: np.ndarray
    time: float = 0.0

    def __post_init__(self) -> None:
        check_image(self.image, "Frame.image")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class CropBox:
    """A square crop of a source frame, kept so the face can be pasted back.

    ``(cx, cy)`` is the centre and ``side`` the side length, in source pixels. The box may
    extend past the frame border (the outside is filled by edge replication when cropping).
    """

    cx: float
    cy: float
    side: float
    source_width: int
    source_height: int

    @property
    def x0(self) -> float:
        return self.cx - self.side / 2

    @property
    def y0(self) -> float:
        return self.cy - self.side / 2

    def to_crop_matrix(self, size: int) -> np.ndarray:
        """2x3 affine matrix mapping source pixel coordinates to ``size x size`` crop pixels."""
        s = size / self.side
        return np.array(
            [[s, 0.0, -self.x0 * s + 0.5 * s - 0.5], [0.0, s, -self.y0 * s + 0.5 * s - 0.5]],
            dtype=np.float64,
        )

    def to_source_matrix(self, size: int) -> np.ndarray:
        """2x3 affine matrix mapping crop pixel coordinates back to source pixels."""
        m = self.to_crop_matrix(size)
        a = m[:, :2]
        inv = np.linalg.inv(a)
        return np.hstack([inv, -inv @ m[:, 2:]])

    @classmethod
    def full(cls, width: int, height: int) -> CropBox:
        """The identity crop of a square frame (used for inputs that are already crops)."""
        return cls(width / 2, height / 2, float(max(width, height)), width, height)
