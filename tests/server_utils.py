"""Helpers of the transport tests (test_server_transport.py, test_browser.py).

* :func:`encode_clip` codes the carphone face crops (``carphone_analysis``) with a live
  :class:`SenderSession`, ping-ponging over the 40 analysed frames for longer streams; the
  transport tests replay these datagrams in real time (:func:`replay`), so they need no face
  analysis per run.
* :func:`reference_frames` is the lossless decode of the same datagrams through a room: what
  the server renders, before its video coding.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from typing import Any

import numpy as np

from keyface.codec.config import CodecConfig
from keyface.server import Datagram, RoomLimits, RoomSession, SenderSession, make_token
from keyface.server.client import SenderClient
from keyface.server.conference import ServerConfig
from keyface.server.http import RunningServer
from keyface.server.media import STAMP_ROWS

SECRET = b"0123456789abcdef0123456789abcdef"
FPS = 30.0


def test_config(**kw: Any) -> ServerConfig:
    """No load shedding (queue, backlog or CPU share) and no idle timeout while the backlog
    drains: the tests check what arrives, not how fast (a busy CI machine may decode slower
    than real time)."""
    limits = replace(RoomLimits(), idle_timeout_s=600.0, cpu_share=1e9, cpu_burst_s=1e9)
    return ServerConfig(
        secret=SECRET, max_backlog=1_000_000, max_queue=1_000_000, limits=limits, **kw
    )


test_config.__test__ = False  # type: ignore[attr-defined]  # not a test function


async def drained(server: RunningServer, room: str, timeout: float = 120) -> bool:
    """Wait until the room's senders have no datagram left to decode."""

    def idle() -> bool:
        live = server.conference.rooms.get(room)
        return live is None or all(getattr(p, "backlog", 0) == 0 for p in live.peers.values())

    return await wait_until(idle, timeout)


def token(room: str, participant: str, role: str = "send", ttl: float = 600.0) -> str:
    return make_token(SECRET, room, participant, role, ttl, time.time())  # type: ignore[arg-type]


def encode_clip(
    crops: list[np.ndarray],
    landmarks: list[np.ndarray | None],
    n_frames: int,
    *,
    crop=None,
    reset_interval: int = 15,
    intra: str = "hevc",
) -> list[list[Datagram]]:
    """Datagrams of ``n_frames`` frames (ping-pong over the crops), one list per frame."""
    order = list(range(len(crops))) + list(range(len(crops) - 2, 0, -1))
    sender = SenderSession(
        CodecConfig(size=crops[0].shape[0], intra_codec=intra),
        Fraction(30),
        crop=crop,
        reset_interval=reset_interval,
    )
    out = []
    for i in range(n_frames):
        k = order[i % len(order)]
        out.append(sender.push_frame(crops[k], landmarks[k], i / FPS))
    return out


def reference_frames(datagrams: list[list[Datagram]]) -> dict[int, np.ndarray]:
    """Frame index -> the picture a loss-free room renders from ``datagrams``."""
    room = RoomSession("reference")
    room.join("s", "send", 0.0)
    out: dict[int, np.ndarray] = {}
    for i, frame in enumerate(datagrams):
        for d in frame:
            for f in room.receive_datagram("s", d.channel, d.payload, i / FPS):
                assert not f.concealed
                out[f.index] = f.image
    return out


async def replay(
    client: SenderClient,
    datagrams: list[list[Datagram]],
    fps: float = FPS,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Send frame ``i``'s datagrams at ``start + i / fps``; returns the frames sent."""
    start = time.monotonic()
    for i, frame in enumerate(datagrams):
        if stop is not None and stop():
            return i
        delay = start + i / fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for d in frame:
            client.send(d)
    return len(datagrams)


async def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) below the stamp strip (and a margin that block coding smears)."""
    top = STAMP_ROWS + 8
    diff = a[top:].astype(np.float64) - b[top:].astype(np.float64)
    mse = float(np.mean(diff * diff))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)
