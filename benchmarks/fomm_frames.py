"""FOMM streams looked at, before and after a change of the encoder.

    KEYFACE_THREADS=2 python benchmarks/fomm_frames.py --model MODEL \
        --out results/fomm/frames_gate_scale.jpg
    KEYFACE_THREADS=2 python benchmarks/fomm_frames.py --model MODEL --compare content \
        --crop --pick mouth --names vscodehappy,spata,d10 --out results/fomm/frames_content.jpg

For a few validation clips, the first ``--frames`` frames are coded with ``--motion fomm`` on
the animation ladder at ``--u`` with a full-frame background, twice, and decoded to full frames
(the model's crop pasted with the soft seam, as ``decode --full-frame`` does; ``--crop``: the
face crops as decoded). ``--compare gate``: the FOMM motion distance unscaled (``GATE_SCALE``
1, the gate before the calibration) and as shipped; ``--compare content``: without and with
the content rule judged on the source's landmarks (``CodecConfig.landmark_content``).
Written: for three frames of each clip (``--pick spread``: at a quarter, half and three
quarters; ``mouth``: the three widest-open mouths by the source's landmarks, at least 10
frames apart), source | before | after (each row one frame), with the rate and keyframe
count of each run printed.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from _common import CLIPS, SPLIT, pick_clips, save_rows

import keyface.fomm.motion as fomm_motion
from keyface.codec.config import CodecConfig, crop_box
from keyface.codec.ratecontrol import config_at
from keyface.compose import Composer
from keyface.facemesh import mouth_opening
from keyface.fomm import MOTION_NAME, use_model
from keyface.io import read_frames
from keyface.pipeline import analyze, decode_bytes, encode_analysis
from keyface.threads import apply_thread_policy

DEFAULT_CLIPS = ("d20", "00098", "vscodehappy")


def full_frames(
    analysis, u: float, crop: bool = False, **overrides: object
) -> tuple[list[np.ndarray], float, int]:
    config = config_at(u, CodecConfig(mode="animation"))
    config = replace(config, motion=MOTION_NAME, generator=MOTION_NAME, **overrides)
    coded = encode_analysis(analysis, config, with_background=not crop)
    result = decode_bytes(coded.data)
    if crop:
        frames = [f.image for f in result.frames]
    else:
        assert result.header.crop is not None and result.background is not None
        composer = Composer(result.background, crop_box(result.header.crop))
        frames = [composer.compose(f.image, f.reference, f.keypoints) for f in result.frames]
    kbps = 8 * len(coded.data) / 1000 / (analysis.frame_count / float(analysis.fps))
    return frames, kbps, coded.stats.keyframes


def _line(name: str, label: str, run: tuple[list[np.ndarray], float, int]) -> str:
    return f"{name[:44]:<44} {label:<6} {run[1]:6.2f} kbit/s, {run[2]} keyframes"


def _picked(analysis, n: int, pick: str) -> list[int]:
    """The frames shown: spread over the clip, or its widest-open mouths (10 frames apart)."""
    if pick == "spread":
        return [n // 4, n // 2, (3 * n) // 4]
    opening = [mouth_opening(m) if m is not None else -1.0 for m in analysis.landmarks[:n]]
    chosen: list[int] = []
    for i in np.argsort(opening)[::-1]:
        if all(abs(int(i) - j) >= 10 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == 3:
            break
    return sorted(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--clips", type=Path, default=CLIPS)
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--names", default=",".join(DEFAULT_CLIPS), help="clip name parts")
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--u", type=float, default=1.0)
    parser.add_argument("--width", type=int, default=480, help="width of each tile")
    parser.add_argument("--compare", choices=("gate", "content"), default="gate")
    parser.add_argument("--pick", choices=("spread", "mouth"), default="spread")
    parser.add_argument("--crop", action="store_true", help="face crops, not full frames")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    use_model(args.model)
    apply_thread_policy()
    clips = pick_clips(args.clips, args.split, "validation", None)
    rows = []
    for part in args.names.split(","):
        clip = next(c for c in clips if part in c.name)
        analysis = analyze(clip, max_frames=args.frames)
        if args.crop:
            source = [image for _, image in analysis.frames()]
        else:
            source = [f.image for f in read_frames(clip, args.frames)]
        runs = {}
        for label, scale in (("before", 1.0), ("after", fomm_motion.GATE_SCALE)):
            if args.compare == "content":
                on = label == "after"
                runs[label] = full_frames(analysis, args.u, args.crop, landmark_content=on)
                print(_line(clip.name, label, runs[label]), flush=True)
                continue
            shipped = fomm_motion.GATE_SCALE
            fomm_motion.GATE_SCALE = scale
            try:
                runs[label] = full_frames(analysis, args.u, args.crop)
            finally:
                fomm_motion.GATE_SCALE = shipped
            print(_line(clip.name, label, runs[label]), flush=True)
        n = len(runs["after"][0])
        for i in _picked(analysis, n, args.pick):
            tiles = [source[i], runs["before"][0][i], runs["after"][0][i]]
            h = round(tiles[0].shape[0] * args.width / tiles[0].shape[1])
            rows.append(
                np.concatenate(
                    [cv2.resize(t, (args.width, h), interpolation=cv2.INTER_AREA) for t in tiles],
                    axis=1,
                )
            )
    save_rows(rows, args.out)


if __name__ == "__main__":
    main()
