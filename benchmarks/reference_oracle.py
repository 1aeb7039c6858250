"""What would rendering each frame from another reference win? (an oracle, not a renderer)

    python benchmarks/reference_oracle.py --limit 12 --preset medium \
        --json results/generator/reference_oracle.json

For one clip per validation person, the first ``--frames`` frames are coded with the preset
(the encoder predicting the warp) and decoded with the warp. Every predicted frame is then
rendered, with its own decoded motion and body field, from each keyframe the decoder holds
(the last five, as the reference buffer) and from the next keyframe (a bidirectional
decoder's future reference), and LPIPS-Alex is measured against the original for each.
The table gives the mean over predicted frames of:

* ``signalled``: the reference the encoder named (what the decoder renders);
* ``best past``: the best of the buffered references, chosen with the original (an upper
  bound for a decoder-side multi-reference fusion that picks whole frames);
* ``best past+future``: the same with the next keyframe added (a bidirectional GOP);
* ``future``: the next keyframe alone.

It bounds what a learned fusion of several references could win at the same bitstream.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import MANIFEST, SPLIT

from keyface.clips import select_clips
from keyface.codec.ratecontrol import config_for_preset
from keyface.eval.metrics import compute_metrics
from keyface.pipeline import analyze, cropped_frames, decode_bytes, encode_analysis
from keyface.render import Reference, WarpRenderer
from keyface.threads import apply_thread_policy


class _Recorder:
    """The warp, remembering the motion and field of every predicted frame it renders."""

    def __init__(self) -> None:
        self.warp = WarpRenderer()
        self.calls: list[tuple[np.ndarray, np.ndarray | None]] = []

    def prepare(self, image: np.ndarray, keypoints: np.ndarray) -> Reference:
        return self.warp.prepare(image, keypoints)

    def render(
        self, reference: Reference, keypoints: np.ndarray, field: np.ndarray | None = None
    ) -> np.ndarray:
        self.calls.append((keypoints, field))
        return self.warp.render(reference, keypoints, field)


def _lpips(target: np.ndarray, image: np.ndarray) -> float:
    return float(compute_metrics([target], [image], ("lpips_alex",)).mean["lpips_alex"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=MANIFEST)
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--buffer", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    apply_thread_policy()  # keyface.threads: KEYFACE_THREADS or the default

    clips = select_clips(
        args.clips, split=args.split, subset="validation", limit=args.limit, frames=args.frames
    )
    rows = []
    for clip in clips:
        analysis = analyze(clip.path, max_frames=args.frames)
        originals = [img for _, img in cropped_frames(clip.path, analysis.crop, 256, args.frames)]
        result = encode_analysis(
            analysis, replace(config_for_preset(args.preset), generator="warp")
        )
        recorder = _Recorder()
        frames = decode_bytes(result.data, renderer=recorder).frames
        keys = [i for i, f in enumerate(frames) if f.keyframe]
        refs = {k: frames[k].reference for k in keys}
        scores: dict[str, list[float]] = {
            "signalled": [],
            "best_past": [],
            "best_past_future": [],
            "future": [],
        }
        calls = iter(recorder.calls)
        for i, frame in enumerate(frames):
            if frame.keyframe:
                continue
            keypoints, field = next(calls)
            past = [k for k in keys if k < i][-args.buffer :]
            future = [k for k in keys if k > i][:1]
            lp = {
                k: _lpips(originals[i], recorder.warp.render(refs[k], keypoints, field))  # type: ignore[arg-type]
                for k in past + future
            }
            signalled = lp[frame.reference_frame]
            scores["signalled"].append(signalled)
            scores["best_past"].append(min(lp[k] for k in past))
            scores["best_past_future"].append(min(lp.values()))
            scores["future"].append(lp[future[0]] if future else signalled)
        row = {
            "clip": clip.name,
            "person": clip.person,
            "kbps": result.kbps,
            "keyframes": len(keys),
            **{k: float(np.mean(v)) for k, v in scores.items()},
        }
        rows.append(row)
        print(
            f"{clip.person:12s} {row['kbps']:5.1f} kbit/s {len(keys)} keyframes  signalled "
            f"{row['signalled']:.4f}  best past {row['best_past']:.4f}  best past+future "
            f"{row['best_past_future']:.4f}  future {row['future']:.4f}",
            flush=True,
        )
    summary = {
        k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("clip", "person")
    }
    base = summary["signalled"]
    print("\n| rendering | LPIPS-Alex (predicted frames) | vs signalled |")
    print("|---|---|---|")
    for k in ("signalled", "best_past", "best_past_future", "future"):
        print(f"| {k} | {summary[k]:.4f} | {100 * (summary[k] / base - 1):+.1f}% |")
    print(f"keyframes per clip: {summary['keyframes']:.1f}, {summary['kbps']:.1f} kbit/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "command": "python benchmarks/reference_oracle.py "
                    + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None),
                    "summary": summary,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
