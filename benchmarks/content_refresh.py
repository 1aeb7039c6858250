"""What viewers see, before and after, at equal rate: the content rule
(``keyface.codec.content``) and DETAIL rectangles (``keyface.codec.detail``).

For the clips a ``keyface bench`` run prepared (its ``cache/CLIP/crop.y4m`` and ``analysis.npz``),
codes every clip at each ladder position ``--u`` once per variant (``before``: the motion gate
alone; ``content``: the content rule sending keyframes; ``update``: the content rule sending
DETAIL rectangles on a rendered frame; ``update+detail``: also every keyframe's eyes and mouth
20 quality steps better), decodes with the default renderer and measures the whole frame
and the regions viewers look at (``keyface.eval.regions``). Points already in ``--out``'s
``points.json`` are reused. Writes ``points.json`` (every point), ``report.md`` (mean curves,
each measure interpolated at equal rate, BD-rates against ``before``) and a gallery of the worst
open-mouth and eye-state frames (source | before | each variant) to ``--out``:

    python benchmarks/content_refresh.py --bench /tmp/bench12 --out results/content
    python benchmarks/content_refresh.py --bench /tmp/bench12 --mode auto --u 1,1.6,2.5 \
        --variants rule-off,as-shipped --baseline rule-off --out results/content_groups

``--mode`` is the ladder the positions ``--u`` are taken on (``animation``, the default, or
``auto``, the one ladder, whose upper rungs are the bidirectional groups); ``--baseline`` the
variant the others are compared with (``before``). ``rule-off`` is the shipped configuration
with the content rule switched off (``content_refresh=False``), ``as-shipped`` the shipped
configuration.

Set ``KEYFACE_THREADS`` as for any benchmark (``keyface.threads``); ``--jobs`` worker processes.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import at_rate, cached_clip, command_line, resume_points

METRICS = [
    "psnr",
    "lpips_alex",
    "lpips_mouth",
    "lpips_mouth_open",
    "lpips_eyes",
    "eye_state",
    "gaze_off",
    "flicker",
]
VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"content_refresh": False, "detail_boost": 0},
    "content": {"content_refresh": True, "content_update": "keyframe", "detail_boost": 0},
    "update": {"content_refresh": True, "content_update": "detail", "detail_boost": 0},
    "update+detail": {"content_refresh": True, "content_update": "detail", "detail_boost": 20},
    "update+eyes10": {"detail_boost": 10, "detail_parts": ("eyes",)},
    "update+eyes20": {"detail_boost": 20, "detail_parts": ("eyes",)},
    "rule-off": {"content_refresh": False},
    "as-shipped": {},
    "eye-landmarks": {"eye_landmarks": True},
    "eye-keypoints": {"eye_landmarks": False},
    "group-off": {"group_cut": None},
    "group-choice": {"group_cut": ()},
    "group-cut-eyes": {"group_cut": ("eyes",)},
    "group-cut-all": {"group_cut": ("eyes", "mouth")},
    "noaux": {"aux_scale": 0},
    "noaux-cut-all": {"aux_scale": 0, "group_cut": ("eyes", "mouth")},
    "keyframes-hevc-ld": {"intra_codec": "hevc-ld"},
    "psnr4-16": {"psnr_check": 4, "psnr_floor": 16.0},
    "psnr4-18": {"psnr_check": 4, "psnr_floor": 18.0},
    "motion-level3": {"quant_level": 3},
    "live": {"intra_codec": "hevc", "content_update": "keyframe"},
    "motion-level4": {"quant_level": 4},
    "eye-source": {"eye_source_state": True},
    "gaze-off": {"gaze_rule": "off"},
    "gaze-choose": {"gaze_rule": "choose"},
    "gaze-refresh": {"gaze_rule": "refresh"},
    "switch0": {"group_switch": 0.0},
    "switch2": {"group_switch": 2.0},
    "switch4": {"group_switch": 4.0},
    "switch8": {"group_switch": 8.0},
}
DEFAULT_U = (0.0, 0.3, 0.6, 0.9, 1.2)


def code_point(task: tuple[str, str, float, dict[str, Any], str]) -> dict[str, Any]:
    """Code, decode and measure one (clip, variant, u) point on ladder ``mode``."""
    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.metrics import compute_metrics
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    clip_dir, variant, u, overrides, mode = Path(task[0]), task[1], task[2], task[3], task[4]
    _, analysis, ref = cached_clip(clip_dir)
    coded = encode_analysis(analysis, replace(config_at(u, CodecConfig(mode=mode)), **overrides))
    decoded = decode_bytes(coded.data)
    frames = [f.image for f in decoded.frames]
    m = compute_metrics(ref, frames, METRICS, progress=False)
    reasons: dict[str, int] = {}
    for d in coded.stats.decisions:
        if d.keyframe and d.refresh:
            reasons[d.refresh] = reasons.get(d.refresh, 0) + 1
    return {
        "clip": clip_dir.name,
        "variant": variant,
        "mode": mode,
        "u": u,
        "kbps": coded.kbps,
        "keyframes": coded.stats.keyframes,
        "refresh": reasons,
        "mean": m.mean,
        "per_frame": m.per_frame,
    }


def _curve(points: list[dict], variant: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean rate and mean metric over clips at each u (clips without a value left out)."""
    us = sorted({p["u"] for p in points})
    rates, values = [], []
    for u in us:
        sel = [p for p in points if p["variant"] == variant and p["u"] == u]
        rates.append(np.mean([p["kbps"] for p in sel]))
        vals = [p["mean"].get(metric, math.nan) for p in sel]  # gaze_off came later
        vals = [v for v in vals if not math.isnan(v)]
        values.append(np.mean(vals) if vals else math.nan)
    return np.array(rates), np.array(values)


def report(points: list[dict], out: Path, command: str, baseline: str = "before") -> str:
    from keyface.eval.bdrate import bd_rate

    variants = [v for v in VARIANTS if any(p["variant"] == v for p in points)]
    variants = [baseline] + [v for v in variants if v != baseline]
    lines = [
        f"# What viewers see: {baseline} / after at equal rate",
        "",
        f"Command: `{command}`",
        "",
        "Variants: "
        + "; ".join(f"`{v}`: {VARIANTS[v]}" for v in variants)
        + ". Default renderer, the first frames of each clip as the bench prepared them; "
        "means over clips at each ladder position (region measures over the frames that have "
        "them).",
        "",
        "| variant | u | kbit/s | keyframes | " + " | ".join(METRICS) + " |",
        "|---|---|---|---|" + "---|" * len(METRICS),
    ]
    for variant in variants:
        for u in sorted({p["u"] for p in points}):
            sel = [p for p in points if p["variant"] == variant and p["u"] == u]
            cells = []
            for metric in METRICS:
                vals = [p["mean"].get(metric, math.nan) for p in sel]
                vals = [v for v in vals if not math.isnan(v)]
                cells.append(f"{np.mean(vals):.4f}" if vals else "n/a")
            kbps = np.mean([p["kbps"] for p in sel])
            keys = np.mean([p["keyframes"] for p in sel])
            lines.append(
                f"| {variant} | {u} | {kbps:.2f} | {keys:.1f} | " + " | ".join(cells) + " |"
            )
    for variant in variants[1:]:
        lines += [
            "",
            f"## `{variant}` against `{baseline}` at equal rate",
            "",
            f"At `{variant}`'s mean rates, `{baseline}` interpolated linearly in log-rate (n/a: "
            f"outside `{baseline}`'s range).",
            "",
            "| kbit/s | " + " | ".join(f"{m} {baseline} / {variant}" for m in METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        rates, _ = _curve(points, variant, METRICS[0])
        for rate in rates:
            cells = []
            for metric in METRICS:
                b = at_rate(*_curve(points, baseline, metric), rate)
                a = at_rate(*_curve(points, variant, metric), rate)
                change = f" ({100 * (a - b) / b:+.0f} %)" if b and not math.isnan(b + a) else ""
                cells.append("n/a" if math.isnan(b) else f"{b:.4f} / {a:.4f}{change}")
            lines.append(f"| {rate:.2f} | " + " | ".join(cells) + " |")
        lines += ["", f"BD-rate of `{variant}` against `{baseline}` (negative: fewer bits):", ""]
        for metric in ("psnr", "lpips_alex", "lpips_mouth", "lpips_mouth_open", "lpips_eyes"):
            rb, vb = _curve(points, baseline, metric)
            ra, va = _curve(points, variant, metric)
            bd = bd_rate(rb, vb, ra, va, metric)
            value = "n/a" if bd.value is None else f"{bd.value:+.1f} %"
            lines.append(f"- {metric}: {value}" + (f" ({bd.reason})" if bd.reason else ""))
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def gallery(
    points: list[dict],
    bench: Path,
    out: Path,
    u: float,
    baseline: str = "before",
    mode: str = "animation",
) -> None:
    """Per clip: the frame with the worst ``lpips_mouth_open``, the worst eye-state frame and
    the first frame whose eyes look elsewhere (``gaze_off``) of ``baseline``, shown as
    source | baseline | each other variant at ladder position ``u``."""
    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import config_at
    from keyface.pipeline import decode_bytes, encode_analysis

    u = min({p["u"] for p in points}, key=lambda v: abs(v - u))  # the nearest u measured
    variants = [v for v in VARIANTS if any(p["variant"] == v for p in points)]
    variants = [baseline] + [v for v in variants if v != baseline]
    folder = out / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    for clip in sorted({p["clip"] for p in points}):
        before = next(
            p for p in points if p["clip"] == clip and p["variant"] == baseline and p["u"] == u
        )
        picks = []
        for metric in ("lpips_mouth_open", "eye_state", "gaze_off"):
            if metric not in before["per_frame"]:
                continue
            values = np.array(before["per_frame"][metric], dtype=float)
            if np.isfinite(values).any() and np.nanmax(values) > 0:
                picks.append((metric, int(np.nanargmax(values))))
        if not picks:
            continue
        clip_dir = bench / "cache" / clip
        _, analysis, ref = cached_clip(clip_dir)
        decoded = {}
        for variant in variants:
            config = replace(config_at(u, CodecConfig(mode=mode)), **VARIANTS[variant])
            coded = encode_analysis(analysis, config)
            decoded[variant] = [f.image for f in decode_bytes(coded.data).frames]
        for metric, t in picks:
            row = np.hstack([ref[t]] + [decoded[v][t] for v in variants])
            name = folder / f"{clip}_{metric}_f{t}.jpg"
            image = cv2.cvtColor(row, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(name), image, [cv2.IMWRITE_JPEG_QUALITY, 88])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a keyface bench --out folder")
    parser.add_argument("--out", type=Path, default=Path("results/content"))
    parser.add_argument("--u", default=",".join(str(u) for u in DEFAULT_U))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="of: " + ", ".join(VARIANTS))
    parser.add_argument(
        "--gallery-u", type=float, default=0.3, help="one of --u (another value: no gallery)"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument("--mode", default="animation", help="the ladder of --u (or auto)")
    parser.add_argument("--baseline", default="before", help="the variant compared against")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clips = sorted(p for p in (args.bench / "cache").iterdir() if (p / "analysis.npz").is_file())
    clips = clips[: args.limit]
    us = [float(u) for u in args.u.split(",")]
    variants = [v.strip() for v in args.variants.split(",")]
    if args.baseline not in variants or any(v not in VARIANTS for v in variants):
        parser.error(f"--variants: names from {', '.join(VARIANTS)}, including {args.baseline}")
    t0 = time.perf_counter()
    points, computed = resume_points(
        code_point,
        {
            (c.name, v, u, args.mode): (str(c), v, u, VARIANTS[v], args.mode)
            for c in clips
            for u in us
            for v in variants
        },
        lambda p: (p["clip"], p["variant"], p["u"], p.get("mode", "animation")),
        args.jobs,
        args.out / "points.json",
        lambda p: f"{p['clip']} {p['variant']} u={p['u']} {p['kbps']:.2f} kbit/s",
    )
    command = command_line("content_refresh.py", args)
    print(report(points, args.out, command, args.baseline))
    if args.gallery_u in us:  # a --gallery-u off the ladder positions: no gallery
        gallery(points, args.bench, args.out, args.gallery_u, args.baseline, args.mode)
    print(f"{computed} points in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
