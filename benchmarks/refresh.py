"""Compare the keyframe refresh rules: rate, quality and encoder cost per threshold.

    python benchmarks/refresh.py --limit 8 --frames 125 --json results/refresh.json

Each validation clip (one per person) is analysed once; then every (mode, threshold) pair is
encoded and decoded. Reported per pair, averaged over clips: kbit/s, PSNR of the decoded crop,
keyframes per clip and coding speed (frames/s, analysis excluded). ``psnr`` is DAC's
Algorithm 1 (render from every buffered reference), ``motion`` the ZTE motion gate (no
rendering).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import CLIPS, SPLIT, pick_clips

from keyface.bitstream import RefreshMode
from keyface.codec.ratecontrol import config_for_preset
from keyface.imageops import psnr
from keyface.pipeline import analyze, cropped_frames, decode_bytes, encode_analysis

GRID = {
    RefreshMode.MOTION: (0.1, 0.15, 0.2, 0.3, 1.0),
    RefreshMode.PSNR: (20.0, 23.0, 26.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=CLIPS)
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--intra")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = config_for_preset(args.quality)
    if args.intra:
        base = replace(base, intra_codec=args.intra)
    clips = pick_clips(args.clips, args.split, "validation", args.limit)
    analyses = [analyze(c, max_frames=args.frames) for c in clips]
    originals = [
        [img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count)] for a in analyses
    ]
    rows = []
    print(f"{'mode':<7} {'thr':>6} {'kbps':>7} {'PSNR':>6} {'keys':>5} {'coding fps':>10}")
    for mode, thresholds in GRID.items():
        for thr in thresholds:
            cfg = replace(base, refresh_mode=mode, refresh_threshold=thr)
            per = []
            for a, orig in zip(analyses, originals, strict=True):
                r = encode_analysis(a, cfg)
                d = decode_bytes(r.data)
                p = float(np.mean([psnr(f.image, o) for f, o in zip(d.frames, orig, strict=True)]))
                per.append(
                    {
                        "clip": a.path.name,
                        "kbps": r.kbps,
                        "psnr": p,
                        "keyframes": r.stats.keyframes,
                        "coding_fps": a.frame_count / r.encode_seconds,
                    }
                )
            mean = {k: float(np.mean([x[k] for x in per])) for k in per[0] if k != "clip"}
            rows.append({"mode": mode.name.lower(), "threshold": thr, "mean": mean, "clips": per})
            print(
                f"{mode.name.lower():<7} {thr:>6g} {mean['kbps']:>7.2f} {mean['psnr']:>6.2f} "
                f"{mean['keyframes']:>5.1f} {mean['coding_fps']:>10.1f}",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"quality": args.quality, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
