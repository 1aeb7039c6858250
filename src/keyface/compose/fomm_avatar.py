"""Avatar mode for ``fomm`` streams: an avatar photo animated by a sender's FOMM keypoints.

The ZTE paper's avatar mode drives an avatar with FOMM's *relative* motion; this is that mode
for keyface's ``fomm`` streams, beside the face mesh's :class:`keyface.compose.AvatarAnimator`.
Per frame it gets only the sender's decoded keypoints (positions and Jacobians, never the
sender's picture) and renders the avatar with the stream's model, so the output is always
the model's animation of the avatar's own pixels.

**Relative transfer.** Learned keypoints sit where the detector put them on *that* face, so a
sender's keypoints are not used as they are. One sender frame is the *initial* frame (the
first one with keypoints); then, per keypoint ``k``,

    p_target = p_avatar + s (p_sender - p_initial)
    J_target = J_sender J_initial^-1 J_avatar

with ``s`` the square root of the ratio of the areas of the avatar's and the initial frame's
keypoint hulls (a face twice as large in the sender's crop moves the avatar half as far;
FOMM's "adapted movement scale"). Positions are compared in 256-crop pixels, so a sender
crop of 384 or 512 drives a 256 avatar the same way.

**Quality gate with fallback.** As the face mesh's animator: when the target is too far from
the avatar's own keypoints (the representation's motion distance,
:meth:`~keyface.fomm.motion.FommMotion.gate_distance`, above ``threshold``) or no keypoints
came, the animator glides (``transition_frames``, raised cosine) from the last good target to
the avatar at rest (its own keypoints: the model's reconstruction of the photo), and back
once the distance is under ``recover`` times the threshold. Learned keypoints have no named
eyes or mouth, so there is no idle blink or smile here. After ``rebase_s`` seconds of gating
the current sender frame becomes the new initial frame (the sender moved or zoomed and stayed
there).

The default threshold is measured by ``benchmarks/quality_gate.py --motion fomm``
(docs/motion.md).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from keyface.compose import Composer
from keyface.compose.avatar import (
    AVATAR_THRESHOLD,
    AvatarFrame,
    FallbackGlide,
    RelativeAnimator,
    check_avatar_settings,
    crop_photo,
)
from keyface.fomm import MOTION_NAME
from keyface.fomm.motion import FommMotion, join_keypoints, split_keypoints
from keyface.motion import REFERENCE_SIZE, get_representation
from keyface.renderers import get_renderer

FOMM_AVATAR_THRESHOLD = AVATAR_THRESHOLD
"""Default gate (FOMM motion distance from the avatar's keypoints to the transferred target)
above which the avatar falls back to rest: the face mesh's, since FOMM's distance is put on
its scale (:data:`keyface.fomm.motion.GATE_SCALE`, measured with the CPU-trained model by
``benchmarks/quality_gate.py --motion fomm``, docs/motion.md: 0.10 before the scale keeps 78 %
of the pairs and rejects 77 % of the bad ones). Another model should be measured again."""

MOVEMENT_SCALE = (0.25, 4.0)
"""Bounds of the movement scale ``s`` (a degenerate keypoint hull must not fling the avatar)."""


def _hull_area(points: np.ndarray) -> float:
    hull = cv2.convexHull(np.asarray(points, dtype=np.float32).reshape(-1, 1, 2))
    return float(cv2.contourArea(hull))


def _inverse(jacobians: np.ndarray) -> np.ndarray:
    """Inverses of ``(K, 2, 2)`` Jacobians; a (near) singular one is taken as the identity."""
    jac = np.array(jacobians, dtype=np.float64)
    singular = np.abs(np.linalg.det(jac)) < 1e-3
    jac[singular] = np.eye(2)
    return np.linalg.inv(jac)


class FommAvatarAnimator(RelativeAnimator):
    """Animate ``avatar_image`` (a square face crop, uint8 RGB) with a sender's ``fomm``
    keypoints, relatively (see the module docstring). The ``fomm`` model must be registered
    (:func:`keyface.fomm.use_model`): it measures the avatar's keypoints and renders it.
    ``fps`` sets the clock of ``rebase_s``; ``sender_size`` is the side of the sender's crop
    (the stream's picture size), whose pixels its keypoints are in. Sans-I/O and
    deterministic: feed the decoded keypoints of each sender frame, in order, to
    :meth:`animate`.
    """

    def __init__(
        self,
        avatar_image: np.ndarray,
        *,
        threshold: float = FOMM_AVATAR_THRESHOLD,
        recover: float = 0.9,
        transition_frames: int = 6,
        fps: float = 25.0,
        rebase_s: float | None = 2.0,
        sender_size: int = 256,
    ) -> None:
        check_avatar_settings(avatar_image, threshold, recover, transition_frames, fps, rebase_s)
        if sender_size < 1:
            raise ValueError("sender_size must be positive")
        self.sender_size = int(sender_size)
        """The side of the sender's crop, whose pixels its keypoints are in."""
        rep = get_representation(MOTION_NAME)
        assert isinstance(rep, FommMotion)
        self.gate = rep
        self.size = avatar_image.shape[0]
        self.image = avatar_image
        self.keypoints = rep.keypoints(rep.analyze_image(avatar_image), self.size)
        """The avatar's own keypoints (crop pixels): its rest pose."""
        self.renderer = get_renderer(MOTION_NAME)
        self.reference = self.renderer.prepare(avatar_image, self.keypoints)
        self.threshold = float(threshold)
        self.recover = float(recover)
        self.transition_frames = int(transition_frames)
        self.fps = float(fps)
        self.rebase_s = None if rebase_s is None else float(rebase_s)
        self.composer: Composer | None = None
        pos, jac = split_keypoints(self.keypoints, self.size)
        self._avatar = (pos * (REFERENCE_SIZE / self.size), jac)
        self._avatar_area = _hull_area(self._avatar[0])
        self.reset()

    @classmethod
    def from_photo(cls, photo: np.ndarray, size: int = 256, **kwargs: object) -> FommAvatarAnimator:
        """An animator for any face photo: the face is found and cropped the way the codec
        crops to ``size``; the photo is kept as the background of :meth:`full_frame`. Raises
        ``FaceNotFoundError`` without a face."""
        crop, box = crop_photo(photo, size)
        animator = cls(crop, **kwargs)  # type: ignore[arg-type]
        animator.composer = Composer(photo, box)
        return animator

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the sender: the next keypoints start a new relative transfer."""
        self._frame = 0
        self._initial: tuple[np.ndarray, np.ndarray, float] | None = None
        self._glide = FallbackGlide(self.threshold, self.recover, self.transition_frames)

    @property
    def initial(self) -> np.ndarray | None:
        """The sender's initial keypoint positions, in 256-crop pixels (``None`` before any)."""
        return None if self._initial is None else self._initial[0]

    def set_initial(self, sender_keypoints: np.ndarray) -> None:
        """Take the motion relative to these sender keypoints."""
        pos, jac = self._split(sender_keypoints)
        area = _hull_area(pos)
        scale = math.sqrt(self._avatar_area / area) if area > 0 else 1.0
        self._initial = (pos, _inverse(jac), float(np.clip(scale, *MOVEMENT_SCALE)))

    def _split(self, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = self.sender_size
        kp = np.asarray(keypoints, dtype=np.float64)[:, :2]
        if kp.shape != self.keypoints.shape:
            raise ValueError(f"sender keypoints must be {self.keypoints.shape}, got {kp.shape}")
        pos, jac = split_keypoints(kp, size)
        return pos * (REFERENCE_SIZE / size), jac

    # -- motion -------------------------------------------------------------------------------
    def transfer(self, sender_keypoints: np.ndarray) -> np.ndarray:
        """Avatar keypoints (crop pixels) for these sender keypoints (relative transfer, no
        gate). The first call makes them the initial frame."""
        if self._initial is None:
            self.set_initial(sender_keypoints)
        assert self._initial is not None
        pos0, inv0, scale = self._initial
        pos, jac = self._split(sender_keypoints)
        pos_a, jac_a = self._avatar
        target = pos_a + scale * (pos - pos0)
        jac_t = jac @ inv0 @ jac_a
        return join_keypoints(target * (self.size / REFERENCE_SIZE), jac_t, self.size)

    def distance(self, target: np.ndarray) -> float:
        """The representation's motion distance from the avatar's keypoints to ``target``."""
        return self.gate.gate_distance(self.keypoints, target)

    def _should_rebase(self, sender_keypoints: np.ndarray) -> bool:
        """Gated for ``rebase_s`` with a face (no shape check: learned keypoints have no
        face shape to compare)."""
        return self.rebase_s is not None and self._glide.run >= self.rebase_s * self.fps

    def animate(self, sender_keypoints: np.ndarray | None) -> AvatarFrame:
        """Render the next avatar frame for the sender's decoded keypoints of this frame
        (``None``: none came). Only keypoints go in."""
        index = self._frame
        target, distance, gated, rebased = self._follow(sender_keypoints)
        base, share = self._glide.step(gated, target, self.keypoints)
        keypoints = ((1.0 - share) * base + share * self.keypoints).astype(np.float32)
        image = self.renderer.render(self.reference, keypoints)
        self._frame += 1
        return AvatarFrame(index, image, keypoints, distance, gated, share, rebased)

    def full_frame(self, frame: AvatarFrame) -> np.ndarray:
        """The avatar frame pasted into the avatar's photo (animators made with
        :meth:`from_photo`; a soft seam at the box border, see :mod:`keyface.compose`)."""
        if self.composer is None:
            raise ValueError("no photo to compose into: make the animator with from_photo()")
        return self.composer.compose(frame.image)


__all__ = ["FOMM_AVATAR_THRESHOLD", "FommAvatarAnimator"]
