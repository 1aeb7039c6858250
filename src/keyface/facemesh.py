"""Index tables of the 478-point MediaPipe face mesh (468 points + 10 iris points): the one
place that knows which landmark is which, and the openness and gaze measures built on them. Pure
data and arithmetic, no third-party imports: the motion model, the encoder's content rule, the
warp, composition, the learned renderer's input planes, avatar mode and the metrics share it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

NUM_POINTS = 478

FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
"""The face outline, in order around the face."""

INNER_MOUTH = (
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95,
)  # fmt: skip
"""The inner lip contour, in order around the mouth opening."""
LEFT_EYE = (
    263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249,
)  # fmt: skip
"""The left eye opening (the subject's left), in order around it."""
RIGHT_EYE = (
    33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
)  # fmt: skip
"""The right eye opening, in order around it."""

RIGHT_EYE_LIDS = ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155))
LEFT_EYE_LIDS = ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382))
"""Eyelids: each upper-lid point paired with the lower-lid point under it (outer corner to
inner corner)."""
RIGHT_EYE_ABOVE = ((247, 30, 29, 27, 28, 56, 190), (113, 225, 224, 223, 222, 221, 189))
LEFT_EYE_ABOVE = ((467, 260, 259, 257, 258, 286, 414), (342, 445, 444, 443, 442, 441, 413))
"""The two rows of points above each upper lid (lid crease, then towards the brow), in the
order of the lid points."""
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS = (473, 474, 475, 476, 477)
MOUTH_CORNERS = (61, 291)
NOSE = (1, 4, 6, 168)
"""Nose tip, nose bridge and the point between the eyes: they move with the head."""
RIGID = tuple(sorted({*FACE_OVAL, *NOSE, *RIGHT_EYE_CORNERS, *LEFT_EYE_CORNERS}))
"""Points that move with the head, not with the expression (oval, nose, eye corners)."""

OUTER_LIPS = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
)  # fmt: skip
"""The outer lip contour, in order around the mouth."""
INNER_LIPS = (
    (191, 95), (80, 88), (81, 178), (82, 87), (13, 14),
    (312, 317), (311, 402), (310, 318), (415, 324),
)  # fmt: skip
"""The inner lips: each upper-lip point paired with the lower-lip point under it (between the
inner mouth corners ``INNER_MOUTH_CORNERS``)."""
INNER_LIP_GAP = (13, 14)
"""Upper and lower inner lip, in the middle: how far the mouth is open."""
OUTER_LIP_MIDDLE = (0, 17)
"""Upper and lower outer lip, in the middle (which way is down, for a mouth that is shut)."""
INNER_MOUTH_CORNERS = (78, 308)
RIGHT_EYE_EAR = ((33, 133), ((160, 144), (158, 153)))
LEFT_EYE_EAR = ((362, 263), ((385, 380), (387, 373)))
"""``(corners, vertical pairs)`` of each eye, for the eye aspect ratio (EAR)."""


def _dist(points: Any, a: int, b: int) -> float:
    return math.hypot(
        float(points[a][0]) - float(points[b][0]), float(points[a][1]) - float(points[b][1])
    )


def eye_aspect_ratio(points: Any, eye: tuple[tuple[int, int], Sequence[tuple[int, int]]]) -> float:
    """Mean vertical opening over the width of one eye (``RIGHT_EYE_EAR`` / ``LEFT_EYE_EAR``) of
    ``(478, 2|3)`` mesh points: open eyes measure about 0.2-0.35, a blink goes below 0.1."""
    (c0, c1), pairs = eye
    width = _dist(points, c0, c1)
    opening = sum(_dist(points, a, b) for a, b in pairs) / len(pairs)
    return opening / width if width > 1e-6 else 0.0


def iris_position(points: Any, iris: Sequence[int], corners: tuple[int, int]) -> float:
    """Where the iris centre (``iris[0]``) of ``(478, 2|3)`` mesh points sits along its eye's
    corner-to-corner axis (``RIGHT_EYE_CORNERS`` / ``LEFT_EYE_CORNERS``, outer corner first):
    0 at the outer corner, 1 at the inner one, about 0.45-0.55 looking ahead; a sideways glance
    moves both eyes' values in opposite directions (by 0.13-0.24 in d10's two glances)."""
    x0, y0 = float(points[corners[0]][0]), float(points[corners[0]][1])
    ax, ay = float(points[corners[1]][0]) - x0, float(points[corners[1]][1]) - y0
    length = ax * ax + ay * ay
    if length < 1e-12:
        return 0.5
    cx, cy = float(points[iris[0]][0]) - x0, float(points[iris[0]][1]) - y0
    return (cx * ax + cy * ay) / length


def gaze(points: Any) -> tuple[float, float] | None:
    """:func:`iris_position` of the right and the left eye, ``None`` for points without the
    iris (fewer than 478)."""
    if len(points) <= max(LEFT_IRIS):
        return None
    return (
        iris_position(points, RIGHT_IRIS, RIGHT_EYE_CORNERS),
        iris_position(points, LEFT_IRIS, LEFT_EYE_CORNERS),
    )


def mouth_opening(points: Any) -> float:
    """Inner-lip gap over the inner mouth width of ``(478, 2|3)`` mesh points (0 closed, about
    0.5-0.8 wide open)."""
    gap = _dist(points, *INNER_LIP_GAP)
    width = _dist(points, *INNER_MOUTH_CORNERS)
    return gap / width if width > 1e-6 else 0.0
