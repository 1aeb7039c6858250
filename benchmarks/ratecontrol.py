"""How close ``--kbps`` lands to its target on 10-second clips.

    python benchmarks/ratecontrol.py --targets 4,6,10 --seconds 10 --json results/ratecontrol.json

Validation clips (one per person) at least ``--seconds`` long are analysed once; each target is
then met by :func:`keyface.pipeline.encode_at_kbps` on the ladder of ``--mode`` (default
``auto``, the one ladder ``keyface encode --kbps`` walks; ``animation`` the animation ladder
alone) and the real stream size is compared with the target. Set ``KEYFACE_THREADS`` as for
any benchmark.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from _common import CLIPS, SPLIT

from keyface.codec.config import CodecConfig
from keyface.pipeline import analyze, encode_at_kbps
from keyface.threads import apply_thread_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=CLIPS)
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--targets", default="4,6,10")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--mode", default="auto", help="the ladder searched (default: auto)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    apply_thread_policy()
    split = set(json.loads(args.split.read_text())["validation_clips"])
    with open(args.clips / "MANIFEST.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["file"] in split]
    seen, clips = set(), []
    for r in sorted(rows, key=lambda r: r["file"]):
        if r["person"] not in seen and float(r["seconds"]) >= args.seconds:
            seen.add(r["person"])
            clips.append((args.clips / r["file"], float(r["fps"])))
    targets = [float(t) for t in args.targets.split(",")]
    out = []
    print(f"{'clip':<46} {'target':>6} {'kbps':>6} {'error %':>7}")
    for path, fps in clips[: args.limit]:
        analysis = analyze(path, max_frames=round(args.seconds * fps))
        for target in targets:
            result = encode_at_kbps(analysis, CodecConfig(mode=args.mode), target)
            err = 100 * (result.kbps - target) / target
            out.append(
                {
                    "clip": path.name,
                    "mode": args.mode,
                    "coded_as": f"{result.config.mode} gop {result.config.gop}",
                    "target": target,
                    "kbps": result.kbps,
                    "error": err,
                }
            )
            print(
                f"{path.name[:46]:<46} {target:>6g} {result.kbps:>6.2f} {err:>7.1f} "
                f"{out[-1]['coded_as']}",
                flush=True,
            )
    errs = np.abs([o["error"] for o in out])
    print(
        f"mean |error| {errs.mean():.1f}%, max {errs.max():.1f}%, within 15%: "
        f"{int((errs <= 15).sum())}/{len(errs)}"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
