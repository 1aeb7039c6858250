"""Can a low-resolution auxiliary stream, fused without training, lift keyface above VVC?

Issue 13 asks for a hybrid mode: the frames downsampled (x2, x4) and coded as one low-delay
conventional stream beside the animation, fused at the decoder. Before building the mode into
the bitstream this measures what its training-free version could reach, on the clips a
``keyface bench`` run prepared (``cache/CLIP/crop.y4m``, ``analysis.npz``):

* ``anim``: keyface alone at ladder position ``--u`` (the default renderer);
* ``aux``: the auxiliary stream alone, upsampled (bicubic). x265 through PyAV, P frames only,
  one packet per frame with no delay (``zerolatency``: the live setting) or ``slow`` without
  lookahead (the file setting); constant QP; the stream's real bytes;
* ``band``: the low band from the auxiliary frame, the high band from the animation
  (``aux_up + anim - up(down(anim))``): the animation's detail on the right coarse picture.

Rates add the animation's and the auxiliary stream's bytes. Compare with the anchors of the same
clips in ``results/bench/points.json`` (``--anchors``). Writes ``points.json`` and ``report.md``:

    python benchmarks/hybrid_feasibility.py --bench /tmp/bench12 --out results/hybrid
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from _common import command_line

AUX = ((4, 40, "zerolatency"), (4, 46, "zerolatency"), (4, 40, "slow"), (4, 46, "slow"))
AUX += ((2, 44, "zerolatency"), (2, 50, "zerolatency"), (2, 44, "slow"), (2, 50, "slow"))
"""(downscale factor, x265 QP, setting) of each auxiliary stream tried."""
METRICS = ["psnr", "lpips_alex"]


def code_aux(frames: list[np.ndarray], scale: int, qp: int, setting: str) -> tuple[list, int]:
    """The auxiliary stream of ``frames``: (decoded low-resolution frames, bytes)."""
    from keyface.intra._color import rgb_to_yuv420, yuv420_to_rgb
    from keyface.intra.hevc import frame_to_planes, planes_to_frame

    side = frames[0].shape[0] // scale
    enc = av.CodecContext.create("libx265", "w")
    enc.width = enc.height = side
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, 25)
    params = (
        "log-level=none:info=0:hash=0:aud=0:annexb=1:repeat-headers=1:keyint=100000:"
        f"min-keyint=100000:scenecut=0:bframes=0:rc-lookahead=0:frame-threads=1:qp={qp}"
    )
    if setting == "zerolatency":
        enc.options = {"preset": "fast", "tune": "zerolatency", "x265-params": params}
    else:
        enc.options = {"preset": "slow", "x265-params": params + ":b-adapt=0"}
    dec = av.CodecContext.create("hevc", "r")
    dec.thread_type = "NONE"
    dec.thread_count = 1
    out: list[np.ndarray] = []
    size = 0

    def take(packets: list) -> None:
        nonlocal size
        for p in packets:
            size += p.size
            for d in dec.decode(p):
                out.append(yuv420_to_rgb(*frame_to_planes(d, np.dtype(np.uint8))))

    for i, f in enumerate(frames):
        small = cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA)
        frame = planes_to_frame(rgb_to_yuv420(small), "yuv420p")
        frame.pts = i
        take(list(enc.encode(frame)))
    take(list(enc.encode(None)))
    for d in dec.decode(None):
        out.append(yuv420_to_rgb(*frame_to_planes(d, np.dtype(np.uint8))))
    assert len(out) == len(frames), (len(out), len(frames))
    return out, size


def upsample(image: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)


def band_fusion(anim: np.ndarray, aux: np.ndarray) -> np.ndarray:
    """The auxiliary frame's low band plus the animated frame's high band."""
    side, small = anim.shape[0], aux.shape[0]
    a = anim.astype(np.float32)
    low = upsample(cv2.resize(a, (small, small), interpolation=cv2.INTER_AREA), side)
    fused = upsample(aux.astype(np.float32), side) + (a - low)
    return np.clip(fused + 0.5, 0, 255).astype(np.uint8)


def run_clip(task: tuple[str, float]) -> list[dict[str, Any]]:
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.eval.metrics import compute_metrics
    from keyface.io import read_frames
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    clip_dir, u = Path(task[0]), task[1]
    meta = json.loads((clip_dir / "meta.json").read_text())
    ref = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
    seconds = len(ref) / float(Fraction(meta["fps"]))
    analysis = load_analysis(clip_dir, meta)
    coded = encode_analysis(analysis, config_at(u))
    anim = [f.image for f in decode_bytes(coded.data).frames]
    anim_kbps = 8 * len(coded.data) / 1000 / seconds
    rows = [
        {"clip": clip_dir.name, "kind": "anim", "u": u, "kbps": anim_kbps}
        | compute_metrics(ref, anim, METRICS).mean
    ]
    for scale, qp, setting in AUX:
        aux, size = code_aux(ref, scale, qp, setting)
        aux_kbps = 8 * size / 1000 / seconds
        spec = {"scale": scale, "qp": qp, "setting": setting, "aux_kbps": aux_kbps}
        up = [upsample(x, ref[0].shape[0]) for x in aux]
        rows.append(
            {"clip": clip_dir.name, "kind": "aux", "kbps": aux_kbps, **spec}
            | compute_metrics(ref, up, METRICS).mean
        )
        fused = [band_fusion(a, x) for a, x in zip(anim, aux, strict=True)]
        rows.append(
            {"clip": clip_dir.name, "kind": "band", "u": u, "kbps": anim_kbps + aux_kbps, **spec}
            | compute_metrics(ref, fused, METRICS).mean
        )
    return rows


def report(rows: list[dict], anchors: Path, command: str) -> str:
    clips = sorted({r["clip"] for r in rows})
    points = json.loads(anchors.read_text())["points"] if anchors.is_file() else []
    vvc = [p for p in points if p["codec"] == "vvc" and p["clip"] in clips]
    lines = [
        "# Hybrid feasibility: a training-free auxiliary stream against VVC",
        "",
        f"Command: `{command}`",
        "",
        f"Means over {len(clips)} clips; VVC from `{anchors}` (the same clips and frames).",
        "",
        "| kind | scale | QP | setting | kbit/s | aux kbit/s | PSNR | LPIPS-Alex |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r["kind"], r.get("scale"), r.get("qp"), r.get("setting")) for r in rows}, key=str
    )
    for kind, scale, qp, setting in keys:
        sel = [
            r
            for r in rows
            if (r["kind"], r.get("scale"), r.get("qp"), r.get("setting"))
            == (kind, scale, qp, setting)
        ]
        aux = np.mean([r.get("aux_kbps", 0.0) for r in sel])
        lines.append(
            f"| {kind} | {scale or ''} | {qp or ''} | {setting or ''} | "
            f"{np.mean([r['kbps'] for r in sel]):.2f} | {aux:.2f} | "
            f"{np.mean([r['psnr'] for r in sel]):.2f} | "
            f"{np.mean([r['lpips_alex'] for r in sel]):.4f} |"
        )
    for qp in sorted({p["param"] for p in vvc}):
        sel = [p for p in vvc if p["param"] == qp]
        lines.append(
            f"| vvc | | {qp} | low delay (bench anchor) | "
            f"{np.mean([p['kbps'] for p in sel]):.2f} | | "
            f"{np.mean([p['metrics']['psnr'] for p in sel]):.2f} | "
            f"{np.mean([p['metrics']['lpips_alex'] for p in sel]):.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a keyface bench --out folder")
    parser.add_argument("--out", type=Path, default=Path("results/hybrid"))
    parser.add_argument("--u", type=float, default=0.3, help="the animation's ladder position")
    parser.add_argument("--anchors", type=Path, default=Path("results/bench/points.json"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clips = sorted(p for p in (args.bench / "cache").iterdir() if (p / "analysis.npz").is_file())
    tasks = [(str(c), args.u) for c in clips[: args.limit]]
    t0 = time.perf_counter()
    rows: list[dict] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for k, clip_rows in enumerate(pool.map(run_clip, tasks), 1):
            rows.extend(clip_rows)
            print(f"[{k}/{len(tasks)}] {clip_rows[0]['clip']}", flush=True)
    (args.out / "points.json").write_text(json.dumps(rows, indent=1))
    command = command_line("hybrid_feasibility.py", args)
    text = report(rows, args.anchors, command)
    (args.out / "report.md").write_text(text)
    print(text)
    print(f"{len(tasks)} clips in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
