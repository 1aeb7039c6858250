"""Decoded frames of two ladders side by side with the source, where viewers look: the frame
with the widest-open mouth and the frame with the most closed eye of each clip.

    python benchmarks/ladder_gallery.py --bench results/bench --limit 4 \\
        --out results/hybrid/keyframe_sequence/gallery

Per clip and rate, one picture of ``source | before | after``: ``before`` is the one ladder
as it was at commit 75dc85c (the animation up to u 0.8, then groups of 15 frames with
``hevc-ld`` keyframes, no content cut) at ``--before-u``, ``after`` the shipped one (the
groups' own ladder from u 0.3: 30-frame groups with the content cut, shorter groups at the
top) at ``--u``; pick the positions so that both code about the same rate. Frames are picked
on the source's face mesh (``analysis.npz``), so both ladders show the same frames. Prints
each picture's path, rate and the frame's mouth opening and eye aspect ratio. (The gallery in
``results/hybrid/keyframe_sequence/gallery`` was made by the version of commit b67ddd5, whose
``before`` was the ladder of commit 3832d2b.)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import mouth_and_eye_frames


def old_config(u: float):  # type: ignore[no-untyped-def]
    """The one ladder before the groups' own ladder (commit 75dc85c) at position ``u``: the
    animation up to u 0.8, then groups of 15 frames (30 on the groups' lowest rungs), their
    keyframes an ``hevc-ld`` sequence at the VVC QP of their old ladder - 6, no content cut."""
    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import animation_config_at, hybrid_config_at
    from keyface.intra._base import qp_to_quality, quality_to_qp

    base = CodecConfig(mode="auto")
    if u < 0.8:
        return animation_config_at(u, replace(base, mode="animation"))
    mode_u = 1.25 + (u - 0.8) * 1.25 / 1.2 if u < 2.0 else 2.5 + 3.0 * (u - 2.0)
    groups = replace(base, mode="bidirectional")
    config = replace(hybrid_config_at(min(mode_u, 4.0), groups), aux_scale=0)
    quality = qp_to_quality(min(51, quality_to_qp(config.keyframe_quality) - 6))
    return replace(
        config,
        intra_codec="hevc-ld",
        keyframe_quality=quality,
        max_keyframe_quality=max(config.max_keyframe_quality, quality),
    )


def main() -> None:
    from PIL import Image, ImageDraw

    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.facemesh import LEFT_EYE_EAR, RIGHT_EYE_EAR, eye_aspect_ratio, mouth_opening
    from keyface.io import read_frames
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.threads import apply_thread_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("results/bench"))
    parser.add_argument("--clips", default=None, help="comma-separated clip names (a substring)")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--u", default="0.8,1", help="one-ladder positions")
    parser.add_argument(
        "--before-u",
        default=None,
        help="the old ladder's positions, one per --u (default: the same; pick them for "
        "equal rates)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    apply_thread_policy()
    args.out.mkdir(parents=True, exist_ok=True)
    dirs = sorted(p for p in (args.bench / "cache").iterdir() if (p / "analysis.npz").is_file())
    if args.clips:
        wanted = args.clips.split(",")
        dirs = [d for d in dirs if any(w in d.name for w in wanted)]
    for clip_dir in dirs[: args.limit]:
        meta = json.loads((clip_dir / "meta.json").read_text())
        analysis = load_analysis(clip_dir, meta)
        ref = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
        marks = analysis.landmarks
        mouth_frame, eye_frame = mouth_and_eye_frames(marks)
        picks = {"mouth": mouth_frame, "eyes": eye_frame}
        after_us = [float(x) for x in args.u.split(",")]
        before_us = [float(x) for x in (args.before_u or args.u).split(",")]
        if len(before_us) != len(after_us):
            raise SystemExit("--before-u needs one position per --u")
        for u, u_before in zip(after_us, before_us, strict=True):
            rows = {}
            for name, config in (
                ("before", old_config(u_before)),
                ("after", config_at(u, CodecConfig(mode="auto"))),
            ):
                coded = encode_analysis(analysis, config)
                frames = [f.image for f in decode_bytes(coded.data).frames]
                rows[name] = (frames, coded.kbps, config.mode, config.intra_codec)
            for what, k in picks.items():
                tiles = [ref[k]] + [rows[n][0][k] for n in ("before", "after")]
                strip = Image.fromarray(np.concatenate(tiles, axis=1))
                draw = ImageDraw.Draw(strip)
                side = ref[k].shape[1]
                labels = ["source"] + [
                    f"{n} {rows[n][1]:.1f} kbit/s {rows[n][2]} {rows[n][3]}"
                    for n in ("before", "after")
                ]
                for i, label in enumerate(labels):
                    draw.text((i * side + 4, 4), label, fill=(255, 255, 0))
                path = args.out / f"{clip_dir.name}_u{u:g}_{what}_f{k}.jpg"
                strip.save(path, quality=90)
                eye = min(eye_aspect_ratio(marks[k], e) for e in (RIGHT_EYE_EAR, LEFT_EYE_EAR))
                print(
                    f"{path}: mouth opening {mouth_opening(marks[k]):.2f}, eye aspect {eye:.3f}, "
                    + ", ".join(f"{n} {rows[n][1]:.1f} kbit/s" for n in ("before", "after"))
                )


if __name__ == "__main__":
    main()
