"""Composition: what the viewer sees around and instead of the coded face.

* :mod:`keyface.compose.full_frame`: the decoded face crop stitched back into the full
  1280x720-class source frame, the body held still (:class:`Composer`; docs/compose.md);
* :mod:`keyface.compose.avatar`: avatar mode, a photo animated by the sender's motion, pasted
  the same way (:class:`~keyface.compose.avatar.AvatarAnimator`; it loads the face models, so
  it is imported on its own).
"""

from keyface.compose.full_frame import (
    DEFAULT_FEATHER,
    BodyHold,
    Composer,
    hold_motion,
    motion_weight,
    smoothstep,
)

__all__ = ["DEFAULT_FEATHER", "BodyHold", "Composer", "hold_motion", "motion_weight", "smoothstep"]
