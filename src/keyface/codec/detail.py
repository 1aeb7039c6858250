"""Detail where viewers look: the eyes and the mouth of a keyframe coded again, better.

At the lowest rates a keyframe is coded coarsely (quality 10-20) and every frame after it is a
warp of that picture: the eyes blur until they read as closed, the teeth become one bar. Coding
the whole keyframe better costs bits everywhere; the rectangles around the eyes and the mouth
are about a tenth of the picture. So the encoder codes each such rectangle once more at
``keyframe quality + detail_boost`` (DETAIL packets, docs/bitstream.md §5.7) and both ends
blend the decoded rectangle into the decoded keyframe with a soft edge, before the picture
becomes a reference. The rectangles are chosen by the encoder from the keyframe's landmarks and
sent with their position, so the decoder derives nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FEATHER = 3
"""Width in pixels of the linear ramp at a rectangle's edge (none at the picture's edge)."""
PAD_SHARE = 0.2
"""A rectangle extends its points' extent by this share on each side, plus ``PAD_PIXELS``."""
PAD_PIXELS = 4
ALIGN = 4
"""Rectangles start on even pixels and have sides that are multiples of this (4:2:0 chroma)."""
MIN_SIDE = 16
"""Smallest rectangle side: the intra codecs code pictures of 16 pixels a side or more."""
UPDATE_BOOST = 10
"""Quality steps above the keyframe quality of the rectangles that promote a rendered frame to
a reference (``content_update="detail"``), unless ``detail_boost`` is higher."""


def detail_boxes(
    regions: Sequence[np.ndarray], width: int, height: int
) -> list[tuple[int, int, int, int]]:
    """``(x, y, w, h)`` of the rectangle around each group of points, inside the picture."""
    boxes = []
    for points in regions:
        p = np.asarray(points, dtype=np.float64)[:, :2]
        if not np.isfinite(p).all():
            continue
        lo, hi = p.min(axis=0), p.max(axis=0)
        pad = PAD_SHARE * (hi - lo) + PAD_PIXELS
        # At least MIN_SIDE a side (an eye shut in a blink is a few pixels tall), centred.
        grow = np.maximum(0.0, (MIN_SIDE - (hi - lo + 2 * pad)) / 2)
        lo, hi = lo - pad - grow, hi + pad + grow
        x0 = int(np.clip(np.floor(lo[0]), 0, width - MIN_SIDE)) // 2 * 2
        y0 = int(np.clip(np.floor(lo[1]), 0, height - MIN_SIDE)) // 2 * 2
        w = min(int(np.ceil((hi[0] - x0) / ALIGN)) * ALIGN, width - x0)
        h = min(int(np.ceil((hi[1] - y0) / ALIGN)) * ALIGN, height - y0)
        if w >= MIN_SIDE and h >= MIN_SIDE and hi[0] > 0 and hi[1] > 0:
            boxes.append((x0, y0, w, h))
    return boxes


def blend_detail(picture: np.ndarray, patch: np.ndarray, x: int, y: int) -> np.ndarray:
    """``picture`` with ``patch`` blended in at ``(x, y)``: fully inside, a linear ramp of
    :data:`FEATHER` pixels at the rectangle's edges that are not the picture's edges. The same
    arithmetic at the encoder and the decoder, so both hold the same reference."""
    h, w = patch.shape[:2]
    out = picture.copy()
    ramp_x = _ramp(w, x > 0, x + w < picture.shape[1])
    ramp_y = _ramp(h, y > 0, y + h < picture.shape[0])
    weight = (ramp_y[:, None] * ramp_x[None, :])[..., None]
    region = out[y : y + h, x : x + w].astype(np.float32)
    mixed = region + weight * (patch.astype(np.float32) - region)
    out[y : y + h, x : x + w] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def _ramp(n: int, soft_start: bool, soft_end: bool) -> np.ndarray:
    ramp = np.ones(n, dtype=np.float32)
    steps = (np.arange(1, FEATHER + 1, dtype=np.float32)) / (FEATHER + 1)
    k = min(FEATHER, n // 2)
    if soft_start:
        ramp[:k] = np.minimum(ramp[:k], steps[:k])
    if soft_end:
        ramp[n - k :] = np.minimum(ramp[n - k :], steps[:k][::-1])
    return ramp
