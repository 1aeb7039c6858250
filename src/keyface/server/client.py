"""Clients of the conference server in Python (aiortc): signalling, a sender's transport and a
receiver that collects the video it is sent (tests, benchmarks, ``keyface send``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
    LABEL_RELAY,
    LABEL_RELAY_MOTION,
    LABEL_RELIABLE,
)
from keyface.server.datagram import FLAG_IDR, DatagramError, frame_index_of
from keyface.server.lossmodel import LossModel, RandomLoss
from keyface.server.media import picture_stats, read_stamp
from keyface.server.receiver import ParticipantDecoder
from keyface.server.relay import (
    MSG_BACKGROUND,
    MSG_DATAGRAM,
    RelayMessage,
    encode_relay_message,
    relay_messages,
)
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
    mode: str | None = None,
) -> dict[str, Any]:
    """Offer ``pc`` to the server, apply its answer; returns the answer JSON. ``resume``: the
    ``resume`` key of this client's previous answer, to replace that connection while it is
    still connected (docs/server.md, replayed tokens). ``mode``: a receiver's ``video`` or
    ``relay`` (default: the server's)."""
    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)
    local = pc.localDescription
    body: dict[str, Any] = {"sdp": local.sdp, "type": local.type, "token": token, "role": role}
    if resume is not None:
        body["resume"] = resume
    if mode is not None:
        body["mode"] = mode
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


class DatagramSender:
    """Sending live datagrams on a peer connection's two data channels (``reliable`` and the
    unreliable ``motion``), dropping motion by the ``loss`` model: what :class:`SenderClient`
    and :class:`keyface.server.janus.JanusSenderClient` share. Needs ``pc``, ``reliable``,
    ``motion``, ``loss``, ``stats`` (:class:`TransportStats`) and ``_t0`` (``None`` at first)."""

    pc: RTCPeerConnection
    reliable: RTCDataChannel
    motion: RTCDataChannel
    loss: LossModel
    stats: TransportStats
    _t0: float | None

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

    def _send(self, channel: RTCDataChannel, payload: bytes) -> bool:
        if channel.readyState != "open":
            self.stats.unsendable += 1
            return False
        channel.send(payload)
        self.stats.datagrams += 1
        self.stats.bytes += len(payload)
        return True


class SenderClient(DatagramSender):
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

    def send_background(self, payload: bytes) -> bool:
        """Send a BACKGROUND packet (the full frame the face is pasted into)."""
        return self._send(self.background, payload)

    def send_avatar(self, payload: bytes) -> bool:
        """Send an avatar photo (JPEG/PNG bytes): the server shows it, animated by this
        sender's motion, instead of the sender's face."""
        return self._send(self.avatar, payload)

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


@dataclass
class RelayedStream:
    """What a :class:`RelayReceiverClient` got of one sender."""

    participant: str
    id: int
    decoder: ParticipantDecoder | None
    messages: int = 0
    """Envelopes received (a batch counts each it holds)."""
    bytes: int = 0
    """Bytes received for this stream (an envelope in a batch: its payload)."""
    idrs: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    """(``time.monotonic()``, frame index) of each FRAME datagram, as it arrived."""
    frames: list[ReceivedFrame] = field(default_factory=list)
    """Decoded pictures (``stamp``: the frame index); held ones are only counted."""
    concealed: int = 0
    """Frames shown as the held last picture (lost, late or undecodable)."""
    background: bytes | None = None
    avatar: bytes | None = None
    ended: bool = False


class RelayReceiverClient:
    """A receiver of a relaying server in Python: joins with ``mode`` relay, opens
    ``keyface-relay`` and ``keyface-relay-motion``, and per sender stream counts what arrives
    and (``decode=True``) decodes it with the sans-I/O :class:`ParticipantDecoder`, as the
    server does in transcoding mode. The decoder's refresh and aux-refresh requests go back
    to the server in envelopes; its acknowledgements are not sent (a relay ignores them).

    ``renderer``: a ``keyface.render.Renderer`` shared by the decoders (default: the
    decoder's own). ``keep_images`` keeps the decoded pictures. ``decode_only``: decode the
    streams of these senders only (the others are counted). Decoding runs on the event loop
    (tests and benchmarks with a few streams)."""

    def __init__(
        self,
        server: str,
        room: str,
        token: str,
        *,
        decode: bool = True,
        keep_images: bool = False,
        renderer: Any = None,
        decode_only: frozenset[str] | None = None,
        ice_servers: tuple[str, ...] = (),
        tick_s: float = 0.05,
    ) -> None:
        self.server, self.room, self.token = server, room, token
        self.decode, self.keep_images, self.renderer = decode, keep_images, renderer
        self.decode_only = decode_only
        self.tick_s = tick_s
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.reliable = self.pc.createDataChannel(LABEL_RELAY)
        self.motion = self.pc.createDataChannel(LABEL_RELAY_MOTION, ordered=False, maxRetransmits=0)
        self.reliable.on("message", self._on_message)
        self.motion.on("message", self._on_message)
        self.streams: dict[int, RelayedStream] = {}
        self.bytes = 0
        """Payload bytes of every message received (the downlink, without SCTP/DTLS/UDP)."""
        self.messages = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.feedback_sent = 0
        self.control: list[dict[str, Any]] = []
        self.participant = ""
        self._ticker: asyncio.Task[None] | None = None

    async def connect(self, timeout: float = 15.0) -> dict[str, Any]:
        """Join as a relay receiver and wait until both channels are open."""
        answer = await join_room(
            self.pc, self.server, self.room, self.token, "receive", mode="relay"
        )
        self.participant = str(answer.get("participant", ""))
        for channel in (self.reliable, self.motion):
            await _opened(channel, timeout)
        if self.decode:
            self._ticker = asyncio.ensure_future(self._tick_forever())
        return answer

    def by_participant(self, name: str) -> RelayedStream | None:
        """The newest stream of sender ``name``."""
        found = [s for s in self.streams.values() if s.participant == name]
        return max(found, key=lambda s: s.id) if found else None

    def _on_message(self, message: object) -> None:
        now = time.monotonic()
        if isinstance(message, str):
            self._control(message)
            return
        if not isinstance(message, bytes):
            return
        self.messages += 1
        self.bytes += len(message)
        self.first_at = self.first_at if self.first_at is not None else now
        self.last_at = now
        try:
            envelopes = relay_messages(message)
        except DatagramError:
            return
        for m in envelopes:
            self._envelope(m, len(message) if len(envelopes) == 1 else len(m.payload), now)

    def _envelope(self, m: RelayMessage, size: int, now: float) -> None:
        stream = self.streams.get(m.stream)
        if stream is None:
            return
        stream.messages += 1
        stream.bytes += size
        if m.kind != MSG_DATAGRAM:
            if m.kind == MSG_BACKGROUND:
                stream.background = m.payload
            else:
                stream.avatar = m.payload
            return
        index = frame_index_of(m.payload)
        if index is not None:  # read from the tag and one varint: counting costs no parse
            stream.arrivals.append((now, index))
            stream.idrs += bool(m.payload[0] & FLAG_IDR)
        if stream.decoder is not None:
            self._take(stream, stream.decoder.receive(m.payload, now), now)

    def _control(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        self.control.append(data)
        sid = data.get("stream")
        if data.get("type") == "stream" and isinstance(sid, int):
            name = str(data.get("participant", sid))
            wanted = self.decode and (self.decode_only is None or name in self.decode_only)
            decoder = ParticipantDecoder(name, renderer=self.renderer) if wanted else None
            self.streams[sid] = RelayedStream(name, sid, decoder)
        elif data.get("type") == "end" and sid in self.streams:
            self.streams[sid].ended = True

    def _take(self, stream: RelayedStream, frames: list[Any], now: float) -> None:
        for f in frames:
            if f.concealed:
                stream.concealed += 1
                continue
            mean, std = picture_stats(f.image)
            stream.frames.append(
                ReceivedFrame(
                    participant=stream.participant,
                    time=now,
                    stamp=f.index,
                    width=int(f.image.shape[1]),
                    height=int(f.image.shape[0]),
                    mean=mean,
                    std=std,
                    image=f.image if self.keep_images else None,
                )
            )
        assert stream.decoder is not None
        for d in stream.decoder.datagrams_to_send():
            if d.channel != "reliable" or self.reliable.readyState != "open":
                continue  # acknowledgements: a relay ignores them
            self.reliable.send(encode_relay_message(MSG_DATAGRAM, stream.id, d.payload))
            self.feedback_sent += 1

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            for stream in list(self.streams.values()):
                if stream.decoder is not None and not stream.ended:
                    self._take(stream, stream.decoder.tick(now), now)

    def downlink_kbps(self) -> float:
        """Mean payload kbit/s from the first message to the last."""
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return 0.0
        return 8 * self.bytes / 1000 / (self.last_at - self.first_at)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ticker
        await self.pc.close()
