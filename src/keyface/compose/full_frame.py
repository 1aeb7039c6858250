"""Full-resolution composition (ZTE §3.4): the animated face crop stitched into the full frame.

The codec animates a square face crop (256x256 by default). The receiver shows the speaker's
full frame (e.g. 1280x720): a still background picture (the ``--full-frame`` BACKGROUND of the
stream, or an avatar's own picture) with the animated crop resampled into its box. Two things
make the join invisible:

1. **The body is held still.** The renderer moves the head, the neck follows part of it and
   the crop border is pinned, so the neck and shoulders are stretched a little inside the crop.
   Cross-fading such a moved crop with the still background doubles every edge in the fade
   (a collar line seen twice). :class:`Composer` therefore *holds the motion* near the body
   and the crop border: below the chin and in a band inside the crop border, the reference
   (the keyframe the face was rendered from) is resampled with the renderer's motion scaled
   by a weight ``W`` that falls smoothly from 1 (head, full motion) to 0 (shoulders, crop
   border: the reference as it is). One geometric warp, no cross-fade of moved content, so
   nothing doubles; the stretch is spread over the neck. The rendered face is kept where
   ``W`` is (nearly) 1; for the warp renderer the two layers agree exactly there, for a learned
   generator they are cross-faded where the geometry already agrees (``W >= colour_from``).
2. **The crop is blended into the frame with a soft ring** (raised cosine over
   ``feather * side`` pixels at the box border, as :func:`keyface.face.paste_back`), so the
   crop's still border meets the background without an edge. Outside the box the background
   is kept exactly.

The motion used for the hold is the warp's own geometric model
(:func:`keyface.render.warp.control_points` / :func:`~keyface.render.warp.dense_flow`): for
the warp renderer it is the exact flow of the rendered face.

A box larger than the crop (the usual case: a 480-pixel face box from a 256 crop) is scaled up
with bicubic interpolation (``interpolation="cubic"``): in the face box of ``lp_s18`` (a
495-pixel box) it is 0.25 dB closer to the original than bilinear when the uncoded 256 crop is
scaled up, 0.1 dB for the decoded keyframe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from keyface.face.paste import blend_mask
from keyface.facemesh import FACE_OVAL
from keyface.render.warp import Reference, face_flow, warp_image
from keyface.types import CropBox, check_image

DEFAULT_FEATHER = 0.08
"""Width of the soft ring at the box border, as a share of the box side (as the pipeline's
``PASTE_FEATHER``)."""

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}


@dataclass(frozen=True)
class BodyHold:
    """Where the composer holds the motion still (lengths relative to the reference face).

    The motion weight ``W`` is the product of a vertical ramp below the chin and a ramp inside
    the crop border, both raised cosines:

    * below the chin: 1 down to ``neck_start`` face heights under the chin, 0 from
      ``neck_end`` face heights under it (the shoulders). The face height is the height of
      the face-mesh oval (hairline to chin) of the reference.
    * at the crop border: 0 over the ``feather`` ring (where the crop is blended into the
      background), rising to 1 over a further ``border`` share of the crop side.
    """

    neck_start: float = 0.0
    neck_end: float = 0.3
    border: float = 0.08
    colour_from: float = 0.7
    """``W`` above which the rendered face is cross-faded in (1 at ``W = 1``); below it the
    held reference is shown alone. Only matters for renderers other than the warp."""
    grid: int = 2
    """Grid step of the motion field (the warp renderer's own; 2 keeps the layers identical)."""

    def __post_init__(self) -> None:
        if not 0 <= self.neck_start < self.neck_end:
            raise ValueError("need 0 <= neck_start < neck_end")
        if self.border < 0:
            raise ValueError("border must be >= 0")
        if not 0 <= self.colour_from < 1:
            raise ValueError("colour_from must be in [0, 1)")
        if self.grid < 1:
            raise ValueError("grid must be >= 1")


def smoothstep(t: np.ndarray) -> np.ndarray:
    """Raised cosine from 0 (``t <= 0``) to 1 (``t >= 1``), float32."""
    t = np.clip(t, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def motion_weight(
    keypoints: np.ndarray, size: int, hold: BodyHold, feather: float = DEFAULT_FEATHER
) -> np.ndarray:
    """``(size, size)`` float32 motion weight ``W`` of a crop whose face has ``keypoints``
    (the reference's, in crop pixels): 1 where the head moves freely, 0 where it is held.

    See :class:`BodyHold` for the shape.
    """
    kp = np.asarray(keypoints, dtype=np.float64)[:, :2]
    if kp.shape[0] <= max(FACE_OVAL):
        raise ValueError(f"need face-mesh keypoints (>= {max(FACE_OVAL) + 1}), got {kp.shape[0]}")
    oval = kp[list(FACE_OVAL)]
    chin = float(oval[:, 1].max())
    face_h = max(float(oval[:, 1].max() - oval[:, 1].min()), 1.0)
    c = np.arange(size, dtype=np.float64) + 0.5
    start = chin + hold.neck_start * face_h
    span = (hold.neck_end - hold.neck_start) * face_h
    body = 1.0 - smoothstep((c - start) / span)
    edge = np.minimum(c, size - c)
    ring = feather * size
    if hold.border > 0:
        border = smoothstep((edge - ring) / (hold.border * size))
    else:
        border = (edge > ring).astype(np.float32)
    return np.ascontiguousarray((body * border)[:, None] * border[None, :], dtype=np.float32)


def holds(keypoints: np.ndarray) -> bool:
    """Whether the body hold applies to ``keypoints``: face-mesh ones (the oval is there)."""
    return np.asarray(keypoints).shape[0] > max(FACE_OVAL)


def hold_motion(
    face: np.ndarray,
    reference: Reference,
    keypoints: np.ndarray,
    hold: BodyHold = BodyHold(),
    feather: float = DEFAULT_FEATHER,
) -> np.ndarray:
    """The rendered crop ``face`` with the motion near the body and the crop border held.

    ``reference`` is the (prepared) reference the face was rendered from and ``keypoints`` the
    driving keypoints it was rendered with, both in crop pixels. Returns a uint8 crop of the
    same size: the reference resampled with the motion scaled by :func:`motion_weight`, and
    the rendered face where that weight is (nearly) 1.
    """
    check_image(face, "face")
    size = face.shape[0]
    if face.shape[:2] != (size, size) or reference.image.shape != face.shape:
        raise ValueError(
            f"face {face.shape} and reference {reference.image.shape} must be the same square"
        )
    weight, colour = _hold_weights(reference, size, hold, feather)
    flow = face_flow(reference, keypoints, hold.grid)  # the renderer's, when it just made it
    ident = _identity_flow(size)
    held_flow = ident + weight * (flow - ident)
    held = warp_image(reference.image, held_flow)
    out = held.astype(np.float32) + colour * (face.astype(np.float32) - held)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


_HOLD_CACHE = "hold_weights"


def _hold_weights(
    reference: Reference, size: int, hold: BodyHold, feather: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(W, colour)`` as ``(size, size, 1)`` float32 for ``reference``: they depend on the
    reference alone, so they are computed once per keyframe and kept in its cache."""
    key = (size, hold, feather)
    cached = reference.cache.get(_HOLD_CACHE)
    if cached is not None and cached[0] == key:
        return cached[1]
    weight = motion_weight(reference.keypoints, size, hold, feather)
    colour = smoothstep((weight - hold.colour_from) / (1.0 - hold.colour_from))
    weights = (weight[..., None], colour[..., None])
    reference.cache[_HOLD_CACHE] = (key, weights)
    return weights


@lru_cache(maxsize=4)
def _identity_flow(size: int) -> np.ndarray:
    """``(size, size, 2)`` float32: every pixel's own (x, y). Read-only."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    ident = np.stack([grid[1], grid[0]], axis=-1)
    ident.flags.writeable = False
    return ident


class Composer:
    """Stitch rendered face crops into one speaker's full frame (sans-I/O, one per stream).

    ``background`` is the full frame the face is pasted into (``H x W x 3`` uint8: the
    stream's decoded BACKGROUND, the first frame, or an avatar's picture) and ``box`` the
    square face box in its pixels (``box.source_width/height`` must match it; it may poke out
    of the frame). The crops may have any square size: they are resampled to the box with
    ``interpolation`` (``"cubic"``, ``"linear"``; ``"area"`` is used when shrinking by more
    than 1.5x). ``hold`` (``None``: off) holds the motion near the body, see the module
    docstring; it needs the reference and the driving keypoints of each frame.

    Pixels outside the box, and those of the box beyond the frame, are the background
    exactly; the composition is deterministic and does not keep state between frames.
    """

    def __init__(
        self,
        background: np.ndarray,
        box: CropBox,
        *,
        feather: float = DEFAULT_FEATHER,
        hold: BodyHold | None = BodyHold(),
        interpolation: str = "cubic",
    ) -> None:
        check_image(background, "background")
        h, w = background.shape[:2]
        if (box.source_width, box.source_height) != (w, h):
            raise ValueError(
                f"box is for a {box.source_width}x{box.source_height} frame, background is {w}x{h}"
            )
        if not 0 <= feather <= 0.5:
            raise ValueError(f"feather must be in [0, 0.5], got {feather}")
        if interpolation not in _INTERPOLATION:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}")
        if box.side < 2:
            raise ValueError(f"box side must be >= 2, got {box.side}")
        self.background = background
        self.box = box
        self.feather = float(feather)
        self.hold = hold
        self.interpolation = interpolation
        x0, y0 = max(0, math.floor(box.x0)), max(0, math.floor(box.y0))
        x1 = min(w, math.ceil(box.x0 + box.side))
        y1 = min(h, math.ceil(box.y0 + box.side))
        self.region = (x0, y0, x1, y1)
        """``(x0, y0, x1, y1)``: the part of the frame the composition may change."""
        self._grid_side = _grid_side(box)
        """The box side when the box lies on the pixel grid (whole-pixel corner and side, as
        ``keyface send --full-frame`` makes it): the crop then scales into it with a separable
        resize; else ``None`` (a general warp)."""
        self._alpha = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), np.float32)
        self._ring: list[tuple[tuple[slice, slice], np.ndarray, np.ndarray]] = []
        if x1 > x0 and y1 > y0:
            self._alpha = blend_mask(box, x0, y0, x1, y1, self.feather)
            # Where the weight is 1 (the core) the crop replaces the frame; only the ring
            # around it is blended, with its weights and background kept ready.
            rows = np.flatnonzero(self._alpha.max(axis=1) >= 1.0)
            cols = np.flatnonzero(self._alpha.max(axis=0) >= 1.0)
            if rows.size and cols.size:
                r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                slabs = [
                    (slice(0, r0), slice(None)),
                    (slice(r1, None), slice(None)),
                    (slice(r0, r1), slice(0, c0)),
                    (slice(r0, r1), slice(c1, None)),
                ]
            else:
                slabs = [(slice(None), slice(None))]
            region = background[y0:y1, x0:x1]
            for sl in slabs:
                if self._alpha[sl].size:
                    below = region[sl].astype(np.float32)
                    self._ring.append((sl, self._alpha[sl][..., None].copy(), below))

    @property
    def alpha(self) -> np.ndarray:
        """``(y1 - y0, x1 - x0)`` float32 weight of the crop over the background in
        :attr:`region` (1 in the box core, raised-cosine ring at its border)."""
        return self._alpha

    def compose(
        self,
        face: np.ndarray,
        reference: Reference | None = None,
        keypoints: np.ndarray | None = None,
    ) -> np.ndarray:
        """The full frame with ``face`` (a square crop) in the box.

        With ``reference`` (what ``face`` was rendered from: image and keypoints) and the
        driving ``keypoints``, the motion near the body and the box border is held (see
        :func:`hold_motion`); without them (or ``hold=None``) the crop is pasted as it is.
        A keyframe is its own reference: passing it changes nothing. The hold is the face
        mesh's (it places the neck under the mesh's chin and moves the reference with the
        warp's flow): keypoints of another representation (``fomm``, whose generator has its
        own flow) are pasted as they are, as the ZTE paper composes.
        """
        check_image(face, "face")
        if face.shape[0] != face.shape[1]:
            raise ValueError(f"face must be square, got {face.shape[1]}x{face.shape[0]}")
        if (
            self.hold is not None
            and reference is not None
            and keypoints is not None
            and holds(reference.keypoints)
            and holds(keypoints)
        ):
            face = hold_motion(face, reference, keypoints, self.hold, self.feather)
        out = self.background.copy()
        x0, y0, x1, y1 = self.region
        if x1 <= x0 or y1 <= y0:
            return out
        region = out[y0:y1, x0:x1]
        region[...] = self._resample(face)
        for sl, alpha, below in self._ring:
            mixed = below + alpha * (region[sl].astype(np.float32) - below)
            region[sl] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
        return out

    def _resample(self, face: np.ndarray) -> np.ndarray:
        """``face`` resampled into :attr:`region` (uint8)."""
        x0, y0, x1, y1 = self.region
        n = face.shape[0]
        if n > 1.5 * self.box.side:
            n = max(2, round(self.box.side))
            face = cv2.resize(face, (n, n), interpolation=cv2.INTER_AREA)
        side = self._grid_side
        if side is not None and n <= side and self.interpolation != "area":
            # The same geometry as the warp below (pixel centres to pixel centres), separable:
            # 0.6 ms instead of 5.9 ms for a 256 crop into a 495-pixel box with bicubic
            # interpolation; within 2 levels of the warp on lp_s18's crops, 3 at a hard edge
            # (the warp rounds its sub-pixel positions to 1/32; tests/test_compose.py).
            scaled = cv2.resize(
                np.ascontiguousarray(face),
                (side, side),
                interpolation=_INTERPOLATION[self.interpolation],
            )
            bx, by = round(self.box.x0), round(self.box.y0)
            return scaled[y0 - by : y1 - by, x0 - bx : x1 - bx]
        matrix = self.box.to_source_matrix(n)
        matrix[0, 2] -= x0
        matrix[1, 2] -= y0
        return cv2.warpAffine(
            np.ascontiguousarray(face),
            matrix,
            (x1 - x0, y1 - y0),
            flags=_INTERPOLATION[self.interpolation],
            borderMode=cv2.BORDER_REPLICATE,
        )


def _grid_side(box: CropBox) -> int | None:
    """``box.side`` as an int when the box's corner and side are whole pixels, else ``None``."""
    side, x0, y0 = box.side, box.x0, box.y0
    if all(abs(v - round(v)) < 1e-6 for v in (side, x0, y0)) and round(side) >= 2:
        return round(side)
    return None
