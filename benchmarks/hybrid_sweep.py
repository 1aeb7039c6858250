"""Rate-distortion of every stream mode on the validation clips, and the fusion ablation.

Each configuration (mode, ladder position ``u`` of the animation, aux scale and QP, GOP) codes
every clip of a ``keyface bench`` cache (``cache/CLIP/crop.y4m`` + ``analysis.npz``) with the
real encoder; the stream is decoded once without fusion, which gives, on the same bitstream,
the animated frames and each frame's aux picture. Then every fusion in ``--fusions`` is applied
to them, and the metrics are measured for: the animation alone (``anim``), the aux stream alone
upsampled (``aux``) and each fusion. Keyframes are shown as decoded in every variant. Rates
count the whole stream (the animation-only variant of a hybrid stream still pays its aux).

    python benchmarks/hybrid_sweep.py --bench /tmp/bench12 --out results/hybrid --limit 6

Writes ``sweep.json`` (one row per clip, configuration and variant) and ``sweep.md``: means
over the clips, the hull of all variants against the VVC anchor of the same clips.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from _common import check_same_crops, command_line

GRID: list[tuple[str, float]] = [("animation", u) for u in (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)]
GRID += [("hybrid", u) for u in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)]
GRID += [("bidirectional", u) for u in (0.0, 0.75, 1.5, 2.25)]
GRID += [("bidirectional-noaux", u) for u in (0.0, 0.75, 1.5, 2.25)]
"""(mode, position on that mode's ladder: ``keyface.codec.ratecontrol.config_at``)."""


def run_clip(task: tuple[str, list[tuple], list[str], list[str], int | None]) -> list[dict]:
    from keyface.bitstream import read_stream
    from keyface.codec.config import CodecConfig
    from keyface.codec.decoder import DecoderCore
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.eval.metrics import compute_metrics
    from keyface.fusion import get_fusion, upsample_aux
    from keyface.io import read_frames
    from keyface.pipeline import encode_analysis
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    clip_dir, grid, fusions, metrics, slow_every = Path(task[0]), task[1], task[2], task[3], task[4]
    meta = json.loads((clip_dir / "meta.json").read_text())
    ref = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
    seconds = len(ref) / float(Fraction(meta["fps"]))
    analysis = load_analysis(clip_dir, meta)
    size = ref[0].shape[0]
    rows = []
    for mode, u in grid:
        if mode == "bidirectional-noaux":  # the groups without an aux stream
            config = replace(config_at(u, CodecConfig(mode="bidirectional")), aux_scale=0)
        else:
            config = config_at(u, CodecConfig(mode=mode))
        hybrid = config.mode != "animation" and config.aux_scale > 0
        scale, qp = (config.aux_scale, config.aux_qp) if hybrid else (0, 0)
        gop = config.gop if config.mode == "bidirectional" else 0
        coded = encode_analysis(analysis, config)
        parsed = read_stream(coded.data)
        # the animated frames and the aux pictures, unfused
        decoder = DecoderCore(parsed.header, fusion="none")
        frames = []
        t0 = time.perf_counter()
        for packet in parsed.packets:
            frames += decoder.receive(packet)
        decode_s = time.perf_counter() - t0
        assert len(frames) == len(ref), (clip_dir.name, mode, len(frames))
        spec = {
            "clip": clip_dir.name,
            "mode": mode,
            "u": u,
            "aux_scale": scale or None,
            "aux_qp": qp or None,
            "gop": gop or None,
            "kbps": 8 * len(coded.data) / 1000 / seconds,
            "aux_kbps": 8 * coded.stats.aux_bytes / 1000 / seconds,
            "keyframes": coded.stats.keyframes,
            "decode_ms": 1000 * decode_s / len(frames),
        }
        anim = [f.image for f in frames]
        variants: dict[str, list[np.ndarray]] = {"anim": anim}
        if hybrid:
            variants["aux"] = [f.image if f.keyframe else upsample_aux(f.aux, size) for f in frames]
            for name in fusions:
                fusion = get_fusion(name)
                t0 = time.perf_counter()
                variants[name] = [
                    f.image if f.keyframe or f.aux is None else fusion.fuse(f.image, f.aux)
                    for f in frames
                ]
                spec[f"{name}_ms"] = 1000 * (time.perf_counter() - t0) / len(frames)
        for variant, images in variants.items():
            m = compute_metrics(ref, images, metrics, slow_every=slow_every or 1).mean
            rows.append(spec | {"variant": variant} | m)
    return rows


def hull(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The lower-left staircase of (kbps, lpips, label): points no other beats on both."""
    out: list[tuple[float, float, str]] = []
    for p in sorted(points):
        if not out or p[1] < out[-1][1]:
            out.append(p)
    return out


def report(rows: list[dict], anchors: Path, command: str, metrics: list[str]) -> str:
    clips = sorted({r["clip"] for r in rows})
    keys = sorted(
        {(r["mode"], r["u"], r["aux_scale"], r["aux_qp"], r["gop"], r["variant"]) for r in rows},
        key=str,
    )
    lines = [
        "# Stream modes and fusions: rate-distortion on the same bitstreams",
        "",
        f"Command: `{command}`",
        "",
        f"Means over {len(clips)} clips ({', '.join(clips)}).",
        "",
        "| mode | u | aux | GOP | variant | kbit/s | aux kbit/s | "
        + " | ".join(metrics)
        + " | decode ms | fusion ms |",
        "|---" * (8 + len(metrics)) + "|",
    ]
    means = []
    for key in keys:
        sel = [
            r
            for r in rows
            if (r["mode"], r["u"], r["aux_scale"], r["aux_qp"], r["gop"], r["variant"]) == key
        ]
        if len(sel) != len(clips):
            continue
        mean = {m: float(np.mean([r[m] for r in sel])) for m in metrics}
        kbps = float(np.mean([r["kbps"] for r in sel]))
        mode, u, scale, qp, gop, variant = key
        aux = f"x{scale} QP {qp}" if scale else ""
        fusion_ms = np.mean([r.get(f"{variant}_ms", np.nan) for r in sel])
        lines.append(
            f"| {mode} | {u:g} | {aux} | {gop or ''} | {variant} | {kbps:.2f} | "
            f"{np.mean([r['aux_kbps'] for r in sel]):.2f} | "
            + " | ".join(f"{mean[m]:.4f}" for m in metrics)
            + f" | {np.mean([r['decode_ms'] for r in sel]):.1f} | "
            + ("" if np.isnan(fusion_ms) else f"{fusion_ms:.1f}")
            + " |"
        )
        label = f"{mode} u{u:g} {aux} {('gop ' + str(gop)) if gop else ''} {variant}".strip()
        if mode in ("animation", "bidirectional-noaux") or variant not in ("anim", "aux"):
            means.append((kbps, mean.get("lpips_alex", np.nan), label))  # decodable outputs
    points = json.loads(anchors.read_text())["points"] if anchors.is_file() else []
    vvc = [p for p in points if p["codec"] == "vvc" and p["clip"] in clips]
    lines += [
        "",
        "VVC (bench anchor, same clips and frames):",
        "",
        "| QP | kbit/s | " + " | ".join(metrics) + " |",
    ]
    lines.append("|---" * (2 + len(metrics)) + "|")
    for q in sorted({p["param"] for p in vvc}):
        sel = [p for p in vvc if p["param"] == q]
        if len(sel) != len(clips):
            continue
        vals = " | ".join(
            f"{np.mean([p['metrics'].get(m, np.nan) for p in sel]):.4f}" for m in metrics
        )
        lines.append(f"| {q} | {np.mean([p['kbps'] for p in sel]):.2f} | {vals} |")
    lines += [
        "",
        "Hull on LPIPS-Alex (every configuration's decoded output: the fusions of streams "
        "with an aux stream, which pay for it; `anim` and `aux` are for comparison only):",
        "",
    ]
    lines += [f"- {k:.2f} kbit/s: {q:.4f} ({label})" for k, q, label in hull(means)]
    lines += ["", *bd_lines(rows, vvc, clips, metrics)]
    return "\n".join(lines) + "\n"


def _curve(rows: list[dict], clips: list[str], metric: str, pick) -> list[tuple[float, float]]:
    """Clip-averaged (kbps, metric) of the configurations ``pick(row)`` selects."""
    keys = sorted({(r["mode"], r["u"], r["variant"]) for r in rows if pick(r)}, key=str)
    out = []
    for key in keys:
        sel = [r for r in rows if (r["mode"], r["u"], r["variant"]) == key]
        if len(sel) == len(clips) and all(r.get(metric) is not None for r in sel):
            out.append(
                (float(np.mean([r["kbps"] for r in sel])), float(np.mean([r[metric] for r in sel])))
            )
    return out


def _front(points: list[tuple[float, float]], metric: str) -> list[tuple[float, float]]:
    """The points no other beats on rate and quality (the convex-hull ladder's candidates)."""
    from keyface.eval.registry import METRICS

    lower = METRICS[metric].direction == "lower"
    best: list[tuple[float, float]] = []
    for k, q in sorted(points):
        if not best or (q < best[-1][1] if lower else q > best[-1][1]):
            best.append((k, q))
    return best


def bd_lines(rows: list[dict], vvc: list[dict], clips: list[str], metrics: list[str]) -> list[str]:
    """BD-rate against VVC of each mode's own curve and of the hull over every mode."""
    from keyface.eval.bdrate import bd_rate

    fused = {"anim", "aux"}
    curves = {
        "animation": lambda r: r["mode"] == "animation",
        "hybrid (best fusion per point)": lambda r: (
            r["mode"] == "hybrid" and r["variant"] not in fused
        ),
        "bidirectional (best fusion per point)": lambda r: (
            r["mode"] == "bidirectional" and r["variant"] not in fused
        ),
        "bidirectional without aux": lambda r: r["mode"] == "bidirectional-noaux",
        "hull over all": lambda r: (
            r["mode"] in ("animation", "bidirectional-noaux") or r["variant"] not in fused
        ),
    }
    out = ["BD-rate against VVC (negative: fewer bits; on the clip-averaged fronts):", ""]
    out += ["| curve | " + " | ".join(metrics) + " |", "|---" * (1 + len(metrics)) + "|"]
    for name, pick in curves.items():
        cells = []
        for m in metrics:
            test = _front(_curve(rows, clips, m, pick), m)
            anchor = []
            for q in sorted({p["param"] for p in vvc}):
                sel = [p for p in vvc if p["param"] == q and p["metrics"].get(m) is not None]
                if len(sel) == len(clips):
                    anchor.append(
                        (np.mean([p["kbps"] for p in sel]), np.mean([p["metrics"][m] for p in sel]))
                    )
            anchor.sort()
            if len(test) < 2 or len(anchor) < 2:
                cells.append("n/a")
                continue
            r = bd_rate(
                [a[0] for a in anchor],
                [a[1] for a in anchor],
                [t[0] for t in test],
                [t[1] for t in test],
                m,
            )
            cells.append("n/a" if r.value is None else f"{r.value:+.1f} %")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a keyface bench --out folder")
    parser.add_argument("--out", type=Path, default=Path("results/hybrid"))
    parser.add_argument("--fusions", default="band", help="comma-separated fusion names")
    parser.add_argument("--metrics", default="psnr,lpips_alex")
    parser.add_argument("--slow-every", type=int, default=None)
    parser.add_argument("--anchors", type=Path, default=Path("results/bench/points.json"))
    parser.add_argument("--modes", default="animation,hybrid,bidirectional")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument("--start", type=int, default=0, help="skip this many clips first")
    parser.add_argument("--merge", type=Path, nargs="*", default=[], help="earlier TAG.json rows")
    parser.add_argument("--tag", default="sweep", help="output file names: TAG.json, TAG.md")
    parser.add_argument("--grid", type=int, default=None, help="only the first N configurations")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    modes = args.modes.split(",")
    grid = [g for g in GRID if g[0] in modes][: args.grid]
    clips = sorted(p for p in (args.bench / "cache").iterdir() if (p / "analysis.npz").is_file())
    fusions = [f for f in args.fusions.split(",") if f]
    metrics = args.metrics.split(",")
    end = None if args.limit is None else args.start + args.limit
    if args.anchors.is_file():  # before any work
        check_same_crops(args.bench, args.anchors, [c.name for c in clips[args.start : end]])
    tasks = [(str(c), grid, fusions, metrics, args.slow_every) for c in clips[args.start : end]]
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = [r for path in args.merge for r in json.loads(path.read_text())]
    with ProcessPoolExecutor(args.jobs) as pool:
        for k, clip_rows in enumerate(pool.map(run_clip, tasks), 1):
            rows.extend(clip_rows)
            print(
                f"[{k}/{len(tasks)}] {clip_rows[0]['clip']} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    (args.out / f"{args.tag}.json").write_text(json.dumps(rows, indent=1))
    command = command_line("hybrid_sweep.py", args)
    text = report(rows, args.anchors, command, metrics)
    (args.out / f"{args.tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
