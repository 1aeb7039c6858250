"""Look at the frames the ``eye_state`` metric flags: source | decoded, each with both eyes
enlarged, for a clip the bench prepared (its ``crop.y4m``).

    python benchmarks/eye_frames.py --bench /tmp/bench12 --clip KwaiVGI+LivePortrait__s13 \
        --u 0.0 --out results/regions/eye_state_s13_u0.jpg

Codes the crop at ladder position ``--u`` (as the bench does: ``--no-crop``, the default
renderer), decodes it, measures the face mesh on both, prints the frames whose eye states
disagree (``keyface.eval.regions``) and writes up to ``--rows`` of them side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from keyface.codec.ratecontrol import config_at
from keyface.eval.regions import eye_states, open_eye_ratios, region_box
from keyface.face.landmarks import LandmarkTracker
from keyface.facemesh import LEFT_EYE, RIGHT_EYE
from keyface.pipeline import analyze, decode_bytes, encode_analysis
from keyface.threads import apply_thread_policy


def tile(image: np.ndarray, marks: np.ndarray) -> np.ndarray:
    eyes = []
    for eye in (RIGHT_EYE, LEFT_EYE):
        x0, y0, side = region_box(marks, eye, image.shape)
        crop = image[int(y0) : int(y0 + side), int(x0) : int(x0 + side)]
        eyes.append(cv2.resize(crop, (128, 128), interpolation=cv2.INTER_CUBIC))
    return np.hstack([cv2.resize(image, (256, 256)), np.vstack(eyes)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a keyface bench --out folder")
    parser.add_argument("--clip", required=True)
    parser.add_argument("--u", type=float, default=0.0)
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    apply_thread_policy()
    analysis = analyze(
        args.bench / "cache" / args.clip / "crop.y4m", crop=False, max_frames=args.frames
    )
    coded = encode_analysis(analysis, config_at(args.u))
    decoded = [f.image for f in decode_bytes(coded.data).frames]
    source = [img for _, img in analysis.frames()]
    with LandmarkTracker(video=False) as tracker:
        marks_a = [tracker.process(x) for x in source]
        marks_b = [tracker.process(x) for x in decoded]
    open_ears = open_eye_ratios(marks_a)
    flagged = []
    for i, (a, b) in enumerate(zip(marks_a, marks_b, strict=True)):
        if a is None or b is None:
            continue
        sa, sb = eye_states(a, open_ears), eye_states(b, open_ears)
        if any({x, y} == {"open", "closed"} for x, y in zip(sa, sb, strict=True)):
            flagged.append(i)
            print(f"frame {i}: source {sa}, decoded {sb}")
    print(f"{len(flagged)} of {len(source)} frames disagree ({coded.kbps:.2f} kbit/s)")
    if not flagged:
        return
    picked = flagged[:: max(1, len(flagged) // args.rows)][: args.rows]
    rows = [np.hstack([tile(source[i], marks_a[i]), tile(decoded[i], marks_a[i])]) for i in picked]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} (frames {picked})")


if __name__ == "__main__":
    main()
