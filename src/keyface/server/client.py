"""Clients of the conference server in Python (aiortc): signalling, a sender's transport and a
receiver that collects the video it is sent (tests, benchmarks, ``keyface send``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from keyface.server.conference import (
    LABEL_AVATAR,
    LABEL_BACKGROUND,
    LABEL_MOTION,
    LABEL_RELIABLE,
)
from keyface.server.lossmodel import LossModel, RandomLoss
from keyface.server.media import picture_stats, read_stamp
from keyface.server.session import Datagram
from keyface.server.tokens import Role

logger = logging.getLogger(__name__)


class JoinRefused(Exception):
    """The server answered a join with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server refused the join ({status}): {message}")
        self.status = status
        self.message = message


class ConnectionLost(Exception):
    """The peer connection to the server failed or closed."""


def _room_url(server: str, room: str, what: str = "") -> str:
    return f"{server.rstrip('/')}/room/{quote(room, safe='')}{what}"


def rtc_configuration(ice_servers: tuple[str, ...] = ()) -> RTCConfiguration:
    """No STUN by default: aiortc would otherwise ask a public STUN server (loopback, LAN)."""
    return RTCConfiguration(iceServers=[RTCIceServer(u) for u in ice_servers])


async def join_room(
    pc: RTCPeerConnection,
    server: str,
    room: str,
    token: str,
    role: Role,
    resume: str | None = None,
) -> dict[str, Any]:
    """Offer ``pc`` to the server, apply its answer; returns the answer JSON. ``resume``: the
    ``resume`` key of this client's previous answer, to replace that connection while it is
    still connected (docs/server.md, replayed tokens)."""
    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)
    local = pc.localDescription
    body: dict[str, Any] = {"sdp": local.sdp, "type": local.type, "token": token, "role": role}
    if resume is not None:
        body["resume"] = resume
    async with (
        aiohttp.ClientSession() as http,
        http.post(_room_url(server, room, "/join"), json=body) as response,
    ):
        try:
            data = await response.json(content_type=None)
        except (aiohttp.ContentTypeError, ValueError):
            data = {"error": (await response.text())[:200]}
        if response.status != 200:
            raise JoinRefused(response.status, str(data.get("error", "")))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))
    return data


async def fetch_state(server: str, room: str, token: str) -> dict[str, Any]:
    """``GET /room/<room>/state``."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(_room_url(server, room, "/state"), headers=headers) as response,
    ):
        data = await response.json(content_type=None)
        if response.status != 200:
            raise JoinRefused(response.status, str(data.get("error", "")))
        return dict(data)


async def _opened(channel: RTCDataChannel, timeout: float) -> None:
    if channel.readyState == "open":
        return
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await asyncio.wait_for(opened.wait(), timeout)


@dataclass
class TransportStats:
    datagrams: int = 0
    bytes: int = 0
    dropped_motion: int = 0
    """Motion datagrams dropped on purpose (``loss``)."""
    unsendable: int = 0
    """Datagrams not sent because the channel was not open."""
    feedback: int = 0


class SenderClient:
    """A sender's WebRTC end: the data channels of ``keyface.server.conference``.

    ``loss`` drops that share of motion (unreliable) datagrams, chosen by a ``seed``ed random
    generator, before they are sent: a reproducible lossy link for tests and benchmarks.
    ``loss_model`` (``keyface.server.lossmodel``: bursts, outages) replaces ``loss`` and
    ``seed``; its clock starts at the first datagram sent.
    """

    def __init__(
        self,
        server: str,
        room: str,
        token: str,
        *,
        loss: float = 0.0,
        seed: int = 0,
        loss_model: LossModel | None = None,
        on_feedback: Callable[[bytes], None] | None = None,
        ice_servers: tuple[str, ...] = (),
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.server, self.room, self.token = server, room, token
        self.loss = loss_model if loss_model is not None else RandomLoss(loss, seed)
        self.on_feedback = on_feedback
        self.stats = TransportStats()
        self._t0: float | None = None
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.reliable = self.pc.createDataChannel(LABEL_RELIABLE)
        self.motion = self.pc.createDataChannel(LABEL_MOTION, ordered=False, maxRetransmits=0)
        self.background = self.pc.createDataChannel(LABEL_BACKGROUND)
        self.avatar = self.pc.createDataChannel(LABEL_AVATAR)
        self.reliable.on("message", self._feedback)
        self.motion.on("message", self._feedback)  # acknowledgements
        self.participant = ""

    async def connect(self, timeout: float = 15.0) -> None:
        """Join as a sender and wait until the channels are open."""
        answer = await join_room(self.pc, self.server, self.room, self.token, "send")
        self.participant = str(answer.get("participant", ""))
        for channel in (self.reliable, self.motion, self.background, self.avatar):
            await _opened(channel, timeout)

    def _feedback(self, message: object) -> None:
        if isinstance(message, bytes):
            self.stats.feedback += 1
            if self.on_feedback is not None:
                self.on_feedback(message)

    @property
    def connected(self) -> bool:
        return self.pc.connectionState not in ("failed", "closed") and (
            self.reliable.readyState == "open"
        )

    def send(self, datagram: Datagram) -> bool:
        """Send one datagram on its channel; ``False`` if dropped (``loss``) or unsendable."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        if datagram.channel == "unreliable":
            if self.loss.drop(now - self._t0):
                self.stats.dropped_motion += 1
                return False
            channel = self.motion
        else:
            channel = self.reliable
        return self._send(channel, datagram.payload)

    def send_background(self, payload: bytes) -> bool:
        """Send a BACKGROUND packet (the full frame the face is pasted into)."""
        return self._send(self.background, payload)

    def send_avatar(self, payload: bytes) -> bool:
        """Send an avatar photo (JPEG/PNG bytes): the server shows it, animated by this
        sender's motion, instead of the sender's face."""
        return self._send(self.avatar, payload)

    def _send(self, channel: RTCDataChannel, payload: bytes) -> bool:
        if channel.readyState != "open":
            self.stats.unsendable += 1
            return False
        channel.send(payload)
        self.stats.datagrams += 1
        self.stats.bytes += len(payload)
        return True

    async def close(self) -> None:
        await self.pc.close()


@dataclass(frozen=True)
class ReceivedFrame:
    """One picture a receiver decoded."""

    participant: str
    time: float
    """``time.monotonic()`` when it was decoded."""
    stamp: int | None
    """The frame index stamped by ``keyface serve --stamp-frames`` (mod 2**14), if any."""
    width: int
    height: int
    mean: float
    std: float
    image: np.ndarray | None = None


@dataclass
class ReceiverClient:
    """A receiver in Python: joins with one video transceiver per sender and collects what it
    decodes in :attr:`frames` (per participant). ``keep_images`` keeps the pictures too."""

    server: str
    room: str
    token: str
    keep_images: bool = False
    codec: str | None = "video/VP8"
    """Preferred codec (``video/VP8`` or ``video/H264``); ``None``: aiortc's order."""
    ice_servers: tuple[str, ...] = ()
    frames: dict[str, list[ReceivedFrame]] = field(default_factory=dict)
    streams: dict[str, str] = field(default_factory=dict)
    """SDP mid -> participant, from the join answer."""

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    async def connect(self, streams: int | None = None) -> dict[str, Any]:
        """Join; ``streams`` video transceivers (default: one per sender now in the room)."""
        if streams is None:
            state = await fetch_state(self.server, self.room, self.token)
            streams = sum(p["role"] == "send" for p in state["participants"])
        for _ in range(max(1, streams)):
            transceiver = self.pc.addTransceiver("video", direction="recvonly")
            if self.codec is not None:
                caps = RTCRtpReceiver.getCapabilities("video").codecs
                preferred = [c for c in caps if c.mimeType == self.codec]
                others = [c for c in caps if c.mimeType != self.codec]
                transceiver.setCodecPreferences(preferred + others)
        answer = await join_room(self.pc, self.server, self.room, self.token, "receive")
        self.streams = {s["mid"]: s["participant"] for s in answer.get("streams", [])}
        return answer

    def _on_track(self, track: MediaStreamTrack) -> None:
        mid = next((t.mid for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        self._tasks.append(asyncio.ensure_future(self._consume(track, mid)))

    async def _consume(self, track: MediaStreamTrack, mid: str | None) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            image = frame.to_ndarray(format="rgb24")  # type: ignore[union-attr]
            name = self.streams.get(str(mid), str(mid))
            mean, std = picture_stats(image)
            self.frames.setdefault(name, []).append(
                ReceivedFrame(
                    participant=name,
                    time=now,
                    stamp=read_stamp(image),
                    width=int(image.shape[1]),
                    height=int(image.shape[0]),
                    mean=mean,
                    std=std,
                    image=image if self.keep_images else None,
                )
            )

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
