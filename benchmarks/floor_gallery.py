"""The animation's floor looked at: decoded frames at u 0, -0.1 and -0.3 beside the source.

    KEYFACE_THREADS=2 python benchmarks/floor_gallery.py --bench results/bench \\
        --clips d10,vscodehappy,00015,s13 --out results/floor/gallery.jpg

For each clip of a ``keyface bench`` cache, codes it on the one ladder at each ``--u`` and
shows two frames, the widest-open mouth and the most closed eye by the source's face mesh
(``analysis.npz``): ``source | u ...`` in a row, the rates printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import cached_clip, find_cached_clip, mouth_and_eye_frames, save_rows


def main() -> None:
    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import config_at
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.threads import apply_thread_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("results/bench"))
    parser.add_argument("--clips", required=True, help="comma-separated name parts")
    parser.add_argument("--u", default="0,-0.1,-0.3")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    apply_thread_policy()
    us = [float(u) for u in args.u.split(",")]
    rows = []
    for part in args.clips.split(","):
        clip = find_cached_clip(args.bench, part)
        _, analysis, source = cached_clip(clip)
        picks = list(mouth_and_eye_frames(analysis.landmarks[: len(source)]))
        decoded = []
        for u in us:
            coded = encode_analysis(analysis, config_at(u, CodecConfig(mode="auto")))
            decoded.append([f.image for f in decode_bytes(coded.data).frames])
            print(f"{clip.name[:44]:<44} u {u:+.1f}: {coded.kbps:6.2f} kbit/s", flush=True)
        for i in picks:
            rows.append(np.concatenate([source[i]] + [d[i] for d in decoded], axis=1))
    save_rows(rows, args.out)


if __name__ == "__main__":
    main()
