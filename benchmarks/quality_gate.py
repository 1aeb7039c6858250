"""How well the motion distance (sender side, no decoding) predicts the warp's quality (ZTE §3.3).

    nice -n 15 python benchmarks/quality_gate.py --frames 200 \
        --json results/compose/quality_gate.json

For one clip per validation person (``splits/dev_v1.json``), the face crops and their motion
keypoints (the motion model with the coefficients of quantiser level ``--level``, not
quantised: what the encoder computes before coding) are measured once. Then for pairs
(reference frame ``r``, driving frame ``j``), ``r`` in a few anchors and ``j`` every
``--step`` frames, the reference crop is warped to ``j``'s keypoints with the default
renderer and compared with the real frame ``j`` (LPIPS-Alex and PSNR).
The reference is the uncompressed crop, so what is measured is the warp's loss with motion
alone (a keyframe's own coding loss adds about the same to every pair).

Reported: Spearman correlation of the motion distance (and of its position and local-affine
parts, and of the frame gap as a naive predictor) with LPIPS and PSNR, pooled and within
clips; LPIPS by distance bin; for each threshold the share of pairs the gate keeps and how many
of the *bad* pairs (LPIPS above ``--bad``) it keeps and rejects; and the chosen threshold: the
distance where the expected LPIPS (an isotonic, i.e. non-decreasing, fit of LPIPS over the
distance) reaches ``--bad``. That is the avatar gate's default
(``keyface.compose.avatar.AVATAR_THRESHOLD``); it is compared with the codec's
``DEFAULT_THRESHOLDS``. ``--summarise`` re-prints the tables from the pairs of an earlier run.

``--motion fomm --model FILE`` measures the FOMM route instead (docs/motion.md): keypoints
and Jacobians from the model's detector on each crop, the model's generator as renderer, its
motion distance (:meth:`FommMotion.gate_distance`); the reference is redrawn with its own
keypoints too (the model's floor). ``--bad-over-floor DELTA`` puts the bad level DELTA above
that floor (the warp's floor is 0.04 and its bad level 0.2: DELTA 0.16). A model whose LPIPS
saturates (a blurry one) never lets the isotonic fit reach that level, so the summary also
gives the largest threshold that rejects three quarters of the bad pairs, as the face mesh's
0.22 does; their ratio sets ``keyface.fomm.motion.GATE_SCALE`` (run it with
``GATE_SCALE`` at 1 to measure a new model on the raw distance):

    python benchmarks/quality_gate.py --motion fomm --model MODEL --level 2 \
        --bad-over-floor 0.16 --json results/fomm/quality_gate.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from _common import CLIPS, SPLIT, pick_clips
from scipy.stats import spearmanr

from keyface.bitstream import RefreshMode
from keyface.codec.config import DEFAULT_THRESHOLDS
from keyface.eval.metrics import compute_metrics
from keyface.fomm import MOTION_NAME, use_model
from keyface.fomm.motion import FommMotion
from keyface.motion import face_regions, get_representation, motion_distance
from keyface.pipeline import analyze, cropped_frames
from keyface.renderers import get_renderer
from keyface.threads import apply_thread_policy

BINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.7, 10.0)
THRESHOLDS = (0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.22, 0.25, 0.3, 0.32, 0.35, 0.4, 0.5)


def isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of ``y`` over sorted ``x`` (pool adjacent violators)."""
    order = np.argsort(x)
    xs, ys = x[order], y[order].astype(np.float64)
    blocks: list[list[float]] = []  # [sum, count]
    for v in ys:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    fit = np.concatenate([np.full(int(c), s / c) for s, c in blocks])
    return xs, fit


def crossing(xs: np.ndarray, fit: np.ndarray, level: float) -> float | None:
    """Smallest ``x`` where the fitted curve reaches ``level`` (``None``: never)."""
    above = np.flatnonzero(fit >= level)
    return float(xs[above[0]]) if above.size else None


def measure_clip(clip: Path, args: argparse.Namespace) -> list[dict]:
    analysis = analyze(clip, max_frames=args.frames)
    crops = [img for _, img in cropped_frames(clip, analysis.crop, analysis.size, args.frames)]
    if args.motion == "fomm":  # keypoints measured on the picture, drawn by the model
        fomm = get_representation(MOTION_NAME).for_level(args.level)
        assert isinstance(fomm, FommMotion)
        kps: list[np.ndarray | None] = [
            fomm.keypoints(fomm.analyze_image(img), analysis.size) for img in crops
        ]
        renderer = get_renderer(MOTION_NAME)

        def distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
            position, affine = fomm.gate_parts(a, b)
            return fomm.gate_distance(a, b), position, affine
    else:
        rep = get_representation().for_level(args.level)
        regions = face_regions(rep.mean)
        kps = [
            None if lm is None else rep.keypoints(rep.analyze(lm, analysis.size), analysis.size)
            for lm in analysis.landmarks
        ]
        renderer = get_renderer()

        def distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
            d = motion_distance(a, b, regions)
            return d.value, d.position, d.affine

    n = len(crops)
    anchors = [a for a in (0, n // 3, (2 * n) // 3) if kps[a] is not None]
    pairs, renders, truths = [], [], []
    for r in anchors:
        ref_kp = kps[r]
        assert ref_kp is not None
        reference = renderer.prepare(crops[r], ref_kp)
        for j in range(0, n, args.step):
            drv = kps[j]
            if (j == r and args.motion != "fomm") or drv is None:
                continue  # (FOMM: the reference redrawn is the model's own floor)
            value, position, affine = distance(ref_kp, drv)
            renders.append(renderer.render(reference, drv))
            truths.append(crops[j])
            pairs.append(
                {
                    "clip": clip.name,
                    "ref": r,
                    "frame": j,
                    "gap": abs(j - r),
                    "distance": value,
                    "position": position,
                    "affine": affine,
                }
            )
    scores = compute_metrics(truths, renders, ["lpips_alex", "psnr"])
    for p, lp, ps in zip(
        pairs, scores.per_frame["lpips_alex"], scores.per_frame["psnr"], strict=True
    ):
        p["lpips"] = float(lp)
        p["psnr"] = float(ps)
    return pairs


def floor(pairs: list[dict]) -> float:
    """Mean LPIPS of the pairs with hardly any motion (distance under 0.05; else the 5 % with
    the least): what the renderer loses without motion (a FOMM model's blur, say)."""
    d = np.array([p["distance"] for p in pairs])
    lp = np.array([p["lpips"] for p in pairs])
    still = d < 0.05
    if still.sum() < 10:
        still = d <= np.percentile(d, 5)
    return float(lp[still].mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def summarise(pairs: list[dict], bad: float) -> dict:
    d = np.array([p["distance"] for p in pairs])
    lp = np.array([p["lpips"] for p in pairs])
    ps = np.array([p["psnr"] for p in pairs])
    corr = {}
    for key in ("distance", "position", "affine", "gap"):
        x = np.array([p[key] for p in pairs])
        per_clip = []
        for clip in sorted({p["clip"] for p in pairs}):
            m = np.array([p["clip"] == clip for p in pairs])
            if m.sum() > 5:
                per_clip.append(spearman(x[m], lp[m]))
        corr[key] = {
            "lpips_pooled": spearman(x, lp),
            "psnr_pooled": spearman(x, ps),
            "lpips_within_clip_mean": float(np.mean(per_clip)),
            "lpips_within_clip_min": float(np.min(per_clip)),
        }
    bins = []
    for lo, hi in itertools.pairwise(BINS):
        m = (d >= lo) & (d < hi)
        if m.any():
            bins.append(
                {
                    "from": lo,
                    "to": hi,
                    "pairs": int(m.sum()),
                    "lpips_mean": float(lp[m].mean()),
                    "lpips_p90": float(np.percentile(lp[m], 90)),
                    "psnr_mean": float(ps[m].mean()),
                    "bad_share": float((lp[m] > bad).mean()),
                }
            )
    gate = []
    is_bad = lp > bad
    for t in THRESHOLDS:
        keep = d <= t
        gate.append(
            {
                "threshold": t,
                "kept_share": float(keep.mean()),
                "kept_lpips_mean": float(lp[keep].mean()) if keep.any() else None,
                "kept_lpips_p95": float(np.percentile(lp[keep], 95)) if keep.any() else None,
                "bad_share_of_kept": float(is_bad[keep].mean()) if keep.any() else None,
                "bad_rejected": float((~keep[is_bad]).mean()) if is_bad.any() else None,
            }
        )
    xs, fit = isotonic(d, lp)
    levels = {f"{level:.2f}": crossing(xs, fit, level) for level in (0.15, 0.2, 0.25, 0.3)}
    levels[f"{bad:.2f}"] = crossing(xs, fit, bad)
    return {
        "floor_lpips": floor(pairs),
        "pairs": len(pairs),
        "clips": len({p["clip"] for p in pairs}),
        "bad_lpips": bad,
        "bad_share": float(is_bad.mean()),
        "spearman": corr,
        "bins": bins,
        "gate": gate,
        "isotonic_crossing": levels,
        "chosen_threshold": levels[f"{bad:.2f}"],
        "rejecting_three_quarters": max(
            (g["threshold"] for g in gate if (g["bad_rejected"] or 0.0) >= 0.75), default=None
        ),
        "codec_default_motion_threshold": DEFAULT_THRESHOLDS[RefreshMode.MOTION],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=CLIPS)
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--limit", type=int, default=16, help="at most this many people")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--step", type=int, default=5, help="driving frame every N frames")
    parser.add_argument("--level", type=int, default=2, help="motion quantiser level")
    parser.add_argument("--bad", type=float, default=0.2, help="LPIPS-Alex of a bad frame")
    parser.add_argument(
        "--bad-over-floor",
        type=float,
        metavar="DELTA",
        help="a bad frame is DELTA above the LPIPS of pairs without motion (for renderers "
        "whose floor is far from the warp's 0.04, as a small FOMM model's; replaces --bad)",
    )
    parser.add_argument("--motion", choices=("facemesh", "fomm"), default="facemesh")
    parser.add_argument("--model", type=Path, help="--motion fomm: the model file")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--summarise", type=Path, help="only re-summarise the pairs of an earlier --json"
    )
    args = parser.parse_args()
    if args.motion == "fomm":
        if args.model is None:
            parser.error("--motion fomm needs --model FILE")
        use_model(args.model)
    apply_thread_policy()
    t0 = time.perf_counter()
    pairs: list[dict] = []
    if args.summarise:
        pairs = json.loads(args.summarise.read_text())["pairs"]
    clips = [] if args.summarise else pick_clips(args.clips, args.split, "validation", args.limit)
    for clip in clips:
        got = measure_clip(clip, args)
        pairs.extend(got)
        lp = np.array([p["lpips"] for p in got])
        d = np.array([p["distance"] for p in got])
        print(
            f"{clip.name[:46]:<46} pairs {len(got):>4}  distance {np.median(d):.3f} "
            f"(max {d.max():.3f})  LPIPS {lp.mean():.3f}  rho {spearman(d, lp):+.2f}",
            flush=True,
        )
    if args.bad_over_floor is not None:
        args.bad = round(floor(pairs) + args.bad_over_floor, 3)
    summary = summarise(pairs, args.bad)
    seconds = time.perf_counter() - t0
    print(f"\n{summary['pairs']} pairs from {summary['clips']} clips ({seconds:.0f} s)")
    print("Spearman with LPIPS (pooled / mean within clip) and with PSNR (pooled):")
    for key, c in summary["spearman"].items():
        print(
            f"  {key:<9} {c['lpips_pooled']:+.3f} / {c['lpips_within_clip_mean']:+.3f}   "
            f"PSNR {c['psnr_pooled']:+.3f}"
        )
    print(f"\n{'distance':>11} {'pairs':>6} {'LPIPS':>6} {'p90':>6} {'PSNR':>6} {'bad':>5}")
    for b in summary["bins"]:
        print(
            f"{b['from']:>5.2f}-{b['to']:<5.2f} {b['pairs']:>6} {b['lpips_mean']:>6.3f} "
            f"{b['lpips_p90']:>6.3f} {b['psnr_mean']:>6.2f} {b['bad_share']:>5.2f}"
        )
    print(f"\n{'threshold':>9} {'kept':>5} {'LPIPS':>6} {'p95':>6} {'bad kept':>8} {'rejected':>8}")
    for g in summary["gate"]:
        cells = (g["kept_lpips_mean"], g["kept_lpips_p95"], g["bad_share_of_kept"])
        lp_mean, lp_p95, bad_kept = (f"{v:.3f}" if v is not None else "-" for v in cells)
        rejected = f"{g['bad_rejected']:.3f}" if g["bad_rejected"] is not None else "-"
        print(
            f"{g['threshold']:>9.2f} {g['kept_share']:>5.2f} {lp_mean:>6} {lp_p95:>6} "
            f"{bad_kept:>8} {rejected:>8}"
        )
    print(f"\nisotonic LPIPS(distance) reaches: {summary['isotonic_crossing']}")
    print(
        "largest threshold rejecting >= 75 % of the bad pairs (the face mesh's 0.22 rejects "
        f"74 %): {summary['rejecting_three_quarters']}"
    )
    print(
        f"chosen threshold (LPIPS {args.bad}): {summary['chosen_threshold']}; "
        f"codec default (motion): {summary['codec_default_motion_threshold']}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "summary": summary,
                    "pairs": pairs,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
