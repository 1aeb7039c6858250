"""Recovery from seeded motion-datagram loss, end to end on loopback.

    python benchmarks/server_loss.py                         # 0 %, 5 % and 20 %, 450 frames
    python benchmarks/server_loss.py --loss 0.05 --loss 0.2 --reset-interval 30 --reset-interval 10

``keyface send --loss P --seed S`` drops that share of the motion (unreliable) datagrams
before they leave, with a seeded generator, so a run is reproducible up to timing. For each
loss rate: how many frames the server lost and concealed (held the last picture), the loss
episodes and how long each lasted until a frame decoded again (frames and milliseconds at the
clip's rate), the refresh requests, whether the server survived, and what the receiver shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _server_common import default_clip, machine, print_table
from server_stream import measure

from keyface.io import probe

COLUMNS = [
    ("loss", "loss", ".2f"),
    ("reset_interval", "reset", ""),
    ("dropped_motion", "dropped", "d"),
    ("server_lost", "lost", "d"),
    ("server_concealed", "concealed", "d"),
    ("server_decoded", "decoded", "d"),
    ("loss_episodes", "episodes", "d"),
    ("recovery_frames_mean", "rec fr avg", ".1f"),
    ("recovery_frames_max", "rec fr max", "d"),
    ("recovery_ms_mean", "rec ms avg", ".0f"),
    ("recovery_ms_max", "rec ms max", ".0f"),
    ("server_refresh_requests", "refresh", "d"),
    ("fps", "rx fps", ".1f"),
    ("latency_ms_median", "lat p50", ".0f"),
    ("server_alive", "server ok", ""),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path)
    parser.add_argument("--frames", type=int, default=450)
    parser.add_argument("--loss", type=float, action="append", help="loss rate(s), repeatable")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--intra", help="keyframe codec (default: the send default)")
    parser.add_argument(
        "--reset-interval",
        type=int,
        action="append",
        help="keyface send --reset-interval value(s) to compare (default: 10 and 30)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    clip = args.input or default_clip()
    fps = float(probe(clip).fps)
    info = machine()
    rows: list[dict[str, Any]] = []
    for interval in args.reset_interval or [10, 30]:
        for loss in args.loss or [0.0, 0.05, 0.20]:
            row = measure(clip, args.frames, args.intra, loss, args.seed, interval)
            for key in ("mean", "max"):
                frames = row.get(f"recovery_frames_{key}")
                row[f"recovery_ms_{key}"] = None if frames is None else 1000 * frames / fps
            rows.append(row)
    print(f"{clip.name}, {args.frames} frames at {fps:.2f} fps, seed {args.seed}, loopback")
    print_table(rows, COLUMNS)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
