"""Square face crops: one fixed box per clip (:func:`plan_crop`), a streaming box for live video
(:class:`CropTracker`), and the resampling itself (:func:`apply_crop`).

Framing follows the VoxCeleb / FOMM convention the talking-head models are trained on: a square
of ``scale`` times the face size, centred on the face but moved up a little so the whole head
with its hair fits and the chin and the top of the neck are still inside. The geometry is in
:func:`box_for_face`, shared by the offline and the streaming paths so both frame alike.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import cv2
import numpy as np

from keyface.face.detect import FaceBox, FaceDetector, FaceNotFoundError
from keyface.types import CropBox, Frame, check_image

DEFAULT_SCALE = 1.85
"""Crop side over face size (``max(w, h)`` of the detector box).

Measured on VoxCeleb-style 256x256 clips (FOMM crops): the frame is 1.84-1.92 face sizes.
"""

DEFAULT_SHIFT = 0.15
"""How far the crop centre sits above the face-box centre, in face heights.

Measured on the same VoxCeleb-style clips: 0.10-0.17.
"""

MAX_NUDGE = 0.1
"""At most this fraction of the side, a box poking out of the frame is moved back inside."""

SIZE_PERCENTILE = 90.0
"""The clip's face size is this percentile of the sampled sizes (close-ups must fit too)."""

MOTION_MARGIN = 0.15
"""Margin, in face sizes, kept around the spread of face boxes over a clip that moves."""

PREFILTER_RATIO = 1.5
"""Above this downscale ratio the source region is low-pass filtered before the warp."""

ALREADY_CROPPED = 0.9
"""A square input whose face framing is at least this share of its side is already a face crop
and is used whole (:func:`settle_crop`). Framing a 480x480 talking-head clip again asked for a
592-px box (1.23x the frame, a quarter of it replicated border); used whole it scored LPIPS
0.139 instead of 0.323 against the same source (issue 17)."""


def box_for_face(
    face: FaceBox,
    width: int,
    height: int,
    *,
    scale: float = DEFAULT_SCALE,
    shift: float = DEFAULT_SHIFT,
) -> CropBox:
    """The square crop framing ``face`` in a ``width x height`` frame."""
    side = scale * face.size
    return _place(face.cx, face.cy - shift * face.h, side, width, height)


def _nudge(centre: float, side: float, extent: int) -> float:
    """Move a box that pokes out of ``[0, extent]`` back in, by at most ``MAX_NUDGE * side``.

    Real pixels are better than replicated borders, but the face must stay near the centre,
    so only a small move is allowed. A box larger than the frame moves towards the frame's
    centre, where it overhangs least.
    """
    if side >= extent:
        target = extent / 2
    else:
        target = min(max(centre, side / 2), extent - side / 2)
    limit = MAX_NUDGE * side
    return centre + max(-limit, min(limit, target - centre))


def _place(cx: float, cy: float, side: float, width: int, height: int) -> CropBox:
    side = max(float(side), 2.0)
    return CropBox(
        cx=float(_nudge(cx, side, width)),
        cy=float(_nudge(cy, side, height)),
        side=side,
        source_width=int(width),
        source_height=int(height),
    )


def frame_coverage(box: CropBox) -> float:
    """The fraction of ``box``'s area that lies inside its source frame (1.0: fully inside)."""
    w = max(0.0, min(box.x0 + box.side, box.source_width) - max(box.x0, 0.0))
    h = max(0.0, min(box.y0 + box.side, box.source_height) - max(box.y0, 0.0))
    return w * h / (box.side * box.side)


def settle_crop(box: CropBox) -> CropBox:
    """The crop keyface uses for a planned framing ``box``: the whole frame when the input is
    square and the framing covers at least :data:`ALREADY_CROPPED` of its side (the input is
    already a face crop: taking it whole beats padding its edges), else ``box`` itself.

    The one decision shared by :func:`plan_crop` (``keyface crop``, ``encode``, ``bench``) and
    the live sender (``keyface.server.sender.LiveFaceAnalyzer``), so that all of them code and
    compare the same pixels.
    """
    w, h = box.source_width, box.source_height
    if w == h and box.side >= ALREADY_CROPPED * w:
        return CropBox.full(w, h)
    return box


def snap_to_grid(box: CropBox) -> CropBox:
    """``box`` moved and sized to whole pixels (its corner by at most half a pixel, its side
    by at most half a pixel). A full-frame stream's box is fixed for the whole call: on the
    pixel grid, the receiver scales each crop into it with a separable resize instead of a
    warp (``keyface.compose.Composer``: 0.6 ms instead of 5.9 ms a frame at 1280x720)."""
    side = max(1, round(box.side))
    x0, y0 = round(box.x0), round(box.y0)
    return CropBox(x0 + side / 2, y0 + side / 2, float(side), box.source_width, box.source_height)


def plan_crop(
    frames: Iterable[Frame],
    *,
    scale: float = DEFAULT_SCALE,
    sample_every: int = 5,
    detector: FaceDetector | None = None,
    shift: float = DEFAULT_SHIFT,
    settle: bool = True,
) -> CropBox:
    """One square crop box for a whole clip (FOMM / VoxCeleb style, no jitter at all).

    Every ``sample_every``-th frame is run through the face detector and the most prominent
    face kept. The side is ``scale`` times a high percentile of the face size, enlarged if
    needed so that the face boxes of all sampled frames (5th-95th percentile of their extent)
    fit with a margin, and the centre is the median face centre moved up by ``shift`` face
    heights so the hair is inside and the chin and neck still fit.

    The box may extend past the frame: it is moved back inside by at most 10 % of its side,
    and what remains outside is filled by edge replication in :func:`apply_crop`. A square
    input that is already a tight face crop (the framing would be larger than about 0.9 of the
    frame) is used whole instead (:func:`settle_crop`; ``settle=False`` returns the raw
    framing, which :func:`frame_coverage` measures).

    Raises :class:`FaceNotFoundError` when no sampled frame has a face, and ``ValueError`` for
    an empty clip or bad arguments.
    """
    if sample_every < 1:
        raise ValueError(f"sample_every must be >= 1, got {sample_every}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    own = detector is None
    det = FaceDetector() if detector is None else detector
    faces: list[FaceBox] = []
    sampled = 0
    size: tuple[int, int] | None = None
    try:
        for i, frame in enumerate(frames):
            if size is None:
                size = (frame.width, frame.height)
            if i % sample_every:
                continue
            sampled += 1
            found = det.detect(frame.image)
            if found:
                faces.append(found[0])
    finally:
        if own:
            det.close()
    if size is None:
        raise ValueError("plan_crop: the clip has no frames")
    if not faces:
        raise FaceNotFoundError(f"no face found in {sampled} sampled frames of the video")
    box = _plan_from_faces(faces, size[0], size[1], scale=scale, shift=shift)
    return settle_crop(box) if settle else box


def _plan_from_faces(
    faces: list[FaceBox], width: int, height: int, *, scale: float, shift: float
) -> CropBox:
    arr = np.array([(f.x, f.y, f.w, f.h) for f in faces], dtype=np.float64)
    x, y, w, h = arr.T
    face_size = float(np.percentile(np.maximum(w, h), SIZE_PERCENTILE))
    face_h = float(np.median(h))
    cx = float(np.median(x + w / 2))
    cy = float(np.median(y + h / 2)) - shift * face_h
    # The face boxes' spread over the clip (robust to a few false detections) must fit too.
    margin = MOTION_MARGIN * face_size
    left, right = np.percentile(x, 5), np.percentile(x + w, 95)
    top, bottom = np.percentile(y, 5), np.percentile(y + h, 95)
    need = 2 * max(cx - left, right - cx, cy - top, bottom - cy) + 2 * margin
    side = max(scale * face_size, float(need))
    return _place(cx, cy, side, width, height)


class CropTracker:
    """Streaming crop box for live video: still while the face stays put, smooth when it moves.

    Sans-I/O: feed one detection (or ``None``) per frame to :meth:`update` and use the box it
    returns. The box is fixed while the face centre stays within a dead zone of ``dead_zone``
    times the side around the place it was framed at, and its size within ``size_tolerance``
    of the framed size. When the face leaves the dead zone, the box glides to a fresh framing
    over ``transition_frames`` frames (smoothstep easing) and stops again (hysteresis: it
    re-centres fully, so the face is back in the middle of the dead zone). Detections are
    median-filtered over the last ``history`` frames, so a single wrong detection does not move
    the box. Before the first face the box is the largest centred square of the frame; while
    the face is lost the box holds still.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        scale: float = DEFAULT_SCALE,
        shift: float = DEFAULT_SHIFT,
        dead_zone: float = 0.1,
        size_tolerance: float = 0.25,
        transition_frames: int = 6,
        history: int = 3,
    ) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"bad frame size {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.scale, self.shift = scale, shift
        self.dead_zone, self.size_tolerance = dead_zone, size_tolerance
        self.transition_frames = max(1, int(transition_frames))
        self._recent: deque[FaceBox] = deque(maxlen=max(1, int(history)))
        side = float(min(self.width, self.height))
        self._box = CropBox(self.width / 2, self.height / 2, side, self.width, self.height)
        self._framed: CropBox | None = None  # the box the current face position asks for
        self._start = self._box
        self._step = 0  # frames into the current transition; == transition_frames when idle

    @property
    def box(self) -> CropBox:
        """The box returned by the last :meth:`update`."""
        return self._box

    @property
    def moving(self) -> bool:
        """Whether the box is gliding to a new framing."""
        return self._framed is not None and self._step < self.transition_frames

    def reset(self) -> None:
        """Forget the face: the next detection is framed at once."""
        self._recent.clear()
        self._framed = None
        self._step = self.transition_frames

    def _smoothed(self) -> FaceBox:
        arr = np.array([(f.cx, f.cy, f.w, f.h, f.score) for f in self._recent])
        cx, cy, w, h, score = np.median(arr, axis=0)
        return FaceBox(cx - w / 2, cy - h / 2, w, h, score)

    def _outside_dead_zone(self, target: CropBox) -> bool:
        assert self._framed is not None
        ref = self._framed
        ratio = target.side / ref.side
        if ratio > 1 + self.size_tolerance or ratio < 1 / (1 + self.size_tolerance):
            return True
        limit = self.dead_zone * ref.side
        return abs(target.cx - ref.cx) > limit or abs(target.cy - ref.cy) > limit

    def update(self, face: FaceBox | None) -> CropBox:
        """Advance one frame with this frame's face (``None`` if none found); the box to use."""
        if face is not None:
            self._recent.append(face)
            target = box_for_face(
                self._smoothed(), self.width, self.height, scale=self.scale, shift=self.shift
            )
            if self._framed is None:
                # First face (or after reset): frame it at once, no glide from nowhere.
                self._framed = target
                self._box = target
                self._step = self.transition_frames
                return self._box
            if self._outside_dead_zone(target):
                self._start = self._box
                self._framed = target
                self._step = 0
        if self._framed is not None and self._step < self.transition_frames:
            self._step += 1
            t = self._step / self.transition_frames
            a = t * t * (3 - 2 * t)
            s, e = self._start, self._framed
            self._box = CropBox(
                s.cx + a * (e.cx - s.cx),
                s.cy + a * (e.cy - s.cy),
                s.side + a * (e.side - s.side),
                self.width,
                self.height,
            )
        return self._box


def _region(box: CropBox, pad: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer frame region ``(x0, y0, x1, y1)`` covering ``box`` plus ``pad``, clipped."""
    x0 = max(0, math.floor(box.x0) - pad)
    y0 = max(0, math.floor(box.y0) - pad)
    x1 = min(width, math.ceil(box.x0 + box.side) + pad)
    y1 = min(height, math.ceil(box.y0 + box.side) + pad)
    return x0, y0, x1, y1


def _multiple(lo: int, hi: int, k: int, extent: int) -> tuple[int, int]:
    """Shrink ``[lo, hi)`` to a multiple of ``k`` long, keeping the end that is a frame edge."""
    n = (hi - lo) // k * k
    if hi == extent and lo > 0:
        return hi - n, hi
    return lo, lo + n


def apply_crop(image: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Resample the square ``box`` of ``image`` to a ``(size, size, 3)`` uint8 crop.

    Outside the frame the edge pixels are replicated. When the box is more than 1.5 times
    larger than the crop, only its region of the frame is low-pass filtered first, so that
    fine detail does not alias: averaged over ``k x k`` blocks (``k`` the integer part of the
    ratio, leaving a ratio below 1.5 to the bilinear warp) from a ratio of 2, and blurred with
    a small Gaussian between 1.5 and 2.
    """
    check_image(image)
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    h, w = image.shape[:2]
    matrix = box.to_crop_matrix(size)
    source = image
    ratio = box.side / size
    if ratio > PREFILTER_RATIO:
        k = int(ratio) if ratio >= 2 else 1
        x0, y0, x1, y1 = _region(box, 2 * k + 4, w, h)
        x0, x1 = _multiple(x0, x1, k, w)
        y0, y1 = _multiple(y0, y1, k, h)
        if x1 - x0 >= 2 * k and y1 - y0 >= 2 * k:
            roi = image[y0:y1, x0:x1]
            if k >= 2:
                source = cv2.resize(
                    roi, ((x1 - x0) // k, (y1 - y0) // k), interpolation=cv2.INTER_AREA
                )
            else:
                sigma = 0.45 * math.sqrt(ratio * ratio - 1.0)
                source = cv2.GaussianBlur(roi, (5, 5), sigma, borderType=cv2.BORDER_REPLICATE)
            # reduced pixel u -> frame pixel x = k * u + (k - 1) / 2 + x0 (pixel centres)
            offset = (k - 1) / 2
            to_frame = np.array([[k, 0.0, offset + x0], [0.0, k, offset + y0]])
            shift = matrix[:, 2].copy()
            matrix = matrix[:, :2] @ to_frame
            matrix[:, 2] += shift
    return cv2.warpAffine(
        source,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
