"""Eyes that read open or closed against the source (issue 18): before / after the eye check
(``CodecConfig.eye_check``), at equal rate, with a gallery of eye crops.

``before`` is a ``benchmarks/content_refresh.py`` run of variant ``update`` (its ``points.json``)
made at the commit before the change; ``run`` codes the same clips and ladder positions with the
current default and measures them the same way (``content_refresh.code_point``). A point whose
stream sends no extra eye rectangle (``EncoderStats.eye_details == 0``) at the same rate decodes
to the same pictures: its ``before`` measures are reused (marked ``reused``).

    python benchmarks/content_refresh.py --bench /tmp/bench12 --out /tmp/eyes/before \\
        --u 0.0,0.3,0.6,0.9 --variants update --jobs 1          # at the commit before
    python benchmarks/eyes.py run --bench /tmp/bench12 --before /tmp/eyes/before \\
        --out /tmp/eyes/after
    python benchmarks/eyes.py report --bench /tmp/bench12 --before /tmp/eyes/before \\
        --after /tmp/eyes/after --out results/eyes
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import at_rate
from content_refresh import code_point

MEASURES = ["eye_state", "lpips_eyes", "lpips_alex", "lpips_mouth", "psnr"]


def run(bench: Path, before_dir: Path, out: Path) -> None:
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.pipeline import encode_analysis
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    before = json.loads((before_dir / "points.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "points.json"
    points = json.loads(saved.read_text()) if saved.is_file() else []
    have = {(p["clip"], p["u"]) for p in points}
    for b in sorted(before, key=lambda p: (p["u"], p["clip"])):
        if (b["clip"], b["u"]) in have:
            continue
        clip_dir = bench / "cache" / b["clip"]
        meta = json.loads((clip_dir / "meta.json").read_text())
        coded = encode_analysis(load_analysis(clip_dir, meta), config_at(b["u"]))
        if coded.stats.eye_details == 0 and abs(coded.kbps - b["kbps"]) < 1e-9:
            point = {**b, "variant": "after", "reused": True, "eye_details": 0}
        else:
            point = code_point((str(clip_dir), "after", b["u"], {}))
            point["eye_details"] = coded.stats.eye_details
        points.append(point)
        saved.write_text(json.dumps(points))
        print(
            f"{b['clip']} u={b['u']}: {b['kbps']:.2f} -> {point['kbps']:.2f} kbit/s, eye_state "
            f"{b['mean']['eye_state']:.3f} -> {point['mean']['eye_state']:.3f}, "
            f"{point['eye_details']} eye checks{' (reused)' if point.get('reused') else ''}",
            flush=True,
        )


def _mean(points: list[dict], u: float, key: str) -> float:
    vals = [p["kbps"] if key == "kbps" else p["mean"][key] for p in points if p["u"] == u]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def report(
    bench: Path,
    before_dir: Path,
    after_dir: Path,
    out: Path,
    gallery_u: float,
    before_src: Path | None = None,
) -> str:
    before = json.loads((before_dir / "points.json").read_text())
    after = json.loads((after_dir / "points.json").read_text())
    keys = {(p["clip"], p["u"]) for p in after}
    before = [p for p in before if (p["clip"], p["u"]) in keys]
    us = sorted({p["u"] for p in after})
    header = " | ".join(f"{m} before / after" for m in MEASURES)
    lines = [
        f"| u | kbit/s before / after | {header} |",
        "|---|---|" + "---|" * len(MEASURES),
    ]
    for u in us:
        cells = [f"{_mean(before, u, m):.4f} / {_mean(after, u, m):.4f}" for m in MEASURES]
        rates = f"{_mean(before, u, 'kbps'):.2f} / {_mean(after, u, 'kbps'):.2f}"
        lines.append(f"| {u} | {rates} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "At equal rate: `after` at its mean rates, `before` interpolated linearly in log-rate "
        "between its ladder positions (n/a: above `before`'s highest rate).",
        "",
        "| kbit/s | " + " | ".join(f"{m} before / after" for m in MEASURES) + " |",
        "|---|" + "---|" * len(MEASURES),
    ]
    rates_b = np.array([_mean(before, u, "kbps") for u in us])
    for u in us:
        rate = _mean(after, u, "kbps")
        cells = []
        for m in MEASURES:
            b = at_rate(rates_b, np.array([_mean(before, v, m) for v in us]), rate)
            a = _mean(after, u, m)
            change = f" ({100 * (a - b) / b:+.0f} %)" if b and not math.isnan(b) else ""
            cells.append("n/a" if math.isnan(b) else f"{b:.4f} / {a:.4f}{change}")
        lines.append(f"| {rate:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Per clip (eye_state before -> after; kbit/s before -> after):", ""]
    lines += ["| clip | " + " | ".join(f"u={u}" for u in us) + " |", "|---|" + "---|" * len(us)]
    for clip in sorted({p["clip"] for p in after}):
        cells = []
        for u in us:
            b = next(p for p in before if p["clip"] == clip and p["u"] == u)
            a = next(p for p in after if p["clip"] == clip and p["u"] == u)
            cells.append(
                f"{b['mean']['eye_state']:.3f} -> {a['mean']['eye_state']:.3f} "
                f"({b['kbps']:.2f} -> {a['kbps']:.2f})"
            )
        lines.append(f"| {clip.split('__')[-1]} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(text)
    gallery(bench, before, after, out / "gallery", gallery_u, before_src)
    return text


def crops(bench: Path, clip: str, u: float, frames: list[int], out: Path) -> None:
    """The decoded pictures of ``frames`` of ``clip`` coded at ``u`` with the default
    configuration of the ``keyface`` that is imported (``out``: an ``.npz``)."""
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    clip_dir = bench / "cache" / clip
    meta = json.loads((clip_dir / "meta.json").read_text())
    coded = encode_analysis(load_analysis(clip_dir, meta), config_at(u))
    decoded = decode_bytes(coded.data).frames
    np.savez(out, **{str(t): decoded[t].image for t in frames})


def _decoded(bench: Path, clip: str, u: float, frames: list[int], src: Path | None) -> dict:
    """:func:`crops` run with ``PYTHONPATH=src`` (another checkout), or this one's."""
    import os
    import subprocess
    import tempfile

    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "crops.npz"
        cmd = [sys.executable, __file__, "crops", "--bench", str(bench), "--clip", clip]
        cmd += ["--u", str(u), "--frames", ",".join(map(str, frames)), "--out", str(out)]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        data = np.load(out)
        return {int(k): data[k] for k in data.files}


def gallery(
    bench: Path, before: list, after: list, folder: Path, u: float, before_src: Path | None
) -> None:
    """Per clip, the frame whose eye state disagreed before and changed most: the two eyes as
    source | before | after (the squares ``region_box`` places, 96 px), one image per clip
    and all of them in ``gallery.jpg``. ``before`` is decoded by the checkout ``before_src``
    (its ``src`` folder)."""
    from keyface.eval.regions import region_box
    from keyface.face.landmarks import LandmarkTracker
    from keyface.facemesh import LEFT_EYE, RIGHT_EYE
    from keyface.io import read_frames

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    with LandmarkTracker(video=False) as tracker:
        for clip in sorted({p["clip"] for p in after}):
            b = next(p for p in before if p["clip"] == clip and p["u"] == u)
            a = next(p for p in after if p["clip"] == clip and p["u"] == u)
            eb = np.nan_to_num(np.array(b["per_frame"]["eye_state"], dtype=float))
            ea = np.nan_to_num(np.array(a["per_frame"]["eye_state"], dtype=float))
            if not eb.any():
                continue
            lb = np.nan_to_num(np.array(b["per_frame"]["lpips_eyes"], dtype=float))
            la = np.nan_to_num(np.array(a["per_frame"]["lpips_eyes"], dtype=float))
            t = int(np.argmax(eb * (10 + eb - ea) + (lb - la)))
            clip_dir = bench / "cache" / clip
            meta = json.loads((clip_dir / "meta.json").read_text())
            source = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])][t]
            pictures = [source]
            pictures.append(_decoded(bench, clip, u, [t], before_src)[t])
            pictures.append(_decoded(bench, clip, u, [t], None)[t])
            marks = tracker.process(source)
            if marks is None:
                continue
            tiles = []
            for eye in (RIGHT_EYE, LEFT_EYE):
                x0, y0, side = region_box(marks, eye, source.shape)
                box = np.s_[int(y0) : int(y0 + side), int(x0) : int(x0 + side)]
                tiles.append(
                    np.hstack([cv2.resize(p[box], (96, 96), cv2.INTER_CUBIC) for p in pictures])
                )
            row = np.hstack([tiles[0], np.full((96, 6, 3), 255, np.uint8), tiles[1]])
            name = clip.split("__")[-1]
            cv2.imwrite(str(folder / f"{name}_u{u}_f{t}.png"), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
            rows.append(row)
    if rows:
        grid = np.vstack([np.vstack([r, np.full((4, r.shape[1], 3), 255, np.uint8)]) for r in rows])
        cv2.imwrite(
            str(folder.parent / "gallery.jpg"),
            cv2.cvtColor(grid, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 92],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bench", type=Path, required=True)
    r.add_argument("--before", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("report")
    p.add_argument("--bench", type=Path, required=True)
    p.add_argument("--before", type=Path, required=True)
    p.add_argument("--after", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gallery-u", type=float, default=0.0)
    p.add_argument("--before-src", type=Path, default=None, help="src of the before checkout")
    c = sub.add_parser("crops")
    c.add_argument("--bench", type=Path, required=True)
    c.add_argument("--clip", required=True)
    c.add_argument("--u", type=float, required=True)
    c.add_argument("--frames", required=True)
    c.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "run":
        run(args.bench, args.before, args.out)
    elif args.command == "crops":
        frames = [int(t) for t in args.frames.split(",")]
        crops(args.bench, args.clip, args.u, frames, args.out)
    else:
        print(
            report(args.bench, args.before, args.after, args.out, args.gallery_u, args.before_src)
        )


if __name__ == "__main__":
    main()
