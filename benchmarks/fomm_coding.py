"""FOMM keypoint coding: statistics, quantiser levels, bits and errors (issue 15, item 4).

    python benchmarks/fomm_coding.py --model RUN/model.safetensors \\
        --json results/fomm/coding.json --md results/fomm/coding.md

1. **Keypoints** of every clip of the split (the first ``--max-frames`` frames, every frame,
   the one crop decision of ``keyface crop`` at 256x256), measured by the model's detector as
   the encoder does (``FommMotion.analyze_image``), cached under ``--cache``.
2. **Statistics on the train people**: mean, spread (mean absolute deviation) and
   frame-to-frame spread (mean absolute difference of neighbouring frames) of the positions
   (256-crop px) and of the Jacobian entries (``J - I``): what the coder's priors are
   (``keyface.fomm.motion.PRIOR_POSITION`` / ``PRIOR_JACOBIAN``), and a sweep of position and
   Jacobian steps on the train people (bits against error) from which the levels are chosen.
3. **Validation people**, per quantiser level of the representation: motion bits per frame
   with the real coder (``keyface.entropy``: every frame predicted from reference 0, one
   MOTION packet per 16 frames, packet framing included) and kbit/s at each clip's frame rate;
   the keypoint error (px at 256x256) and the Jacobian error after dequantisation; and what
   quantisation alone changes in the picture: every ``--render-every``-th frame rendered by
   the model's generator (``FommRenderer``, 256x256) from the clip's first frame, once with
   the exact and once with the dequantised keypoints (source and driving), PSNR and
   LPIPS-Alex between the two. Beside them, ZTE's 60 fp16 values per frame and DAC-style gzip
   of fp16 (per frame, and the whole clip in one gzip stream).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import MANIFEST, SPLIT

from keyface.bitstream import MotionPacket
from keyface.clips import select_clips
from keyface.entropy import CodedFrame, MotionCoderState, encode_frames
from keyface.motion import MotionStatistics, QuantLevel
from keyface.threads import apply_thread_policy

CHUNK = 16
"""Frames per MOTION packet (the encoder's default ``--chunk``)."""
SIZE = 256
RENDER_SWEEP_POSITION = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
RENDER_SWEEP_JACOBIAN = (0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2)


@dataclass
class ClipKeypoints:
    name: str
    person: str
    fps: float
    params: np.ndarray
    """``(T, 60)`` float64: positions (256-crop px), then ``J - I``."""
    keyframe: np.ndarray
    """The first 256x256 crop (what the renders animate)."""


def extract(model_path: Path, cache: Path, subset: str, max_frames: int) -> list[ClipKeypoints]:
    """The keypoints of every clip of ``subset``'s people (cached per clip and model)."""
    from keyface.face._native_log import native_stderr_silenced
    from keyface.face.crop import plan_crop
    from keyface.fomm.model import load_model
    from keyface.fomm.motion import FommMotion
    from keyface.io import probe, read_frames
    from keyface.pipeline import cropped_frames

    model = load_model(model_path)
    rep = FommMotion(model)
    out = []
    clips = select_clips(MANIFEST, split=SPLIT, subset=subset, one_per_person=False)
    folder = cache / f"{model.digest:08x}_{max_frames}"
    folder.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        f = folder / f"{clip.path.stem}.npz"
        if not f.is_file():
            t0 = time.perf_counter()
            with native_stderr_silenced():
                box = plan_crop(read_frames(clip.path, max_frames))
            params, keyframe = [], None
            for _, image in cropped_frames(clip.path, box, SIZE, max_frames):
                keyframe = image if keyframe is None else keyframe
                params.append(rep.analyze_image(image))
            fps = float(probe(clip.path).fps)
            np.savez(f, params=np.stack(params), keyframe=keyframe, fps=fps, person=clip.person)
            print(f"  {clip.path.name}: {len(params)} frames, {time.perf_counter() - t0:.1f} s")
        with np.load(f) as z:
            out.append(
                ClipKeypoints(
                    clip.path.name, str(z["person"]), float(z["fps"]), z["params"], z["keyframe"]
                )
            )
    return out


def statistics(clips: list[ClipKeypoints], num_kp: int) -> dict[str, dict[str, float]]:
    """Mean, spread and frame-to-frame spread of positions and Jacobian entries."""
    allp = np.concatenate([c.params for c in clips])
    deltas = np.concatenate([np.diff(c.params, axis=0) for c in clips])
    out = {}
    for name, cols in (("position", slice(0, 2 * num_kp)), ("jacobian", slice(2 * num_kp, None))):
        x, d = allp[:, cols], deltas[:, cols]
        mean = float(x.mean())
        out[name] = {
            "mean": mean,
            "spread": float(np.abs(x - x.mean(axis=0)).mean()),
            "spread_about_pooled_mean": float(np.abs(x - mean).mean()),
            "std": float(x.std()),
            "delta_spread": float(np.abs(d).mean()),
            "delta_std": float(d.std()),
            "delta_p50": float(np.median(np.abs(d))),
            "delta_p95": float(np.percentile(np.abs(d), 95)),
            "min": float(x.min()),
            "max": float(x.max()),
        }
    return out


def code_clip(
    params: np.ndarray, level: QuantLevel, stats: MotionStatistics
) -> tuple[int, np.ndarray]:
    """``(bits with packet framing, dequantised parameters)`` of one clip (the first
    ``level.num_params`` parameters of each frame)."""
    state = MotionCoderState(level, stats)
    qs = [state.quantize(p[: level.num_params]) for p in params]
    bits = 0
    for start in range(0, len(qs), CHUNK):
        chunk = [
            CodedFrame(q=q, reference=None if start + i == 0 else 0)
            for i, q in enumerate(qs[start : start + CHUNK])
        ]
        data = encode_frames(state, chunk)
        packet = MotionPacket(first_frame=start, n_frames=len(chunk), reset=start == 0, data=data)
        bits += 8 * len(bytes(packet))
    return bits, np.stack([state.dequantize(q) for q in qs])


def errors(params: np.ndarray, deq: np.ndarray, num_kp: int) -> tuple[float, float]:
    """Mean keypoint error (px at 256x256) and mean Jacobian error (Frobenius norm)."""
    k = num_kp
    full = np.zeros_like(params)
    full[:, : deq.shape[1]] = deq
    pos = np.linalg.norm((full[:, : 2 * k] - params[:, : 2 * k]).reshape(-1, k, 2), axis=2)
    jac = np.linalg.norm((full[:, 2 * k :] - params[:, 2 * k :]).reshape(-1, k, 4), axis=2)
    return float(pos.mean()), float(jac.mean())


def rate(clips: list[ClipKeypoints], level: QuantLevel, stats: MotionStatistics, k: int) -> dict:
    bits = frames = 0
    kbps, pos_err, jac_err = [], [], []
    for c in clips:
        b, deq = code_clip(c.params, level, stats)
        bits += b
        frames += len(c.params)
        kbps.append(b / len(c.params) * c.fps / 1000)
        p, j = errors(c.params, deq, k)
        pos_err.append(p * len(c.params))
        jac_err.append(j * len(c.params))
    return {
        "bits_per_frame": bits / frames,
        "kbps": float(np.mean(kbps)),
        "keypoint_error_px": sum(pos_err) / frames,
        "jacobian_error": sum(jac_err) / frames,
        "frames": frames,
    }


def fp16_baselines(clips: list[ClipKeypoints]) -> dict:
    """ZTE (60 fp16 per frame) and DAC-style gzip of the fp16 values."""
    frames = sum(len(c.params) for c in clips)
    per_frame = whole = 0
    kbps_raw, kbps_frame, kbps_whole = [], [], []
    for c in clips:
        # In the network's own units (normalised coordinates, the Jacobian itself), as the
        # papers send them.
        values = c.params.copy()
        k = values.shape[1] // 6
        values[:, : 2 * k] = (values[:, : 2 * k] + 0.5) / SIZE * 2 - 1
        values[:, 2 * k :] += np.tile(np.eye(2).reshape(-1), k)
        half = values.astype("<f2")
        pf = sum(8 * len(gzip.compress(row.tobytes(), mtime=0)) for row in half)
        wh = 8 * len(gzip.compress(half.tobytes(), mtime=0))
        per_frame += pf
        whole += wh
        n = len(values)
        kbps_raw.append(16 * values.shape[1] * c.fps / 1000)
        kbps_frame.append(pf / n * c.fps / 1000)
        kbps_whole.append(wh / n * c.fps / 1000)
    return {
        "zte_fp16": {"bits_per_frame": 16.0 * 60, "kbps": float(np.mean(kbps_raw))},
        "gzip_fp16_per_frame": {
            "bits_per_frame": per_frame / frames,
            "kbps": float(np.mean(kbps_frame)),
        },
        "gzip_fp16_whole_clip": {
            "bits_per_frame": whole / frames,
            "kbps": float(np.mean(kbps_whole)),
        },
    }


def render_differences(
    model_path: Path, clips: list[ClipKeypoints], levels: dict[str, QuantLevel], every: int
) -> dict[str, dict[str, float]]:
    """PSNR and LPIPS-Alex between renders with exact and with dequantised keypoints, for
    each named quantiser (one with fewer parameters than 6 K sends identity Jacobians)."""
    import torch

    from keyface.eval.nets import load_lpips
    from keyface.fomm.model import load_model
    from keyface.fomm.motion import FommMotion
    from keyface.fomm.renderer import FommRenderer
    from keyface.imageops import psnr

    model = load_model(model_path)
    base = FommMotion(model)
    renderer = FommRenderer(model)
    lpips = load_lpips("alex", "cpu")
    acc: dict[str, list[tuple[float, float]]] = {name: [] for name in levels}
    for c in clips:
        exact_ref = renderer.prepare(c.keyframe, base.keypoints(c.params[0], SIZE))
        idx = list(range(every, len(c.params), every))
        exact = [renderer.render(exact_ref, base.keypoints(c.params[i], SIZE)) for i in idx]
        a = torch.from_numpy(np.stack(exact)).permute(0, 3, 1, 2).float() / 255
        for name, level in levels.items():
            n = level.num_params
            stats = base.for_level(0).statistics
            stats = MotionStatistics(stats.mean[:n], stats.spread[:n], stats.delta_spread[:n])
            _, deq = code_clip(c.params, level, stats)
            ref = renderer.prepare(c.keyframe, base.keypoints(deq[0], SIZE))
            quant = [renderer.render(ref, base.keypoints(deq[i], SIZE)) for i in idx]
            b = torch.from_numpy(np.stack(quant)).permute(0, 3, 1, 2).float() / 255
            with torch.inference_mode():
                lp = [float(v) for v in lpips(a, b).reshape(-1)]
            for e, q, v in zip(exact, quant, lp, strict=True):
                acc[name].append((psnr(e, q), v))
    return {
        name: {
            "render_psnr_db": float(np.mean([p for p, _ in rows])),
            "render_psnr_db_p5": float(np.percentile([p for p, _ in rows], 5)),
            "render_lpips": float(np.mean([v for _, v in rows])),
            "render_lpips_p95": float(np.percentile([v for _, v in rows], 95)),
            "rendered_frames": len(rows),
        }
        for name, rows in acc.items()
    }


def steps_level(k: int, pos: float, jac: float | None) -> QuantLevel:
    steps = [pos] * (2 * k) + ([jac] * (4 * k) if jac is not None else [])
    return QuantLevel(num_params=len(steps), steps=np.asarray(steps, dtype=np.float64))


def sweep(clips: list[ClipKeypoints], k: int, stats: MotionStatistics) -> list[dict]:
    """Bits and errors on ``clips`` for a grid of position / Jacobian steps."""
    rows = []
    for pos in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
        for jac in (0.01, 0.02, 0.03, 0.05, 0.08, 0.12, None):
            level = steps_level(k, pos, jac)
            n = level.num_params
            st = MotionStatistics(stats.mean[:n], stats.spread[:n], stats.delta_spread[:n])
            r = rate(clips, level, st, k)
            r.update(position_step=pos, jacobian_step=jac)
            rows.append(r)
    return rows


def markdown(report: dict) -> str:
    lines = [
        "# FOMM keypoint coding (issue 15, item 4)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Model: {report['model']} (digest {report['digest']}); machine: {report['machine']}.",
        "",
        "## Statistics on the train people",
        "",
        "| | mean | spread (MAD) | std | frame-to-frame spread (mean abs) | "
        "frame-to-frame p50 | p95 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in report["train_statistics"].items():
        lines.append(
            f"| {name} | {s['mean']:.3f} | {s['spread']:.3f} | {s['std']:.3f} | "
            f"{s['delta_spread']:.4f} | {s['delta_p50']:.4f} | {s['delta_p95']:.4f} |"
        )
    lines += [
        "",
        f"## Validation people ({report['validation_frames']} frames, "
        f"{report['validation_clips']} clips)",
        "",
        "| level | position step | Jacobian step | bits/frame | kbit/s | keypoint error px | "
        "Jacobian error | render PSNR dB | render LPIPS | LPIPS p95 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["levels"]:
        jac = "-" if r["jacobian_step"] is None else f"{r['jacobian_step']:g}"
        lines.append(
            f"| {r['level']} | {r['position_step']:g} | {jac} | {r['bits_per_frame']:.1f} | "
            f"{r['kbps']:.2f} | {r['keypoint_error_px']:.3f} | {r['jacobian_error']:.4f} | "
            f"{r.get('render_psnr_db', float('nan')):.1f} | "
            f"{r.get('render_lpips', float('nan')):.4f} | "
            f"{r.get('render_lpips_p95', float('nan')):.4f} |"
        )
    for name, r in report["baselines"].items():
        lines.append(f"| {name} | | | {r['bits_per_frame']:.1f} | {r['kbps']:.2f} | | | | | |")
    if report.get("sweep"):
        lines += [
            "",
            "## Step sweep on the train people",
            "",
            "| position step | Jacobian step | bits/frame | keypoint error px | Jacobian error |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in report["sweep"]:
            jac = "-" if r["jacobian_step"] is None else f"{r['jacobian_step']:g}"
            lines.append(
                f"| {r['position_step']:g} | {jac} | {r['bits_per_frame']:.1f} | "
                f"{r['keypoint_error_px']:.3f} | {r['jacobian_error']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a FOMM model file")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/keyface_fomm_keypoints"))
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("--render-every", type=int, default=10)
    parser.add_argument("--no-render", action="store_true")
    parser.add_argument(
        "--render-sweep",
        action="store_true",
        help="also the render difference of each step alone, on one clip per train person",
    )
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    apply_thread_policy()  # keyface.threads: KEYFACE_THREADS or the default

    from keyface.fomm.model import load_model
    from keyface.fomm.motion import FommMotion

    model = load_model(args.model)
    base = FommMotion(model)
    k = base.num_kp
    t0 = time.perf_counter()
    print("train people")
    train = extract(args.model, args.cache, "train", args.max_frames)
    print("validation people")
    val = extract(args.model, args.cache, "validation", args.max_frames)
    print(f"keypoints: {time.perf_counter() - t0:.0f} s")
    report: dict = {
        "command": "python benchmarks/fomm_coding.py " + " ".join(sys.argv[1:]),
        "model": args.model.name,
        "digest": f"{model.digest:08x}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the start (shared with other jobs), "
        f"KEYFACE_THREADS={os.environ.get('KEYFACE_THREADS', 'default')}",
        "train_clips": len(train),
        "train_frames": int(sum(len(c.params) for c in train)),
        "validation_clips": len(val),
        "validation_frames": int(sum(len(c.params) for c in val)),
        "representation_version": base.version,
    }
    report["train_statistics"] = statistics(train, k)
    for name, s in report["train_statistics"].items():
        print(name, {a: round(b, 4) for a, b in s.items()})
    if not args.no_sweep:
        report["sweep"] = sweep(train, k, base.statistics)
        for r in report["sweep"]:
            print(
                f"sweep pos {r['position_step']:g} jac {r['jacobian_step']}: "
                f"{r['bits_per_frame']:.1f} bits, {r['keypoint_error_px']:.3f} px, "
                f"{r['jacobian_error']:.4f}"
            )
    if args.render_sweep:
        t1 = time.perf_counter()
        firsts: dict[str, ClipKeypoints] = {}
        for c in train:
            firsts.setdefault(c.person, c)
        fine_pos, fine_jac = 1e-3, 1e-4
        grid = {f"pos {p:g}": steps_level(k, p, fine_jac) for p in RENDER_SWEEP_POSITION}
        grid.update({f"jac {j:g}": steps_level(k, fine_pos, j) for j in RENDER_SWEEP_JACOBIAN})
        grid["jac identity"] = steps_level(k, fine_pos, None)
        diffs = render_differences(args.model, list(firsts.values()), grid, 2 * args.render_every)
        report["render_sweep"] = [{"quantiser": name, **d} for name, d in diffs.items()]
        for name, d in diffs.items():
            print(
                f"render sweep {name}: PSNR {d['render_psnr_db']:.1f} dB, "
                f"LPIPS {d['render_lpips']:.4f} (p95 {d['render_lpips_p95']:.4f})"
            )
        report["render_sweep_seconds"] = time.perf_counter() - t1
    rows = []
    for lv in range(base.num_levels):
        rep = base.for_level(lv)
        ql = rep.quant_level(lv)
        r = rate(val, ql, rep.statistics, k)  # level 7: identity Jacobians
        pos, jac = float(ql.steps[0]), (float(ql.steps[-1]) if rep.num_params > 2 * k else None)
        r.update(level=lv, position_step=pos, jacobian_step=jac)
        rows.append(r)
        print(
            f"level {lv}: {r['bits_per_frame']:.1f} bits/frame, {r['kbps']:.2f} kbit/s, "
            f"{r['keypoint_error_px']:.3f} px, J {r['jacobian_error']:.4f}"
        )
    report["baselines"] = fp16_baselines(val)
    if not args.no_render:
        t1 = time.perf_counter()
        levels = {str(lv): base.for_level(lv).quant_level(lv) for lv in range(base.num_levels)}
        diffs = render_differences(args.model, val, levels, args.render_every)
        for r in rows:
            r.update(diffs[str(r["level"])])
            print(
                f"level {r['level']}: render PSNR {r['render_psnr_db']:.1f} dB, "
                f"LPIPS {r['render_lpips']:.4f} (p95 {r['render_lpips_p95']:.4f})"
            )
        report["render_seconds"] = time.perf_counter() - t1
    report["levels"] = rows
    report["machine"] += f"; load average {os.getloadavg()[0]:.1f} at the end"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(report))


if __name__ == "__main__":
    main()
