"""Learned generator vs the training-free warp on the same bitstreams.

    python benchmarks/generator.py --generator kf-gen-v1 --limit 12 \
        --json results/generator/compare.json --grid results/generator/grid.png

For one clip per validation person (``splits/dev_v1.json``), the first ``--frames`` frames are
encoded once per preset; the *same* bitstream is decoded with ``--baseline`` (the warp) and
with ``--generator``. LPIPS-Alex and PSNR are measured on every frame, DISTS and AED on every
``--every``-th frame (DISTS costs ~1 s per frame on a laptop CPU). The decode speed of both
renderers is measured on the same streams. ``--grid`` writes reference | target | warp |
learned rows: for each of the first clips, the frame where the warp is worst (LPIPS) and one
frame in the middle.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from _common import MANIFEST, SPLIT, command_line

from keyface.clips import select_clips
from keyface.codec.ratecontrol import config_for_preset
from keyface.eval.metrics import compute_metrics
from keyface.pipeline import analyze, cropped_frames, decode_bytes, encode_analysis
from keyface.renderers import DEFAULT_RENDERER, get_renderer
from keyface.threads import apply_thread_policy

FAST = ("psnr", "lpips_alex")
SLOW = ("dists", "aed")


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=MANIFEST)
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--presets", default="low,medium")
    parser.add_argument("--generator", default=DEFAULT_RENDERER)
    parser.add_argument("--baseline", default="warp")
    parser.add_argument("--every", type=int, default=5, help="DISTS/AED on every N-th frame")
    parser.add_argument("--grid", type=Path)
    parser.add_argument("--grid-clips", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    apply_thread_policy()  # keyface.threads: KEYFACE_THREADS or the default

    clips = select_clips(
        args.clips, split=args.split, subset="validation", limit=args.limit, frames=args.frames
    )
    renderers = {"warp": get_renderer(args.baseline), "learned": get_renderer(args.generator)}
    rows = []
    grid_rows: list[np.ndarray] = []
    speed = {name: [0.0, 0] for name in renderers}
    for ci, clip in enumerate(clips):
        analysis = analyze(clip.path, max_frames=args.frames)
        ref = [img for _, img in cropped_frames(clip.path, analysis.crop, 256, args.frames)]
        for preset in args.presets.split(","):
            result = encode_analysis(analysis, config_for_preset(preset))
            row: dict[str, object] = {
                "clip": clip.name,
                "person": clip.person,
                "preset": preset,
                "kbps": result.kbps,
                "bytes": len(result.data),
            }
            decoded = {}
            for name, renderer in renderers.items():
                t0 = time.perf_counter()
                dec = decode_bytes(result.data, renderer=renderer)
                speed[name][0] += time.perf_counter() - t0
                speed[name][1] += len(dec.frames)
                images = [f.image for f in dec.frames]
                decoded[name] = dec
                fast = compute_metrics(ref, images, FAST)
                slow = compute_metrics(ref[:: args.every], images[:: args.every], SLOW)
                row[name] = {**fast.mean, **slow.mean}
                row[f"{name}_lpips_per_frame"] = fast.per_frame["lpips_alex"]
            rows.append(row)
            w, g = row["warp"], row["learned"]
            print(
                f"{clip.person:14s} {preset:6s} {row['kbps']:5.1f} kbit/s  LPIPS "
                f"{w['lpips_alex']:.4f} -> {g['lpips_alex']:.4f}  DISTS {w['dists']:.4f} -> "
                f"{g['dists']:.4f}  PSNR {w['psnr']:.2f} -> {g['psnr']:.2f}  AED "
                f"{w['aed']:.4f} -> {g['aed']:.4f}",
                flush=True,
            )
            if args.grid and ci < args.grid_clips and preset == args.presets.split(",")[0]:
                lp = np.asarray(row["warp_lpips_per_frame"])
                frames = decoded["warp"].frames
                non_key = [i for i, f in enumerate(frames) if not f.keyframe]
                if non_key:
                    worst = max(non_key, key=lambda i: lp[i])
                    mid = non_key[len(non_key) // 2]
                    for i in (worst, mid):
                        key = frames[i].reference_frame
                        cells = [
                            _label(frames[key].image, f"reference #{key}"),
                            _label(ref[i], f"target #{i}"),
                            _label(frames[i].image, "warp"),
                            _label(decoded["learned"].frames[i].image, "learned"),
                        ]
                        grid_rows.append(np.concatenate(cells, axis=1))
    metrics = ("lpips_alex", "dists", "psnr", "aed")
    summary = {}
    for name in renderers:
        summary[name] = {m: float(np.mean([r[name][m] for r in rows])) for m in metrics}
        summary[name]["decode_fps"] = speed[name][1] / max(speed[name][0], 1e-9)
    summary["lpips_reduction"] = (
        1 - summary["learned"]["lpips_alex"] / summary["warp"]["lpips_alex"]
    )
    print("\n| renderer | LPIPS-Alex | DISTS | PSNR dB | AED | decode frames/s |")
    print("|---|---|---|---|---|---|")
    for name in renderers:
        s = summary[name]
        print(
            f"| {name} | {s['lpips_alex']:.4f} | {s['dists']:.4f} | {s['psnr']:.2f} | "
            f"{s['aed']:.4f} | {s['decode_fps']:.0f} |"
        )
    print(f"\nLPIPS {100 * summary['lpips_reduction']:.1f}% lower with the learned generator")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "command": command_line("generator.py", args),
            "generator": args.generator,
            "baseline": args.baseline,
            "summary": summary,
            "rows": [{k: v for k, v in r.items() if not k.endswith("per_frame")} for r in rows],
        }
        args.json.write_text(json.dumps(out, indent=1))
    if args.grid and grid_rows:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        grid = np.concatenate(grid_rows, axis=0)
        cv2.imwrite(str(args.grid), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
