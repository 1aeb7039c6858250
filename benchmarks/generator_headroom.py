"""Where the warp loses quality: LPIPS of the warp against oracles that fix one thing each.

    python benchmarks/generator_headroom.py --data cache/train --quality 22 \
        --json results/generator/headroom.json

For each prepared validation clip (``keyface train prepare``; people of ``splits/dev_v1.json``)
the first face frame is coded as a keyframe (``--codec``, ``--quality``: 22 is what
``--quality medium`` uses) and every ``--step``-th of the next ``--frames`` frames is rendered
from it with motion quantised at level 2. LPIPS-Alex against the original frame of:

* ``freeze``: the decoded keyframe itself (no motion at all);
* ``warp``: the training-free warp (the baseline);
* ``warp_bilinear``: the same warp sampled bilinearly (what the warp did before it sampled
  bicubically);
* ``warp_unsharp``: the warp with a fixed unsharp mask (amount 0.3, Gaussian sigma 1 px): what
  plain sharpening, training-free, wins;
* ``enhanced``, ``enhanced_unsharp``: the warp of the keyframe as the default keyframe enhancer
  (``--enhancer``) returns it, without and with the same unsharp mask (not oracles: results);
* ``perfect_keyframe``: the same warp of the *original* frame (what a perfect keyframe
  enhancer could reach);
* ``perfect_motion``: the decoded keyframe warped by the codec's flow composed with the optical
  flow (DIS) from the target to the warp of the original frame (what perfect motion could reach);
* ``true_mouth``, ``true_eyes``, ``true_face``, ``true_outside``: the warp with the original
  pixels pasted inside the inner mouth, the eyes, the face oval, or everywhere *outside* the
  face oval (what fixing only that region could reach).

The oracles use the original frames, which a decoder never has: they bound what each part of a
learned renderer can win, they are not results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import SPLIT

from keyface.eval.nets import load_lpips
from keyface.facemesh import FACE_OVAL, INNER_MOUTH, LEFT_EYE, RIGHT_EYE
from keyface.intra import get_intra_codec
from keyface.motion.field import compose_flow
from keyface.render.warp import WarpRenderer, warp_image
from keyface.renderers import DEFAULT_RENDERER, get_renderer
from keyface.threads import apply_thread_policy
from keyface.train.data import load_prepared
from keyface.train.pairs import PairConfig, PairSampler

NAMES = (
    "freeze",
    "warp",
    "warp_bilinear",
    "warp_unsharp",
    "enhanced",
    "enhanced_unsharp",
    "perfect_keyframe",
    "perfect_motion",
    "true_mouth",
    "true_eyes",
    "true_face",
    "true_outside",
)


def _unsharp(image: np.ndarray, amount: float = 0.3, sigma: float = 1.0) -> np.ndarray:
    x = image.astype(np.float32)
    return np.clip(x + amount * (x - cv2.GaussianBlur(x, (0, 0), sigma)), 0, 255).astype(np.uint8)


def _mask(
    kp: np.ndarray, polygons: tuple[tuple[int, ...], ...], grow: int, size: int
) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    for poly in polygons:
        cv2.fillPoly(m, [np.round(kp[list(poly)][:, :2]).astype(np.int32)], 255)
    m = cv2.dilate(m, np.ones((grow, grow), np.uint8))
    return (cv2.GaussianBlur(m, (0, 0), 2).astype(np.float32) / 255)[..., None]


def _paste(base: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (base * (1 - mask) + truth * mask + 0.5).astype(np.uint8)


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("cache/train"))
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--codec", default="vvc")
    parser.add_argument("--quality", type=int, default=22)
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--step", type=int, default=8)
    parser.add_argument(
        "--enhancer", default=DEFAULT_RENDERER, help="renderer of the rows enhanced*"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    apply_thread_policy()  # keyface.threads: KEYFACE_THREADS or the default

    people = set(json.loads(args.split.read_text())["validation_people"])
    clips = load_prepared(args.data, people)
    if not clips:
        raise SystemExit(f"{args.data}: no prepared clips of the validation people")
    lpips = load_lpips("alex")
    sampler = PairSampler(clips, PairConfig(levels=(2,)), 0)
    renderer = WarpRenderer()
    enhancer = get_renderer(args.enhancer)
    codec = get_intra_codec(args.codec)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    rows = []
    for clip in clips:
        first = int(clip.valid[0])
        original = np.ascontiguousarray(clip.frames[first])
        decoded = codec.decode(codec.encode(original, args.quality))
        size = original.shape[0]
        reference = renderer.prepare(decoded, sampler.keypoints(clip.params[first], 2, size))
        enhanced = enhancer.prepare(decoded, reference.keypoints).image
        images: dict[str, list[np.ndarray]] = {n: [] for n in NAMES}
        targets = []
        for t in [t for t in clip.valid if first < t <= first + args.frames][:: args.step]:
            kp = sampler.keypoints(clip.params[t], 2, size)
            flow = renderer.flow(reference, kp)
            warp = warp_image(decoded, flow)
            clean = warp_image(original, flow)
            target = np.asarray(clip.frames[t])
            of = dis.calc(
                cv2.cvtColor(target, cv2.COLOR_RGB2GRAY),
                cv2.cvtColor(clean, cv2.COLOR_RGB2GRAY),
                None,
            )
            composed = compose_flow(flow, of)
            face = _mask(kp, (FACE_OVAL,), 9, size)
            images["freeze"].append(decoded)
            images["warp"].append(warp)
            images["warp_bilinear"].append(
                cv2.remap(decoded, flow[..., 0], flow[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
            )  # fmt: skip
            images["warp_unsharp"].append(_unsharp(warp))
            images["enhanced"].append(warp_image(enhanced, flow))
            images["enhanced_unsharp"].append(_unsharp(images["enhanced"][-1]))
            images["perfect_keyframe"].append(clean)
            images["perfect_motion"].append(warp_image(decoded, composed))
            images["true_mouth"].append(_paste(warp, target, _mask(kp, (INNER_MOUTH,), 11, size)))
            images["true_eyes"].append(
                _paste(warp, target, _mask(kp, (LEFT_EYE, RIGHT_EYE), 9, size))
            )
            images["true_face"].append(_paste(warp, target, face))
            images["true_outside"].append(_paste(target, warp, face))
            targets.append(target)
        with torch.no_grad():
            truth = _tensor(targets)
            row = {n: float(lpips(_tensor(images[n]), truth).mean()) for n in NAMES}
        row = {"clip": clip.name, "person": clip.person, "frames": len(targets), **row}
        rows.append(row)
        print(clip.person, {n: round(row[n], 4) for n in NAMES}, flush=True)
    mean = {n: float(np.mean([r[n] for r in rows])) for n in NAMES}
    print("mean LPIPS:", {n: round(v, 4) for n, v in mean.items()})
    print(
        "relative to warp:", {n: f"{100 * (v / mean['warp'] - 1):+.1f}%" for n, v in mean.items()}
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"command": "python " + " ".join(sys.argv), "mean": mean, "rows": rows}
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
