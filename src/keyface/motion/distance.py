"""Motion distance between a reference and a driving frame, without decoding (ZTE quality gate).

The distance has a *position* term, the mean keypoint displacement relative to the face size,
and a *local-affine* term, how far the local 2x2 Jacobians of ``REGIONS`` face regions are from
the identity (the analogue of FOMM's 10 keypoints + Jacobians), weighted 2:1:

    d = (2 * mean|kp_drv - kp_ref| / face_size + mean ||J_r - I||_F) / 3

A large ``d`` means the warp has to move the reference far or deform it strongly, where the
reconstruction degrades; the encoder then codes a new keyframe instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

REGIONS = 10
POSITION_WEIGHT = 2.0
AFFINE_WEIGHT = 1.0


@dataclass(frozen=True)
class MotionDistance:
    position: float
    affine: float

    @property
    def value(self) -> float:
        return (POSITION_WEIGHT * self.position + AFFINE_WEIGHT * self.affine) / (
            POSITION_WEIGHT + AFFINE_WEIGHT
        )


@cache
def _regions(num_points: int, seed_shape_key: bytes) -> tuple[np.ndarray, ...]:
    shape = np.frombuffer(seed_shape_key, dtype=np.float64).reshape(num_points, 2)
    # Farthest-point sampling gives REGIONS well spread centres; each point joins the nearest.
    centres = [int(np.argmin(shape[:, 1]))]
    dist = np.linalg.norm(shape - shape[centres[0]], axis=1)
    while len(centres) < REGIONS:
        nxt = int(np.argmax(dist))
        centres.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(shape - shape[nxt], axis=1))
    owner = np.argmin(
        np.linalg.norm(shape[:, None, :] - shape[centres][None, :, :], axis=2), axis=1
    )
    return tuple(np.flatnonzero(owner == r) for r in range(REGIONS))


def face_regions(mean_shape: np.ndarray) -> tuple[np.ndarray, ...]:
    """Index arrays of the ``REGIONS`` face regions, derived from a canonical 2-D shape."""
    shape = np.ascontiguousarray(mean_shape[:, :2], dtype=np.float64)
    return _regions(len(shape), shape.tobytes())


def motion_distance(
    ref_kp: np.ndarray, drv_kp: np.ndarray, regions: tuple[np.ndarray, ...]
) -> MotionDistance:
    """Distance between two keypoint sets of the same face (see module docstring)."""
    ref = np.asarray(ref_kp, dtype=np.float64)
    drv = np.asarray(drv_kp, dtype=np.float64)
    centred = ref - ref.mean(axis=0)
    face_size = float(np.sqrt((centred**2).sum(axis=1).mean())) * 2.0
    position = float(np.linalg.norm(drv - ref, axis=1).mean()) / max(face_size, 1e-6)
    total = 0.0
    for idx in regions:
        a = ref[idx] - ref[idx].mean(axis=0)
        b = drv[idx] - drv[idx].mean(axis=0)
        jac, *_ = np.linalg.lstsq(a, b, rcond=None)  # b ~= a @ jac
        total += float(np.linalg.norm(jac.T - np.eye(2)))
    return MotionDistance(position=position, affine=total / len(regions))
