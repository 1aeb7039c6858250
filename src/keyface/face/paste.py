"""Put a (generated) face crop back into its full frame without a visible seam."""

from __future__ import annotations

import math

import cv2
import numpy as np

from keyface.types import CropBox, check_image

PREFILTER_RATIO = 1.5
"""Above this downscale ratio the crop is area-averaged to the box size before warping."""


def _ramp(coords: np.ndarray, lo: float, hi: float, width: float) -> np.ndarray:
    """Raised-cosine weight of pixel centres ``coords``: 0 at ``lo``/``hi``, 1 deeper inside."""
    d = np.minimum(coords - lo, hi - coords)
    if width <= 0:
        return (d > 0).astype(np.float32)
    t = np.clip(d / width, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def blend_mask(box: CropBox, x0: int, y0: int, x1: int, y1: int, feather: float) -> np.ndarray:
    """The paste weight of frame pixels ``[y0:y1, x0:x1]`` for ``box`` (float32, 0..1).

    It is 1 inside, and falls to 0 at the box border along a raised cosine over
    ``feather * side`` pixels; it is the product of a horizontal and a vertical ramp, so it is
    smooth at the corners and monotone along every row and column from the border inwards.
    """
    ax, ay = _ramps(box, x0, y0, x1, y1, feather)
    return ay[:, None] * ax[None, :]


def _ramps(
    box: CropBox, x0: int, y0: int, x1: int, y1: int, feather: float
) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical weights of columns ``x0:x1`` and rows ``y0:y1``."""
    width = feather * box.side
    xs = np.arange(x0, x1, dtype=np.float64) + 0.5
    ys = np.arange(y0, y1, dtype=np.float64) + 0.5
    ax = _ramp(xs, box.x0, box.x0 + box.side, width)
    ay = _ramp(ys, box.y0, box.y0 + box.side, width)
    return ax, ay


def paste_back(
    background: np.ndarray, crop: np.ndarray, box: CropBox, feather: float = 0.08
) -> np.ndarray:
    """A copy of ``background`` with the square ``crop`` resampled into ``box`` and blended.

    The crop may have any square size. It is blended with a soft mask that is 1 in the middle
    and falls smoothly (raised cosine) to 0 over ``feather * box.side`` pixels at the crop
    border, so no seam shows; the parts of the box outside the frame are ignored. Only the
    box's region of the frame is processed.
    """
    check_image(background, "background")
    check_image(crop, "crop")
    if crop.shape[0] != crop.shape[1]:
        raise ValueError(f"crop must be square, got {crop.shape[1]}x{crop.shape[0]}")
    if feather < 0 or feather > 0.5:
        raise ValueError(f"feather must be in [0, 0.5], got {feather}")
    out = background.copy()
    h, w = background.shape[:2]
    x0 = max(0, math.floor(box.x0))
    y0 = max(0, math.floor(box.y0))
    x1 = min(w, math.ceil(box.x0 + box.side))
    y1 = min(h, math.ceil(box.y0 + box.side))
    if x1 <= x0 or y1 <= y0:
        return out
    n = crop.shape[0]
    if n > PREFILTER_RATIO * box.side:
        n = max(2, round(box.side))
        crop = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA)
    matrix = box.to_source_matrix(n)
    matrix[0, 2] -= x0
    matrix[1, 2] -= y0
    region = out[y0:y1, x0:x1]
    ax, ay = _ramps(box, x0, y0, x1, y1, feather)
    # Where the weight is exactly 1 (the core) the crop simply replaces the frame; only the
    # ring around it is blended. The crop is warped straight into the output, so the ring's
    # background is put aside first.
    cx0, cx1 = _core(ax)
    cy0, cy1 = _core(ay)
    if cx1 <= cx0 or cy1 <= cy0:
        ring = [(slice(None), slice(None))]
    else:
        ring = [
            (slice(0, cy0), slice(None)),
            (slice(cy1, None), slice(None)),
            (slice(cy0, cy1), slice(0, cx0)),
            (slice(cy0, cy1), slice(cx1, None)),
        ]
    ring = [(rows, cols) for rows, cols in ring if region[rows, cols].size]
    saved = [region[rows, cols].copy() for rows, cols in ring]
    cv2.warpAffine(
        np.ascontiguousarray(crop),
        matrix,
        (x1 - x0, y1 - y0),
        dst=region,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    for (rows, cols), below in zip(ring, saved, strict=True):
        alpha = np.ascontiguousarray(ay[rows, None] * ax[None, cols])
        top = np.ascontiguousarray(region[rows, cols])
        region[rows, cols] = cv2.blendLinear(top, below, alpha, 1.0 - alpha)
    return out


def _core(weights: np.ndarray) -> tuple[int, int]:
    """``[start, stop)`` of the run of weights equal to 1 (the ramp is 1 on one interval)."""
    full = np.flatnonzero(weights >= 1.0)
    if full.size == 0:
        return 0, 0
    return int(full[0]), int(full[-1]) + 1
