"""Where viewers look, measured per frame (issue 18): mouth and eye regions, the open/closed state
of the eyes, how far the mouth is open, and flicker outside the face.

Means hide these failures: one closed eye or a flat red mouth in a few frames barely moves a
whole-frame LPIPS. Every measure is per frame, placed by the *reference's* face-mesh landmarks
(the decoded frame's landmarks only where a state is compared), so that a wrong mouth is
compared with the right place:

* ``lpips_mouth`` / ``lpips_eyes``: LPIPS-Alex of the square around the outer lips / around each
  eye (mean of the two), side 1.6x the region's extent (at least 24 px), resized to 64x64;
  ``lpips_mouth_open`` is ``lpips_mouth`` on the frames whose reference mouth is open (above
  :data:`OPEN_MOUTH`; the others NaN): where a flat red oval shows;
* ``eye_state``: 1 when the decoded frame shows an eye clearly open that the reference shows
  clearly closed, or the reverse, 0 otherwise; its mean is the share of frames that disagree.
  An eye is closed below :data:`CLOSED_SHARE` of its open aspect ratio (the median over the
  reference clip: people and meshes differ, a fixed threshold flips on a narrow eye) and open
  above :data:`OPEN_SHARE` of it; in between it is unsure and never counts as a disagreement;
* ``gaze_off``: 1 when an eye open in both frames looks elsewhere in the decoded one (its iris
  centre more than :data:`GAZE_OFF` of the eye's corner-to-corner width from the reference's,
  :func:`keyface.facemesh.gaze`), 0 otherwise, NaN without an eye open in both: its mean is the
  share of frames whose eyes look the wrong way;
* ``mouth_open``: |inner-lip gap / mouth width| of the decoded frame minus the reference's;
* ``flicker``: mean absolute error of the frame-to-frame change outside the face oval (hair,
  shoulders, background), in 0..255 grey levels: a still background that ripples or pumps in
  the decoded video scores high even where each frame looks plausible.

A frame without a face in the reference (or, for the state measures, in the decoded frame) is
NaN and left out of the mean, as for ``akd``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from keyface.facemesh import (
    FACE_OVAL,
    LEFT_EYE,
    LEFT_EYE_EAR,
    OUTER_LIPS,
    RIGHT_EYE,
    RIGHT_EYE_EAR,
    eye_aspect_ratio,
    gaze,
    mouth_opening,
)

__all__ = [
    "eye_aspect_ratio",
    "eye_states",
    "flicker",
    "gaze_measures",
    "mouth_opening",
    "open_eye_ratios",
    "region_box",
    "region_pairs",
    "state_measures",
]

CLOSED_SHARE = 0.6
OPEN_SHARE = 0.8
"""An eye is closed below ``CLOSED_SHARE`` and open above ``OPEN_SHARE`` times its open eye
aspect ratio (the reference clip's median for that eye; open eyes measure about 0.2-0.35 on
MediaPipe's mesh, a blink goes below 0.1)."""
GAZE_OFF = 0.1
"""An eye looks elsewhere when its iris centre moved more than this share of the eye's width
(looking ahead it measures about 0.45-0.55 of the way from the outer to the inner corner;
d10's sideways glances measured 0.29-0.32 and 0.69-0.78)."""
OPEN_MOUTH = 0.15
"""A mouth is open (the teeth or the inside show) above this inner-lip gap over inner mouth
width: ``lpips_mouth_open`` scores those frames only."""
REGION_SIZE = 64
REGION_SCALE = 1.6
REGION_MIN_SIDE = 24.0

Landmarks = np.ndarray | None


def eye_states(landmarks: np.ndarray, open_ears: tuple[float, float]) -> tuple[str, str]:
    """``"open"``, ``"closed"`` or ``"unsure"`` for (right, left), relative to each eye's open
    aspect ratio ``open_ears``."""
    out = []
    for eye, reference in zip((RIGHT_EYE_EAR, LEFT_EYE_EAR), open_ears, strict=True):
        ear = eye_aspect_ratio(landmarks, eye)
        if ear < CLOSED_SHARE * reference:
            out.append("closed")
        elif ear > OPEN_SHARE * reference:
            out.append("open")
        else:
            out.append("unsure")
    return out[0], out[1]


def open_eye_ratios(marks: Sequence[Landmarks]) -> tuple[float, float]:
    """Each eye's median aspect ratio over the frames with a face (its open state)."""
    found = [m for m in marks if m is not None]
    if not found:
        return (0.0, 0.0)
    right = float(np.median([eye_aspect_ratio(m, RIGHT_EYE_EAR) for m in found]))
    left = float(np.median([eye_aspect_ratio(m, LEFT_EYE_EAR) for m in found]))
    return right, left


def region_box(landmarks: np.ndarray, indices: Sequence[int], shape: tuple[int, ...]) -> tuple:
    """``(x0, y0, side)`` of the square around ``indices`` (scaled by ``REGION_SCALE``)."""
    pts = landmarks[list(indices), :2]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    side = max(float((hi - lo).max()) * REGION_SCALE, REGION_MIN_SIDE)
    side = min(side, float(min(shape[0], shape[1])))
    x0 = float(np.clip(centre[0] - side / 2, 0, shape[1] - side))
    y0 = float(np.clip(centre[1] - side / 2, 0, shape[0] - side))
    return x0, y0, side


def cut(image: np.ndarray, box: tuple) -> np.ndarray:
    """The square ``box`` of ``image``, resized to ``REGION_SIZE``."""
    x0, y0, side = box
    m = np.array(
        [
            [REGION_SIZE / side, 0, -x0 * REGION_SIZE / side],
            [0, REGION_SIZE / side, -y0 * REGION_SIZE / side],
        ]
    )
    return cv2.warpAffine(image, m, (REGION_SIZE, REGION_SIZE), flags=cv2.INTER_AREA)


def outside_face(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(H, W)`` bool: pixels outside the face oval (dilated by 4 % of the frame side)."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(landmarks[list(FACE_OVAL), :2]).astype(np.int32)], 1)
    k = max(3, int(0.04 * max(shape[:2])) | 1)
    mask = cv2.dilate(mask, np.ones((k, k), np.uint8))
    return mask == 0


def flicker(
    ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], marks: Sequence[Landmarks]
) -> list[float]:
    """Per frame: mean |(dist_t - dist_t-1) - (ref_t - ref_t-1)| of the grey levels outside the
    reference's face oval (frame 0 and frames without a face: NaN)."""
    values = [float("nan")]
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in ref]
    grey_d = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in dist]
    for t in range(1, len(ref)):
        lm = marks[t]
        if lm is None:
            values.append(float("nan"))
            continue
        outside = outside_face(lm, ref[t].shape)
        if not outside.any():
            values.append(float("nan"))
            continue
        err = (grey_d[t] - grey_d[t - 1]) - (grey[t] - grey[t - 1])
        values.append(float(np.abs(err[outside]).mean()))
    return values


def state_measures(
    ref_marks: Sequence[Landmarks], dist_marks: Sequence[Landmarks]
) -> tuple[list[float], list[float]]:
    """Per frame ``eye_state`` (0/1, NaN without both faces) and ``mouth_open`` (NaN likewise);
    the eyes' open aspect ratios come from the reference clip."""
    open_ears = open_eye_ratios(ref_marks)
    eye, mouth = [], []
    for a, b in zip(ref_marks, dist_marks, strict=True):
        if a is None or b is None:
            eye.append(float("nan"))
            mouth.append(float("nan"))
            continue
        sa, sb = eye_states(a, open_ears), eye_states(b, open_ears)
        clash = any({x, y} == {"open", "closed"} for x, y in zip(sa, sb, strict=True))
        eye.append(float(clash))
        mouth.append(abs(mouth_opening(b) - mouth_opening(a)))
    return eye, mouth


def gaze_measures(ref_marks: Sequence[Landmarks], dist_marks: Sequence[Landmarks]) -> list[float]:
    """Per frame ``gaze_off`` (0/1; NaN without both faces or without an eye open in both)."""
    open_ears = open_eye_ratios(ref_marks)
    values = []
    for a, b in zip(ref_marks, dist_marks, strict=True):
        ga = None if a is None else gaze(a)
        gb = None if b is None else gaze(b)
        if a is None or b is None or ga is None or gb is None:
            values.append(float("nan"))
            continue
        both_open = [
            x == y == "open"
            for x, y in zip(eye_states(a, open_ears), eye_states(b, open_ears), strict=True)
        ]
        offs = [abs(p - q) > GAZE_OFF for p, q, o in zip(ga, gb, both_open, strict=True) if o]
        values.append(float(any(offs)) if offs else float("nan"))
    return values


def region_pairs(
    ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], marks: Sequence[Landmarks], which: str
) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    """The region crops of ``which`` (``mouth`` or ``eyes``): ``(frame of each pair, reference
    crops, decoded crops)``; frames without a reference face have none."""
    regions = (OUTER_LIPS,) if which == "mouth" else (RIGHT_EYE, LEFT_EYE)
    owners: list[int] = []
    a_crops: list[np.ndarray] = []
    b_crops: list[np.ndarray] = []
    for t, (a, b, lm) in enumerate(zip(ref, dist, marks, strict=True)):
        if lm is None:
            continue
        for region in regions:
            box = region_box(lm, region, a.shape)
            owners.append(t)
            a_crops.append(cut(a, box))
            b_crops.append(cut(b, box))
    return owners, a_crops, b_crops
