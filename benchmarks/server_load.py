"""How many senders one ``keyface serve`` decodes and renders in real time on this machine; a
long soak of a fixed load; and whether an abusive sender in one room slows another room.

    python benchmarks/server_load.py                       # 1, 2, 3, ... senders, 12 s each
    python benchmarks/server_load.py --max-senders 6 --receivers 0 --json results/server/load.json
    python benchmarks/server_load.py --receivers 3         # N senders x 3 receivers per room
    python benchmarks/server_load.py --soak 600 --senders 2 --receivers 2 \\
        --json results/server/soak.json                    # 10 minutes, sampled every 5 s
    python benchmarks/server_load.py --abuse --phase 60 --json results/server/isolation.json
    python benchmarks/server_load.py --relay --senders 50 --room-senders 5 --receivers 4 \
        --seconds 20 --json results/server/relay_load.json   # relay mode: 50 x 200

The clip's face crops (256x256) are analysed and coded once, live-style (``SenderSession``),
then replayed by aiortc senders at the clip's frame rate. A replay longer than the coded clip
loops it: each pass is the same datagrams with their frame indices moved on (the clip starts
with an IDR, so every pass starts with one). The server runs in its own process; the senders
and the receivers run in this one, on the same CPUs (a real deployment would not share them).

**Load** (the default): N = 1, 2, 3, ... senders, all at once, into rooms of up to 8 senders;
``--receivers M`` (default 1) receivers per room subscribe to every sender of their room, so
the server also codes one VP8 stream per sender and receiver. A load is served in real time
when, over the second half of the run, every sender's rendered frames/s stays >= 90 % of the
clip's rate, no sender's decode backlog exceeds 5 datagrams and nothing is shed. Reported per
N: the slowest sender's frames/s, the largest backlog, shed datagrams, the server process's
CPU use (% of one core) and the frames/s each receiver shows.

**Soak** (``--soak SECONDS``): ``--senders N`` (2) and ``--receivers M`` per room for that
long, the server with ``--stamp-frames``; every ``--sample`` seconds (5): the server's RSS
(``/proc/PID/status`` VmRSS), its CPU time, each sender's rendered frames/s, backlog, shed and
concealed frames (``GET /state``), and each receiver's new pictures and their latency.
Latency = the time a receiver has decoded a picture minus the time this script handed that
frame's datagrams to the sender's data channel (the picture's stamped index says which
frame): the data channel, the server's reordering, decoding, rendering, stamping and VP8
coding, RTP and the receiver's VP8 decoding; not the sender's capture and coding (the
datagrams are coded in advance; ``server_stream.py`` measures those).

**Relay** (``--relay``): ``keyface serve --relay``; ``--senders N`` in rooms of
``--room-senders S`` with ``--receivers M`` relay receivers per room, each subscribed to
every sender of its room (N x M subscriptions), for ``--seconds``. The senders and receivers
run in ``--client-procs`` processes (whole rooms each) so that the clients' own aiortc work
does not sit on one core; the receivers count each FRAME datagram's arrival against the
time its sender handed it to the channel (one clock: CLOCK_MONOTONIC); one receiver also
decodes one stream (``RelayReceiverClient``) to show that relayed frames decode. A load is
held in real time when, over the second half of the run, every subscription received at
least 90 % of its sender's frames and the arrival latency p99 stays under 200 ms. Reported:
the server's CPU (cores, and per sender and per subscription), its RSS before the joins,
after them and at the end (MB per sender), the latency percentiles, the receivers' downlink
and the clients' CPU.

**Isolation** (``--abuse``): room A has a legitimate sender and one receiver; room B gets an
authenticated abusive sender whose content is valid but as expensive as the format allows
a datagram to be: a 1024x1024 stream (the largest header the decoder accepts) with an IDR
keyframe (and its HEADER) in every frame, coded once from upscaled crops and replayed at the
clip's rate; its keyframes are ~3 kB, so the size and rate limits let them all through and
only the CPU share (``keyface serve --cpu-share``) stands between it and the worker pool.
Three phases of ``--phase`` seconds: without the abuser, with it, after it left. Reported
per phase: room A's rendered frames/s (server), frames/s shown and latency percentiles
(receiver), the server's CPU, and the abuser's counters; the slowdown of room A is the
abuse phase against the first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from _server_common import ServerProcess, default_clip, machine, print_table, process_cpu_s

from keyface.bitstream import RefreshMode
from keyface.codec.config import CodecConfig
from keyface.io import probe
from keyface.pipeline import analyze, cropped_frames
from keyface.renderers import DEFAULT_RENDERER
from keyface.server.client import (
    ReceivedFrame,
    ReceiverClient,
    RelayReceiverClient,
    SenderClient,
    fetch_state,
)
from keyface.server.datagram import KIND_FRAME, encode_frame_datagram, parse_datagram
from keyface.server.media import STAMP_MODULO
from keyface.server.session import Datagram, SenderSession

ROOM_SIZE = 8
"""Senders per room (the server is started with room for them and the receivers)."""
ABUSE_SIZE = 1024
"""The abuser's stream size: the largest the decoder accepts (``limits.MAX_CODED_PIXELS``)."""


# ------------------------------------------------------------------------ pre-coded streams
@dataclass(frozen=True)
class CodedClip:
    """One sender's datagrams, coded once; :meth:`frame` replays them for ever."""

    frames: list[list[Datagram]]
    fps: float

    def frame(self, i: int) -> list[Datagram]:
        """The datagrams of frame ``i``: pass ``i // len(frames)`` over the clip, its FRAME
        datagrams re-indexed (the HEADER is the same every pass)."""
        loop, k = divmod(i, len(self.frames))
        if loop == 0:
            return self.frames[k]
        offset = loop * len(self.frames)
        return [Datagram(d.channel, reindex(d.payload, offset)) for d in self.frames[k]]


def reindex(payload: bytes, offset: int) -> bytes:
    """A version-1 FRAME datagram moved ``offset`` frames on (the frame index and those of its
    KEYFRAME and MOTION packets, with fresh CRCs); any other datagram unchanged."""
    d = parse_datagram(payload)
    if d.kind != KIND_FRAME:
        return payload
    if d.base_back is not None:  # (copies of earlier frames need a base too)
        raise ValueError("only version-1 frames (coded without acknowledgements) are re-indexed")
    assert d.motion is not None
    packets: list[Any] = []
    if d.keyframe is not None:
        packets.append(replace(d.keyframe, frame_index=d.keyframe.frame_index + offset))
    packets.append(replace(d.motion, first_frame=d.motion.first_frame + offset))
    return encode_frame_datagram(d.frame_index + offset, d.key_back, d.idr, packets)


def prepare(clip: Path, frames: int) -> CodedClip:
    a = analyze(clip, size=256, max_frames=frames)
    crops = (img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count))
    sender = SenderSession(CodecConfig(size=256), Fraction(a.fps), crop=a.crop)
    fps = float(a.fps)
    out = [
        sender.push_frame(img, lm, i / fps)
        for i, (img, lm) in enumerate(zip(crops, a.landmarks, strict=True))
    ]
    return CodedClip(out, fps)


def prepare_abuser(clip: Path, frames: int) -> CodedClip:
    """The abusive sender's stream: ``ABUSE_SIZE`` crops (the clip's, upscaled), every frame a
    forced IDR keyframe (so each one is decoded, enhanced and rendered in full, and a receiver
    that dropped one needs nothing older)."""
    a = analyze(clip, size=ABUSE_SIZE, max_frames=frames)
    crops = (img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count))
    config = CodecConfig(size=ABUSE_SIZE, refresh_mode=RefreshMode.FIXED, refresh_threshold=1)
    sender = SenderSession(config, Fraction(a.fps), crop=a.crop)
    fps = float(a.fps)
    out = []
    for i, (img, lm) in enumerate(zip(crops, a.landmarks, strict=True)):
        sender.force_keyframe()
        out.append(sender.push_frame(img, lm, i / fps))
    return CodedClip(out, fps)


async def _replay(
    client: SenderClient,
    clip: CodedClip,
    t0: float,
    start: int = 0,
    stop: int | None = None,
    sent: dict[int, float] | None = None,
) -> None:
    """Frames ``start .. stop - 1`` (``None``: until cancelled) at the clip's rate from ``t0``;
    ``sent``: stamp (frame index mod ``STAMP_MODULO``) -> when it was handed to the channel."""
    i = start
    while stop is None or i < stop:
        delay = t0 + (i - start) / clip.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for d in clip.frame(i):
            client.send(d)
        if sent is not None:
            sent[i % STAMP_MODULO] = time.monotonic()
        i += 1


# --------------------------------------------------------------------------- measurement
def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (``VmRSS``), MB; ``None`` where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Watch:
    """What one receiver shows of one sender: each new picture (a stamp other than the
    previous picture's) and its latency against ``sent``. :meth:`take` returns what came
    since the last call, so a soak's samples and stamps that wrap stay apart."""

    def __init__(self, receiver: ReceiverClient, sender: str, sent: dict[int, float]) -> None:
        self.receiver, self.sender, self.sent = receiver, sender, sent
        self._pos = 0
        self._last: int | None = None

    def take(self) -> tuple[int, list[float]]:
        """(new pictures, their latencies in ms) since the last call."""
        frames: list[ReceivedFrame] = self.receiver.frames.get(self.sender, [])
        new, latencies = 0, []
        for f in frames[self._pos :]:
            if f.stamp is None or f.stamp == self._last:
                continue
            self._last = f.stamp
            new += 1
            sent = self.sent.get(f.stamp)
            if sent is not None and f.time >= sent:
                latencies.append(1000 * (f.time - sent))
        self._pos = len(frames)
        return new, latencies


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": round(float(p50), 1), "p90": round(float(p90), 1), "p99": round(float(p99), 1)}


async def _senders_state(server: ServerProcess, rooms: list[str]) -> list[dict[str, Any]]:
    entries = []
    for room in sorted(set(rooms)):
        state = await fetch_state(server.url, room, server.token(room, "m", "receive"))
        entries += [p for p in state["participants"] if p["role"] == "send"]
    return entries


def _start_server(*args: str) -> ServerProcess:
    """``keyface serve`` with its stderr read by a thread (a full pipe would block the server's
    logging in a long run); the last lines are kept in ``server.log_tail``."""
    server = ServerProcess(*args)
    tail: deque[str] = deque(maxlen=40)
    server.log_tail = tail  # type: ignore[attr-defined]
    stream = server.proc.stderr
    assert stream is not None
    threading.Thread(target=lambda: tail.extend(stream), daemon=True).start()
    return server


def _serve_args(generator: str, receivers: int, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return ("--generator", generator, "--max-participants", str(ROOM_SIZE + receivers), *extra)


async def _join(
    server: ServerProcess, clip: CodedClip, rooms: list[str], names: list[str], receivers: int
) -> tuple[list[SenderClient], list[ReceiverClient]]:
    """Senders join and send frame 0 (the IDR), then ``receivers`` per room join (one
    transceiver per sender of their room)."""
    senders = [
        SenderClient(server.url, room, server.token(room, name, "send"))
        for room, name in zip(rooms, names, strict=True)
    ]
    await asyncio.gather(*(s.connect() for s in senders))
    for s in senders:
        for d in clip.frame(0):
            s.send(d)
    await asyncio.sleep(0.5)
    viewers = []
    for room in sorted(set(rooms)):
        for j in range(receivers):
            v = ReceiverClient(server.url, room, server.token(room, f"viewer{j}", "receive"))
            await v.connect(streams=rooms.count(room))
            viewers.append(v)
    return senders, viewers


# ---------------------------------------------------------------------------------- load
async def run_load(n: int, clip: CodedClip, receivers: int, generator: str) -> dict[str, Any]:
    server = _start_server(*_serve_args(generator, receivers))
    rooms = [f"load-{i // ROOM_SIZE}" for i in range(n)]
    senders: list[SenderClient] = []
    viewers: list[ReceiverClient] = []
    samples: list[dict[str, Any]] = []
    try:
        senders, viewers = await _join(server, clip, rooms, [f"s{i}" for i in range(n)], receivers)
        t0 = time.monotonic() + 0.2
        cpu0 = process_cpu_s(server.proc.pid) or 0.0
        stop = len(clip.frames)
        tasks = [
            asyncio.ensure_future(_replay(s, clip, t0 + i / clip.fps / n, 1, stop))
            for i, s in enumerate(senders)
        ]
        duration = (stop - 1) / clip.fps
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1.0)
            entries = await _senders_state(server, rooms)
            samples.append({"t": time.monotonic() - t0, "senders": entries})
        cpu = (process_cpu_s(server.proc.pid) or 0.0) - cpu0
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
    realtime = min_fps >= 0.9 * clip.fps and max_backlog <= 5 and shed == 0
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


LOAD_COLUMNS = [
    ("senders", "senders", "d"),
    ("receivers", "receivers", "d"),
    ("min_sender_fps", "min fps", ".1f"),
    ("max_backlog", "backlog", "d"),
    ("shed", "shed", "d"),
    ("server_cpu_percent", "server CPU%", ".0f"),
    ("receiver_fps_min", "rx fps min", ".1f"),
    ("realtime", "real time", ""),
]


# --------------------------------------------------------------------------------- relay
@dataclass(frozen=True)
class RelayRoomPlan:
    """One room of a relay load: its senders' and receivers' names and tokens."""

    room: str
    senders: tuple[tuple[str, str], ...]
    receivers: tuple[tuple[str, str], ...]


async def _connect_all(clients: list[Any], batch: int = 8) -> None:
    for i in range(0, len(clients), batch):
        await asyncio.gather(*(c.connect() for c in clients[i : i + batch]))


async def _relay_clients(
    conn: Any, url: str, clip: CodedClip, plans: list[RelayRoomPlan], frames: int
) -> dict[str, Any]:
    """One client process: its rooms' senders and receivers (see :func:`run_relay_load`)."""
    senders = {
        name: SenderClient(url, plan.room, tok) for plan in plans for name, tok in plan.senders
    }
    await _connect_all(list(senders.values()))
    for s in senders.values():
        for d in clip.frame(0):  # the HEADER and the IDR: receivers join after it
            s.send(d)
    await asyncio.sleep(0.5)
    receivers: list[tuple[RelayRoomPlan, str, RelayReceiverClient]] = []
    for plan in plans:
        for name, tok in plan.receivers:
            client = RelayReceiverClient(url, plan.room, tok, decode=False)
            receivers.append((plan, name, client))
    await _connect_all([c for _, _, c in receivers])
    loop = asyncio.get_running_loop()
    conn.send("ready")
    t0 = await loop.run_in_executor(None, conn.recv)
    cpu0 = time.process_time()
    sent: dict[str, dict[int, float]] = {name: {} for name in senders}
    n = len(senders)
    tasks = [
        asyncio.ensure_future(_replay(s, clip, t0 + k / clip.fps / n, 1, frames, sent[name]))
        for k, (name, s) in enumerate(senders.items())
    ]
    await asyncio.gather(*tasks)
    await asyncio.sleep(1.0)  # the last datagrams arrive
    cpu = time.process_time() - cpu0
    half = frames // 2
    subscriptions, latencies, downlink = [], [], []
    for plan, rname, client in receivers:
        downlink.append(client.downlink_kbps())
        for sname, _ in plan.senders:
            stream = client.by_participant(sname)
            arrivals = stream.arrivals if stream is not None else []
            seen = {i for _, i in arrivals if half <= i < frames}
            for t, i in arrivals:
                if i >= 1 and i in sent[sname]:
                    latencies.append(round(1000 * (t - sent[sname][i]), 2))
            subscriptions.append(
                {"receiver": rname, "sender": sname, "second_half": len(seen) / (frames - half)}
            )
    for c in [*senders.values(), *(c for _, _, c in receivers)]:
        await c.close()
    return {
        "subscriptions": subscriptions,
        "latencies_ms": latencies,
        "downlink_kbps": downlink,
        "client_cpu_s": cpu,
    }


def _relay_worker(
    conn: Any, url: str, clip: CodedClip, plans: list[RelayRoomPlan], frames: int
) -> None:
    try:
        conn.send(asyncio.run(_relay_clients(conn, url, clip, plans, frames)))
    except Exception as exc:  # reported to the parent, which fails the run
        conn.send({"error": repr(exc)})


async def _relay_decoder(conn: Any, url: str, room: str, tok: str, sender: str) -> dict[str, Any]:
    """A receiver that decodes one relayed stream (its own process): relayed frames decode."""
    client = RelayReceiverClient(url, room, tok, decode_only=frozenset({sender}))
    await client.connect()
    loop = asyncio.get_running_loop()
    conn.send("ready")
    end = await loop.run_in_executor(None, conn.recv)
    cpu0 = time.process_time()
    await asyncio.sleep(max(0.0, end - time.monotonic()) + 1.0)
    stream = client.by_participant(sender)
    assert stream is not None and stream.decoder is not None
    st = stream.decoder.stats
    out = {
        "stream": f"{room}/{sender}",
        "frames_arrived": len(stream.arrivals),
        "decoded": st.decoded,
        "concealed": st.concealed,
        "lost": st.lost,
        "refresh_requests": st.refresh_requests,
        "cpu_s": round(time.process_time() - cpu0, 3),
    }
    await client.close()
    return out


def _relay_decoder_worker(conn: Any, url: str, room: str, tok: str, sender: str) -> None:
    try:
        conn.send(asyncio.run(_relay_decoder(conn, url, room, tok, sender)))
    except Exception as exc:
        conn.send({"error": repr(exc)})


async def _relay_state(server: ServerProcess, rooms: list[str]) -> list[dict[str, Any]]:
    entries = []
    for room in rooms:
        state = await fetch_state(server.url, room, server.token(room, "m", "receive"))
        entries += state["participants"]
    return entries


def run_relay_load(
    clip: CodedClip,
    n: int,
    room_senders: int,
    receivers: int,
    procs: int,
    frames: int,
    decode: bool = True,
) -> dict[str, Any]:
    """``n`` senders in rooms of ``room_senders``, ``receivers`` relay receivers per room,
    all subscribed to every sender of their room, for ``frames`` frames; ``decode``: one
    more receiver (its own process) decodes the first sender's stream."""
    rooms = [f"relay-{r}" for r in range((n + room_senders - 1) // room_senders)]
    server = _start_server(
        "--relay",
        "--max-participants",
        str(room_senders + receivers + 1),
        "--max-rooms",
        str(max(64, len(rooms))),
    )
    pid = server.proc.pid
    plans = []
    for r, room in enumerate(rooms):
        names = [f"s{i}" for i in range(r * room_senders, min(n, (r + 1) * room_senders))]
        plans.append(
            RelayRoomPlan(
                room,
                tuple((s, server.token(room, s, "send")) for s in names),
                tuple(
                    (f"v{r}-{j}", server.token(room, f"v{r}-{j}", "receive"))
                    for j in range(receivers)
                ),
            )
        )
    ctx = multiprocessing.get_context("spawn")
    workers, pipes = [], []
    rss_idle = rss_mb(pid)
    try:
        for k in range(procs):
            parent, child = ctx.Pipe()
            mine = plans[k::procs]
            p = ctx.Process(target=_relay_worker, args=(child, server.url, clip, mine, frames))
            p.start()
            workers.append(p)
            pipes.append(parent)
        if decode:  # one more receiver, in a process of its own, decodes one stream
            parent, child = ctx.Pipe()
            room0, sender0 = plans[0].room, plans[0].senders[0][0]
            tok = server.token(room0, "decoder", "receive")
            p = ctx.Process(
                target=_relay_decoder_worker, args=(child, server.url, room0, tok, sender0)
            )
            p.start()
            workers.append(p)
            pipes.append(parent)
        for parent, p in zip(pipes, workers, strict=True):
            end = time.monotonic() + 300
            while not parent.poll(1.0):
                if not p.is_alive() or time.monotonic() > end:
                    raise RuntimeError("a client process did not get ready")
            ready = parent.recv()
            if ready != "ready":
                raise RuntimeError(f"client process: {ready}")
        rss_joined = rss_mb(pid)
        cpu0 = process_cpu_s(pid) or 0.0
        t0 = time.monotonic() + 0.5
        duration = (frames - 1) / clip.fps
        for k, parent in enumerate(pipes):
            parent.send(t0 if k < procs else t0 + duration)
        samples = []
        state: list[dict[str, Any]] = []
        while time.monotonic() < t0 + duration:
            time.sleep(1.0)
            samples.append(
                {
                    "t": round(time.monotonic() - t0, 2),
                    "cpu_s": process_cpu_s(pid),
                    "rss_mb": rss_mb(pid),
                }
            )
            if not state and time.monotonic() > t0 + duration - 2.5:
                state = asyncio.run(_relay_state(server, rooms))
        cpu = (process_cpu_s(pid) or 0.0) - cpu0
        rss_end = rss_mb(pid)
        results = []
        for parent in pipes:
            if not parent.poll(120):
                raise RuntimeError("a client process did not report")
            results.append(parent.recv())
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"client processes failed: {errors}")
        decoded = results[procs] if decode else None
        results = results[:procs]
    finally:
        for p in workers:
            p.join(30)
            if p.is_alive():
                p.kill()
        server.stop()
    subs = [s for r in results for s in r["subscriptions"]]
    lat = [x for r in results for x in r["latencies_ms"]]
    down = [x for r in results for x in r["downlink_kbps"]]
    worst = min((s["second_half"] for s in subs), default=0.0)
    pct = percentiles(lat)
    senders_state = [p for p in state if p["role"] == "send"]
    receivers_state = [p for p in state if p["role"] == "receive"]
    realtime = worst >= 0.9 and pct["p99"] is not None and pct["p99"] <= 200
    cores = cpu / duration
    return {
        "mode": "relay",
        "senders": n,
        "rooms": len(rooms),
        "receivers": receivers * len(rooms),
        "subscriptions": len(subs),
        "duration_s": round(duration, 2),
        "client_processes": procs,
        "server_cpu_cores": round(cores, 3),
        "server_cpu_ms_per_sender_second": round(1000 * cores / n, 2),
        "server_cpu_ms_per_subscription_second": round(1000 * cores / max(len(subs), 1), 2),
        "server_cpu_ms_per_sent_frame": round(1000 * cpu / (n * (frames - 1)), 3),
        "server_rss_mb": {"idle": rss_idle, "joined": rss_joined, "end": rss_end},
        "server_rss_mb_per_sender": round(((rss_end or 0) - (rss_idle or 0)) / n, 2),
        "worst_subscription_second_half": round(worst, 4),
        "latency_ms": pct,
        "latency_ms_max": max(lat) if lat else None,
        "downlink_kbps_per_receiver": {
            "mean": round(float(np.mean(down)), 2) if down else None,
            "min": round(min(down), 2) if down else None,
            "max": round(max(down), 2) if down else None,
        },
        "client_cpu_cores": [round(r["client_cpu_s"] / duration, 3) for r in results],
        "decoding_receiver": decoded,
        "server_shed": sum(p.get("shed", 0) for p in receivers_state),
        "server_rate_limited": sum(p.get("rate_limited", 0) for p in senders_state),
        "server_refresh_requests": sum(p.get("refresh_requests", 0) for p in senders_state),
        "server_late_joins_served": sum(p.get("late_joins_served", 0) for p in senders_state),
        "samples": samples,
        "realtime": realtime,
    }


# ---------------------------------------------------------------------------------- soak
async def run_soak(
    clip: CodedClip, n: int, receivers: int, seconds: float, sample_s: float, generator: str
) -> dict[str, Any]:
    server = _start_server(*_serve_args(generator, receivers, ("--stamp-frames",)))
    pid = server.proc.pid
    rooms = [f"soak-{i // ROOM_SIZE}" for i in range(n)]
    names = [f"s{i}" for i in range(n)]
    sent: dict[str, dict[int, float]] = {name: {} for name in names}
    senders: list[SenderClient] = []
    viewers: list[ReceiverClient] = []
    tasks: list[asyncio.Future[None]] = []
    samples: list[dict[str, Any]] = []
    latencies: list[float] = []
    rss_before = rss_mb(pid)
    try:
        senders, viewers = await _join(server, clip, rooms, names, receivers)
        watches = [
            Watch(v, name, sent[name])
            for v in viewers
            for room, name in zip(rooms, names, strict=True)
            if v.room == room
        ]
        t0 = time.monotonic() + 0.2
        tasks = [
            asyncio.ensure_future(_replay(s, clip, t0 + i / clip.fps / n, 1, None, sent[name]))
            for i, (s, name) in enumerate(zip(senders, names, strict=True))
        ]
        cpu_prev, t_prev = process_cpu_s(pid) or 0.0, time.monotonic()
        cpu_start, t_start = cpu_prev, t_prev
        frames_start = sum(p["frames"] for p in await _senders_state(server, rooms))
        k = 1
        while k * sample_s <= seconds + 1e-9:
            await asyncio.sleep(max(0.0, t0 + k * sample_s - time.monotonic()))
            k += 1
            for task in tasks:
                if task.done():
                    task.result()  # a sender's replay failed: say why
            now, cpu = time.monotonic(), process_cpu_s(pid) or 0.0
            entries = await _senders_state(server, rooms)
            taken = [w.take() for w in watches]
            window = [x for _, lat in taken for x in lat]
            latencies += window
            dt = now - t_prev
            samples.append(
                {
                    "t": round(now - t0, 2),
                    "rss_mb": rss_mb(pid),
                    "cpu_cores": round((cpu - cpu_prev) / dt, 3),
                    "senders": [
                        {
                            key: p[key]
                            for key in ("name", "fps", "frames", "backlog", "shed", "concealed")
                        }
                        for p in entries
                    ],
                    "receiver_fps": [round(new / dt, 2) for new, _ in taken],
                    "latency_ms": percentiles(window),
                }
            )
            cpu_prev, t_prev = cpu, now
            last = samples[-1]
            print(
                f"t={last['t']:6.0f} s  RSS {last['rss_mb']:.0f} MB  CPU {last['cpu_cores']:.2f}"
                f"  fps {min(p['fps'] for p in entries):.1f}"
                f"  rx {min(last['receiver_fps'], default=0):.1f}"
                f"  latency p50 {last['latency_ms']['p50']} ms",
                flush=True,
            )
        cpu_total, wall = (process_cpu_s(pid) or 0.0) - cpu_start, time.monotonic() - t_start
        final = await _senders_state(server, rooms)
    finally:
        for t in tasks:
            t.cancel()
        for c in [*senders, *viewers]:
            await c.close()
        server.stop()
    rendered = sum(p["frames"] for p in final) - frames_start
    rss = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    t = np.array([s["t"] for s in samples if s["rss_mb"] is not None])
    half = t >= t[-1] / 2
    sender_fps = [p["fps"] for s in samples for p in s["senders"]]
    rx_fps = [x for s in samples for x in s["receiver_fps"]]
    return {
        "generator": generator,
        "senders": n,
        "rooms": len(set(rooms)),
        "receivers_per_room": receivers,
        "receivers": len(viewers),
        "seconds": round(wall, 1),
        "sample_s": sample_s,
        "rss_mb": {
            "before_streams": rss_before,
            "start": rss[0],
            "max": max(rss),
            "end": rss[-1],
            "growth_mb_per_min": round(float(np.polyfit(t, rss, 1)[0]) * 60, 3),
            "growth_mb_per_min_second_half": round(
                float(np.polyfit(t[half], np.array(rss)[half], 1)[0]) * 60, 3
            ),
        },
        "server_cpu_cores": round(cpu_total / wall, 3),
        "cpu_cores_per_stream": round(cpu_total / wall / n, 3),
        "cpu_ms_per_frame": round(1000 * cpu_total / max(rendered, 1), 2),
        "frames_rendered": rendered,
        "sender_fps": {
            "mean": round(float(np.mean(sender_fps)), 2),
            "min": min(sender_fps),
        },
        "receiver_fps": {"mean": round(float(np.mean(rx_fps)), 2), "min": min(rx_fps)}
        if rx_fps
        else None,
        "latency_ms": percentiles(latencies),
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "latencies": len(latencies),
        "shed": sum(p["shed"] for p in final),
        "concealed": sum(p["concealed"] for p in final),
        "max_backlog": max((p["backlog"] for s in samples for p in s["senders"]), default=0),
        "samples": samples,
    }


# ----------------------------------------------------------------------------- isolation
PHASES = ("without", "abuse", "after")


async def run_isolation(
    clip: CodedClip, abuser: CodedClip, phase_s: float, generator: str, extra: tuple[str, ...]
) -> dict[str, Any]:
    server = _start_server(*_serve_args(generator, 1, ("--stamp-frames", *extra)))
    pid = server.proc.pid
    sent: dict[int, float] = {}
    clients: list[SenderClient | ReceiverClient] = []
    tasks: list[asyncio.Future[None]] = []
    phases: dict[str, dict[str, Any]] = {}
    try:
        (alice,), (viewer,) = await _join(server, clip, ["iso-a"], ["alice"], 1)
        clients += [alice, viewer]
        watch = Watch(viewer, "alice", sent)
        t0 = time.monotonic() + 0.2
        tasks.append(asyncio.ensure_future(_replay(alice, clip, t0, 1, None, sent)))
        await asyncio.sleep(5.0)  # warm up (the receiver's first pictures, the VP8 encoder)
        mallory = SenderClient(server.url, "iso-b", server.token("iso-b", "mallory", "send"))
        for phase in PHASES:
            if phase == "abuse":
                await mallory.connect()
                clients.append(mallory)
                tasks.append(
                    asyncio.ensure_future(_replay(mallory, abuser, time.monotonic(), 0, None))
                )
            elif phase == "after":
                tasks[-1].cancel()
                await mallory.close()
                await asyncio.sleep(1.0)  # the server notices the closed channel
            phases[phase] = await _phase(server, pid, watch, phase_s, tasks[0])
            print(f"{phase}: {_phase_line(phases[phase])}", flush=True)
    finally:
        for t in tasks:
            t.cancel()
        for c in clients:
            await c.close()
        server.stop()
    base, abuse = phases["without"], phases["abuse"]
    slowdown = {
        "sender_fps_percent": _drop(base["alice"]["fps_mean"], abuse["alice"]["fps_mean"]),
        "receiver_fps_percent": _drop(base["receiver_fps"], abuse["receiver_fps"]),
        "latency_p50_percent": _rise(base["latency_ms"]["p50"], abuse["latency_ms"]["p50"]),
        "latency_p90_percent": _rise(base["latency_ms"]["p90"], abuse["latency_ms"]["p90"]),
    }
    return {
        "generator": generator,
        "serve_args": list(extra),
        "phase_s": phase_s,
        "abuser": {"size": ABUSE_SIZE, "frames": len(abuser.frames), "every_frame": "IDR"},
        "phases": phases,
        "slowdown": slowdown,
    }


def _drop(before: float, after: float) -> float:
    return round(100 * (1 - after / before), 1) if before else 0.0


def _rise(before: float | None, after: float | None) -> float | None:
    return round(100 * (after / before - 1), 1) if before and after is not None else None


async def _phase(
    server: ServerProcess, pid: int, watch: Watch, seconds: float, replay: asyncio.Future[None]
) -> dict[str, Any]:
    """Room A (and room B, when the abuser is in it) sampled every second for ``seconds``;
    ``replay``: room A's sender (its error, if it stops, is raised here)."""
    watch.take()  # start afresh
    cpu0, t0 = process_cpu_s(pid) or 0.0, time.monotonic()
    a0 = (await fetch_state(server.url, "iso-a", server.token("iso-a", "m", "receive")))[
        "participants"
    ]
    first = {p["name"]: p for p in a0}
    fps: list[float] = []
    shown, latencies = 0, []
    rss: list[float] = []
    b: dict[str, Any] = {}
    a: dict[str, Any] = {}
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(1.0)
        if replay.done():
            replay.result()
        found = next(
            (p for p in await _senders_state(server, ["iso-a"]) if p["name"] == "alice"), None
        )
        if found is None:
            log = "".join(getattr(server, "log_tail", []))
            raise RuntimeError(f"the legitimate sender is no longer in room A; server log:\n{log}")
        a = found
        fps.append(a["fps"])
        b = next(iter(await _senders_state(server, ["iso-b"])), b)
        new, lat = watch.take()
        shown += new
        latencies += lat
        rss.append(rss_mb(pid) or 0.0)
    wall = time.monotonic() - t0
    cpu = (process_cpu_s(pid) or 0.0) - cpu0
    a_first = first["alice"]
    abuser = {
        k: b.get(k)
        for k in (
            "frames",
            "decoded",
            "concealed",
            "cpu_limited",
            "shed",
            "rate_limited",
            "backlog",
            "refresh_requests",
        )
    }
    return {
        "seconds": round(wall, 1),
        "alice": {
            "fps_mean": round(float(np.mean(fps)), 2),
            "fps_min": min(fps),
            "frames": a["frames"] - a_first["frames"],
            "shed": a["shed"] - a_first["shed"],
            "concealed": a["concealed"] - a_first["concealed"],
            "max_backlog_seen": a["backlog"],
        },
        "receiver_fps": round(shown / wall, 2),
        "latency_ms": percentiles(latencies),
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "server_cpu_cores": round(cpu / wall, 3),
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "abuser": abuser if b else None,
    }


def _phase_line(p: dict[str, Any]) -> str:
    lat = p["latency_ms"]
    line = (
        f"room A sender {p['alice']['fps_mean']:.1f} frames/s (min {p['alice']['fps_min']}), "
        f"receiver {p['receiver_fps']:.1f} frames/s, latency {lat['p50']} / {lat['p90']} / "
        f"{lat['p99']} ms, server CPU {p['server_cpu_cores']:.2f}"
    )
    if p["abuser"]:
        ab = p["abuser"]
        line += (
            f"; abuser: {ab['decoded']} decoded, cpu_limited {ab['cpu_limited']}, shed "
            f"{ab['shed']}, backlog {ab['backlog']}"
        )
    return line


# ---------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path)
    parser.add_argument("--seconds", type=float, default=12.0, help="per load step")
    parser.add_argument("--max-senders", type=int, default=8)
    parser.add_argument(
        "--receivers", type=int, default=1, help="receivers per room (default 1; 0: none)"
    )
    parser.add_argument("--generator", default=DEFAULT_RENDERER, help="keyface serve --generator")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="soak for this long")
    parser.add_argument("--senders", type=int, default=2, help="senders of the soak (2)")
    parser.add_argument("--sample", type=float, default=5.0, help="soak sample interval (5 s)")
    parser.add_argument("--abuse", action="store_true", help="the cross-room isolation run")
    parser.add_argument("--phase", type=float, default=60.0, help="isolation phase length (60 s)")
    parser.add_argument(
        "--abuse-frames", type=int, default=15, help="frames of the abuser's stream, looped (15)"
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="extra keyface serve argument for --abuse (repeatable: --serve-arg=--cpu-share "
        "--serve-arg=1)",
    )
    parser.add_argument("--relay", action="store_true", help="relay mode: --senders x --receivers")
    parser.add_argument(
        "--room-senders", type=int, default=5, help="--relay: senders per room (default 5)"
    )
    parser.add_argument(
        "--client-procs", type=int, default=2, help="--relay: client processes (default 2)"
    )
    parser.add_argument(
        "--no-decode", action="store_true", help="--relay: no extra receiver that decodes"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.receivers < 0:
        parser.error("--receivers must be >= 0")
    clip = args.input or default_clip()
    info = machine()
    fps = float(probe(clip).fps)
    out: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": info,
        "clip": clip.name,
        "fps": fps,
    }
    if args.relay:
        frames = int(args.seconds * fps) + 1
        coded = prepare(clip, frames)
        result = run_relay_load(
            coded,
            args.senders,
            args.room_senders,
            args.receivers,
            args.client_procs,
            frames,
            decode=not args.no_decode,
        )
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
        print(
            f"\nrelay: {result['senders']} senders x {result['receivers']} receivers "
            f"({result['subscriptions']} subscriptions), {info['cpu_count']} CPUs: server "
            f"{result['server_cpu_cores']:.2f} cores ({result['server_cpu_ms_per_sender_second']}"
            f" ms/s per sender), RSS {result['server_rss_mb']}, latency {result['latency_ms']}, "
            f"worst subscription {100 * result['worst_subscription_second_half']:.1f} % of "
            f"frames; real time: {result['realtime']}"
        )
        out.update(result)
    elif args.abuse:
        coded = prepare(clip, int(10 * fps))
        abuser = prepare_abuser(clip, args.abuse_frames)
        result = asyncio.run(
            run_isolation(coded, abuser, args.phase, args.generator, tuple(args.serve_arg))
        )
        rows = [{"phase": name, **_flat(p)} for name, p in result["phases"].items()]
        print(f"\n{clip.name} at {fps:.2f} fps, {info['cpu_count']} CPUs, {args.generator}")
        print_table(rows, ISOLATION_COLUMNS)
        s = result["slowdown"]
        print(
            f"room A under abuse: sender frames/s {-s['sender_fps_percent']:+.1f} %, receiver "
            f"frames/s {-s['receiver_fps_percent']:+.1f} %, latency p50 "
            f"{s['latency_p50_percent']:+.1f} %, p90 {s['latency_p90_percent']:+.1f} % "
            "(goal: slowdown <= 10 %)"
        )
        out.update(result)
    elif args.soak:
        coded = prepare(clip, int(10 * fps))
        result = asyncio.run(
            run_soak(coded, args.senders, args.receivers, args.soak, args.sample, args.generator)
        )
        m = result["rss_mb"]
        print(
            f"\n{clip.name}: {args.senders} senders x {args.receivers} receivers per room for "
            f"{result['seconds']:.0f} s, {info['cpu_count']} CPUs, {args.generator}\n"
            f"server RSS {m['start']:.0f} MB at the first sample, max {m['max']:.0f}, end "
            f"{m['end']:.0f} ({m['growth_mb_per_min']:+.2f} MB/min; second half "
            f"{m['growth_mb_per_min_second_half']:+.2f})\n"
            f"server CPU {result['server_cpu_cores']:.2f} cores, "
            f"{result['cpu_cores_per_stream']:.3f} per sender stream, "
            f"{result['cpu_ms_per_frame']:.1f} ms per rendered frame\n"
            f"sender frames/s mean {result['sender_fps']['mean']} min "
            f"{result['sender_fps']['min']}; receiver frames/s {result['receiver_fps']}\n"
            f"latency p50 / p90 / p99 {result['latency_ms']} (max {result['latency_ms_max']} ms,"
            f" {result['latencies']} pictures); shed {result['shed']}, concealed "
            f"{result['concealed']}, max backlog {result['max_backlog']}"
        )
        out.update(result)
    else:
        coded = prepare(clip, int(args.seconds * fps) + 1)
        rows = []
        for n in range(1, args.max_senders + 1):
            row = asyncio.run(run_load(n, coded, args.receivers, args.generator))
            rows.append(row)
            print(
                f"{n} sender(s): slowest {row['min_sender_fps']:.1f} frames/s, backlog "
                f"{row['max_backlog']}, shed {row['shed']}, real time: {row['realtime']}",
                flush=True,
            )
            if not row["realtime"]:
                break
        served = max((r["senders"] for r in rows if r["realtime"]), default=0)
        cpus = info["cpu_count"]
        print(f"\n{clip.name} at {fps:.2f} fps, 256x256, {cpus} CPUs, {args.generator}")
        print_table(rows, LOAD_COLUMNS)
        print(f"senders served in real time: {served}")
        out.update(
            generator=args.generator,
            receivers_per_room=args.receivers,
            max_realtime_senders=served,
            runs=rows,
        )
    out["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


ISOLATION_COLUMNS = [
    ("phase", "phase", ""),
    ("a_fps", "A fps", ".1f"),
    ("a_fps_min", "A fps min", ".1f"),
    ("rx_fps", "rx fps", ".1f"),
    ("p50", "lat p50", ".0f"),
    ("p90", "lat p90", ".0f"),
    ("p99", "lat p99", ".0f"),
    ("a_shed", "A shed", "d"),
    ("cpu", "srv cores", ".2f"),
    ("b_decoded", "B decoded", "d"),
    ("b_cpu_limited", "B cpu_lim", "d"),
    ("b_shed", "B shed", "d"),
]


def _flat(p: dict[str, Any]) -> dict[str, Any]:
    ab = p["abuser"] or {}
    return {
        "a_fps": p["alice"]["fps_mean"],
        "a_fps_min": p["alice"]["fps_min"],
        "rx_fps": p["receiver_fps"],
        "p50": p["latency_ms"]["p50"],
        "p90": p["latency_ms"]["p90"],
        "p99": p["latency_ms"]["p99"],
        "a_shed": p["alice"]["shed"],
        "cpu": p["server_cpu_cores"],
        "b_decoded": ab.get("decoded"),
        "b_cpu_limited": ab.get("cpu_limited"),
        "b_shed": ab.get("shed"),
    }


if __name__ == "__main__":
    main()
