"""``fomm``: FOMM's learned keypoints and Jacobians as a keyface motion representation.

**Parameters** (``6 K`` for ``K`` keypoints; 60 for vox-256): the ``K`` keypoint positions
``(x, y)`` in pixels of a 256x256 crop (``REFERENCE_SIZE``), then the ``K`` Jacobians as their
difference from the identity, ``(J00 - 1, J01, J10, J11 - 1)``. The identity is the zero, so a
quantiser level that codes the positions only (the first ``2 K`` parameters; the rest are
zero) sends rigid local motion.

**Keypoints** (what the renderer and the quality gate see): ``3 K`` points in pixels of the
crop: the ``K`` positions ``p``, then ``p + a J e_x`` and then ``p + a J e_y`` for each keypoint
(the ends of its local frame's two arms, ``a = LOCAL_FRAME_PX`` at 256x256). Both ends of the
codec compute them from the same dequantised parameters, and the FOMM renderer takes the
Jacobians back from the arms (:func:`split_keypoints`).

The encoder measures the parameters on the picture (:class:`~keyface.motion.ImageMotionSource`):
it runs the keypoint detector on each crop, resized to the model's input size.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from keyface.fomm.model import FommModel
from keyface.motion.base import REFERENCE_SIZE, MotionStatistics, QuantLevel
from keyface.motion.distance import AFFINE_WEIGHT, POSITION_WEIGHT
from keyface.types import check_image

NAME = "fomm"
VERSION = 2
"""2: the quantiser levels and the coder's priors measured (``benchmarks/fomm_coding.py``);
version 1 had assumed ones, and its streams decode differently (a decoder refuses them)."""
LOCAL_FRAME_PX = 16.0
"""Arm length of each keypoint's local frame in ``keypoints()``, in 256-crop pixels (a
Jacobian entry of 1 is 16 px there, far above float32 rounding)."""

LEVELS: tuple[tuple[float, float | None], ...] = (
    (0.5, 0.01),
    (0.75, 0.015),
    (1.0, 0.02),
    (1.5, 0.025),
    (2.0, 0.035),
    (3.0, 0.05),
    (4.0, 0.065),
    (4.0, None),
)
"""``(position step in 256-crop px, Jacobian step or None: positions only)`` per quantiser
level. Measured (``benchmarks/fomm_coding.py --render-sweep``, the CPU-trained ``small`` model
at 64x64, one clip per train person): what quantising one kind alone changes in the rendered
frame (PSNR against the render with exact keypoints) is alike for a position step ``p`` and a
Jacobian step of about ``p / 50`` at fine steps and ``p / 60`` at coarse ones (1 px: 50.8 dB,
0.02: 50.3 dB; 3 px: 43.2 dB, 0.05: 44.4 dB), so each level pairs the two; identity Jacobians
alone cost 35.2 dB (LPIPS 0.035), hence only at the coarsest level."""

PRIOR_POSITION = (122.5, 41.2, 0.50)
PRIOR_JACOBIAN = (0.33, 0.34, 0.0042)
"""Coder priors ``(mean, spread, frame-to-frame spread)`` of positions (256-crop px) and of
Jacobian entries (``J - I``), pooled over keypoints: mean, mean absolute deviation and mean
absolute difference of neighbouring frames of the CPU-trained detector's keypoints on the 85
clips of the train people (15,622 frames; ``benchmarks/fomm_coding.py``). Per-keypoint priors
would save under 1 % of the bits (they matter at the first frame after a reset only)."""


GATE_SCALE = 2.2
"""FOMM's motion distance times this is on the face mesh's scale. Measured
(``benchmarks/quality_gate.py --motion fomm``, results/fomm/quality_gate.md, distances before
this scale): the gate that rejects three quarters of the bad renderings is 0.10 for FOMM (the
CPU-trained model) and 0.22 for the face mesh; FOMM's keypoints spread over the whole crop,
so the same damage moves them less relative to their extent. With the scale the codec's
presets (``DEFAULT_THRESHOLDS``) and the avatar gate mean the same for both routes."""


def to_pixels(value: np.ndarray, model_size: int, size: int) -> np.ndarray:
    """Normalised coordinates of a ``model_size`` picture -> pixels of a ``size`` crop (pixel
    centres at integers; the model's picture is the crop resized)."""
    index = (np.asarray(value, dtype=np.float64) + 1.0) * 0.5 * (model_size - 1)
    return (index + 0.5) * (size / model_size) - 0.5


def to_normalised(pixels: np.ndarray, model_size: int, size: int) -> np.ndarray:
    """Inverse of :func:`to_pixels`."""
    index = (np.asarray(pixels, dtype=np.float64) + 0.5) * (model_size / size) - 0.5
    return index / (0.5 * (model_size - 1)) - 1.0


def model_input(image: np.ndarray, model_size: int) -> torch.Tensor:
    """``(1, 3, M, M)`` float tensor in [0, 1] of an RGB uint8 crop."""
    check_image(image)
    if image.shape[:2] != (model_size, model_size):
        interp = cv2.INTER_AREA if image.shape[0] > model_size else cv2.INTER_CUBIC
        image = cv2.resize(image, (model_size, model_size), interpolation=interp)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


def split_keypoints(keypoints: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(positions (K, 2), Jacobians (K, 2, 2))`` in crop pixels of ``keypoints()``'s output."""
    k = keypoints.shape[0] // 3
    kp = np.asarray(keypoints, dtype=np.float64)
    pos = kp[:k]
    arm = LOCAL_FRAME_PX * size / REFERENCE_SIZE
    jac = np.stack([(kp[k : 2 * k] - pos) / arm, (kp[2 * k :] - pos) / arm], axis=-1)
    return pos, jac


def join_keypoints(positions: np.ndarray, jacobians: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`split_keypoints`: ``(3 K, 2)`` float32 keypoints of a ``size`` crop
    from positions ``(K, 2)`` in its pixels and Jacobians ``(K, 2, 2)``."""
    pos = np.asarray(positions, dtype=np.float64)
    jac = np.asarray(jacobians, dtype=np.float64)
    arm = LOCAL_FRAME_PX * size / REFERENCE_SIZE
    pts = np.concatenate([pos, pos + arm * jac[:, :, 0], pos + arm * jac[:, :, 1]])
    return pts.astype(np.float32)


class FommMotion:
    """The representation of one model file (see the module docstring)."""

    name = NAME
    version = VERSION

    def __init__(
        self, model: FommModel, level: int = 0, student: torch.nn.Module | None = None
    ) -> None:
        self.model = model
        self.student = student
        """A distilled keypoint encoder (``keyface.fomm.student``) that measures the keypoints
        instead of the model's detector (ZTE's sender side); the stream is the same: the
        decoder never runs either."""
        self.digest = model.digest
        self.num_kp = model.config.num_kp
        self.num_keypoints = 3 * self.num_kp
        self._level = level
        self._full = LEVELS[level][1] is not None

    # -- coding ------------------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        return (6 if self._full else 2) * self.num_kp

    @property
    def statistics(self) -> MotionStatistics:
        k, d = self.num_kp, self.num_params
        rows = np.array([PRIOR_POSITION] * (2 * k) + [PRIOR_JACOBIAN] * (4 * k))[:d]
        return MotionStatistics(rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy())

    @property
    def num_levels(self) -> int:
        return len(LEVELS)

    def quant_level(self, level: int) -> QuantLevel:
        pos, jac = LEVELS[level]
        k = self.num_kp
        steps = [pos] * (2 * k) + ([jac] * (4 * k) if jac is not None else [])
        return QuantLevel(num_params=len(steps), steps=np.asarray(steps, dtype=np.float64))

    def for_level(self, level: int) -> FommMotion:
        return FommMotion(self.model, level, self.student)

    # -- measuring ---------------------------------------------------------------------------
    def analyze(self, landmarks: np.ndarray, size: int) -> np.ndarray:
        raise NotImplementedError("FOMM measures motion on the picture: use analyze_image")

    @torch.inference_mode()
    def analyze_image(self, image: np.ndarray) -> np.ndarray:
        """Parameters ``(num_params,)`` of an RGB uint8 crop (any size; resized to the
        model's)."""
        m = self.model.config.image_size
        detector = self.student if self.student is not None else self.model.networks.kp_detector
        kp = detector(model_input(image, m))
        value = kp.value[0].double().numpy()
        jac = kp.jacobian[0].double().numpy()
        pos = to_pixels(value, m, REFERENCE_SIZE)
        params = np.concatenate([pos.reshape(-1), (jac - np.eye(2)).reshape(-1)])
        return params[: self.num_params]

    def keypoints(self, params: np.ndarray, size: int) -> np.ndarray:
        k = self.num_kp
        params = np.asarray(params, dtype=np.float64)
        pos = params[: 2 * k].reshape(k, 2) * (size / REFERENCE_SIZE)
        jac = np.tile(np.eye(2), (k, 1, 1))
        if params.shape[0] >= 6 * k:
            jac = jac + params[2 * k : 6 * k].reshape(k, 2, 2)
        return join_keypoints(pos, jac, size)

    def neutral(self) -> np.ndarray:
        """Every keypoint at the crop's centre, with the identity Jacobian."""
        params = np.zeros(self.num_params)
        params[: 2 * self.num_kp] = (REFERENCE_SIZE - 1) / 2
        return params

    def gate_distance(self, reference: np.ndarray, current: np.ndarray) -> float:
        """As the face mesh's (:mod:`keyface.motion.distance`): ``(2 * position + affine) / 3``
        of :meth:`gate_parts`, times :data:`GATE_SCALE` (on the face mesh's scale, so that
        every gate threshold means the same damage on both routes)."""
        position, affine = self.gate_parts(reference, current)
        weighted = (POSITION_WEIGHT * position + AFFINE_WEIGHT * affine) / (
            POSITION_WEIGHT + AFFINE_WEIGHT
        )
        return GATE_SCALE * weighted

    def gate_parts(self, reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
        """``(position, affine)``: the mean keypoint displacement over the reference
        keypoints' extent, and the mean ``||J_ref^-1 J_cur - I||_F``."""
        # The arm length cancels: only the crop size's ratio to 256 enters, and both sets
        # come from the same crop.
        size = REFERENCE_SIZE
        p0, j0 = split_keypoints(reference, size)
        p1, j1 = split_keypoints(current, size)
        extent = max(float((p0.max(axis=0) - p0.min(axis=0)).max()), 1.0)
        position = float(np.linalg.norm(p1 - p0, axis=1).mean()) / extent
        relative = np.linalg.pinv(j0) @ j1 - np.eye(2)
        affine = float(np.linalg.norm(relative, axis=(1, 2)).mean())
        return position, affine

    @property
    def field_component(self) -> None:
        return None
