"""Face-mesh motion: 3-D head pose plus a few expression coefficients on a fitted shape basis.

Per frame, the 478 face-mesh landmarks ``X`` (pixels of a 256 crop, ``z`` in the same scale)
are explained as

    X ~= s * R @ (mean + basis.T @ c) + t

with ``R`` a 3-D rotation (sent as a rotation vector, radians), ``t`` the 2-D translation in
pixels (depth is irrelevant under orthographic projection), ``s`` the scale (sent as
``log s``) and ``c`` the first ``K`` coefficients on an orthonormal basis of shape residuals.
Parameter vector layout: ``[rx, ry, rz, tx, ty, log_s, c_1 .. c_K]``.

The mean shape, the basis, the entropy-coder priors and the quantiser levels come from a model
file fitted on the training people by ``scripts/fit_motion_model.py``; its CRC-32 is written into
every stream so a decoder never rebuilds motion with a different model.
"""

from __future__ import annotations

import zlib
from functools import cache, cached_property
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from keyface.facemesh import (
    LEFT_EYE,
    LEFT_EYE_EAR,
    OUTER_LIPS,
    RIGHT_EYE,
    RIGHT_EYE_EAR,
    eye_aspect_ratio,
    gaze,
    mouth_opening,
)
from keyface.motion.base import REFERENCE_SIZE, FaceState, MotionStatistics, QuantLevel
from keyface.motion.distance import face_regions, motion_distance

NUM_POSE = 6
MODEL_FILE = "facemesh_pca_v1.npz"


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``(s, R, t)`` minimising ``|target - (s R source + t)|^2``; 3-D points.

    ``source`` must be centred (zero mean). Reflections are excluded.
    """
    mu = target.mean(axis=0)
    tc = target - mu
    cov = tc.T @ source / len(source)
    u, sv, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u @ vt) < 0:
        d[2] = -1.0
    rot = (u * d) @ vt
    var = float((source**2).sum() / len(source))
    scale = float((sv * d).sum() / var)
    return scale, rot, mu


def rotation_from_vector(rvec: np.ndarray) -> np.ndarray:
    mat, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))
    return mat


def vector_from_rotation(rot: np.ndarray) -> np.ndarray:
    vec, _ = cv2.Rodrigues(np.asarray(rot, dtype=np.float64))
    return vec.reshape(3)


class MeshFaces:
    """The face state and the DETAIL regions of face-mesh points (478, 2|3): a
    :class:`keyface.motion.base.FaceStateSource` for any set of mesh points, the decoded
    keypoints of the face-mesh representations or the source's landmarks, on which the encoder
    judges the streams of representations whose keypoints name no mouth or eyes (FOMM)."""

    def face_state(self, keypoints: np.ndarray) -> FaceState:
        """Mouth and eye openness and gaze of mesh points (:mod:`keyface.facemesh` measures)."""
        return FaceState(
            mouth=mouth_opening(keypoints), eyes=self.eyes(keypoints), gaze=gaze(keypoints)
        )

    def eyes(self, keypoints: np.ndarray) -> tuple[float, float]:
        """The (right, left) eye aspect ratios of mesh points (the state's ``eyes``)."""
        return (
            eye_aspect_ratio(keypoints, RIGHT_EYE_EAR),
            eye_aspect_ratio(keypoints, LEFT_EYE_EAR),
        )

    def detail_regions(self, keypoints: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
        """Each eye opening, and the outer lips."""
        k = np.asarray(keypoints)[:, :2]
        return {"eyes": (k[list(RIGHT_EYE)], k[list(LEFT_EYE)]), "mouth": (k[list(OUTER_LIPS)],)}


MESH_FACES = MeshFaces()


class FaceMeshPCA:
    """The default motion representation (``name = "facemesh-pca"``)."""

    name = "facemesh-pca"
    version = 1

    def __init__(self, model_path: str | Path | None = None) -> None:
        if model_path is None:
            ref = resources.files("keyface.motion").joinpath("models", MODEL_FILE)
            raw = ref.read_bytes()
        else:
            raw = Path(model_path).read_bytes()
        self.digest = zlib.crc32(raw) & 0xFFFFFFFF
        import io

        with np.load(io.BytesIO(raw)) as z:
            self.mean = z["mean"].astype(np.float64)  # (478, 3), centred, unit RMS radius
            self.basis = z["basis"].astype(np.float64)  # (Kmax, 478, 3), orthonormal rows
            self._stats = MotionStatistics(
                mean=z["param_mean"].astype(np.float64),
                spread=z["param_spread"].astype(np.float64),
                delta_spread=z["param_delta_spread"].astype(np.float64),
            )
            self._level_k = z["level_num_coeffs"].astype(np.int64)
            self._level_steps = z["level_steps"].astype(np.float64)  # (L, 6 + Kmax)
            self.rigid_weights = z["rigid_weights"].astype(np.float64)  # (478,)
        self.num_keypoints = int(self.mean.shape[0])
        self._flat_basis = self.basis.reshape(self.basis.shape[0], -1)
        self._num_coeffs = int(self.basis.shape[0])
        self._wmean = self.mean * self.rigid_weights[:, None]

    # -- configuration -------------------------------------------------------------------
    def with_coefficients(self, num_coeffs: int) -> FaceMeshPCA:
        """A view that analyses with the first ``num_coeffs`` basis vectors only."""
        if not 0 <= num_coeffs <= self.basis.shape[0]:
            raise ValueError(f"num_coeffs must be in 0..{self.basis.shape[0]}")
        clone = object.__new__(FaceMeshPCA)
        clone.__dict__.update(self.__dict__)
        clone._num_coeffs = num_coeffs
        return clone

    @property
    def num_params(self) -> int:
        return NUM_POSE + self._num_coeffs

    @property
    def statistics(self) -> MotionStatistics:
        d = self.num_params
        s = self._stats
        return MotionStatistics(s.mean[:d], s.spread[:d], s.delta_spread[:d])

    @property
    def num_levels(self) -> int:
        return len(self._level_k)

    def quant_level(self, level: int) -> QuantLevel:
        """Quantiser operating point ``level`` (0 = finest); selects the coefficient count."""
        if not 0 <= level < self.num_levels:
            raise ValueError(f"quantiser level must be in 0..{self.num_levels - 1}, got {level}")
        k = int(self._level_k[level])
        return QuantLevel(num_params=NUM_POSE + k, steps=self._level_steps[level, : NUM_POSE + k])

    def for_level(self, level: int) -> FaceMeshPCA:
        return self.with_coefficients(int(self._level_k[level]))

    # -- analysis / synthesis --------------------------------------------------------------
    def analyze(self, landmarks: np.ndarray, size: int) -> np.ndarray:
        x = np.asarray(landmarks, dtype=np.float64)[:, :3] * (REFERENCE_SIZE / size)
        scale, rot, t = self._pose(x)
        canon = (x - t) @ rot / scale - self.mean
        coeffs = self._flat_basis[: self._num_coeffs] @ canon.reshape(-1)
        out = np.empty(self.num_params)
        out[:3] = vector_from_rotation(rot)
        out[3:5] = t[:2]
        out[5] = np.log(scale)
        out[NUM_POSE:] = coeffs
        return out

    def _pose(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Weighted similarity fit of the mean shape to ``x`` (rigid points weigh most)."""
        w = self.rigid_weights[:, None]
        wsum = float(self.rigid_weights.sum())
        mu_x = (x * w).sum(axis=0) / wsum
        mu_m = self._wmean.sum(axis=0) / wsum
        xc = x - mu_x
        mc = self.mean - mu_m
        cov = (xc * w).T @ mc / wsum
        u, sv, vt = np.linalg.svd(cov)
        d = np.ones(3)
        if np.linalg.det(u @ vt) < 0:
            d[2] = -1.0
        rot = (u * d) @ vt
        var = float(((mc**2) * w).sum() / wsum)
        scale = float((sv * d).sum() / var)
        t = mu_x - scale * rot @ mu_m
        return scale, rot, t

    def shape3d(self, params: np.ndarray) -> np.ndarray:
        """``(478, 3)`` landmarks in pixels of a 256 crop."""
        p = np.asarray(params, dtype=np.float64)
        k = len(p) - NUM_POSE
        shape = self.mean + (p[NUM_POSE:] @ self._flat_basis[:k]).reshape(-1, 3)
        rot = rotation_from_vector(p[:3])
        out = np.exp(p[5]) * shape @ rot.T
        out[:, :2] += p[3:5]
        return out

    def keypoints(self, params: np.ndarray, size: int) -> np.ndarray:
        pts = self.shape3d(params)[:, :2] * (size / REFERENCE_SIZE)
        return pts.astype(np.float32)

    # -- what the codec asks of every representation ----------------------------------------
    def neutral(self) -> np.ndarray:
        """The mean parameters with the face centred in the crop (translation 128, 128)."""
        params = self.statistics.mean.copy()
        params[3:5] = REFERENCE_SIZE / 2
        return params

    def gate_distance(self, reference: np.ndarray, current: np.ndarray) -> float:
        """:func:`keyface.motion.distance.motion_distance` over the mesh's face regions."""
        return motion_distance(reference, current, self.regions).value

    def face_state(self, keypoints: np.ndarray) -> FaceState:
        """Mouth and eye openness of mesh keypoints (:mod:`keyface.facemesh` measures)."""
        return MESH_FACES.face_state(keypoints)

    def detail_regions(self, keypoints: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
        """Each eye opening, and the outer lips."""
        return MESH_FACES.detail_regions(keypoints)

    @cached_property
    def regions(self) -> tuple[np.ndarray, ...]:
        """The face regions of the gate, derived from the mean shape once."""
        return face_regions(self.mean)

    @property
    def field_component(self) -> None:
        return None


@cache
def default_facemesh_pca() -> FaceMeshPCA:
    """The shipped model, loaded once."""
    return FaceMeshPCA()
