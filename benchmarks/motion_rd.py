"""Motion stream rate-distortion: bits per frame vs landmark error, per quantiser level.

    python scripts/extract_landmarks.py      # once: caches landmarks of the clips
    python benchmarks/motion_rd.py --split splits/dev_v1.json --subset validation

For each validation clip the cached face-mesh landmarks (normalised to a 256x256 crop as the fit
does) are analysed, quantised, entropy coded with the real coder (every frame rendered from
reference 0, one MOTION packet per 16 frames, packet framing included) and rebuilt. Reported:
bits per frame and the mean 2-D landmark error in pixels at 256x256, with and without
quantisation, and also for other coefficient counts at the level-2 steps (``--sweep``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from _common import SPLIT
from fit_motion_model import load_clip

from keyface.bitstream import MotionPacket
from keyface.clips import load_split
from keyface.entropy import CodedFrame, MotionCoderState, encode_frames
from keyface.motion import QuantLevel, get_representation

CHUNK = 16


def evaluate(rep, level: QuantLevel, clips: list[np.ndarray]) -> dict[str, float]:
    errs, errs_unq, bits, frames = [], [], 0, 0
    for lm in clips:
        state = MotionCoderState(level, rep.statistics)
        params = np.stack([rep.analyze(x, 256) for x in lm])
        qs = [state.quantize(p) for p in params]
        for start in range(0, len(qs), CHUNK):
            chunk = [
                CodedFrame(q=q, reference=None if start + i == 0 else 0)
                for i, q in enumerate(qs[start : start + CHUNK])
            ]
            data = encode_frames(state, chunk)
            packet = MotionPacket(
                first_frame=start, n_frames=len(chunk), reset=start == 0, data=data
            )
            bits += 8 * len(bytes(packet))
        for x, p, q in zip(lm, params, qs, strict=True):
            target = x[:, :2]
            errs_unq.append(np.linalg.norm(rep.keypoints(p, 256) - target, axis=1).mean())
            rec = rep.keypoints(state.dequantize(q), 256)
            errs.append(np.linalg.norm(rec - target, axis=1).mean())
        frames += len(lm)
    return {
        "bits_per_frame": bits / frames,
        "error_px": float(np.mean(errs)),
        "error_px_unquantised": float(np.mean(errs_unq)),
        "frames": frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default=SPLIT)
    parser.add_argument("--subset", default="validation", choices=["validation", "train"])
    parser.add_argument("--landmarks", default="cache/landmarks")
    parser.add_argument("--max-frames", type=int, default=150)
    parser.add_argument("--sweep", action="store_true", help="also sweep coefficient counts")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    clips = []
    for name in load_split(args.split).clips[args.subset]:
        lm = load_clip(Path(args.landmarks) / (Path(name).stem + ".npz"))
        if len(lm) > 10:
            clips.append(lm[: args.max_frames])
    base = get_representation()
    rows = []
    print(f"{len(clips)} {args.subset} clips, {sum(map(len, clips))} frames")
    print(f"{'level':>5} {'K':>3} {'bits/frame':>10} {'err px':>7} {'err px (no quant)':>18}")
    for level in range(base.num_levels):
        rep = base.for_level(level)
        ql = rep.quant_level(level)
        r = evaluate(rep, ql, clips)
        r.update(level=level, num_coeffs=ql.num_params - 6)
        rows.append(r)
        print(
            f"{level:>5} {ql.num_params - 6:>3} {r['bits_per_frame']:>10.1f} "
            f"{r['error_px']:>7.3f} {r['error_px_unquantised']:>18.3f}"
        )
    if args.sweep:
        steps = base.quant_level(2).steps
        print("sweep at level-2 steps")
        for k in (0, 4, 8, 12, 16, 20, 24, 32, 40, 48):
            rep = base.with_coefficients(k)
            ql = QuantLevel(num_params=6 + k, steps=np.full(6 + k, steps[-1]))
            ql = QuantLevel(num_params=6 + k, steps=np.concatenate([steps[:6], ql.steps[6:]]))
            r = evaluate(rep, ql, clips)
            r.update(level=-1, num_coeffs=k)
            rows.append(r)
            print(
                f"{'-':>5} {k:>3} {r['bits_per_frame']:>10.1f} {r['error_px']:>7.3f} "
                f"{r['error_px_unquantised']:>18.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
