"""Rippling hair and backgrounds (issue 18, "no invented artefacts"): measure them, before and
after.

Decoded frames showed the picture frame behind a speaker bending in waves as she turned her
head, and the hair wobbling: the warp dragged everything around the head with it
(``keyface.render.warp.follow_share``). This codes the clips a ``keyface bench`` run prepared
(``BENCH/cache/CLIP/crop.y4m``, ``analysis.npz``) at ladder positions ``--u`` with the default
renderer, and measures per clip and per frame:

* ``flicker`` (docs/metrics.md): the error of the frame-to-frame change outside the face oval,
  grey levels; its floor, ``still``, is what a decoder that froze the first frame would score
  (the source's own change there), for scale;
* ``lpips_alex`` (whole frame), ``lpips_mouth``, ``lpips_eyes``, ``psnr``: the face must not
  get worse.

``run`` writes one JSON per clip and rung plus the decoded frames (``.npy``) into ``--out``;
``report`` pairs two such folders (``--before``, ``--after``) into ``report.md``,
``points.json`` and a gallery of each clip's frame with the worst ``flicker`` before (source
| before | after, and the frame-to-frame change of each x4 below):

    PYTHONPATH=/work/main/src python benchmarks/ripple.py run --bench /tmp/bench12 \\
        --out /tmp/ripple/before          # the code before, from another checkout
    PYTHONPATH=src python benchmarks/ripple.py run --bench /tmp/bench12 --out /tmp/ripple/after
    python benchmarks/ripple.py report --before /tmp/ripple/before --after /tmp/ripple/after \\
        --out results/ripple
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import before_after_parser, finite_mean, load_rows, pending_points, short_name

METRICS = ["psnr", "lpips_alex", "lpips_mouth", "lpips_eyes", "flicker"]
WORST = 5
"""Worst frames (by ``flicker``) listed per clip."""


def run_clip(clip_dir: Path, u: float, frames: int, out: Path) -> dict[str, Any]:
    from _common import code_cached_clip

    from keyface.eval.metrics import compute_metrics
    from keyface.eval.regions import flicker

    clip = code_cached_clip(clip_dir, u, frames)
    ref, decoded, analysis, result, n = (
        clip.ref,
        clip.decoded,
        clip.analysis,
        clip.result,
        clip.frames,
    )
    metrics = compute_metrics(ref, decoded, METRICS)
    still = flicker(ref, [decoded[0]] * n, list(analysis.landmarks))
    name = f"{clip_dir.name}_u{u:.2f}"
    np.save(out / f"{name}_frames.npy", np.stack(decoded))
    row = {
        "clip": clip_dir.name,
        "u": u,
        "frames": n,
        "kbps": clip.kbps,
        "keyframes": [f.index for f in result.frames if f.keyframe],
        "references": [f.reference_frame for f in result.frames],
        "encode_s": clip.encode_s,
        "decode_s": clip.decode_s,
        "mean": metrics.mean,
        "per_frame": {k: metrics.per_frame[k] for k in METRICS},
        "still": still,
    }
    (out / f"{name}.json").write_text(json.dumps(row, allow_nan=True))
    return row


def cmd_run(args: argparse.Namespace) -> None:
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    for clip, u in pending_points(args):
        row = run_clip(clip, u, args.frames, Path(args.out))
        m = row["mean"]
        print(
            f"{short_name(clip.name)} u={u:.2f}: {row['kbps']:.2f} kbit/s, LPIPS "
            f"{m['lpips_alex']:.4f}, mouth {m['lpips_mouth']:.4f}, eyes "
            f"{m['lpips_eyes']:.4f}, flicker {m['flicker']:.3f} (still "
            f"{finite_mean(row['still']):.3f}), {row['encode_s']:.1f} + {row['decode_s']:.1f} s",
            flush=True,
        )


def _values(row: dict, metric: str) -> np.ndarray:
    return np.array(
        [np.nan if v is None else v for v in row["per_frame"][metric]], dtype=np.float64
    )


def _change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The grey frame-to-frame change ``a - b`` x4 around mid-grey, as RGB."""
    grey = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(int) - cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    g = np.clip(128 + 4 * grey, 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _interpolate(rates: list[float], values: list[float], at: float) -> float:
    """``values`` at rate ``at``, linear in log-rate between the measured points, and along the
    end segment up to 10 % beyond them (NaN farther out)."""
    order = np.argsort(rates)
    r = np.log(np.asarray(rates, dtype=np.float64)[order])
    v = np.asarray(values, dtype=np.float64)[order]
    x = math.log(at)
    if x < r[0] - math.log(1.1) or x > r[-1] + math.log(1.1) or len(r) < 2:
        return float("nan")
    i = int(np.clip(np.searchsorted(r, x) - 1, 0, len(r) - 2))
    return float(v[i] + (v[i + 1] - v[i]) * (x - r[i]) / (r[i + 1] - r[i]))


def cmd_report(args: argparse.Namespace) -> None:
    from keyface.io import read_frames

    before, after = load_rows(Path(args.before)), load_rows(Path(args.after))
    keys = sorted(set(before) & set(after))
    out = Path(args.out)
    (out / "gallery").mkdir(parents=True, exist_ok=True)
    points = []
    for key in keys:
        b, a = before[key], after[key]
        fb, fa = _values(b, "flicker"), _values(a, "flicker")
        worst = [int(t) for t in np.argsort(-np.nan_to_num(fb, nan=-1.0))[:WORST]]
        points.append(
            {
                "clip": key[0],
                "u": key[1],
                "frames": a["frames"],
                "before_kbps": b["kbps"],
                "after_kbps": a["kbps"],
                **{
                    f"{side}_{m}": r["mean"][m]
                    for side, r in (("before", b), ("after", a))
                    for m in METRICS
                },
                "still_flicker": finite_mean(a["still"]),
                "before_flicker_p95": float(np.nanpercentile(fb, 95)),
                "after_flicker_p95": float(np.nanpercentile(fa, 95)),
                "worst_frames_before": [
                    {"frame": t, "before": float(fb[t]), "after": float(fa[t])} for t in worst
                ],
            }
        )
    (out / "points.json").write_text(json.dumps({"command": args.command, "points": points}))
    rungs = sorted({k[1] for k in keys})
    lines = [
        "# Rippling hair and backgrounds: before and after (issue 18)",
        "",
        "Commands:",
        "",
        *[f"    {c}" for c in args.command.split(" ;; ")],
        "",
        f"{len({k[0] for k in keys})} validation clips (one per person), the first "
        f"{max(p['frames'] for p in points)} frames of each "
        f"({min(p['frames'] for p in points)} where a clip is shorter), the default renderer; "
        "means over clips. `flicker`: mean |decoded change - source change| between consecutive "
        "frames outside the face oval, grey levels (docs/metrics.md); `still`: the same for a "
        "decoder that froze the first frame (the source's own change there, for scale); p95: "
        "the 95th percentile over frames, averaged over clips.",
        "",
        "| u | kbit/s before / after | flicker before / after (still) | flicker p95 before / "
        "after | LPIPS before / after | mouth LPIPS before / after | eyes LPIPS before / after "
        "| PSNR before / after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for u in rungs:
        sel = [p for p in points if p["u"] == u]

        def m(name: str, sel: list = sel) -> float:
            return finite_mean([p[name] for p in sel])

        lines.append(
            f"| {u:g} | {m('before_kbps'):.2f} / {m('after_kbps'):.2f} "
            f"| {m('before_flicker'):.3f} / {m('after_flicker'):.3f} ({m('still_flicker'):.3f}) "
            f"| {m('before_flicker_p95'):.2f} / {m('after_flicker_p95'):.2f} "
            f"| {m('before_lpips_alex'):.4f} / {m('after_lpips_alex'):.4f} "
            f"| {m('before_lpips_mouth'):.4f} / {m('after_lpips_mouth'):.4f} "
            f"| {m('before_lpips_eyes'):.4f} / {m('after_lpips_eyes'):.4f} "
            f"| {m('before_psnr'):.2f} / {m('after_psnr'):.2f} |"
        )
    if len(rungs) > 1:
        lines += [
            "",
            "At equal rate (`before` interpolated linearly in log-rate at `after`'s mean rates, "
            "extrapolated along the end segment by up to 10 %; change of `after` against it):",
            "",
            "| u | kbit/s | flicker | LPIPS | mouth LPIPS | eyes LPIPS |",
            "|---|---|---|---|---|---|",
        ]
        for u in rungs:
            sel = [p for p in points if p["u"] == u]
            rate = finite_mean([p["after_kbps"] for p in sel])
            cells = []
            for metric in ("flicker", "lpips_alex", "lpips_mouth", "lpips_eyes"):
                rb = [finite_mean([p["before_kbps"] for p in points if p["u"] == v]) for v in rungs]
                vb = [
                    finite_mean([p[f"before_{metric}"] for p in points if p["u"] == v])
                    for v in rungs
                ]
                ref = _interpolate(rb, vb, rate)
                now = finite_mean([p[f"after_{metric}"] for p in sel])
                cells.append(f"{100 * (now / ref - 1):+.1f} %" if ref == ref else "n/a")
            lines.append(f"| {u:g} | {rate:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per clip (before -> after; `still` for scale):",
        "",
        "| clip | u | kbit/s | flicker (still) | flicker p95 | worst frame before: flicker "
        "| LPIPS | mouth LPIPS | eyes LPIPS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        w = p["worst_frames_before"][0]
        lines.append(
            f"| {short_name(p['clip'])} | {p['u']:g} "
            f"| {p['before_kbps']:.2f} -> {p['after_kbps']:.2f} "
            f"| {p['before_flicker']:.2f} -> {p['after_flicker']:.2f} ({p['still_flicker']:.2f}) "
            f"| {p['before_flicker_p95']:.2f} -> {p['after_flicker_p95']:.2f} "
            f"| f{w['frame']}: {w['before']:.2f} -> {w['after']:.2f} "
            f"| {p['before_lpips_alex']:.4f} -> {p['after_lpips_alex']:.4f} "
            f"| {p['before_lpips_mouth']:.4f} -> {p['after_lpips_mouth']:.4f} "
            f"| {p['before_lpips_eyes']:.4f} -> {p['after_lpips_eyes']:.4f} |"
        )
    gallery_u = args.gallery_u if args.gallery_u in rungs else rungs[len(rungs) // 2]
    rows = []
    for p in (p for p in points if p["u"] == gallery_u):
        clip, t = p["clip"], p["worst_frames_before"][0]["frame"]
        name = f"{clip}_u{gallery_u:.2f}_frames.npy"
        db = np.load(Path(args.before) / name, mmap_mode="r")
        da = np.load(Path(args.after) / name, mmap_mode="r")
        crop = Path(args.bench) / "cache" / clip / "crop.y4m"
        source = [f.image for f in read_frames(crop, t + 1)]
        top = np.hstack([source[t], db[t], da[t]])
        bottom = np.hstack([_change(x[t], x[t - 1]) for x in (source, db, da)])
        row = np.vstack([top, bottom])
        worst = p["worst_frames_before"][0]
        label = (
            f"{short_name(clip)} u={gallery_u:g} f{t}  flicker {worst['before']:.1f} -> "
            f"{worst['after']:.1f}"
        )
        cv2.putText(row, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 0), 2)
        path = out / "gallery" / f"{short_name(clip)}_u{gallery_u:.2f}_f{t}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        rows.append(row)
    # The sheet: each clip's pictures and changes at half size, two clips side by side.
    small = [cv2.resize(r, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for r in rows]
    if len(small) % 2:
        small.append(np.zeros_like(small[0]))
    sheet = np.vstack([np.hstack(pair) for pair in zip(small[::2], small[1::2], strict=True)])
    cv2.imwrite(
        str(out / "gallery.jpg"),
        cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, 85],
    )
    lines += [
        "",
        f"Gallery (`gallery/` at full size, all clips at half size in `gallery.jpg`), u = "
        f"{gallery_u:g}: each clip's frame with the worst `flicker` before; top: source | before "
        "| after, bottom: the grey change from the previous frame x4 of each (mid-grey: no "
        "change).",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser, run, report = before_after_parser(__doc__, cmd_run, cmd_report)
    run.add_argument("--clips", default="", help="only clips whose name holds one of these")
    report.add_argument("--bench", required=True, help="the bench folder the runs coded")
    report.add_argument("--gallery-u", type=float, default=0.6, help="the rung of the gallery")
    report.add_argument("--command", default="", help="the commands to quote, ' ;; '-separated")
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
