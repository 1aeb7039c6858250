"""Loss resilience of the live motion coding, simulated without a network (sans-I/O).

    python benchmarks/live_loss.py                                  # loopback, 450 frames
    python benchmarks/live_loss.py --one-way-ms 40 --json results/server/live_loss_wan.json

The clip's face crops go through ``SenderSession`` frame by frame at the clip's rate; its
datagrams reach a ``RoomSession`` (the server's decoder, with the real renderer) after the
one-way delay, and the server's feedback (acknowledgements, refresh requests) reaches the
sender after the decode time and the one-way delay back. Loss is seeded
(``keyface.server.lossmodel``): motion (unreliable) datagrams are dropped; a reliable
datagram that "drops" arrives one retransmission timeout later per drop (no head-of-line
blocking is modelled); acknowledgements travel unreliably and are dropped at the same rate
with another seed. Conditions: independent loss at 0/5/10/20/40 %, Gilbert-Elliott bursts
(20 %, mean burst 5 datagrams) and one 500 ms outage at 5 s.

Modes: ``before`` (each frame from the previous one, a reset every 10 frames: the sender
before acknowledgements, ``keyface send --no-acks``), ``acks`` (from the newest acknowledged
frame) and ``acks+copy`` (also the previous frame's motion again after losses: the default).

Reported per run: frames shown with fresh motion (decoded, not held) and how many came from a
copy, frames held (concealed), loss episodes and their length (ms), the time from the end of
the outage to the first fresh frame, motion kbit/s (MOTION packets, copies included) and the
whole uplink, refresh requests, and the capture-to-display latency of fresh frames.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from _server_common import default_clip, machine, print_table

from keyface.codec.config import CodecConfig
from keyface.pipeline import analyze, cropped_frames
from keyface.server.live import DEFAULT_RESET_INTERVAL
from keyface.server.lossmodel import LossModel, NoLoss, loss_model
from keyface.server.session import RoomSession, SenderSession
from keyface.threads import apply_thread_policy

TICK_S = 0.01
MODES = {
    "before": {"feedback": False, "redundancy": False},
    "acks": {"feedback": True, "redundancy": False},
    "acks+copy": {"feedback": True, "redundancy": True},
}


@dataclass(frozen=True)
class Condition:
    name: str
    rate: float = 0.0
    burst: float = 1.0
    outage: tuple[float, float] | None = None

    def model(self, seed: int) -> LossModel:
        return loss_model(self.rate, self.burst, seed, self.outage)


CONDITIONS = [
    Condition("0 %"),
    Condition("5 %", 0.05),
    Condition("10 %", 0.10),
    Condition("20 %", 0.20),
    Condition("40 %", 0.40),
    Condition("20 % bursty (mean 5)", 0.20, 5.0),
    Condition("500 ms outage at 5 s", outage=(5.0, 0.5)),
]


@dataclass(frozen=True)
class Link:
    one_way_s: float = 0.001
    decode_s: float = 0.015
    """The server's decode and render time before its feedback leaves."""
    rto_s: float = 0.2
    """Retransmission timeout of the reliable channel (per drop)."""


@dataclass
class Clip:
    name: str
    fps: Fraction
    crop: Any
    crops: list[np.ndarray]
    landmarks: list[np.ndarray | None]


def prepare(path: Path, frames: int) -> Clip:
    a = analyze(path, size=256, max_frames=frames)
    crops = [img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count)]
    return Clip(path.name, Fraction(a.fps), a.crop, crops, list(a.landmarks))


def simulate(clip: Clip, condition: Condition, mode: str, link: Link, seed: int) -> dict[str, Any]:
    fps = float(clip.fps)
    period = 1.0 / fps
    n = len(clip.crops)
    sender = SenderSession(
        CodecConfig(size=256, intra_codec="hevc"),
        clip.fps,
        crop=clip.crop,
        reset_interval=DEFAULT_RESET_INTERVAL,
        **MODES[mode],
    )
    room = RoomSession("loss")
    room.join("s", "send", now=0.0)
    up = condition.model(seed)
    down: LossModel = (
        loss_model(condition.rate, condition.burst, seed + 1000) if condition.rate else NoLoss()
    )
    events: list[tuple[float, int, str, Any]] = []
    order = itertools.count()

    def push(t: float, kind: str, payload: Any) -> None:
        heapq.heappush(events, (t, next(order), kind, payload))

    def deliver(t: float, channel: str, model: LossModel) -> float | None:
        """Arrival time of a datagram sent at ``t`` (``None``: lost)."""
        if channel == "unreliable":
            return None if model.drop(t) else t + link.one_way_s
        delay = link.one_way_s
        while model.drop(t + delay):
            delay += link.rto_s
        return t + delay

    shown: dict[int, tuple[float, bool]] = {}
    dropped = 0

    def show(frames: list[Any], t: float) -> None:
        for f in frames:
            if f.index not in shown:
                shown[f.index] = (t + link.decode_s, f.concealed)
        for _, d in room.datagrams_to_send():
            arrival = deliver(t + link.decode_s, d.channel, down)
            if arrival is not None:
                push(arrival, "feedback", d.payload)

    for i in range(n):
        push(i * period, "frame", i)
    end = n * period + 1.0
    for k in range(int(end / TICK_S) + 1):
        push(k * TICK_S, "tick", None)
    while events:
        t, _, kind, payload = heapq.heappop(events)
        if kind == "frame":
            for d in sender.push_frame(clip.crops[payload], clip.landmarks[payload], t):
                arrival = deliver(t, d.channel, up)
                if arrival is None:
                    dropped += 1
                else:
                    push(arrival, "datagram", d)
        elif kind == "datagram":
            show(room.receive_datagram("s", payload.channel, payload.payload, t), t)
        elif kind == "tick":
            show(room.tick(t), t)
        else:
            sender.receive_feedback(payload, t)
    stats = room.participants["s"].decoder.stats
    fresh = [i for i, (_, concealed) in shown.items() if not concealed]
    latency = [1000 * (shown[i][0] - i * period) for i in fresh]
    recoveries_ms = [1000 * r * period for r in stats.recoveries]
    row: dict[str, Any] = {
        "condition": condition.name,
        "mode": mode,
        "frames": n,
        "dropped": dropped,
        "fresh": len(fresh),
        "fresh_share": len(fresh) / n,
        "recovered": stats.recovered,
        "concealed": stats.concealed,
        "unshown": n - len(shown),
        "episodes": len(stats.recoveries),
        "episode_ms_mean": float(np.mean(recoveries_ms)) if recoveries_ms else None,
        "episode_ms_max": max(recoveries_ms) if recoveries_ms else None,
        "motion_kbps": sender.stats.motion_bits / 1000 / (n * period),
        "uplink_kbps": sender.stats.bits / 1000 / (n * period),
        "redundant": sender.stats.redundant,
        "copies": sender.stats.copies,
        "based": sender.stats.based,
        "resets": sender.stats.resets,
        "refresh_requests": stats.refresh_requests,
        "lost_keyframes": stats.lost_keyframes,
        "undecodable": stats.undecodable,
        "idr_keyframes": sender.stats.idr_keyframes,
        "latency_ms_p50": float(np.percentile(latency, 50)) if latency else None,
        "latency_ms_p95": float(np.percentile(latency, 95)) if latency else None,
    }
    if condition.outage is not None:
        start, duration = condition.outage
        over = start + duration
        after = [shown[i][0] for i in fresh if i * period >= over]
        row["outage_recovery_ms"] = 1000 * (min(after) - over) if after else None
    return row


COLUMNS = [
    ("condition", "loss", ""),
    ("mode", "mode", ""),
    ("fresh_share", "fresh", ".3f"),
    ("recovered", "from copy", "d"),
    ("concealed", "held", "d"),
    ("episodes", "episodes", "d"),
    ("episode_ms_mean", "ep ms avg", ".0f"),
    ("episode_ms_max", "ep ms max", ".0f"),
    ("outage_recovery_ms", "outage rec ms", ".0f"),
    ("motion_kbps", "motion kb/s", ".2f"),
    ("uplink_kbps", "uplink kb/s", ".2f"),
    ("refresh_requests", "refresh", "d"),
    ("latency_ms_p50", "lat p50", ".0f"),
    ("latency_ms_p95", "lat p95", ".0f"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, help="clip (default: the d6 dev clip or carphone)")
    parser.add_argument("--frames", type=int, default=450)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--one-way-ms", type=float, default=1.0, help="one-way delay (ms)")
    parser.add_argument("--decode-ms", type=float, default=15.0, help="server decode time (ms)")
    parser.add_argument("--mode", action="append", choices=list(MODES), help="repeatable")
    parser.add_argument(
        "--condition", action="append", help="names from the list above (repeatable)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    apply_thread_policy()
    clip = prepare(args.input or default_clip(), args.frames)
    link = Link(one_way_s=args.one_way_ms / 1000, decode_s=args.decode_ms / 1000)
    conditions = [c for c in CONDITIONS if not args.condition or c.name in args.condition]
    info = machine()
    rows = []
    t0 = time.monotonic()
    for condition in conditions:
        for mode in args.mode or list(MODES):
            rows.append(simulate(clip, condition, mode, link, args.seed))
            print(f"  {condition.name:24s} {mode:10s} done", flush=True)
    print(
        f"{clip.name}: {len(clip.crops)} frames at {float(clip.fps):.2f} fps, seed {args.seed}, "
        f"one-way {args.one_way_ms:g} ms, decode {args.decode_ms:g} ms "
        f"({time.monotonic() - t0:.0f} s)"
    )
    print_table(rows, COLUMNS)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"machine": info, "clip": clip.name, "link": link.__dict__, "runs": rows}
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
