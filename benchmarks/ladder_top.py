"""Candidates for the top of the one ladder (issue 13: left of VVC up to 40 kbit/s).

The one ladder (``keyface.codec.ratecontrol.LADDER``) ends at the bidirectional groups without
an aux stream at their u 2.5 (GOP 15, keyframe quality 30, ~25 kbit/s). Above that, a group
can spend more bits in two ways: better keyframes, or more of them (shorter groups). For the
clips a ``keyface bench`` run prepared (its ``cache/CLIP/crop.y4m`` and ``analysis.npz``), this
codes every clip with each ``--candidates`` entry (``GOP:QUALITY``, on top of the ladder's last
rung), decodes with the default renderer, measures the whole frame and the regions viewers look
at, and sets each candidate's mean beside the bench's VVC curve at the same rate (interpolated
linearly in log-rate between the two VVC points around it, mean over clips):

    python benchmarks/ladder_top.py --bench /tmp/bench12 --anchors results/bench/points.json \\
        --candidates 15:30,15:38,15:46,10:30,10:38,8:34 --out results/hybrid/ladder_top

Writes ``points.json`` (every point, reused by a later run) and ``report.md`` to ``--out``.
Set ``KEYFACE_THREADS`` as for any benchmark (``keyface.threads``); ``--jobs`` worker processes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import beside_vvc, check_same_crops, command_line, resume_points

METRICS = ["psnr", "lpips_alex", "dists", "lpips_mouth_open", "lpips_eyes", "eye_state"]
SLOW_EVERY = 25
"""DISTS on every 25th frame, as in the bench report."""


def top_config(gop: int, quality: int) -> Any:
    """The ladder's last rung with groups of ``gop`` frames and keyframes of ``quality``."""
    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import U_MAX, config_at

    base = config_at(U_MAX, CodecConfig(mode="auto"))
    return replace(base, gop=gop, keyframe_quality=quality, max_keyframe_quality=100)


def code_point(task: tuple[str, int, int]) -> dict[str, Any]:
    """Code, decode and measure one (clip, GOP, quality) point."""
    from keyface.eval.bench.worker import load_analysis
    from keyface.eval.metrics import compute_metrics
    from keyface.io import read_frames
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    clip_dir, gop, quality = Path(task[0]), task[1], task[2]
    meta = json.loads((clip_dir / "meta.json").read_text())
    analysis = load_analysis(clip_dir, meta)
    ref = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
    coded = encode_analysis(analysis, top_config(gop, quality))
    frames = [f.image for f in decode_bytes(coded.data).frames]
    m = compute_metrics(ref, frames, METRICS, progress=False, slow_every=SLOW_EVERY)
    return {
        "clip": clip_dir.name,
        "gop": gop,
        "quality": quality,
        "kbps": coded.kbps,
        "keyframes": coded.stats.keyframes,
        "mean": m.mean,
    }


def report(points: list[dict], anchors: list[dict], out: Path, command: str) -> str:
    clips = sorted({p["clip"] for p in points})
    keys = sorted({(p["gop"], p["quality"]) for p in points}, key=lambda k: (-k[0], k[1]))
    lines = [
        "# The top of the one ladder: candidates against VVC at equal rate",
        "",
        f"Command: `{command}`",
        "",
        f"{len(clips)} clips; bidirectional groups without an aux stream, the ladder's last rung "
        "with the GOP and keyframe quality of each row; means over clips; VVC: the bench's VVC "
        "points of the same clips and frames, interpolated in log-rate at the row's mean rate. "
        f"DISTS on every {SLOW_EVERY}th frame.",
        "",
        "| GOP | keyframe quality | kbit/s | keyframes | "
        + " | ".join(f"{m} (VVC)" for m in METRICS)
        + " |",
        "|---|---|---|---|" + "---|" * len(METRICS),
    ]
    for gop, quality in keys:
        sel = [p for p in points if p["gop"] == gop and p["quality"] == quality]
        if len(sel) != len(clips):
            continue
        rate = float(np.mean([p["kbps"] for p in sel]))
        cells = [
            beside_vvc(float(np.nanmean([p["mean"][m] for p in sel])), anchors, clips, rate, m)
            for m in METRICS
        ]
        frames = np.mean([p["keyframes"] for p in sel])
        lines.append(
            f"| {gop} | {quality} | {rate:.2f} | {frames:.1f} | " + " | ".join(cells) + " |"
        )
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a keyface bench --out folder")
    parser.add_argument("--anchors", type=Path, default=Path("results/bench/points.json"))
    parser.add_argument("--candidates", default="15:30,15:38,15:46,10:30,10:38,8:34")
    parser.add_argument("--out", type=Path, default=Path("results/hybrid/ladder_top"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clips = sorted(p for p in (args.bench / "cache").iterdir() if (p / "analysis.npz").is_file())
    clips = clips[: args.limit]
    names = {c.name for c in clips}
    check_same_crops(args.bench, args.anchors, sorted(names))  # before any work
    candidates = [tuple(int(x) for x in c.split(":")) for c in args.candidates.split(",")]
    t0 = time.perf_counter()
    points, computed = resume_points(
        code_point,
        {(c.name, g, q): (str(c), g, q) for c in clips for g, q in candidates},
        lambda p: (p["clip"], p["gop"], p["quality"]),
        args.jobs,
        args.out / "points.json",
        lambda p: f"{p['clip']} GOP {p['gop']} q {p['quality']} {p['kbps']:.2f} kbit/s",
    )
    anchors = json.loads(args.anchors.read_text())["points"]
    command = command_line("ladder_top.py", args)
    print(report(points, anchors, args.out, command))
    print(f"{computed} points in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
