"""Recovery from seeded motion-datagram loss, end to end on loopback.

    python benchmarks/server_loss.py                         # 0 %, 5 % and 20 %, 450 frames
    python benchmarks/server_loss.py --loss 0.05 --loss 0.2 --reset-interval 30 --reset-interval 10
    python benchmarks/server_loss.py --mode before --mode after --loss 0.2 --burst 5 --outage 5:0.5

Modes: ``after`` (the default sender: frames from acknowledged ones, copies after losses),
``before`` (``keyface send --no-acks --no-redundancy``: each frame from the previous one with
a reset every ``--reset-interval`` frames, as senders did before acknowledgements). ``--burst
L`` makes the loss Gilbert-Elliott bursts of mean length L; ``--outage START:SECONDS`` drops
every motion datagram in that window (on top of ``--loss``).

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
    ("mode", "mode", ""),
    ("reset_interval", "reset", ""),
    ("dropped_motion", "dropped", "d"),
    ("server_lost", "lost", "d"),
    ("server_concealed", "concealed", "d"),
    ("server_decoded", "decoded", "d"),
    ("fresh_share", "fresh", ".3f"),
    ("motion_kbps", "motion kb/s", ".2f"),
    ("uplink_kbps", "uplink kb/s", ".2f"),
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
    parser.add_argument("--burst", type=float, default=1.0, help="mean burst length (datagrams)")
    parser.add_argument("--outage", help="START:SECONDS, every motion datagram dropped")
    parser.add_argument("--mode", action="append", choices=["before", "after"])
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
    extra: tuple[str, ...] = ("--burst", str(args.burst))
    if args.outage:
        extra += ("--outage", args.outage)
    for mode in args.mode or ["after"]:
        flags = ("--no-acks", "--no-redundancy") if mode == "before" else ()
        for interval in args.reset_interval or ([10, 30] if mode == "before" else [10]):
            for loss in args.loss or [0.0, 0.05, 0.20]:
                row = measure(
                    clip, args.frames, args.intra, loss, args.seed, interval, extra=extra + flags
                )
                row["mode"] = mode
                row["burst"] = args.burst
                row["outage"] = args.outage
                rows.append(_figures(row, fps))
    print(f"{clip.name}, {args.frames} frames at {fps:.2f} fps, seed {args.seed}, loopback")
    print_table(rows, COLUMNS)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "runs": rows}, indent=1))


def _figures(row: dict[str, Any], fps: float) -> dict[str, Any]:
    for key in ("mean", "max"):
        frames = row.get(f"recovery_frames_{key}")
        row[f"recovery_ms_{key}"] = None if frames is None else 1000 * frames / fps
    sent = row.get("frames_sent") or 0
    row["fresh_share"] = (row.get("server_decoded") or 0) / sent if sent else None
    return row


if __name__ == "__main__":
    main()
