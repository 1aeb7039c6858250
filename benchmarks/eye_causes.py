"""Why the decoded eyes disagree with the source (issue 18): every frame the ``eye_state``
metric flags, classified by cause.

For the clips a ``keyface bench`` run prepared (``cache/CLIP/crop.y4m``, ``analysis.npz``),
codes each clip at each ladder position ``--u`` (the default configuration), decodes it, runs
the face mesh on the source, on the decoded frame and on the *reference picture* the frame was
rendered from, and for each eye the metric flags (open in one, closed in the other) says why:

* ``reference_rule``: the reference picture shows the eye in the decoded frame's state, and so
  do the reference's keypoints (the content rule let it hold the frame);
* ``reference_picture``: the reference picture shows the eye in the decoded frame's state, its
  keypoints in the source's (the keyframe or update was coded too coarsely to show the eye);
* ``warp``: the reference shows the source's state, the warped frame does not;
* ``keypoints``: the transmitted keypoints (what the decoder drives the warp with) put the eye
  in the decoded frame's state, the source's mesh does not (the analysis and the metric's
  mesh disagree);
* ``fragile``: source or decoded eye within ``--margin`` of the metric's thresholds;
* ``other``.

The first cause that applies, in the order ``fragile``, ``keypoints``, ``reference_rule``,
``reference_picture``, ``warp``, ``other``. Writes ``causes.json`` (per clip, u and frame)
and prints counts:

    python benchmarks/eye_causes.py --bench /tmp/bench12 --u 0,0.3,0.6,0.9 --out /tmp/eyes/diag
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any


def _ears(marks: Any) -> tuple[float, float] | None:
    from keyface.facemesh import LEFT_EYE_EAR, RIGHT_EYE_EAR, eye_aspect_ratio

    if marks is None:
        return None
    return eye_aspect_ratio(marks, RIGHT_EYE_EAR), eye_aspect_ratio(marks, LEFT_EYE_EAR)


def _state(ratio: float) -> str:
    from keyface.eval.regions import CLOSED_SHARE, OPEN_SHARE

    return "closed" if ratio < CLOSED_SHARE else "open" if ratio > OPEN_SHARE else "unsure"


def diagnose(
    clip_dir: Path, u: float, margin: float, overrides: dict[str, Any], tracker: Any, mode: str
) -> dict[str, Any]:
    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.eval.regions import CLOSED_SHARE, OPEN_SHARE, open_eye_ratios
    from keyface.io import read_frames
    from keyface.pipeline import decode_bytes, encode_analysis

    meta = json.loads((clip_dir / "meta.json").read_text())
    analysis = load_analysis(clip_dir, meta)
    source = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
    coded = encode_analysis(analysis, replace(config_at(u, CodecConfig(mode=mode)), **overrides))
    decoded = decode_bytes(coded.data).frames
    marks_s = [tracker.process(x) for x in source]
    marks_d = [tracker.process(f.image) for f in decoded]
    open_ears = open_eye_ratios(marks_s)
    kp_open = open_eye_ratios([f.keypoints for f in decoded])
    ref_marks: dict[int, Any] = {}
    decisions = {d.index: d for d in coded.stats.decisions}
    frames = []
    for t, frame in enumerate(decoded):
        if frame.reference_frame not in ref_marks:
            image = frame.reference.image if frame.reference is not None else frame.image
            ref_marks[frame.reference_frame] = tracker.process(image)
        es, ed = _ears(marks_s[t]), _ears(marks_d[t])
        if es is None or ed is None:
            continue
        er = _ears(ref_marks[frame.reference_frame])
        ek = _ears(frame.keypoints)
        ekr = _ears(frame.reference.keypoints) if frame.reference is not None else ek
        eyes = []
        for e in range(2):
            rs, rd = es[e] / open_ears[e], ed[e] / open_ears[e]
            ss, sd = _state(rs), _state(rd)
            if {ss, sd} != {"open", "closed"}:
                continue
            rr = er[e] / open_ears[e] if er is not None else float("nan")
            rk, rkr = ek[e] / kp_open[e], ekr[e] / kp_open[e]
            sr, sk = _state(rr) if er is not None else "none", _state(rk)
            skr = _state(rkr)
            near = [min(abs(x - CLOSED_SHARE), abs(x - OPEN_SHARE)) < margin for x in (rs, rd)]
            if any(near):
                cause = "fragile"
            elif sk == sd:
                cause = "keypoints"
            elif sr == sd and skr == sd:
                cause = "reference_rule"
            elif sr == sd:
                cause = "reference_picture"
            elif sr == ss:
                cause = "warp"
            else:
                cause = "other"
            eyes.append(
                {
                    "eye": e,
                    "source": [ss, round(rs, 3)],
                    "decoded": [sd, round(rd, 3)],
                    "reference": [sr, round(rr, 3)],
                    "keypoints": [sk, round(rk, 3)],
                    "reference_keypoints": [skr, round(rkr, 3)],
                    "cause": cause,
                }
            )
        if eyes:
            d = decisions.get(t)
            frames.append(
                {
                    "frame": t,
                    "reference_frame": frame.reference_frame,
                    "keyframe": frame.keyframe,
                    "promoted": bool(d and d.promoted),
                    "eyes": eyes,
                }
            )
    return {
        "clip": clip_dir.name,
        "u": u,
        "kbps": coded.kbps,
        "frames": len(decoded),
        "measured": sum(
            1 for a, b in zip(marks_s, marks_d, strict=True) if a is not None and b is not None
        ),
        "flagged": frames,
        "refresh": [[d.index, d.refresh, d.promoted] for d in coded.stats.decisions if d.refresh],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--u", default="0,0.3,0.6,0.9")
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", default=None, help="comma-separated substrings")
    parser.add_argument(
        "--mode",
        default="animation",
        help="the ladder: animation (default) or auto (the one ladder, groups from u 0.3)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="a CodecConfig field over the ladder's, e.g. eye_source_state=true (repeatable)",
    )
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    from keyface.face.landmarks import LandmarkTracker
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    clips = sorted(p for p in (args.bench / "cache").iterdir() if (p / "analysis.npz").is_file())
    if args.clips:
        keys = args.clips.split(",")
        clips = [c for c in clips if any(k in c.name for k in keys)]
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "causes.json"
    results = json.loads(saved.read_text()) if saved.is_file() else []
    have = {(r["clip"], r["u"]) for r in results}
    with LandmarkTracker(video=False) as tracker:
        for u in (float(x) for x in args.u.split(",")):
            for clip in clips:
                if (clip.name, u) in have:
                    continue
                r = diagnose(clip, u, args.margin, overrides, tracker, args.mode)
                results.append(r)
                saved.write_text(json.dumps(results))
                counts = Counter(e["cause"] for f in r["flagged"] for e in f["eyes"])
                print(
                    f"{clip.name} u={u}: {len(r['flagged'])}/{r['measured']} frames "
                    f"{dict(counts)} pid={os.getpid()}",
                    flush=True,
                )
    for u in sorted({r["u"] for r in results}):
        sel = [r for r in results if r["u"] == u]
        counts = Counter(e["cause"] for r in sel for f in r["flagged"] for e in f["eyes"])
        frames = sum(len(r["flagged"]) for r in sel)
        measured = sum(r["measured"] for r in sel)
        print(f"u={u}: {frames}/{measured} frames flagged; eyes by cause {dict(counts)}")


if __name__ == "__main__":
    main()
