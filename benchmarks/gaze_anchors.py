"""Where the anchors' eyes look: ``gaze_off`` and ``eye_state`` of conventional codecs on the
clips a ``keyface bench`` run prepared, to read keyface's figures against (issue 18).

    python benchmarks/gaze_anchors.py --bench results/bench --codecs x265:38,42,46 \\
        --codecs vvc:37,42,47 --json results/eyes/gaze/anchors.json

A conventional codec does not move irises, it blurs them: what it scores is how often the face
mesh reads a coded eye's gaze differently at that rate, the measure's floor for keyface's
streams at the same rate. Each clip's cached ``crop.y4m`` is coded at every ``CODEC:QP`` with
the bench's settings (``keyface.eval.anchors.encode_anchor``), decoded and measured; prints
and writes the means over clips per point. Set ``KEYFACE_THREADS`` as for any benchmark.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from _common import cached_clip, command_line

METRICS = ["lpips_alex", "eye_state", "gaze_off"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("results/bench"))
    parser.add_argument(
        "--codecs", action="append", required=True, help="CODEC:QP,QP,... (repeatable)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from fractions import Fraction

    from keyface.eval.anchors import encode_anchor
    from keyface.eval.metrics import compute_metrics
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    points = [
        (codec, int(qp))
        for spec in args.codecs
        for codec, qps in [spec.split(":", 1)]
        for qp in qps.split(",")
    ]
    bench_points = json.loads((args.bench / "points.json").read_text())["points"]
    clips = [args.bench / "cache" / c for c in sorted({p["clip"] for p in bench_points})]
    rows: list[dict[str, Any]] = []
    for clip in clips:
        meta, _, ref = cached_clip(clip)
        fps = Fraction(str(meta["fps"]))
        for codec, qp in points:
            r = encode_anchor(ref, fps, codec, qp)
            m = compute_metrics(ref, r.frames, METRICS, progress=False)
            rows.append({"clip": clip.name, "codec": codec, "qp": qp, "kbps": r.kbps, **m.mean})
            print(f"{clip.name} {codec} qp {qp}: {r.kbps:.2f} kbit/s", flush=True)
    table = []
    for codec, qp in points:
        sel = [r for r in rows if r["codec"] == codec and r["qp"] == qp]
        mean = {k: float(np.nanmean([r[k] for r in sel])) for k in ["kbps", *METRICS]}
        table.append({"codec": codec, "qp": qp, "clips": len(sel), **mean})
        print(
            f"{codec} qp {qp}: {mean['kbps']:.2f} kbit/s  LPIPS {mean['lpips_alex']:.4f}  "
            f"eye_state {100 * mean['eye_state']:.1f} %  gaze_off {100 * mean['gaze_off']:.1f} %"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": command_line("gaze_anchors.py", args), "means": table, "points": rows}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
