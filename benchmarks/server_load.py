"""How many senders one ``keyface serve`` decodes and renders in real time on this machine.

    python benchmarks/server_load.py                       # 1, 2, 3, ... senders, 12 s each
    python benchmarks/server_load.py --max-senders 6 --receivers 0 --json results/server/load.json

The clip's face crops (256x256) are analysed and coded once, live-style (``SenderSession``),
then replayed by N aiortc senders at the clip's frame rate, all at once, into rooms of up to
8. With ``--receivers 1`` (the default) one receiver per room subscribes to every sender, so
the server also codes one VP8 stream per sender. The server runs in its own process; the
senders and the receiver run in this one, on the same CPUs (a real deployment would not
share them).

A load is served in real time when, over the second half of the run, every sender's rendered
frames/s stays >= 90 % of the clip's rate, no sender's decode backlog exceeds 5 datagrams and
nothing is shed. Reported per N: the slowest sender's frames/s, the largest backlog, shed
datagrams, the server process's CPU use (% of one core) and the frames/s each receiver shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from _server_common import ServerProcess, default_clip, machine, print_table

from keyface.codec.config import CodecConfig
from keyface.io import probe
from keyface.pipeline import analyze, cropped_frames
from keyface.renderers import DEFAULT_RENDERER
from keyface.server.client import ReceiverClient, SenderClient, fetch_state
from keyface.server.session import Datagram, SenderSession

ROOM_SIZE = 8


def prepare(clip: Path, frames: int) -> tuple[list[list[Datagram]], float]:
    a = analyze(clip, size=256, max_frames=frames)
    crops = (img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count))
    sender = SenderSession(CodecConfig(size=256), Fraction(a.fps), crop=a.crop)
    fps = float(a.fps)
    out = [
        sender.push_frame(img, lm, i / fps)
        for i, (img, lm) in enumerate(zip(crops, a.landmarks, strict=True))
    ]
    return out, fps


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _replay(client: SenderClient, datagrams: list[list[Datagram]], fps: float, t0: float):
    for i, frame in enumerate(datagrams):
        delay = t0 + i / fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for d in frame:
            client.send(d)


async def run_load(
    n: int, datagrams: list[list[Datagram]], fps: float, receivers: int, generator: str
) -> dict[str, Any]:
    server = ServerProcess("--generator", generator)
    rooms = [f"load-{i // ROOM_SIZE}" for i in range(n)]
    senders = [
        SenderClient(server.url, room, server.token(room, f"s{i}", "send"))
        for i, room in enumerate(rooms)
    ]
    viewers: list[ReceiverClient] = []
    samples: list[dict[str, Any]] = []
    try:
        await asyncio.gather(*(s.connect() for s in senders))
        # The IDR first, then the receivers join (one transceiver per sender of their room).
        for s in senders:
            for d in datagrams[0]:
                s.send(d)
        await asyncio.sleep(0.5)
        if receivers:
            for room in sorted(set(rooms)):
                v = ReceiverClient(server.url, room, server.token(room, "viewer", "receive"))
                await v.connect(streams=rooms.count(room))
                viewers.append(v)
        rest = datagrams[1:]
        t0 = time.monotonic() + 0.2
        cpu0 = cpu_seconds(server.proc.pid)
        tasks = [
            asyncio.ensure_future(_replay(s, rest, fps, t0 + i / fps / n))
            for i, s in enumerate(senders)
        ]
        duration = len(rest) / fps
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1.0)
            now = time.monotonic() - t0
            entries = []
            for room in sorted(set(rooms)):
                state = await fetch_state(server.url, room, server.token(room, "m", "receive"))
                entries += [p for p in state["participants"] if p["role"] == "send"]
            samples.append({"t": now, "senders": entries})
        cpu = cpu_seconds(server.proc.pid) - cpu0
        await asyncio.gather(*tasks)
    finally:
        for c in [*senders, *viewers]:
            await c.close()
        server.stop()
    # The second half of the run, with the 2 s rate window inside the stream.
    late = [s for s in samples if duration / 2 <= s["t"] <= duration - 0.5]
    min_fps = min((p["fps"] for s in late for p in s["senders"]), default=0.0)
    max_backlog = max((p["backlog"] for s in late for p in s["senders"]), default=0)
    shed = max((p["shed"] for s in samples for p in s["senders"]), default=0)
    concealed = max((p["concealed"] for s in samples for p in s["senders"]), default=0)
    rx_fps = []
    for v in viewers:
        for frames in v.frames.values():
            times = [f.time for f in frames]
            if len(times) > 1:
                rx_fps.append((len(times) - 1) / (times[-1] - times[0]))
    realtime = min_fps >= 0.9 * fps and max_backlog <= 5 and shed == 0
    return {
        "generator": generator,
        "senders": n,
        "rooms": len(set(rooms)),
        "receivers": len(viewers),
        "duration_s": duration,
        "min_sender_fps": min_fps,
        "max_backlog": max_backlog,
        "shed": shed,
        "max_concealed": concealed,
        "server_cpu_percent": 100 * cpu / duration,
        "receiver_fps_min": min(rx_fps) if rx_fps else None,
        "receiver_fps_mean": float(np.mean(rx_fps)) if rx_fps else None,
        "realtime": realtime,
    }


COLUMNS = [
    ("senders", "senders", "d"),
    ("min_sender_fps", "min fps", ".1f"),
    ("max_backlog", "backlog", "d"),
    ("shed", "shed", "d"),
    ("server_cpu_percent", "server CPU%", ".0f"),
    ("receiver_fps_min", "rx fps min", ".1f"),
    ("realtime", "real time", ""),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path)
    parser.add_argument("--seconds", type=float, default=12.0, help="per load step")
    parser.add_argument("--max-senders", type=int, default=8)
    parser.add_argument("--receivers", type=int, choices=(0, 1), default=1)
    parser.add_argument("--generator", default=DEFAULT_RENDERER, help="keyface serve --generator")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    clip = args.input or default_clip()
    info = machine()
    datagrams, fps = prepare(clip, int(args.seconds * float(probe(clip).fps)) + 1)
    rows = []
    for n in range(1, args.max_senders + 1):
        row = asyncio.run(run_load(n, datagrams, fps, args.receivers, args.generator))
        rows.append(row)
        print(
            f"{n} sender(s): slowest {row['min_sender_fps']:.1f} frames/s, backlog "
            f"{row['max_backlog']}, shed {row['shed']}, real time: {row['realtime']}",
            flush=True,
        )
        if not row["realtime"]:
            break
    served = max((r["senders"] for r in rows if r["realtime"]), default=0)
    print(f"\n{clip.name} at {fps:.2f} fps, 256x256, {info['cpu_count']} CPUs, {args.generator}")
    print_table(rows, COLUMNS)
    print(f"senders served in real time: {served}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "machine": info,
            "clip": clip.name,
            "fps": fps,
            "generator": args.generator,
            "receivers_per_room": args.receivers,
            "max_realtime_senders": served,
        }
        args.json.write_text(json.dumps({**out, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
