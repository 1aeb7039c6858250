"""The generator's input planes, computed the same way in training and in the decoder."""

from __future__ import annotations

import cv2
import numpy as np

from keyface.facemesh import INNER_MOUTH, LEFT_EYE, RIGHT_EYE
from keyface.generator.model import IN_CHANNELS

LOG_AREA_CLIP = 2.0


def log_area_ratio(flow: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32: log of the reference area each output pixel samples (the Jacobian
    determinant of the backward flow), clipped to +-2. Negative where the warp stretches the
    reference (an opening mouth, uncovered background), positive where it compresses it."""
    fx, fy = flow[..., 0], flow[..., 1]
    dxx = np.gradient(fx, axis=1)
    dxy = np.gradient(fx, axis=0)
    dyx = np.gradient(fy, axis=1)
    dyy = np.gradient(fy, axis=0)
    det = np.abs(dxx * dyy - dxy * dyx)
    out = np.log(np.maximum(det, 1e-3))
    return np.clip(out, -LOG_AREA_CLIP, LOG_AREA_CLIP).astype(np.float32)


def part_masks(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(2, H, W)`` float32: the inner mouth and both eye openings of ``keypoints``, filled
    (antialiased)."""
    pts = np.asarray(keypoints, dtype=np.float64)[:, :2]
    out = np.zeros((2, height, width), dtype=np.uint8)
    shift = 4
    for plane, polygons in ((0, (INNER_MOUTH,)), (1, (LEFT_EYE, RIGHT_EYE))):
        for poly in polygons:
            p = np.round(pts[list(poly)] * (1 << shift)).astype(np.int32)
            cv2.fillPoly(out[plane], [p], 255, cv2.LINE_AA, shift)
    return out.astype(np.float32) / 255.0


def generator_input(warped: np.ndarray, flow: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """``(6, H, W)`` float32 network input from the warped reference (uint8 RGB), the flow
    that produced it and the driving keypoints."""
    height, width = warped.shape[:2]
    planes = np.empty((IN_CHANNELS, height, width), dtype=np.float32)
    planes[:3] = warped.transpose(2, 0, 1).astype(np.float32) * (2.0 / 255.0) - 1.0
    planes[3] = log_area_ratio(flow) / LOG_AREA_CLIP
    planes[4:6] = part_masks(keypoints, height, width)
    return planes


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """Network output ``(3, H, W)`` in [-1, 1] to an ``(H, W, 3)`` uint8 RGB image."""
    img = (np.asarray(frame, dtype=np.float32).transpose(1, 2, 0) + 1.0) * 127.5
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
