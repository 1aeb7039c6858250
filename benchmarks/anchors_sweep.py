"""Rate-distortion sweep of the conventional codec anchors (x264, x265, SVT-AV1, VVenC).

    python benchmarks/anchors_sweep.py                       # default clips, DEFAULT_QPS
    python benchmarks/anchors_sweep.py --codecs x265,vvc --qps x265=30,40 --frames 60
    python benchmarks/anchors_sweep.py --json results/anchors.json   # also write JSON ('-': stdout)

For each clip (first ``--frames`` frames of a 256x256 30 fps face crop from
``../shared/data/clips``, listed in its MANIFEST.tsv) and each codec and QP, the clip is coded
by :func:`keyface.eval.anchors.encode_anchor` and the table shows kbit/s (elementary stream
bytes), PSNR-RGB (mean over frames of the per-frame PSNR of the decoded RGB frames against the
input RGB frames, all three channels), encode and decode seconds, and whether the decoder saw
exactly one intra picture and no reordering. A per-codec mean over clips follows.

This sweep set :data:`keyface.eval.anchors.DEFAULT_QPS`. Mean over the three default clips
(125 frames each; encode seconds on 2 shared cores, indicative only):

    codec  QP: kbit/s / PSNR-RGB dB
    x264   35: 41.1/34.96  38: 32.7/33.41  41: 27.1/31.98  44: 22.9/30.57  47: 18.6/28.93
           51: 14.2/26.71                                        (~0.1 s per clip)
    x265   32: 39.3/35.59  35: 27.2/34.08  38: 19.4/32.51  42: 13.4/30.50  46:  9.9/28.53
           51:  7.8/25.94                                        (~0.2 s)
    av1    42: 41.6/36.62  46: 31.5/35.65  50: 24.2/34.63  55: 17.9/33.29  60: 13.5/32.01
           63: 10.7/30.61                                        (~0.5 s)
    vvc    29: 38.6/37.26  33: 23.0/35.48  37: 14.7/33.75  42:  9.4/31.55  47:  6.5/29.26
           52:  5.0/26.82                                        (~7-28 s)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import CLIPS

from keyface.eval.anchors import ANCHORS, DEFAULT_QPS, anchor_available, encode_anchor
from keyface.io.video import read_video

CLIP_DIR = CLIPS
DEFAULT_CLIPS = (
    "FuxiVirtualHuman+styletalk__Obama_clip1.mp4",
    "FuxiVirtualHuman+styletalk__andrew_clip_1.mp4",
    "FuxiVirtualHuman+styletalk__feifeili_clip1.mp4",
)


def psnr_rgb(reference: list[np.ndarray], decoded: list[np.ndarray]) -> float:
    """Mean over frames of the per-frame RGB PSNR (identical frames count as 100 dB)."""
    values = []
    for a, b in zip(reference, decoded, strict=True):
        mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
        values.append(100.0 if mse == 0 else 10.0 * np.log10(255.0**2 / mse))
    return float(np.mean(values))


def manifest_clips(clip_dir: Path) -> dict[str, dict[str, str]]:
    """Rows of ``MANIFEST.tsv`` keyed by file name (empty when there is no manifest)."""
    path = clip_dir / "MANIFEST.tsv"
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


def parse_qps(specs: list[str]) -> dict[str, tuple[int, ...]]:
    qps = dict(DEFAULT_QPS)
    for spec in specs:
        codec, _, values = spec.partition("=")
        if codec not in ANCHORS or not values:
            raise SystemExit(f"--qps: expected CODEC=QP,QP,... with CODEC in {ANCHORS}: {spec}")
        qps[codec] = tuple(int(v) for v in values.split(","))
    return qps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip-dir", type=Path, default=CLIP_DIR)
    ap.add_argument("--clips", default=",".join(DEFAULT_CLIPS), help="comma-separated names")
    ap.add_argument("--frames", type=int, default=125, help="first N frames of each clip")
    ap.add_argument("--codecs", default=",".join(ANCHORS))
    ap.add_argument("--qps", action="append", default=[], help="CODEC=QP,QP,... (repeatable)")
    ap.add_argument("--preset", action="append", default=[], help="CODEC=PRESET (repeatable)")
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON ('-' = stdout)")
    args = ap.parse_args(argv)

    codecs = [c for c in args.codecs.split(",") if c]
    qps = parse_qps(args.qps)
    presets = dict(p.split("=", 1) for p in args.preset)
    manifest = manifest_clips(args.clip_dir)
    log = sys.stderr if args.json == "-" else sys.stdout

    rows = []
    header = (
        f"{'clip':<16} {'codec':<5} {'qp':>3} {'kbit/s':>8} {'PSNR-RGB':>8} {'enc s':>7} "
        f"{'dec s':>6} {'intra':>5} {'in-order':>8}"
    )
    print(header, file=log)
    for name in [c for c in args.clips.split(",") if c]:
        path = args.clip_dir / name
        meta = manifest.get(name, {})
        info, frames = read_video(path, args.frames)
        images = [f.image for f in frames]
        short = (name.split("__")[-1].removesuffix(".mp4"))[:16]
        for codec in codecs:
            if not anchor_available(codec):
                print(f"{short:<16} {codec:<5}  (not available)", file=log)
                continue
            for qp in qps[codec]:
                t0 = time.perf_counter()
                res = encode_anchor(images, info.fps, codec, qp, preset=presets.get(codec))
                wall = time.perf_counter() - t0
                psnr = psnr_rgb(images, res.frames)
                row = {
                    "clip": name,
                    "person": meta.get("person", ""),
                    "frames": len(images),
                    "fps": float(info.fps),
                    "codec": codec,
                    "qp": qp,
                    "bytes": res.bytes,
                    "kbps": res.kbps,
                    "psnr_rgb": psnr,
                    "encode_seconds": res.encode_seconds,
                    "decode_seconds": res.decode_seconds,
                    "wall_seconds": wall,
                    "intra_frames": res.intra_frames,
                    "in_order": res.in_order,
                    "frame_types": res.frame_types,
                }
                rows.append(row)
                print(
                    f"{short:<16} {codec:<5} {qp:>3} {res.kbps:>8.2f} {psnr:>8.2f} "
                    f"{res.encode_seconds:>7.2f} {res.decode_seconds:>6.2f} "
                    f"{res.intra_frames:>5} {res.in_order!s:>8}",
                    file=log,
                    flush=True,
                )

    print("\nmean over clips", file=log)
    print(f"{'codec':<5} {'qp':>3} {'kbit/s':>8} {'PSNR-RGB':>8} {'enc s':>7}", file=log)
    for codec in codecs:
        for qp in qps[codec]:
            sel = [r for r in rows if r["codec"] == codec and r["qp"] == qp]
            if not sel:
                continue
            kbps = np.mean([r["kbps"] for r in sel])
            psnr = np.mean([r["psnr_rgb"] for r in sel])
            enc = np.mean([r["encode_seconds"] for r in sel])
            print(f"{codec:<5} {qp:>3} {kbps:>8.2f} {psnr:>8.2f} {enc:>7.2f}", file=log)

    if args.json:
        text = json.dumps({"frames": args.frames, "results": rows}, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
