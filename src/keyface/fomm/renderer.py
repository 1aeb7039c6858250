"""The FOMM generator as a keyface renderer.

:meth:`FommRenderer.prepare` (once per keyframe) resizes the keyframe to the model's input size
and encodes it (``generator.first`` and ``down_blocks``); its source keypoints are the
keyframe's *decoded* keypoints, so the decoder never runs the keypoint detector and both ends
animate from the same numbers. :meth:`FommRenderer.render` runs the dense motion network and the
rest of the generator from the driving keypoints and Jacobians, and resizes the result to the
crop. The body-motion field does not apply (the representation has none).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from keyface.fomm.model import FommModel
from keyface.fomm.motion import model_input, split_keypoints, to_normalised
from keyface.fomm.networks import Keypoints
from keyface.render import Reference
from keyface.types import check_image

MIN_DETERMINANT = 1e-3
"""Driving Jacobians with a smaller ``|det|`` are taken as the identity: the dense motion
inverts them, and a damaged or hostile stream must not make the renderer fail (trained models
give determinants near 1)."""


class FommRenderer:
    """Renders frames of a ``fomm`` stream with the generator of the stream's model."""

    def __init__(self, model: FommModel, name: str = "fomm") -> None:
        self.model = model
        self.name = name

    def _keypoints(self, keypoints: np.ndarray, size: int) -> Keypoints:
        pos, jac = split_keypoints(keypoints, size)
        singular = np.abs(np.linalg.det(jac)) < MIN_DETERMINANT
        jac[singular] = np.eye(2)
        value = to_normalised(pos, self.model.config.image_size, size)
        return Keypoints(torch.from_numpy(value).float()[None], torch.from_numpy(jac).float()[None])

    @torch.inference_mode()
    def prepare(self, image: np.ndarray, keypoints: np.ndarray) -> Reference:
        check_image(image)
        source = model_input(image, self.model.config.image_size)
        features = self.model.networks.generator.encode_source(source)
        cache = {
            "fomm_source": source,
            "fomm_features": features,
            "fomm_kp": self._keypoints(keypoints, image.shape[0]),
        }
        return Reference(image=image, keypoints=keypoints, cache=cache)

    @torch.inference_mode()
    def render(
        self, reference: Reference, keypoints: np.ndarray, field: np.ndarray | None = None
    ) -> np.ndarray:
        size = reference.image.shape[0]
        out = self.model.networks.generator.animate(
            reference.cache["fomm_features"],
            reference.cache["fomm_source"],
            self._keypoints(keypoints, size),
            reference.cache["fomm_kp"],
        )
        picture = (out.prediction[0].permute(1, 2, 0).clamp(0, 1) * 255.0 + 0.5).byte().numpy()
        if picture.shape[0] != size:
            interp = cv2.INTER_CUBIC if size > picture.shape[0] else cv2.INTER_AREA
            picture = cv2.resize(picture, (size, size), interpolation=interp)
        return np.ascontiguousarray(picture)
