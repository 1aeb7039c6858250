"""The content rule: a reference can only show a mouth or an eye that it holds.

The warp moves the pixels of a reference; it cannot invent what the reference does not show.
Rendered from a keyframe with closed lips, an open mouth becomes a stretched red oval (the lips
pulled apart over nothing); rendered from a keyframe taken during a blink, every later frame
keeps the eye shut. The motion gate does not see this: an opening mouth or eye is a small
displacement of a few points. So the encoder compares the *state* of the frame with the state
of each reference (:class:`keyface.motion.FaceState`, measured on the quantised keypoints that
the decoder also has):

* a reference **holds** a frame when its mouth is open at least ``mouth_margin`` less than the
  frame's, and each of its eyes at least ``eye_share`` of the frame's eye (closing a mouth or
  an eye by warping looks right; opening one does not);
* with the gaze rule (``CodecConfig.gaze_rule``), where the eyes look counts too: a warp
  barely moves an iris, so eyes drawn from a sideways glance keep looking sideways.
  ``"choose"`` prefers, among the references that hold a frame, those whose irises sit within
  :data:`GAZE_MARGIN` of the frame's (no keyframe for it); ``"refresh"`` makes that part of
  holding (``ContentRule.gaze_margin``), so a glance no reference shows gets a keyframe;
* the encoder renders a frame only from references that hold it (the nearest of them by the
  motion gate), and codes a keyframe when none does.

The rule uses the references' quantised keypoints, so the decoder needs nothing new: the
reference index the encoder signals already says which one was chosen. Thresholds were chosen
with ``benchmarks/content_refresh.py`` on the validation people (docs/codec.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from keyface.motion import FaceState

MOUTH_MARGIN = 0.12
"""A reference holds a mouth open up to this much wider than its own (inner-lip gap over inner
mouth width: closed 0-0.05, talking 0.1-0.4, laughing 0.5-0.8)."""
EYE_SHARE = 0.65
"""A reference holds an eye whose aspect ratio is at most ``1 / EYE_SHARE`` times its own."""
BLINK_SHARE = 0.25
"""A reference does not hold an eye closed below this share of its own aspect ratio: a warp
squeezes only what lies between the lid points, and a blink rendered from open eyes kept the
lashes, the white and the iris beside them (it read open in 25-37 eyes of the 12 validation
clips at every rung, ``benchmarks/eye_causes.py``)."""
GAZE_MARGIN = 0.1
"""With the gaze rule on (``CodecConfig.gaze_rule``): a reference holds an eye whose iris
sits at most this far (a share of the eye's corner-to-corner width) from where its own does.
Looking ahead the iris centre measures about 0.45-0.55; d10's two sideways glances moved it
0.13-0.24, and there the quantised face-mesh keypoints followed the source's within 0.07
(within 0.05 on most of 13 sampled frames)."""
GAZE_OPEN = 0.15
"""The gaze is compared only where both eyes' aspect ratios are at least this (a closing lid
hides the iris and the mesh guesses it)."""


def looks_elsewhere(reference: FaceState, frame: FaceState, margin: float = GAZE_MARGIN) -> bool:
    """Whether an eye open in both states (aspect ratio at least :data:`GAZE_OPEN`) has its
    iris more than ``margin`` from the reference's in ``frame``; ``False`` without gaze or
    with ``margin <= 0``."""
    if margin <= 0 or reference.gaze is None or frame.gaze is None:
        return False
    return any(
        min(r_ear, f_ear) >= GAZE_OPEN and abs(r - f) > margin
        for r_ear, f_ear, r, f in zip(
            reference.eyes, frame.eyes, reference.gaze, frame.gaze, strict=True
        )
    )


@dataclass(frozen=True)
class ContentRule:
    """When a reference can show a frame (see the module docstring)."""

    mouth_margin: float = MOUTH_MARGIN
    eye_share: float = EYE_SHARE
    blink_share: float = BLINK_SHARE
    gaze_margin: float = 0.0
    """Also require the reference's irises within this of the frame's (:data:`GAZE_MARGIN`;
    a warp moves the iris little: drawn from a sideways glance, eyes that look ahead keep
    looking sideways); 0: the gaze is not compared."""

    def missing_parts(self, reference: FaceState, frame: FaceState) -> list[str]:
        """Every part ``frame`` shows that ``reference`` lacks (``"eyes"``, ``"mouth"``)."""
        parts = []
        pairs = list(zip(reference.eyes, frame.eyes, strict=True))
        if any(r < self.eye_share * e or e < self.blink_share * r for r, e in pairs):
            parts.append("eyes")
        elif looks_elsewhere(reference, frame, self.gaze_margin):
            parts.append("eyes")
        if frame.mouth > reference.mouth + self.mouth_margin:
            parts.append("mouth")
        return parts

    def missing(self, reference: FaceState, frame: FaceState) -> str | None:
        """The part ``frame`` shows that ``reference`` lacks, the mouth first: ``"mouth"``,
        ``"eyes"`` or ``None``."""
        parts = self.missing_parts(reference, frame)
        return "mouth" if "mouth" in parts else (parts[0] if parts else None)

    def holds(self, reference: FaceState, frame: FaceState) -> bool:
        """Whether ``reference`` can be warped into ``frame`` without inventing content."""
        return self.missing(reference, frame) is None


EYE_READ_SHARE = 0.75
"""A reference picture shows an eye open when the face mesh, run on the decoded picture, reads
its aspect ratio at least this share of what it reads on the source frame."""
EYE_READ_OPEN = 0.12
"""Only eyes the source shows at least this open are checked (a blink is below 0.1)."""
EYE_READ_STEPS = (10, 20, 30)
"""Quality steps above the keyframe quality at which an eye that does not read open is coded
again (DETAIL rectangles), the first that reads kept (the last where none does)."""


class EyeReader(Protocol):
    """Reads the eye aspect ratios (right, left) of the face in a picture, ``None``: no face."""

    def ears(self, image: np.ndarray) -> tuple[float, float] | None: ...


class MeshEyeReader:
    """:class:`EyeReader` with the face mesh on still images (the tracker is started on first
    use: about 15 ms a picture on one core, run on the few reference pictures only)."""

    def __init__(self) -> None:
        self._tracker: Any = None

    def ears(self, image: np.ndarray) -> tuple[float, float] | None:
        from keyface.facemesh import LEFT_EYE_EAR, RIGHT_EYE_EAR, eye_aspect_ratio

        if self._tracker is None:
            from keyface.face.landmarks import LandmarkTracker

            self._tracker = LandmarkTracker(video=False)
        marks = self._tracker.process(image)
        if marks is None:
            return None
        return eye_aspect_ratio(marks, RIGHT_EYE_EAR), eye_aspect_ratio(marks, LEFT_EYE_EAR)


def unread_eyes(
    source: Sequence[float],
    picture: Sequence[float] | None,
    share: float = EYE_READ_SHARE,
    open_min: float = EYE_READ_OPEN,
) -> list[int]:
    """The eyes (0 right, 1 left) that ``source`` shows open and ``picture`` does not: a coded
    reference picture whose eyes were blurred shut (issue 18: at the lowest rungs most frames
    whose decoded eyes read closed were warped from such a picture, ``benchmarks/eye_causes.py``).
    A picture in which no face is found (``None``) is not judged."""
    if picture is None:
        return []
    return [
        e
        for e, (s, p) in enumerate(zip(source, picture, strict=True))
        if s >= open_min and p < share * s
    ]
