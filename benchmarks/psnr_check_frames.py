"""Decoded frames with and without the PSNR check under the motion gate (docs/codec.md), side
by side with the source: one row per frame, source | check off | check on, on the animation
ladder at ``--u``; prints each side's keyframes and each frame's PSNR.

    python benchmarks/psnr_check_frames.py --bench results/bench \\
        --clip Hangz-nju-cuhk+Talking-Face_PC-AVS__00098 --u 0 --frames 40,75,110 \\
        --out results/content/psnr_check_gallery/00098_u0_frames40_75_110.jpg
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np


def main() -> None:
    from PIL import Image

    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.imageops import psnr
    from keyface.io import read_frames
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.threads import apply_thread_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a keyface bench --out folder")
    parser.add_argument("--clip", required=True, help="a clip of its cache/")
    parser.add_argument("--u", type=float, default=0.0, help="animation ladder position")
    parser.add_argument("--frames", required=True, help="comma-separated frame indices")
    parser.add_argument("--out", type=Path, required=True, help="the picture (.jpg or .png)")
    args = parser.parse_args()
    apply_thread_policy()
    clip = args.bench / "cache" / args.clip
    meta = json.loads((clip / "meta.json").read_text())
    analysis = load_analysis(clip, meta)
    source = [f.image for f in read_frames(clip / "crop.y4m", meta["frames"])]
    shipped = config_at(args.u, CodecConfig(mode="animation"))
    sides = []
    for check in (0, shipped.psnr_check):
        coded = encode_analysis(analysis, replace(shipped, psnr_check=check))
        sides.append([f.image for f in decode_bytes(coded.data).frames])
        keys = [(d.index, d.refresh) for d in coded.stats.decisions if d.keyframe]
        print(f"psnr_check {check}: {coded.kbps:.2f} kbit/s, keyframes {keys}")
    frames = [int(i) for i in args.frames.split(",")]
    for i in frames:
        off, on = (psnr(side[i], source[i]) for side in sides)
        print(f"frame {i}: PSNR {off:.1f} -> {on:.1f} dB")
    rows = [np.concatenate([source[i], sides[0][i], sides[1][i]], 1) for i in frames]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.out, quality=90)


if __name__ == "__main__":
    main()
