"""Synthetic face states made from real landmarks, shared by the metric and the codec tests."""

from __future__ import annotations

import numpy as np

from keyface.facemesh import LEFT_EYE_CORNERS, LEFT_IRIS, RIGHT_EYE_CORNERS, RIGHT_IRIS


def glance(landmarks: np.ndarray, share: float) -> np.ndarray:
    """Both irises moved sideways by ``share`` of their eye's width, the same way on the
    picture (one towards its eye's inner corner, the other towards its outer one)."""
    out = landmarks.copy()
    for iris, corners, sign in (
        (RIGHT_IRIS, RIGHT_EYE_CORNERS, 1),
        (LEFT_IRIS, LEFT_EYE_CORNERS, -1),
    ):
        axis = out[corners[1], :2] - out[corners[0], :2]
        out[list(iris), :2] += sign * share * axis
    return out
