"""Time per frame of every ``keyface eval`` metric at 256x256 on this machine.

    python benchmarks/eval_speed.py                    # carphone crop, 24 frames, every metric
    python benchmarks/eval_speed.py --frames 48 --metrics psnr,lpips_alex --json out.json
    python benchmarks/eval_speed.py --default          # also the default set as `keyface eval`
    python benchmarks/eval_speed.py --metrics none --default   # only the two sets

The reference is the carphone clip's 256x256 face crop (``keyface.pipeline.cropped_frames``
with the planned crop), the distorted video the same frames through a keyface round trip at
``--quality low``, so the face-mesh metrics see a real face. Each metric is computed alone
(``keyface.eval.compute_metrics``) after a two-frame warm-up that loads its weights; the time
per frame is the timed run's seconds over its frames. ``--default`` also times the default set
of ``keyface eval`` (with its sampling of the slow metrics), and every metric together (the
default before issue 17). Runs under the project's thread policy (``keyface.threads``);
say whether the CPU was shared when quoting the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from keyface.cli.demo import default_clip
from keyface.codec.ratecontrol import config_for_preset
from keyface.eval import compute_metrics
from keyface.eval.registry import (
    DEFAULT_EVAL_METRICS,
    EVAL_SLOW_EVERY,
    METRICS,
    resolve_metrics,
)
from keyface.pipeline import analyze, cropped_frames, decode_bytes, encode_analysis
from keyface.threads import apply_thread_policy


def frames(path: Path, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    analysis = analyze(path, size=256, max_frames=count)
    ref = [c for _, c in cropped_frames(path, analysis.crop, 256, count)]
    coded = encode_analysis(analysis, config_for_preset("low"))
    dist = [f.image for f in decode_bytes(coded.data).frames]
    return ref, dist


def time_metrics(
    ref: list[np.ndarray], dist: list[np.ndarray], names: list[str], slow_every: int = 1
) -> float:
    compute_metrics(ref[:2], dist[:2], names)  # warm-up: imports, weights
    t0 = time.perf_counter()
    compute_metrics(ref, dist, names, slow_every=slow_every)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, help="clip (default: carphone)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--metrics", default="all", help="each timed alone ('none': skip)")
    parser.add_argument("--default", action="store_true", help="also the default set, and all")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    policy = apply_thread_policy()
    ref, dist = frames(args.input or default_clip(), args.frames)
    n = len(ref)
    rows: dict[str, float] = {}
    for name in [] if args.metrics == "none" else resolve_metrics(args.metrics):
        seconds = time_metrics(ref, dist, [name])
        rows[name] = seconds / n
        print(f"{name:<12} {1000 * seconds / n:9.1f} ms/frame", flush=True)
    sets: dict[str, float] = {}
    if args.default:
        seconds = time_metrics(ref, dist, list(DEFAULT_EVAL_METRICS), EVAL_SLOW_EVERY)
        sets["default"] = seconds / n
        print(f"{'default set':<12} {1000 * seconds / n:9.1f} ms/frame", flush=True)
        seconds = time_metrics(ref, dist, list(METRICS))
        sets["all"] = seconds / n
        print(f"{'all':<12} {1000 * seconds / n:9.1f} ms/frame", flush=True)
    if args.json:
        record = {
            "frames": n,
            "size": 256,
            "threads": policy.compute,
            "cpus": os.cpu_count(),
            "seconds_per_frame": rows,
            "sets": sets,
            "load": os.getloadavg(),
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
