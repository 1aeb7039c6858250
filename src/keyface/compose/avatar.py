"""Avatar mode (ZTE §3.1): animate an avatar picture with the sender's motion, never its face.

The receiver (or the server) holds an avatar: any face photo, cropped the way the codec crops
(:meth:`AvatarAnimator.from_photo`), and its face-mesh keypoints. Per frame it gets only the
sender's decoded *keypoints* (never the sender's picture: the API has no way to pass one) and
renders the avatar with the training-free warp (a renderer may be passed), so the output is
always a warp of the avatar's own pixels. (The default renderer's keyframe enhancer undoes
what the keyframe codec did to a coded picture; an avatar photo was never coded.)

**Relative transfer.** Faces differ in shape, so the sender's keypoints are not used as they
are. One sender frame is the *initial* frame (the first one, or, with ``warmup`` frames, the
one among them whose face shape is closest to the avatar's, see :func:`shape_distance`); then

    target = avatar + (sender - sender_initial) @ A.T

with ``A`` the 2x2 linear part of the similarity that maps the sender's initial face oval onto
the avatar's (scale and in-plane rotation: a sender 2x larger or tilted moves the avatar in the
avatar's own scale and orientation). A translation of the sender's head translates the avatar's
by the scaled amount; a mouth opening opens the avatar's mouth by the scaled amount.

**Quality gate with fallback.** When the target is too far from the avatar for a good
rendering (ZTE motion distance, :func:`keyface.motion.motion_distance`, above ``threshold``)
or the sender's face is lost, the animator glides (``transition_frames``, raised cosine) from
the last good target to a *natural default motion* (:class:`IdleMotion`: the avatar at rest
with a slight smile and a blink every few seconds) and glides back once the motion is within
``recover`` times the threshold again. Over-threshold keypoints are never rendered. A sender
who moved (or zoomed) and stays there would keep the avatar idle for good, so after
``rebase_s`` seconds of gating the current frame becomes the new initial frame if its face
looks like the avatar's at least as much as the initial frame's did.
The default threshold comes from ``benchmarks/quality_gate.py`` (``docs/compose.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keyface.compose import Composer
from keyface.face import FaceDetector, FaceNotFoundError, LandmarkTracker, apply_crop, box_for_face
from keyface.facemesh import (
    FACE_OVAL,
    LEFT_EYE_ABOVE,
    LEFT_EYE_CORNERS,
    LEFT_EYE_LIDS,
    LEFT_IRIS,
    MOUTH_CORNERS,
    RIGHT_EYE_ABOVE,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_LIDS,
    RIGHT_IRIS,
)
from keyface.motion import get_representation
from keyface.render import Renderer
from keyface.render.warp import similarity_fit
from keyface.renderers import get_renderer
from keyface.types import CropBox, check_image

AVATAR_THRESHOLD = 0.22
"""Default gate: motion distance (avatar reference -> transferred target) above which the
avatar falls back to its natural motion. Chosen with ``benchmarks/quality_gate.py``: see
``docs/compose.md``."""

LID_SKIN_FOLLOW = (0.9, 0.45)
"""Share of the lid's travel that those rows follow in a blink."""


@dataclass(frozen=True)
class IdleMotion:
    """The natural default motion shown when the sender's motion cannot be transferred.

    The avatar at rest with a slight smile (mouth corners ``smile`` x 8 % of the mouth width
    outwards and x 4 % upwards, fading over the lips and cheeks) and a blink every
    ``blink_period_s`` seconds lasting ``blink_s`` (upper lids and irises moved
    ``blink_depth`` of the way down to the lower lids, raised-cosine in time).
    """

    blink_period_s: float = 3.5
    blink_s: float = 0.3
    blink_depth: float = 0.75
    """How far the lids close at the peak of a blink. A warp squeezes the eye's content into
    the remaining slit: above about 0.8 that slit aliases into a jagged line (looked at on
    the development clips), 0.75 reads as a blink."""
    first_blink_s: float = 1.0
    smile: float = 1.0

    def blink(self, t: float) -> float:
        """Eye closure in [0, 1] at ``t`` seconds after the idle motion's clock started."""
        if t < self.first_blink_s or self.blink_s <= 0:
            return 0.0
        phase = (t - self.first_blink_s) % self.blink_period_s
        if phase >= self.blink_s:
            return 0.0
        return math.sin(math.pi * phase / self.blink_s) ** 2


def _eye_frame(kp: np.ndarray, corners: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along the eye (corner to corner) and across it (pointing down)."""
    u = kp[corners[1]] - kp[corners[0]]
    u = u / max(float(np.linalg.norm(u)), 1e-9)
    if u[0] < 0:
        u = -u
    return u, np.array([-u[1], u[0]])


def close_eyes(keypoints: np.ndarray, amount: float) -> np.ndarray:
    """``keypoints`` (face mesh, crop pixels) with both eyes closed by ``amount`` (0..1).

    Each upper-lid point moves that share of the way to the lower-lid point under it; the lid
    skin above it (the crease row, and half as much the row above that) moves down with it,
    so a warp shows lid skin where the eye was instead of squeezing the eye into a line; the
    irises move down to the lower lid (measured across the eye, so it works for a tilted
    head). The lower lids stay.
    """
    out = np.array(keypoints, dtype=np.float64)[:, :2]
    if amount <= 0:
        return out.astype(np.float32)
    for lids, rows, corners, iris in (
        (RIGHT_EYE_LIDS, RIGHT_EYE_ABOVE, RIGHT_EYE_CORNERS, RIGHT_IRIS),
        (LEFT_EYE_LIDS, LEFT_EYE_ABOVE, LEFT_EYE_CORNERS, LEFT_IRIS),
    ):
        upper = [a for a, _ in lids]
        lower = [b for _, b in lids]
        u, v = _eye_frame(out, corners)
        lu, lv = out[lower] @ u, out[lower] @ v
        order = np.argsort(lu)
        pts = out[list(iris)]
        low = np.interp(pts @ u, lu[order], lv[order])
        # Only iris points above the lower lid move (down to it); those below stay.
        shift = amount * np.maximum(low - pts @ v, 0.0)
        out[list(iris)] = pts + shift[:, None] * v[None, :]
        travel = amount * (out[lower] - out[upper])
        out[upper] += travel
        for row, share in zip(rows, LID_SKIN_FOLLOW, strict=True):
            out[list(row)] += share * travel
    return out.astype(np.float32)


def smile(keypoints: np.ndarray, amount: float) -> np.ndarray:
    """``keypoints`` with the mouth corners pulled outwards and up by ``amount`` (1: slight,
    8 % / 4 % of the mouth width), the displacement fading with distance from each corner
    (Gaussian, sigma 35 % of the mouth width)."""
    out = np.array(keypoints, dtype=np.float64)[:, :2]
    if amount == 0:
        return out.astype(np.float32)
    right, left = out[MOUTH_CORNERS[0]].copy(), out[MOUTH_CORNERS[1]].copy()
    width = float(np.linalg.norm(left - right))
    u = (left - right) / max(width, 1e-9)
    v = np.array([-u[1], u[0]])  # down when u points to the image right
    sigma = 0.35 * width
    for corner, outward in ((right, -u), (left, u)):
        move = amount * width * (0.08 * outward - 0.04 * v)
        w = np.exp(-((out - corner) ** 2).sum(axis=1) / (2 * sigma * sigma))
        out += w[:, None] * move[None, :]
    return out.astype(np.float32)


def shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    """How different two faces' poses and expressions look: RMS distance of the keypoints
    after the best similarity alignment of ``b`` onto ``a``, over ``a``'s face size (RMS
    radius). 0 for the same shape seen larger, rotated in-plane or moved."""
    a = np.asarray(a, dtype=np.float64)[:, :2]
    b = np.asarray(b, dtype=np.float64)[:, :2]
    sim = similarity_fit(b, a)
    aligned = b @ sim[:, :2].T + sim[:, 2]
    size = float(np.sqrt(((a - a.mean(axis=0)) ** 2).sum(axis=1).mean()))
    return float(np.sqrt(((aligned - a) ** 2).sum(axis=1).mean())) / max(size, 1e-9)


def closest_pose(avatar_keypoints: np.ndarray, candidates: Sequence[np.ndarray | None]) -> int:
    """Index of the candidate sender keypoints whose shape is closest to the avatar's
    (:func:`shape_distance`); ``None`` entries (no face) are skipped. ``ValueError`` if all
    are ``None``."""
    best, best_d = -1, math.inf
    for i, kp in enumerate(candidates):
        if kp is None:
            continue
        d = shape_distance(avatar_keypoints, kp)
        if d < best_d:
            best, best_d = i, d
    if best < 0:
        raise ValueError("no candidate has a face")
    return best


def check_avatar_settings(
    avatar_image: np.ndarray,
    threshold: float,
    recover: float,
    transition_frames: int,
    fps: float,
    rebase_s: float | None,
) -> None:
    """``ValueError`` unless the avatar crop and the gate settings are usable (both
    animators' checks)."""
    check_image(avatar_image, "avatar image")
    if avatar_image.shape[0] != avatar_image.shape[1]:
        raise ValueError("the avatar image must be a square face crop")
    if threshold <= 0 or not 0 < recover <= 1:
        raise ValueError("need threshold > 0 and 0 < recover <= 1")
    if transition_frames < 1 or fps <= 0:
        raise ValueError("need transition_frames >= 1 and fps > 0")
    if rebase_s is not None and rebase_s <= 0:
        raise ValueError("rebase_s must be positive (or None)")


@dataclass
class FallbackGlide:
    """The quality gate's state, shared by the avatar animators: hysteresis on the motion
    distance, the run of gated frames (for the rebase) and the raised-cosine glide between
    the sender's motion and the fallback (``transition_frames`` frames each way)."""

    threshold: float
    recover: float
    transition_frames: int
    mix: float = 0.0
    """0: the sender's motion, 1: the fallback."""
    gated: bool = False
    run: int = 0
    """Gated frames in a row that had a target (a face)."""
    last_good: np.ndarray | None = None
    """The last target that passed the gate."""

    def judge(self, distance: float) -> bool:
        """Whether a target at ``distance`` (``nan``: none this frame) is gated: over the
        threshold, or, while gated, over ``recover`` times it; counts :attr:`run`."""
        if math.isnan(distance):
            gated = True
        elif self.gated:  # hysteresis: come back only well under the threshold
            gated = distance > self.recover * self.threshold
        else:
            gated = distance > self.threshold
        self.run = self.run + 1 if gated and not math.isnan(distance) else 0
        return gated

    def step(
        self, gated: bool, target: np.ndarray | None, rest: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Advance one frame: ``(base, share)``, the keypoints to show from the sender (the
        target, or while gated the last good one, else ``rest``) and the fallback's share."""
        self.gated = gated
        if not gated:
            self.last_good = target
        step = 1.0 / self.transition_frames
        self.mix = min(1.0, self.mix + step) if gated else max(0.0, self.mix - step)
        share = float(0.5 - 0.5 * math.cos(math.pi * self.mix))
        if target is not None and not gated:
            return target, share
        # hold what was last rendered from the sender while gliding to the fallback
        return (self.last_good if self.last_good is not None else rest), share


class RelativeAnimator:
    """The per-frame judgement both avatar animators share: transfer the sender's keypoints
    relatively, measure the target against the avatar, gate it (:class:`FallbackGlide`) and
    rebase when :meth:`_should_rebase` says so. Subclasses give :meth:`transfer`,
    :meth:`distance`, :meth:`set_initial` and :meth:`_should_rebase`, and hold ``_glide``."""

    _glide: FallbackGlide

    def transfer(self, sender_keypoints: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def distance(self, target: np.ndarray) -> float:
        raise NotImplementedError

    def set_initial(self, sender_keypoints: np.ndarray) -> None:
        raise NotImplementedError

    def _should_rebase(self, sender_keypoints: np.ndarray) -> bool:
        raise NotImplementedError

    def _follow(
        self, sender_keypoints: np.ndarray | None
    ) -> tuple[np.ndarray | None, float, bool, bool]:
        """``(target, distance, gated, rebased)`` for this frame's sender keypoints
        (``None``: no face; then no target and a ``nan`` distance, which gates)."""
        target: np.ndarray | None = None
        distance, rebased = math.nan, False
        if sender_keypoints is not None:
            target = self.transfer(sender_keypoints)
            distance = self.distance(target)
        gated = self._glide.judge(distance)
        if sender_keypoints is not None and self._should_rebase(sender_keypoints):
            self.set_initial(sender_keypoints)
            target = self.transfer(sender_keypoints)
            distance, gated, rebased = self.distance(target), False, True
            self._glide.run = 0
        return target, distance, gated, rebased


@dataclass(frozen=True)
class AvatarFrame:
    """One animated avatar frame."""

    index: int
    image: np.ndarray
    """The avatar crop, rendered (``size x size x 3`` uint8)."""
    keypoints: np.ndarray
    """The avatar keypoints it was rendered with."""
    distance: float
    """Motion distance of the *transferred* target to the avatar (``nan`` without a face)."""
    gated: bool
    """The transferred motion was over the threshold (or no face): not used this frame."""
    fallback: float
    """Share of the natural default motion in what was rendered (0: pure transfer)."""
    rebased: bool = False
    """The sender's keypoints of this frame became the new initial frame."""


class AvatarAnimator(RelativeAnimator):
    """Animate ``avatar_image`` with a sender's keypoints, relatively (see module docstring).

    ``avatar_image`` is a square face crop (uint8 RGB), ``avatar_landmarks`` its face-mesh
    landmarks in its pixels ((478, 2|3); measured with :class:`LandmarkTracker` when
    ``None``). ``renderer``: default the warp (``get_renderer("warp")``). ``fps`` sets the
    clock of the idle motion. ``warmup``: frames at the start during which the avatar shows
    its idle motion while the sender frame with the closest pose is chosen as the initial
    frame (0: the first frame with a face is the initial frame). ``rebase_s``: after that many
    seconds of gated frames with a face, the sender's current frame becomes the new initial
    frame (the avatar glides back from its idle motion and follows again), provided its shape
    is within ``rebase_margin`` as close to the avatar's as the initial frame's was (the
    sender moved or zoomed and stayed there, rather than turned away); ``None``: never.

    Sans-I/O and deterministic: feed the keypoints of each sender frame, in order, to
    :meth:`animate`.
    """

    def __init__(
        self,
        avatar_image: np.ndarray,
        avatar_landmarks: np.ndarray | None = None,
        *,
        renderer: Renderer | None = None,
        threshold: float = AVATAR_THRESHOLD,
        recover: float = 0.9,
        transition_frames: int = 6,
        fps: float = 25.0,
        warmup: int = 0,
        rebase_s: float | None = 2.0,
        rebase_margin: float = 0.02,
        idle: IdleMotion = IdleMotion(),
    ) -> None:
        check_avatar_settings(avatar_image, threshold, recover, transition_frames, fps, rebase_s)
        if warmup < 0:
            raise ValueError("need warmup >= 0")
        if avatar_landmarks is None:
            avatar_landmarks = measure_landmarks(avatar_image)
        kp = np.asarray(avatar_landmarks, dtype=np.float32)[:, :2]
        if kp.shape[0] <= max(max(RIGHT_IRIS), max(LEFT_IRIS)):
            raise ValueError(f"need 478 face-mesh landmarks, got {kp.shape[0]}")
        self.image = avatar_image
        self.keypoints = kp
        self.renderer = renderer if renderer is not None else get_renderer("warp")
        self.reference = self.renderer.prepare(avatar_image, kp)
        self.threshold = float(threshold)
        self.recover = float(recover)
        self.transition_frames = int(transition_frames)
        self.fps = float(fps)
        self.warmup = int(warmup)
        self.rebase_s = None if rebase_s is None else float(rebase_s)
        self.rebase_margin = float(rebase_margin)
        self.idle = idle
        self.gate = get_representation()
        self._rest = smile(kp, idle.smile)
        self.composer: Composer | None = None
        self.reset()

    @classmethod
    def from_photo(cls, photo: np.ndarray, size: int = 256, **kwargs: object) -> AvatarAnimator:
        """An animator for any face photo: the face is found, cropped the way the codec crops
        (``box_for_face``) to ``size``, and its landmarks measured. The photo is kept as the
        background of :meth:`full_frame`. Raises ``FaceNotFoundError`` without a face."""
        crop, box = crop_photo(photo, size)
        animator = cls(crop, None, **kwargs)  # type: ignore[arg-type]
        animator.composer = Composer(photo, box)
        return animator

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the sender: the next face starts a new relative transfer."""
        self._frame = 0
        self._initial: np.ndarray | None = None
        self._linear: np.ndarray | None = None
        self._candidates: list[np.ndarray] = []
        warm = self.warmup > 0  # the idle motion meanwhile
        self._glide = FallbackGlide(
            self.threshold, self.recover, self.transition_frames, mix=float(warm), gated=warm
        )
        self._initial_shape = 0.0

    @property
    def initial(self) -> np.ndarray | None:
        """The sender keypoints the motion is taken relative to (``None`` before any face)."""
        return self._initial

    def set_initial(self, sender_keypoints: np.ndarray) -> None:
        """Take the motion relative to these sender keypoints from now on."""
        kp = np.asarray(sender_keypoints, dtype=np.float64)[:, :2]
        if kp.shape != self.keypoints.shape:
            raise ValueError(f"sender keypoints must be {self.keypoints.shape}, got {kp.shape}")
        sim = similarity_fit(kp[list(FACE_OVAL)], self.keypoints[list(FACE_OVAL)])
        self._initial = kp
        self._linear = sim[:, :2]
        self._initial_shape = shape_distance(self.keypoints, kp)

    # -- motion -------------------------------------------------------------------------------
    def transfer(self, sender_keypoints: np.ndarray) -> np.ndarray:
        """Avatar keypoints for these sender keypoints (relative transfer, no gate). The
        first call without an initial frame makes these keypoints the initial frame."""
        kp = np.asarray(sender_keypoints, dtype=np.float64)[:, :2]
        if self._initial is None:
            self.set_initial(kp)
        assert self._initial is not None and self._linear is not None
        delta = (kp - self._initial) @ self._linear.T
        return (self.keypoints + delta).astype(np.float32)

    def distance(self, target: np.ndarray) -> float:
        """ZTE motion distance from the avatar reference to ``target``."""
        return self.gate.gate_distance(self.keypoints, target)

    def natural(self, frame: int | None = None) -> np.ndarray:
        """The natural default motion at ``frame`` (default: the current frame)."""
        t = (self._frame if frame is None else frame) / self.fps
        return close_eyes(self._rest, self.idle.blink_depth * self.idle.blink(t))

    def animate(self, sender_keypoints: np.ndarray | None) -> AvatarFrame:
        """Render the next avatar frame for the sender's keypoints of this frame (``None``:
        no face). Only keypoints go in; the output is always the avatar."""
        index = self._frame
        distance = math.nan
        target: np.ndarray | None = None
        rebased = False
        if index < self.warmup:
            if sender_keypoints is not None:
                self._candidates.append(np.asarray(sender_keypoints, np.float64)[:, :2])
            if index == self.warmup - 1 and self._candidates:
                best = closest_pose(self.keypoints, self._candidates)
                self.set_initial(self._candidates[best])
                self._candidates = []
            gated = True
        else:
            target, distance, gated, rebased = self._follow(sender_keypoints)
        base, share = self._glide.step(gated, target, self._rest)
        if share <= 0.0:
            keypoints = base
        elif share >= 1.0:
            keypoints = self.natural()
        else:
            keypoints = (1.0 - share) * base + share * self.natural()
        keypoints = np.asarray(keypoints, dtype=np.float32)
        image = self.renderer.render(self.reference, keypoints)
        self._frame += 1
        return AvatarFrame(index, image, keypoints, distance, gated, share, rebased)

    def _should_rebase(self, sender_keypoints: np.ndarray) -> bool:
        """Gated for ``rebase_s`` with a face that looks at least as much like the avatar as
        the initial frame did (it moved or zoomed, it did not turn away)?"""
        if self.rebase_s is None:
            return False
        if self._glide.run < self.rebase_s * self.fps:
            return False
        shape = shape_distance(self.keypoints, sender_keypoints)
        return shape <= self._initial_shape + self.rebase_margin

    def full_frame(self, frame: AvatarFrame) -> np.ndarray:
        """The avatar frame composed into the avatar's photo (animators made with
        :meth:`from_photo`; body and photo border held still, see :mod:`keyface.compose`)."""
        if self.composer is None:
            raise ValueError("no photo to compose into: make the animator with from_photo()")
        return self.composer.compose(frame.image, self.reference, frame.keypoints)


def crop_photo(photo: np.ndarray, size: int = 256) -> tuple[np.ndarray, CropBox]:
    """``(crop, box)``: the face of a photo cropped the way the codec crops (``box_for_face``)
    to a ``size`` square, and its box in the photo. ``FaceNotFoundError`` without a face."""
    check_image(photo, "photo")
    with FaceDetector() as detector:
        faces = detector.detect(photo)
    if not faces:
        raise FaceNotFoundError("no face found in the avatar photo")
    h, w = photo.shape[:2]
    box = box_for_face(faces[0], w, h)
    return apply_crop(photo, box, size), box


def measure_landmarks(image: np.ndarray) -> np.ndarray:
    """Face-mesh landmarks ``(478, 3)`` of a still face crop; ``FaceNotFoundError`` if none."""
    with LandmarkTracker(video=False) as tracker:
        lm = tracker.process(image)
    if lm is None:
        raise FaceNotFoundError("no face found in the avatar image")
    return lm


__all__ = [
    "AVATAR_THRESHOLD",
    "AvatarAnimator",
    "AvatarFrame",
    "FallbackGlide",
    "IdleMotion",
    "check_avatar_settings",
    "close_eyes",
    "closest_pose",
    "crop_photo",
    "measure_landmarks",
    "shape_distance",
    "smile",
]
