"""How much the body-motion field can win, and what its settings cost.

    # 1. Headroom: LPIPS of the warp corrected by a perfect coarse field of G x G cells
    python benchmarks/motion_field.py oracle --data cache/train \
        --json results/motion_field/oracle.json
    # 2. Can the body's motion be predicted from the face's instead of sent?
    python benchmarks/motion_field.py predict --data cache/train \
        --json results/motion_field/predict.json
    # 3. Settings: the real encoder and decoder with and without the field, at a preset
    python benchmarks/motion_field.py codec --preset low --limit 6 \
        --variant 4:2:0.5:2:1 --variant 4:1:0.5:6:0 --json results/motion_field/codec.json

``oracle`` uses the prepared validation clips (``keyface train prepare``; people of
``splits/dev_v1.json``): the first face frame is coded as a keyframe (VVC, quality 22, what
``--quality medium`` uses), every 16th of the next 125 frames is warped from it with motion at
quantiser level 2, and the warp's flow is corrected by the optical flow (DIS) from the real
frame to the warp of the *original* keyframe, averaged over G x G cells (and rounded to 1 px).
The real frame is used, so this bounds what the field can win; it is not a result.

``predict`` asks whether the decoder could guess the field instead: a ridge regression from the
face oval's 2-D similarity motion (and the face's place and size) to the 4x4 correction,
fitted on the train people's clips and scored (R², LPIPS of the corrected warp) on the
validation people's.

``codec`` encodes the first 125 frames of one clip per validation person with the codec itself
(``--preset``), without the field and with each ``--variant`` ``grid:step:hold:bands:growth``
(see ``keyface.motion.field``), decodes the streams with the warp and reports kbit/s, motion
bytes and LPIPS-Alex.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import MANIFEST, SPLIT

from keyface.eval.nets import load_lpips
from keyface.motion.field import compose_flow
from keyface.threads import apply_thread_policy

GRIDS = (2, 3, 4, 6)


def _tensor(images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def _lpips(lpips: torch.nn.Module, images: np.ndarray, truth: np.ndarray) -> float:
    with torch.no_grad():
        scores = [
            lpips(_tensor(images[i : i + 25]), _tensor(truth[i : i + 25]))
            for i in range(0, len(images), 25)
        ]
    return float(torch.cat(scores).mean())


def oracle(args: argparse.Namespace) -> dict:
    from keyface.intra import get_intra_codec
    from keyface.render.warp import WarpRenderer, warp_image
    from keyface.train.data import load_prepared
    from keyface.train.pairs import PairConfig, PairSampler

    people = set(json.loads(args.split.read_text())["validation_people"])
    clips = load_prepared(args.data, people)
    if not clips:
        raise SystemExit(f"{args.data}: no prepared clips of the validation people")
    lpips = load_lpips("alex")
    sampler = PairSampler(clips, PairConfig(levels=(2,)), 0)
    renderer = WarpRenderer()
    codec = get_intra_codec("vvc")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    names = ["warp", *(f"grid{g}" for g in GRIDS)]
    rows = []
    for clip in clips:
        first = int(clip.valid[0])
        original = np.ascontiguousarray(clip.frames[first])
        decoded = codec.decode(codec.encode(original, 22))
        size = original.shape[0]
        reference = renderer.prepare(decoded, sampler.keypoints(clip.params[first], 2, size))
        images: dict[str, list[np.ndarray]] = {n: [] for n in names}
        targets = []
        for t in [t for t in clip.valid if first < t <= first + 125][::16]:
            flow = renderer.flow(reference, sampler.keypoints(clip.params[t], 2, size))
            clean = warp_image(original, flow)
            target = np.asarray(clip.frames[t])
            grey = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in (target, clean)]
            of = dis.calc(grey[0], grey[1], None)
            composed = compose_flow(flow, of)
            images["warp"].append(warp_image(decoded, flow))
            for g in GRIDS:
                cells = np.round(cv2.resize(composed - flow, (g, g), interpolation=cv2.INTER_AREA))
                dense = cv2.resize(cells, (size, size), interpolation=cv2.INTER_LINEAR)
                images[f"grid{g}"].append(warp_image(decoded, flow + dense))
            targets.append(target)
        truth = np.stack(targets)
        row = {n: _lpips(lpips, np.stack(images[n]), truth) for n in names}
        rows.append({"clip": clip.name, "person": clip.person, "frames": len(targets), **row})
        print(clip.person, {n: round(v, 4) for n, v in row.items()}, flush=True)
    mean = {n: float(np.mean([r[n] for r in rows])) for n in names}
    print("mean LPIPS:", {n: round(v, 4) for n, v in mean.items()})
    print(
        "relative to warp:", {n: f"{100 * (v / mean['warp'] - 1):+.1f}%" for n, v in mean.items()}
    )
    return {"mean": mean, "rows": rows}


def _pairs(clips: list, sampler, step: int) -> list[tuple]:
    """``(clip, t, features, 4x4 correction, flow)`` of every ``step``-th frame after the first
    face frame, against the warp of the original first frame."""
    from keyface.facemesh import FACE_OVAL
    from keyface.render.warp import WarpRenderer, similarity_fit, warp_image

    renderer = WarpRenderer()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    out = []
    for clip in clips:
        first = int(clip.valid[0])
        original = np.ascontiguousarray(clip.frames[first])
        size = original.shape[0]
        kp0 = sampler.keypoints(clip.params[first], 2, size)
        reference = renderer.prepare(original, kp0)
        for t in [t for t in clip.valid if first < t <= first + 125][::step]:
            kp = sampler.keypoints(clip.params[t], 2, size)
            flow = renderer.flow(reference, kp)
            grey = [
                cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
                for im in (clip.frames[t], warp_image(original, flow))
            ]
            of = dis.calc(grey[0], grey[1], None)
            composed = compose_flow(flow, of)
            cells = cv2.resize(composed - flow, (4, 4), interpolation=cv2.INTER_AREA).ravel()
            o0 = kp0[list(FACE_OVAL)].astype(np.float64)
            o1 = kp[list(FACE_OVAL)].astype(np.float64)
            sim = similarity_fit(o0, o1)
            motion = [sim[0, 0] - 1, sim[1, 0], *((o1.mean(0) - o0.mean(0)) / size)]
            where = [*(o0.mean(0) / size - 0.5), np.ptp(o0[:, 0]) / size]
            features = [*motion, *where, *np.outer(motion, where).ravel(), 1.0]
            out.append((clip, t, np.array(features), cells, flow))
    return out


def predict(args: argparse.Namespace) -> dict:
    """Can the body's motion be predicted from the head's? A ridge regression from the face
    oval's 2-D similarity motion (and where the face is) to the 4x4 correction, fitted on the
    train people, scored on the validation people."""
    from keyface.intra import get_intra_codec
    from keyface.render.warp import warp_image
    from keyface.train.data import load_prepared
    from keyface.train.pairs import PairConfig, PairSampler

    val = set(json.loads(args.split.read_text())["validation_people"])
    clips = load_prepared(args.data)
    sampler = PairSampler(clips, PairConfig(levels=(2,)), 0)
    train = _pairs([c for c in clips if c.person not in val], sampler, 8)
    test = _pairs([c for c in clips if c.person in val], sampler, 16)
    x, y = np.stack([p[2] for p in train]), np.stack([p[3] for p in train])
    w = np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ y)

    def r2(pairs: list[tuple]) -> float:
        xs, ys = np.stack([p[2] for p in pairs]), np.stack([p[3] for p in pairs])
        return float(1 - ((xs @ w - ys) ** 2).sum() / ((ys - ys.mean(0)) ** 2).sum())

    lpips = load_lpips("alex")
    codec = get_intra_codec("vvc")
    scores: dict[str, list[float]] = {"warp": [], "predicted": []}
    for clip in {id(p[0]): p[0] for p in test}.values():
        first = int(clip.valid[0])
        decoded = codec.decode(codec.encode(np.ascontiguousarray(clip.frames[first]), 22))
        mine = [p for p in test if p[0] is clip]
        truth = np.stack([clip.frames[p[1]] for p in mine])
        warp = np.stack([warp_image(decoded, p[4]) for p in mine])
        fixed = []
        for p in mine:
            grid = (p[2] @ w).reshape(4, 4, 2).astype(np.float32)
            fixed.append(warp_image(decoded, p[4] + cv2.resize(grid, (256, 256))))
        scores["warp"].append(_lpips(lpips, warp, truth))
        scores["predicted"].append(_lpips(lpips, np.stack(fixed), truth))
    out = {
        "train_r2": r2(train),
        "validation_r2": r2(test),
        "lpips": {k: float(np.mean(v)) for k, v in scores.items()},
    }
    print(json.dumps(out))
    return out


def _set_variant(variant: str) -> None:
    import keyface.motion.field as field

    grid, step, hold, bands, growth = variant.split(":")
    field.FIELD_STEP, field.FIELD_HOLD = float(step), float(hold)
    field.FIELD_BANDS, field.FIELD_BAND_GROWTH = int(bands), float(growth)
    field.FaceMeshField.__init__.__defaults__ = (int(grid),)
    field.default_facemesh_field.cache_clear()


def codec(args: argparse.Namespace) -> dict:
    from keyface.clips import select_clips
    from keyface.codec.ratecontrol import config_for_preset
    from keyface.pipeline import analyze, cropped_frames, decode_bytes, encode_analysis

    lpips = load_lpips("alex")
    clips = select_clips(args.clips, split=args.split, subset="validation", limit=args.limit)
    rows = []
    for clip in clips:
        analysis = analyze(clip.path, max_frames=125)
        crops = cropped_frames(analysis.path, analysis.crop, analysis.size, analysis.frame_count)
        truth = np.stack([image for _, image in crops])
        for variant in ["off", *args.variant]:
            config = config_for_preset(args.preset)
            if variant == "off":
                config = replace(config, motion_field=False)
            else:
                _set_variant(variant)
            result = encode_analysis(analysis, config)
            frames = np.stack([f.image for f in decode_bytes(result.data).frames])
            row = {
                "clip": clip.path.stem,
                "variant": variant,
                "kbps": result.kbps,
                "motion_bytes": result.stats.motion_bytes,
                "keyframes": result.stats.keyframes,
                "lpips_alex": _lpips(lpips, frames, truth),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for variant in ["off", *args.variant]:
        group = [r for r in rows if r["variant"] == variant]
        summary[variant] = {
            k: float(np.mean([r[k] for r in group])) for k in ("kbps", "motion_bytes", "lpips_alex")
        }
        print(variant, {k: round(v, 4) for k, v in summary[variant].items()})
    return {"preset": args.preset, "summary": summary, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    o = sub.add_parser("oracle")
    o.add_argument("--data", type=Path, default=Path("cache/train"))
    o.add_argument("--split", type=Path, default=SPLIT)
    o.add_argument("--json", type=Path)
    r = sub.add_parser("predict")
    r.add_argument("--data", type=Path, default=Path("cache/train"))
    r.add_argument("--split", type=Path, default=SPLIT)
    r.add_argument("--json", type=Path)
    c = sub.add_parser("codec")
    c.add_argument("--clips", type=Path, default=MANIFEST)
    c.add_argument("--split", type=Path, default=SPLIT)
    c.add_argument("--limit", type=int, default=6)
    c.add_argument("--preset", default="low")
    c.add_argument("--variant", action="append", default=[], help="grid:step:hold:bands:growth")
    c.add_argument("--json", type=Path)
    args = parser.parse_args()
    apply_thread_policy()  # keyface.threads: KEYFACE_THREADS or the default
    out = {"oracle": oracle, "predict": predict, "codec": codec}[args.mode](args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"command": "python " + " ".join(sys.argv), **out}
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
