"""Speckles along the lips (issue 18, "no invented artefacts"): measure them, before and after.

Decoded frames showed dark (and bright) speckles along the lip line: the warp's triangle
owners (``keyface.render.warp._owners``). This codes the clips a ``keyface bench`` run
prepared (``BENCH/cache/CLIP/crop.y4m``, ``analysis.npz``) at ladder positions ``--u`` with
the default renderer, and measures per clip:

* ``lpips_alex`` (whole frame), ``lpips_mouth``, ``lpips_mouth_open`` (docs/metrics.md), PSNR;
* ``speckles``: pixels in the lip band (the source's outer-lip polygon, dilated by 3 px)
  that are darker or brighter than *both* pixels 2 px away along the mouth's axis (the line
  through the mouth corners) by more than ``SPECKLE_LEVELS`` grey levels; the same count on
  the source frame says how much of it is the face's own texture (teeth gaps, highlights).
  A lip line runs along that axis and does not count; a dot or a short spike across it does.

``run`` writes one JSON per clip and rung plus the lip crops of every frame into ``--out``;
``report`` pairs two such folders (``--before``, ``--after``) into ``report.md``, ``points.json``
and a gallery of lip crops (source | before | after | difference x4), each clip at the frame
whose speckle count fell most:

    python benchmarks/lips.py run --bench /tmp/bench12 --u 0,0.6,1.2 --out /tmp/lips/after
    python benchmarks/lips.py report --before /tmp/lips/before --after /tmp/lips/after \\
        --out results/lips
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import before_after_parser, finite_mean, load_rows, pending_points, short_name

METRICS = ["psnr", "lpips_alex", "lpips_mouth", "lpips_mouth_open"]
SPECKLE_LEVELS = 12.0
"""Grey levels by which a speckle pixel is darker (brighter) than both its neighbours."""
SPECKLE_STEP = 2.0
"""Pixels between a pixel and the neighbours it is compared with, along the mouth's axis."""
LIP_BAND = 3
"""Pixels by which the outer-lip polygon is dilated into the lip band."""
CROP = 96
"""Side of the stored lip crops (the square ``keyface.eval.regions.region_box`` places)."""


def lip_band(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(H, W)`` bool: the outer-lip polygon of ``landmarks``, dilated by :data:`LIP_BAND`."""
    from keyface.facemesh import OUTER_LIPS

    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(landmarks[list(OUTER_LIPS), :2]).astype(np.int32)], 1)
    side = 2 * LIP_BAND + 1
    return cv2.dilate(mask, np.ones((side, side), np.uint8)) > 0


def speckles(image: np.ndarray, landmarks: np.ndarray) -> tuple[int, int]:
    """``(dark, bright)``: speckle pixels of ``image`` in the lip band of ``landmarks``."""
    from keyface.facemesh import MOUTH_CORNERS

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    a, b = landmarks[MOUTH_CORNERS[0], :2], landmarks[MOUTH_CORNERS[1], :2]
    axis = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6) * SPECKLE_STEP
    h, w = grey.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    def shifted(sign: float) -> np.ndarray:
        mx, my = gx + sign * axis[0], gy + sign * axis[1]
        return cv2.remap(grey, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    left, right = shifted(-1.0), shifted(1.0)
    band = lip_band(landmarks, grey.shape)
    dark = (grey < np.minimum(left, right) - SPECKLE_LEVELS) & band
    bright = (grey > np.maximum(left, right) + SPECKLE_LEVELS) & band
    return int(dark.sum()), int(bright.sum())


def lip_crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The square around the outer lips (``region_box``), resized to :data:`CROP`."""
    from keyface.eval.regions import region_box
    from keyface.facemesh import OUTER_LIPS

    x0, y0, side = region_box(landmarks, OUTER_LIPS, image.shape)
    s = CROP / side
    m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]])
    return cv2.warpAffine(image, m, (CROP, CROP), flags=cv2.INTER_CUBIC)


def run_clip(clip_dir: Path, u: float, frames: int, out: Path) -> dict[str, Any]:
    from _common import code_cached_clip

    from keyface.eval.metrics import compute_metrics

    clip = code_cached_clip(clip_dir, u, frames)
    ref, decoded, analysis = clip.ref, clip.decoded, clip.analysis
    metrics = compute_metrics(ref, decoded, METRICS)
    counts, source_counts, crops = [], [], []
    for a, b, marks in zip(ref, decoded, analysis.landmarks, strict=True):
        if marks is None:
            counts.append(None)
            source_counts.append(None)
            crops.append(np.zeros((2, CROP, CROP, 3), np.uint8))
            continue
        counts.append(speckles(b, marks))
        source_counts.append(speckles(a, marks))
        crops.append(np.stack([lip_crop(a, marks), lip_crop(b, marks)]))
    name = f"{clip_dir.name}_u{u:.2f}"
    np.save(out / f"{name}_crops.npy", np.stack(crops))
    row = {
        "clip": clip_dir.name,
        "u": u,
        "frames": clip.frames,
        "kbps": clip.kbps,
        "encode_s": clip.encode_s,
        "decode_s": clip.decode_s,
        "mean": metrics.mean,
        "per_frame": {
            k: metrics.per_frame[k] for k in ("lpips_alex", "lpips_mouth", "lpips_mouth_open")
        },
        "speckles": counts,
        "source_speckles": source_counts,
    }
    (out / f"{name}.json").write_text(json.dumps(row, allow_nan=True))
    return row


def cmd_run(args: argparse.Namespace) -> None:
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    for clip, u in pending_points(args):
        row = run_clip(clip, u, args.frames, Path(args.out))
        dark = sum(c[0] for c in row["speckles"] if c)
        print(
            f"{clip.name} u={u:.2f}: {row['kbps']:.2f} kbit/s, LPIPS "
            f"{row['mean']['lpips_alex']:.4f}, mouth {row['mean']['lpips_mouth']:.4f}, "
            f"dark speckles {dark}",
            flush=True,
        )


def _per_frame(row: dict, which: str, k: int) -> np.ndarray:
    return np.array([c[k] if c else 0 for c in row[which]], dtype=np.float64)


def cmd_report(args: argparse.Namespace) -> None:
    before, after = load_rows(Path(args.before)), load_rows(Path(args.after))
    keys = sorted(set(before) & set(after))
    out = Path(args.out)
    (out / "gallery").mkdir(parents=True, exist_ok=True)
    points = []
    for key in keys:
        b, a = before[key], after[key]
        points.append(
            {
                "clip": key[0],
                "u": key[1],
                "frames": a["frames"],
                **{
                    f"{side}_{m}": r["mean"][m]
                    for side, r in (("before", b), ("after", a))
                    for m in METRICS
                },
                "before_kbps": b["kbps"],
                "after_kbps": a["kbps"],
                **{
                    f"{side}_{kind}_speckles": float(_per_frame(r, "speckles", k).sum())
                    for side, r in (("before", b), ("after", a))
                    for k, kind in enumerate(("dark", "bright"))
                },
                **{
                    f"source_{kind}_speckles": float(_per_frame(a, "source_speckles", k).sum())
                    for k, kind in enumerate(("dark", "bright"))
                },
                "frames_with_more_speckles_than_source": {
                    side: int(
                        (
                            _per_frame(r, "speckles", 0) + _per_frame(r, "speckles", 1)
                            > _per_frame(a, "source_speckles", 0)
                            + _per_frame(a, "source_speckles", 1)
                        ).sum()
                    )
                    for side, r in (("before", b), ("after", a))
                },
            }
        )
    (out / "points.json").write_text(json.dumps({"command": args.command, "points": points}))
    lines = [
        "# Speckles along the lips: before and after (issue 18)",
        "",
        "Commands:",
        "",
        *[f"    {c}" for c in args.command.split(" ;; ")],
        "",
        f"{len({k[0] for k in keys})} clips, the first {max(p['frames'] for p in points)} "
        f"frames of each ({min(p['frames'] for p in points)} where a clip is shorter), the "
        "default renderer; means over clips. Speckles per frame: pixels in the lip band darker "
        f"(brighter) than both pixels {SPECKLE_STEP:g} px away along the mouth's axis by more "
        f"than {SPECKLE_LEVELS:g} grey levels (`benchmarks/lips.py`); the source's own count "
        "(teeth gaps, highlights) for scale.",
        "",
        "| u | kbit/s before / after | LPIPS before / after | mouth LPIPS before / after | "
        "open-mouth LPIPS before / after | PSNR before / after | dark speckles / frame "
        "before / after (source) | bright speckles / frame before / after (source) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for u in sorted({k[1] for k in keys}):
        sel = [p for p in points if p["u"] == u]

        def m(name: str, sel: list = sel) -> float:
            return finite_mean([p[name] for p in sel])

        def per_frame(name: str, sel: list = sel) -> float:
            return float(np.mean([p[name] / p["frames"] for p in sel]))

        lines.append(
            f"| {u:g} | {m('before_kbps'):.2f} / {m('after_kbps'):.2f} "
            f"| {m('before_lpips_alex'):.4f} / {m('after_lpips_alex'):.4f} "
            f"| {m('before_lpips_mouth'):.4f} / {m('after_lpips_mouth'):.4f} "
            f"| {m('before_lpips_mouth_open'):.4f} / {m('after_lpips_mouth_open'):.4f} "
            f"| {m('before_psnr'):.2f} / {m('after_psnr'):.2f} "
            f"| {per_frame('before_dark_speckles'):.2f} / {per_frame('after_dark_speckles'):.2f} "
            f"({per_frame('source_dark_speckles'):.2f}) "
            f"| {per_frame('before_bright_speckles'):.2f} / "
            f"{per_frame('after_bright_speckles'):.2f} "
            f"({per_frame('source_bright_speckles'):.2f}) |"
        )
    lines += [
        "",
        "Per clip (dark + bright speckles over all frames, before -> after; source; mouth "
        "LPIPS before -> after):",
        "",
        "| clip | u | speckles | source | mouth LPIPS | LPIPS |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {short_name(p['clip'])} | {p['u']:g} "
            f"| {p['before_dark_speckles'] + p['before_bright_speckles']:.0f} -> "
            f"{p['after_dark_speckles'] + p['after_bright_speckles']:.0f} "
            f"| {p['source_dark_speckles'] + p['source_bright_speckles']:.0f} "
            f"| {p['before_lpips_mouth']:.4f} -> {p['after_lpips_mouth']:.4f} "
            f"| {p['before_lpips_alex']:.4f} -> {p['after_lpips_alex']:.4f} |"
        )
    rows = []
    for clip in sorted({k[0] for k in keys}):
        # The rung and frame where the speckle count fell most.
        best = None
        for u in sorted({k[1] for k in keys if k[0] == clip}):
            b, a = before[(clip, u)], after[(clip, u)]
            fall = (_per_frame(b, "speckles", 0) + _per_frame(b, "speckles", 1)) - (
                _per_frame(a, "speckles", 0) + _per_frame(a, "speckles", 1)
            )
            t = int(np.argmax(fall))
            if best is None or fall[t] > best[0]:
                best = (float(fall[t]), u, t)
        assert best is not None
        _, u, t = best
        name = f"{clip}_u{u:.2f}_crops.npy"
        cb = np.load(Path(args.before) / name, mmap_mode="r")[t]
        ca = np.load(Path(args.after) / name, mmap_mode="r")[t]
        diff = np.clip(np.abs(cb[1].astype(int) - ca[1]) * 4, 0, 255).astype(np.uint8)
        row = np.hstack([ca[0], cb[1], ca[1], diff])
        row = cv2.resize(row, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
        label = f"{short_name(clip)} u={u:g} f{t}"
        cv2.putText(row, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        path = out / "gallery" / f"{short_name(clip)}_u{u:.2f}_f{t}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        rows.append(row)
    sheet = np.vstack(rows)
    sheet = cv2.resize(sheet, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    cv2.imwrite(
        str(out / "gallery.jpg"),
        cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, 90],
    )
    lines += [
        "",
        "Gallery (`gallery/`, all clips in `gallery.jpg`): source | before | after | "
        "|before - after| x 4, lip crops at 3x (the square `keyface.eval.regions.region_box` "
        "places, resized to 96 px), each clip at the rung and frame where the speckle count "
        "fell most.",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser, _, report = before_after_parser(__doc__, cmd_run, cmd_report)
    report.add_argument("--command", default="", help="the commands to quote, ' ;; '-separated")
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
