"""Look at the full-frame paste (issue 17): one decoded lp_s18 frame pasted into the 1280x720
background with the grid-aligned resize and with the general warp, beside the source.

    python scripts/look_full_frame_paste.py OUT.jpg [CLIP]

Writes source | resize | warp | |resize - warp| x 40, around the eyes and mouth, and prints
the largest and mean difference of the two composed frames.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from keyface.codec.config import CodecConfig
from keyface.compose import Composer
from keyface.face import snap_to_grid
from keyface.io import read_frames
from keyface.pipeline import analyze, decode_bytes, encode_analysis

CLIP = "../shared/data/clips/KwaiVGI+LivePortrait__s18.mp4"


def main() -> None:
    out = sys.argv[1]
    clip = sys.argv[2] if len(sys.argv) > 2 else CLIP
    t = 30
    analysis = analyze(clip, size=256, max_frames=t + 1)
    box = snap_to_grid(analysis.crop)
    decoded = decode_bytes(encode_analysis(analysis, CodecConfig(size=256)).data)
    frames = [f.image for f in read_frames(clip, t + 1)]
    fast = Composer(frames[0], box)
    warp = Composer(frames[0], box)
    warp._grid_side = None  # the general warp
    face = decoded.frames[t].image
    a, b = fast.compose(face), warp.compose(face)
    diff = np.abs(a.astype(int) - b)
    print(f"box {box}: difference max {diff.max()}, mean {diff.mean():.4f}")
    x0, y0, x1, y1 = fast.region
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    z = np.s_[cy - 60 : cy + 140, cx - 110 : cx + 110]
    row = np.hstack([frames[t][z], a[z], b[z], np.clip(diff[z] * 40, 0, 255).astype(np.uint8)])
    row = cv2.resize(row, (row.shape[1] * 2, row.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(out, cv2.cvtColor(row, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


if __name__ == "__main__":
    main()
