"""Per-frame quality across a bidirectional group: does a frame get worse the farther it is
from the keyframe it was animated from?

Codes one clip of a ``keyface bench`` cache in the bidirectional mode (``--gop``, default 15)
and reports LPIPS-Alex and PSNR by position in the group (0 = the group's first keyframe,
``gop - 1`` = its last), averaged over the clip's groups, for the fused frames and for the
animation alone; and which keyframe (past or future) each position was animated from. Without
the future keyframe a low-delay codec drifts towards the end of a group; the bidirectional
choice should keep the curve flat (a hump in the middle at most).

    python benchmarks/gop_drift.py --bench /tmp/bench12 --clip KwaiVGI+LivePortrait__d10 \\
        --out results/hybrid/gop_drift.json
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--gop", type=int, default=15)
    parser.add_argument("--u", type=float, default=0.75, help="bidirectional ladder position")
    parser.add_argument("--fusion", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from dataclasses import replace

    from keyface.bitstream import read_stream
    from keyface.codec.config import CodecConfig
    from keyface.codec.decoder import DecoderCore
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.eval.metrics import compute_metrics
    from keyface.fusion import get_fusion
    from keyface.io import read_frames
    from keyface.pipeline import encode_analysis
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    clip_dir = args.bench / "cache" / args.clip
    meta = json.loads((clip_dir / "meta.json").read_text())
    ref = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
    seconds = len(ref) / float(Fraction(meta["fps"]))
    config = replace(config_at(args.u, CodecConfig(mode="bidirectional")), gop=args.gop)
    coded = encode_analysis(load_analysis(clip_dir, meta), config)
    parsed = read_stream(coded.data)
    decoder = DecoderCore(parsed.header)
    decoder.fusion = None
    frames = []
    for packet in parsed.packets:
        frames += decoder.receive(packet)
    fusion = get_fusion(args.fusion)
    fused = [f.image if f.keyframe else fusion.fuse(f.image, f.aux) for f in frames]
    anim = [f.image for f in frames]
    per = {
        "fused": compute_metrics(ref, fused, ["lpips_alex", "psnr"]).per_frame,
        "anim": compute_metrics(ref, anim, ["lpips_alex", "psnr"]).per_frame,
    }
    step = args.gop - 1
    complete = step * ((len(frames) - 1) // step)  # the last frame of the last whole group
    rows = []
    for pos in range(1, args.gop):  # 0 is the previous group's last keyframe
        idx = [k for k in range(1, complete + 1) if (k - 1) % step + 1 == pos]
        future = [frames[k].reference_frame > k for k in idx]
        rows.append(
            {
                "position": pos,
                "frames": len(idx),
                "lpips_fused": float(np.mean([per["fused"]["lpips_alex"][k] for k in idx])),
                "lpips_anim": float(np.mean([per["anim"]["lpips_alex"][k] for k in idx])),
                "psnr_fused": float(np.mean([per["fused"]["psnr"][k] for k in idx])),
                "from_future": float(np.mean(future)),
            }
        )
    kbps = 8 * len(coded.data) / 1000 / seconds
    print(f"{args.clip}: bidirectional GOP {args.gop}, u {args.u}: {kbps:.2f} kbit/s")
    print("pos  frames  LPIPS fused  LPIPS anim  PSNR fused  from future")
    for r in rows:
        print(
            f"{r['position']:>3}  {r['frames']:>6}  {r['lpips_fused']:11.4f}"
            f"  {r['lpips_anim']:10.4f}  {r['psnr_fused']:10.2f}  {r['from_future']:11.2f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "command": "python benchmarks/gop_drift.py "
                    + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None),
                    "kbps": kbps,
                    "fusion": fusion.name,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
