"""Encode -> decode round trips on development clips: bitrate, PSNR, where the bytes go, speed.

    python benchmarks/roundtrip.py --split splits/dev_v1.json --subset validation \
        --frames 125 --json results/roundtrip.json

One clip per person (the first in the split), each coded with ``keyface encode`` defaults (or
``--quality`` / ``--kbps`` / ``--refresh``). For every clip: kbit/s, PSNR (RGB, decoded vs the
crop the encoder saw), keyframe count and bytes, motion bytes and bits/frame, and the speeds of
the analysis (crop + landmarks), the coding and the decoder on this machine.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import add_clip_options, pick_clips

from keyface.bitstream import RefreshMode
from keyface.codec.ratecontrol import config_for_preset
from keyface.imageops import psnr
from keyface.pipeline import (
    analyze,
    cropped_frames,
    decode_bytes,
    encode_analysis,
    encode_at_kbps,
)

MODES = {"psnr": RefreshMode.PSNR, "motion": RefreshMode.MOTION, "fixed": RefreshMode.FIXED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_clip_options(parser, limit=16)
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--kbps", type=float)
    parser.add_argument("--refresh", choices=tuple(MODES))
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--intra")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    config = config_for_preset(args.quality)
    if args.refresh:
        config = config_for_preset(args.quality, replace(config, refresh_mode=MODES[args.refresh]))
    if args.threshold is not None:
        config = replace(config, refresh_threshold=args.threshold)
    if args.intra:
        config = replace(config, intra_codec=args.intra)
    rows = []
    header = (
        f"{'clip':<44} {'kbps':>6} {'PSNR':>6} {'key':>4} {'key B':>6} {'mot B':>6} "
        f"{'b/f':>5} {'ana fps':>7} {'enc fps':>7} {'dec fps':>7}"
    )
    print(header)
    for clip in pick_clips(args.clips, args.split, args.subset, args.limit):
        analysis = analyze(clip, size=config.size, max_frames=args.frames)
        if args.kbps:
            result = encode_at_kbps(analysis, config, args.kbps)
        else:
            result = encode_analysis(analysis, config)
        t0 = time.perf_counter()
        decoded = decode_bytes(result.data)
        dec_seconds = time.perf_counter() - t0
        originals = [
            img for _, img in cropped_frames(clip, analysis.crop, analysis.size, args.frames)
        ]
        scores = [psnr(f.image, o) for f, o in zip(decoded.frames, originals, strict=True)]
        s = result.stats
        n = analysis.frame_count
        row = {
            "clip": clip.name,
            "frames": n,
            "fps": float(analysis.fps),
            "bytes": len(result.data),
            "kbps": result.kbps,
            "psnr": float(np.mean(scores)),
            "keyframes": s.keyframes,
            "keyframe_bytes": s.keyframe_bytes,
            "motion_bytes": s.motion_bytes,
            "header_bytes": s.header_bytes,
            "motion_bits_per_frame": 8 * s.motion_bytes / n,
            "analysis_fps": n / analysis.seconds,
            "encode_fps": n / result.encode_seconds,
            "decode_fps": n / dec_seconds,
            "config": {
                "refresh": RefreshMode(result.config.refresh_mode).name.lower(),
                "threshold": result.config.threshold,
                "keyframe_quality": result.config.keyframe_quality,
                "quant_level": result.config.quant_level,
                "intra": result.config.intra_codec,
            },
        }
        rows.append(row)
        print(
            f"{clip.name[:44]:<44} {row['kbps']:>6.2f} {row['psnr']:>6.2f} {s.keyframes:>4} "
            f"{s.keyframe_bytes:>6} {s.motion_bytes:>6} {row['motion_bits_per_frame']:>5.0f} "
            f"{row['analysis_fps']:>7.0f} {row['encode_fps']:>7.0f} {row['decode_fps']:>7.0f}"
        )
    keys = (
        "kbps",
        "psnr",
        "keyframes",
        "motion_bits_per_frame",
        "analysis_fps",
        "encode_fps",
        "decode_fps",
    )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    print("mean  " + "  ".join(f"{k}={v:.2f}" for k, v in mean.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args)
                    | {"clips": str(args.clips), "split": str(args.split), "json": str(args.json)},
                    "clips": rows,
                    "mean": mean,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
