"""The conference server's asyncio layer: WebRTC peers around the sans-I/O room sessions.

One :class:`Conference` holds the rooms of a server. A client joins a room with an SDP offer
and a token (:meth:`Conference.join`, called by the HTTP layer in ``keyface.server.http``):

* a **sender** opens data channels that carry the datagrams of ``keyface.server.session``:
  ``keyface-reliable`` (ordered, reliable: HEADER, keyframe FRAMEs; the server answers
  FEEDBACK on it), ``keyface-motion`` (unordered, ``maxRetransmits=0``: motion FRAMEs; the
  server acknowledges decoded frames on it) and,
  optionally, ``keyface-background`` (reliable: one BACKGROUND packet, the sender's full
  frame, so the server can paste the face back into it) and ``keyface-avatar`` (reliable: a
  photo the sender's motion animates instead of its face). The server checks every message
  with :meth:`RoomSession.admit` (size and rate limits) on the event loop, then decodes and
  renders it on a worker thread (one job at a time per sender, a shared pool across senders)
  and publishes the picture as a video track.
* a **receiver** gets one video track per sender in the room when it joins (as many as its
  offer has video transceivers for); it joins again when the set of senders changes (the
  page polls ``GET /room/<name>/state``).

Nothing a client sends can raise out of the message handlers: malformed data is counted and
dropped (logged at DEBUG, with a summary at INFO), a sender whose connection closes or fails
or which stays silent for ``RoomLimits.idle_timeout_s`` is removed, and rooms share nothing
but the worker pool. See ``docs/server.md``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from keyface.renderers import DEFAULT_RENDERER, get_renderer
from keyface.server.media import ParticipantVideo, SubscriberTrack
from keyface.server.pictures import SenderPictures
from keyface.server.relay import (
    DEFAULT_REFRESH_INTERVAL_S,
    MSG_AVATAR,
    MSG_BACKGROUND,
    Batcher,
    Outgoing,
    RelayRoom,
)
from keyface.server.session import (
    Channel,
    Datagram,
    Participant,
    ParticipantDecoder,
    RoomLimits,
    RoomSession,
    log_field,
)
from keyface.server.tokens import ROLES, Role, verify_token
from keyface.threads import apply_thread_policy

logger = logging.getLogger(__name__)

LABEL_RELIABLE = "keyface-reliable"
LABEL_MOTION = "keyface-motion"
LABEL_BACKGROUND = "keyface-background"
LABEL_AVATAR = "keyface-avatar"
LABEL_RELAY = "keyface-relay"
"""A relay receiver's reliable, ordered channel: stream announcements, HEADER and keyframe
datagrams, backgrounds and avatar photos down; refresh requests up."""
LABEL_RELAY_MOTION = "keyface-relay-motion"
"""A relay receiver's unordered channel without retransmissions: motion datagrams down."""
RELAY_CHANNELS = (LABEL_RELAY, LABEL_RELAY_MOTION)
MODES = ("video", "relay")
"""What a receiver gets: ``video`` (the server decodes and sends a video track per sender)
or ``relay`` (the senders' datagrams over data channels; the receiver decodes)."""
CHANNELS: dict[str, Channel] = {
    LABEL_RELIABLE: "reliable",
    LABEL_MOTION: "unreliable",
    LABEL_BACKGROUND: "reliable",
    LABEL_AVATAR: "reliable",
}
"""Data channel label -> the session channel whose limits apply to it."""
MAX_SDP = 64 * 1024
NEGOTIATION_TIMEOUT_S = 10.0
_FINGERPRINT = re.compile(
    r"^a=fingerprint:[A-Za-z0-9-]+ [0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+\s*$", re.M
)
"""An SDP ``a=fingerprint`` line (RFC 8122): without one, DTLS cannot authenticate the peer
and aiortc fails only after the answer (issue 14), so such offers are refused up front."""
RESUME_KEY_LEN = 43
"""Length of the resume key a join answer carries (``secrets.token_urlsafe(32)``)."""


class JoinError(Exception):
    """A join the server refuses; ``http_status`` says how to answer."""

    http_status = 400


class BadRequest(JoinError):
    """Malformed request: not JSON, missing or wrong fields, an unusable SDP offer (400)."""

    http_status = 400


class MissingToken(JoinError):
    """No token in the request (401)."""

    http_status = 401


class ParticipantConnected(JoinError):
    """The token's participant is connected and the join does not carry that connection's
    resume key (409): a replayed or leaked token does not kick its holder (docs/server.md)."""

    http_status = 409


class ServerBusy(JoinError):
    """The server holds ``max_rooms`` rooms already (503)."""

    http_status = 503


@dataclass(frozen=True)
class ServerConfig:
    secret: bytes
    """HMAC key of the room tokens (>= 16 bytes)."""
    generator: str = DEFAULT_RENDERER
    """Renderer name for ``keyface.renderers.get_renderer`` (one instance per sender)."""
    limits: RoomLimits = field(default_factory=RoomLimits)
    max_rooms: int = 64
    stamp_frames: bool = False
    """Burn the frame index into the top rows of every published picture (benchmarks)."""
    tick_interval_s: float = 0.05
    max_backlog: int = 30
    """Jobs waiting for a sender's worker beyond which motion datagrams are shed (overload)."""
    max_queue: int = 60
    """Jobs waiting for a sender's worker beyond which every datagram is shed (keyframes too:
    the decoder asks for a new one); background and avatar photos wait one at a time."""
    workers: int | None = None
    """Decoding / rendering threads shared by all senders (default: the CPU count)."""
    rate_window_s: float = 2.0
    """Window of the uplink kbit/s and frames/s figures."""
    ice_servers: tuple[str, ...] = ()
    """STUN/TURN URLs; none by default (host candidates: loopback and LAN)."""
    relay: bool = False
    """Relay mode (``keyface serve --relay``): senders' datagrams are forwarded to receivers
    that decode them; the server builds no decoder or renderer and refuses ``video``
    receivers."""
    relay_refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S
    """Fewest seconds between two refresh requests the relay sends one sender for its
    receivers (``keyface.server.relay.RefreshGate``)."""
    relay_motion_buffer: int = 64 * 1024
    """Bytes queued on a relay receiver's motion channel beyond which its motion datagrams
    are shed (a receiver that cannot keep up skips frames instead of falling behind)."""
    relay_max_buffer: int = 1024 * 1024
    """Bytes queued on a relay receiver's reliable channel beyond which everything for it
    is shed (its decoder notices a missing keyframe and asks for a refresh)."""
    relay_batch_s: float = 0.02
    """Motion datagrams for one relay receiver are gathered this long and sent as one
    message (``keyface.server.relay.MSG_BATCH``); 0 sends each at once. Adds at most this
    much latency; saves a message per sender of the room and frame (docs/server.md)."""

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")
        if self.max_rooms < 1 or self.max_backlog < 1 or self.tick_interval_s <= 0:
            raise ValueError("max_rooms, max_backlog and tick_interval_s must be positive")


@dataclass(frozen=True)
class JoinRequest:
    """The body of ``POST /room/<name>/join``."""

    sdp: str
    type: str
    token: str
    role: Role
    resume: str | None = None
    """The ``resume`` key of the join answer this client had: lets it replace its own
    connection while that one is still connected."""
    mode: str | None = None
    """A receiver's choice, ``video`` or ``relay`` (``None``: the server's mode)."""

    @classmethod
    def from_json(cls, body: object) -> JoinRequest:
        """Validate a decoded JSON body; raises :class:`MissingToken` (401) without a token,
        :class:`BadRequest` (400) for anything else that is wrong."""
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise MissingToken("a token is needed")
        missing = [k for k in ("sdp", "type", "token", "role") if k not in body]
        if missing:
            raise BadRequest(f"missing field(s): {', '.join(missing)}")
        sdp, kind, role = body["sdp"], body["type"], body["role"]
        if not isinstance(sdp, str) or not 0 < len(sdp) <= MAX_SDP:
            raise BadRequest(f"sdp must be a string of 1..{MAX_SDP} characters")
        if kind != "offer":
            raise BadRequest('type must be "offer"')
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}")
        if not _FINGERPRINT.search(sdp):
            raise BadRequest("the offer has no DTLS fingerprint (a=fingerprint)")
        resume = body.get("resume")
        if resume is not None and (not isinstance(resume, str) or len(resume) > 2 * RESUME_KEY_LEN):
            raise BadRequest("resume must be the string a join answer gave")
        mode = body.get("mode")
        if mode is not None and mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}")
        return cls(sdp=sdp, type=kind, token=token, role=role, resume=resume, mode=mode)


@dataclass(frozen=True)
class StreamInfo:
    """Which sender a receiver's video transceiver (by SDP ``mid``) shows."""

    participant: str
    mid: str


@dataclass(frozen=True)
class JoinAnswer:
    sdp: str
    type: str
    participant: str
    role: Role
    streams: tuple[StreamInfo, ...] = ()
    resume: str = ""
    """Key that lets this client re-join (replace this connection) while it is connected."""
    mode: str | None = None
    """A receiver's mode (``video`` or ``relay``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            **({"mode": self.mode} if self.mode is not None else {}),
            "sdp": self.sdp,
            "type": self.type,
            "participant": self.participant,
            "role": self.role,
            "resume": self.resume,
            "streams": [{"participant": s.participant, "mid": s.mid} for s in self.streams],
        }


class RateMeter:
    """Amounts added over the last ``window_s`` seconds, as a rate per second."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def add(self, now: float, amount: float = 1.0) -> None:
        self._events.append((now, amount))
        self.total += amount

    def rate(self, now: float) -> float:
        while self._events and self._events[0][0] <= now - self.window_s:
            self._events.popleft()
        return sum(a for _, a in self._events) / self.window_s


# -------------------------------------------------------------------------------------- peers
class Peer:
    """A participant's peer connection in a :class:`LiveRoom`."""

    role: Role = "receive"
    mode: str | None = None

    def __init__(self, room: LiveRoom, participant: Participant, pc: RTCPeerConnection) -> None:
        self.room = room
        self.name = participant.name
        self.participant = participant
        self.pc = pc
        self.joined_at = time.monotonic()
        self.closed = False
        self.close_reason = ""
        self.malformed_messages = 0
        self.resume_key = secrets.token_urlsafe(32)
        pc.on("connectionstatechange", self._on_connection_state)

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed") and not self.closed:
            self.room.conference.spawn(self.close(f"connection {self.pc.connectionState}"))

    async def negotiate(self, request: JoinRequest) -> JoinAnswer:
        offer = RTCSessionDescription(sdp=request.sdp, type=request.type)
        await self.pc.setRemoteDescription(offer)
        self._check_offer()
        self._before_answer()
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        local = self.pc.localDescription
        return JoinAnswer(
            local.sdp,
            local.type,
            self.name,
            self.role,
            self._streams(),
            self.resume_key,
            self.mode,
        )

    def _check_offer(self) -> None:
        pass

    def _before_answer(self) -> None:
        pass

    def _streams(self) -> tuple[StreamInfo, ...]:
        return ()

    def tick(self, now: float) -> None:
        pass

    def _drop(self, why: str) -> None:
        """Count and log a message the client should not have sent."""
        self.malformed_messages += 1
        n = self.malformed_messages
        level = logging.INFO if n == 1 or n % 100 == 0 else logging.DEBUG
        logger.log(
            level,
            "room %s: %s: dropped message #%d: %s",
            log_field(self.room.name),
            log_field(self.name),
            n,
            log_field(why),
        )

    async def close(self, reason: str) -> None:
        """Leave the room and close the connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        logger.info(
            "room %s: %s (%s) leaves: %s",
            log_field(self.room.name),
            log_field(self.name),
            self.role,
            reason,
        )
        self._release()
        self.room._forget(self)
        try:
            await self.pc.close()
        except Exception:  # closing a half-negotiated connection may fail: nothing to keep
            logger.debug("closing %s's connection failed", self.name, exc_info=True)

    def _release(self) -> None:
        pass

    def state(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "joined_s": round(now - self.joined_at, 1),
            "connection": self.pc.connectionState,
        }


Job = tuple[Callable[[], Any], Callable[[Any], None] | None, bool]
"""What to run on a worker, what to do with its result on the loop, and whether the job is a
datagram (dropped when it would start while its sender is over its CPU share)."""

LOW_PRIORITY_NICE = 19
"""Nice value of the low-priority worker where ``SCHED_IDLE`` cannot be set: the threads of
the normal pool and the event loop (nice 0) take the CPU first."""


def _lower_priority() -> None:
    """Thread initializer of the low-priority pool. Linux: ``SCHED_IDLE`` for this thread
    only (a process may always lower its own threads): it runs on CPU time no other thread
    of the machine wants, and the scheduler treats a CPU running it as idle, so a woken
    thread of another room takes that CPU at once (with nice 19 instead, room A's latency p90
    still rose by 17 % beside the abuser, docs/server.md). Falls back to nice 19; elsewhere
    nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):  # pragma: no cover - a sandbox that forbids it
        try:
            os.setpriority(os.PRIO_PROCESS, tid, LOW_PRIORITY_NICE)
        except OSError:
            logger.warning("cannot lower the priority of the low-priority worker")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the CPU seconds this worker thread spent in it."""
    t0 = time.thread_time()
    result = fn()
    return result, time.thread_time() - t0


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None) if os.name == "posix" else None


def release_memory() -> bool:
    """Give freed heap memory back to the system (glibc ``malloc_trim``); called when a
    sender leaves, so a spike (large keyframes, an avatar) does not stay in the server's RSS.
    Returns whether anything was released (False where there is no ``malloc_trim``)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


class ChannelPeer(Peer):
    """A sending participant's data channels (``CHANNELS``): each message is counted in the
    uplink and checked against the room's limits, then handed to :meth:`_take`."""

    role: Role = "send"

    def __init__(self, room: LiveRoom, participant: Participant, pc: RTCPeerConnection) -> None:
        super().__init__(room, participant, pc)
        self.channels: dict[str, RTCDataChannel] = {}
        self.uplink = RateMeter(room.config.rate_window_s)
        pc.on("datachannel", self._on_datachannel)

    def _check_offer(self) -> None:
        if self.pc.sctp is None:
            raise ValueError("a sender's offer must negotiate data channels")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        label = channel.label
        if label not in CHANNELS or label in self.channels:
            self._drop(f"unexpected data channel {label!r}")
            channel.close()
            return
        self.channels[label] = channel
        channel.on("message", lambda message: self._on_message(label, message))
        if label == LABEL_RELIABLE:
            channel.on("close", self._on_reliable_closed)

    def _on_reliable_closed(self) -> None:
        self.room.conference.spawn(self.close("data channel closed"))

    def _on_message(self, label: str, message: object) -> None:
        if self.closed:
            return
        now = time.monotonic()
        if not isinstance(message, bytes):
            self._drop("text message on a binary channel")
            return
        self.uplink.add(now, 8 * len(message))
        self._take(label, message, now)

    def _take(self, label: str, message: bytes, now: float) -> None:
        raise NotImplementedError

    def send_feedback(self, channel: Channel, payload: bytes) -> None:
        """Refresh requests reliably, acknowledgements on the motion channel."""
        ch = self.channels.get(LABEL_RELIABLE if channel == "reliable" else LABEL_MOTION)
        if ch is not None and ch.readyState == "open":
            ch.send(payload)

    def _forward(self, label: str, message: bytes, now: float) -> None:
        """Hand an admitted message to the room's relay (its receivers, and the copies of the
        newest header, IDR and photos it keeps for late joiners)."""
        relay = self.room.relay
        if label in (LABEL_BACKGROUND, LABEL_AVATAR):
            kind = MSG_BACKGROUND if label == LABEL_BACKGROUND else MSG_AVATAR
            self.room.route(relay.from_sender_photo(self.name, kind, message))
        else:
            self.room.route(relay.from_sender(self.name, CHANNELS[label], message, now))

    def _release(self) -> None:
        self.room.session.leave(self.name)
        self.room.route(self.room.relay.remove_sender(self.name))

    def state(self, now: float) -> dict[str, Any]:
        out = super().state(now)
        out.update(
            uplink_kbps=round(self.uplink.rate(now) / 1000, 2),
            uplink_kbps_mean=round(self.uplink.total / 1000 / max(now - self.joined_at, 1e-9), 2),
            rate_limited=self.participant.rate_limited,
            oversize=self.participant.oversize,
        )
        return out


class RelaySenderPeer(ChannelPeer):
    """A sending participant in relay mode: its datagrams go to the room's receivers as they
    are (``keyface.server.relay``); nothing is decoded."""

    def _take(self, label: str, message: bytes, now: float) -> None:
        if self.room.session.check(self.name, CHANNELS[label], message, now) is None:
            return  # counted by the room (size, rate, unknown)
        self._forward(label, message, now)

    def state(self, now: float) -> dict[str, Any]:
        out = super().state(now)
        stream = self.room.relay.streams.get(self.name)
        if stream is not None:
            r = stream.stats
            out.update(
                stream=stream.id,
                relayed=r.datagrams,
                relayed_bytes=r.bytes,
                copies=r.copies,
                copy_bytes=r.copy_bytes,
                keyframes=r.keyframes,
                idrs=r.idrs,
                malformed=r.malformed + self.malformed_messages,
                late_joins_served=r.late_joins_served,
                refresh_asked=r.refresh_asked,
                refresh_requests=r.refresh_sent,
                aux_refresh_asked=r.aux_refresh_asked,
                aux_refresh_requests=r.aux_refresh_sent,
                subscribers=len(self.room.relay.receivers),
            )
        return out


class SenderPeer(ChannelPeer):
    """A sending participant: data channels in, decoded pictures out to :attr:`video` (and
    its datagrams to the room's relay receivers, if any)."""

    def __init__(self, room: LiveRoom, participant: Participant, pc: RTCPeerConnection) -> None:
        super().__init__(room, participant, pc)
        assert participant.decoder is not None
        self.decoder: ParticipantDecoder = participant.decoder
        self.video = ParticipantVideo(self.name)
        cfg = room.config
        self.frames = RateMeter(cfg.rate_window_s)
        self.concealed = 0
        self.shed = 0
        """Datagrams dropped because the worker was behind: motion at ``max_backlog`` queued
        jobs, anything at ``max_queue``, a background or avatar photo while one waits."""
        self._photos_waiting: set[str] = set()
        self.worker_errors = 0
        self.pictures = SenderPictures(
            self.name, self.decoder, cfg.generator, stamp_frames=cfg.stamp_frames
        )
        """Decoding, full-frame composition and avatar mode: sans-I/O, run on the workers."""
        self._jobs: asyncio.Queue[Job | None] = asyncio.Queue()
        self._tick_pending = False
        self._worker = asyncio.ensure_future(self._work())

    # -- event loop side ------------------------------------------------------------------------
    def _take(self, label: str, message: bytes, now: float) -> None:
        decoder = self.room.session.admit(self.name, CHANNELS[label], message, now)
        if decoder is None:
            return  # counted by the room (size, rate, unknown)
        self._forward(label, message, now)
        cfg = self.room.config
        backlog = self._jobs.qsize()
        if backlog >= cfg.max_queue or (label == LABEL_MOTION and backlog >= cfg.max_backlog):
            self.shed += 1
            return
        if label in (LABEL_BACKGROUND, LABEL_AVATAR):
            if label in self._photos_waiting:
                self.shed += 1
                return
            self._photos_waiting.add(label)
            take = (
                self.pictures.take_background
                if label == LABEL_BACKGROUND
                else self.pictures.take_avatar
            )

            def photo() -> None:
                self._photos_waiting.discard(label)
                take(message)

            self._submit(photo, None, datagram=False)
            return
        self._submit(
            lambda: self.pictures.decode(decoder.receive, message, now),
            self._deliver,
            datagram=True,
        )

    def tick(self, now: float) -> None:
        if self._tick_pending or self.closed:
            return
        self._tick_pending = True
        self._submit(
            lambda: self.pictures.decode(None, b"", now), self._deliver_tick, datagram=False
        )

    def _submit(
        self, fn: Callable[[], Any], done: Callable[[Any], None] | None, *, datagram: bool
    ) -> None:
        self._jobs.put_nowait((fn, done, datagram))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._jobs.get()
            if job is None or self.closed:
                return
            fn, done, datagram = job
            # The share is checked again now: the job may have been admitted before its
            # sender's earlier jobs ran and put it in debt.
            standing = self.room.session.cpu_standing(self.name, time.monotonic())
            if datagram and standing == "over":
                self.participant.cpu_limited += 1
                continue
            pool = (
                self.room.conference.low_pool if standing != "normal" else self.room.conference.pool
            )
            try:
                result, cpu = await loop.run_in_executor(pool, _timed, fn)
            except Exception:  # a renderer bug must not take the server down
                self.worker_errors += 1
                logger.exception(
                    "room %s: %s: decoding failed", log_field(self.room.name), log_field(self.name)
                )
                if done == self._deliver_tick:
                    self._tick_pending = False
                continue
            self.room.session.charge(self.name, cpu, time.monotonic())
            if done is not None and not self.closed:
                done(result)

    def _deliver_tick(
        self, result: tuple[list[tuple[int, np.ndarray, bool]], list[Datagram]]
    ) -> None:
        self._tick_pending = False
        self._deliver(result)

    def _deliver(self, result: tuple[list[tuple[int, np.ndarray, bool]], list[Datagram]]) -> None:
        pictures, feedback = result
        now = time.monotonic()
        for index, image, concealed in pictures:
            self.video.publish(image, index)
            self.frames.add(now)
            self.concealed += concealed
        relayed = bool(self.room.relay.receivers)
        for d in feedback:
            if relayed and d.channel == "unreliable":
                # No acknowledgements while relay receivers listen: the sender would code
                # from frames only the server holds, which a receiver that lost one cannot
                # decode; without them it resets its motion every few frames (docs/server.md).
                continue
            self.send_feedback(d.channel, d.payload)

    @property
    def backlog(self) -> int:
        return self._jobs.qsize()

    def _release(self) -> None:
        super()._release()
        self.video.close()
        self._jobs.put_nowait(None)
        self._worker.cancel()
        release_memory()

    def state(self, now: float) -> dict[str, Any]:
        s = self.decoder.stats
        out = super().state(now)
        image = self.video.image
        out.update(
            fps=round(self.frames.rate(now), 2),
            frames=int(self.frames.total),
            concealed=self.concealed,
            decoded=s.decoded,
            lost=s.lost,
            late=s.late,
            malformed=s.malformed + self.malformed_messages,
            refresh_requests=s.refresh_requests,
            loss_episodes=len(s.recoveries),
            recovery_frames_mean=round(float(np.mean(s.recoveries)), 2) if s.recoveries else None,
            recovery_frames_max=max(s.recoveries) if s.recoveries else None,
            cpu_limited=self.participant.cpu_limited,
            shed=self.shed,
            worker_errors=self.worker_errors,
            backlog=self.backlog,
            subscribers=self.video.subscribers,
            width=None if image is None else int(image.shape[1]),
            height=None if image is None else int(image.shape[0]),
            full_frame=self.pictures.background is not None,
            avatar=self.pictures.avatar is not None,
        )
        return out


class ReceiverPeer(Peer):
    """A receiving participant: one subscriber track per sender present when it joined."""

    role: Role = "receive"
    mode = "video"

    def __init__(self, room: LiveRoom, participant: Participant, pc: RTCPeerConnection) -> None:
        super().__init__(room, participant, pc)
        self.tracks: dict[str, SubscriberTrack] = {}
        pc.on("datachannel", self._on_datachannel)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        # Receivers send no media: what they send is counted (``rejected``) and dropped.
        def message(payload: object) -> None:
            if isinstance(payload, bytes):
                self.room.session.admit(self.name, "reliable", payload, time.monotonic())
            else:
                self._drop("text message from a receiver")

        channel.on("message", message)

    def _check_offer(self) -> None:
        if not any(t.kind == "video" for t in self.pc.getTransceivers()):
            raise ValueError("a receiver's offer must have a video transceiver (recvonly)")

    def _before_answer(self) -> None:
        free = [
            t
            for t in self.pc.getTransceivers()
            if t.kind == "video" and t.sender.track is None and t.mid is not None
        ]
        senders = [p for p in self.room.peers.values() if isinstance(p, SenderPeer)]
        for sender in senders[: len(free)]:
            track = sender.video.subscribe()
            self.pc.addTrack(track)  # takes the first free video transceiver, in order
            self.tracks[sender.name] = track

    def _streams(self) -> tuple[StreamInfo, ...]:
        by_track = {id(track): name for name, track in self.tracks.items()}
        return tuple(
            StreamInfo(by_track[id(t.sender.track)], str(t.mid))
            for t in self.pc.getTransceivers()
            if t.sender.track is not None and id(t.sender.track) in by_track
        )

    def tick(self, now: float) -> None:
        # A receiver sends nothing: its connection is its sign of life.
        if self.pc.connectionState == "connected":
            self.participant.last_seen = now

    def _release(self) -> None:
        self.room.session.leave(self.name)
        for track in self.tracks.values():
            track.stop()

    def state(self, now: float) -> dict[str, Any]:
        out = super().state(now)
        out["mode"] = self.mode
        out["streams"] = sorted(self.tracks)
        return out


class RelayReceiverPeer(Peer):
    """A receiver in relay mode: the datagrams of every sender of the room over two data
    channels it opened (``keyface-relay``, ``keyface-relay-motion``); its refresh requests
    come back on ``keyface-relay`` and go to the senders through the relay's gates."""

    role: Role = "receive"
    mode = "relay"

    def __init__(self, room: LiveRoom, participant: Participant, pc: RTCPeerConnection) -> None:
        super().__init__(room, participant, pc)
        self.channels: dict[str, RTCDataChannel] = {}
        self.downlink = RateMeter(room.config.rate_window_s)
        self.sent = 0
        self.shed = 0
        """Messages not sent because its channel's queue was over the limit
        (``ServerConfig.relay_motion_buffer`` / ``relay_max_buffer``) or not open."""
        self._motion = Batcher()
        self._flush_at: asyncio.TimerHandle | None = None
        pc.on("datachannel", self._on_datachannel)

    def _check_offer(self) -> None:
        if self.pc.sctp is None:
            raise ValueError(
                f"a relay receiver's offer must negotiate data channels ({LABEL_RELAY}, "
                f"{LABEL_RELAY_MOTION})"
            )

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        label = channel.label
        if label not in RELAY_CHANNELS or label in self.channels:
            self._drop(f"unexpected data channel {label!r}")
            channel.close()
            return
        self.channels[label] = channel
        channel.on("message", lambda message: self._on_message(label, message))
        if label == LABEL_RELAY:  # subscribed from now on
            now = time.monotonic()
            self.room.route(self.room.relay.add_receiver(self.name, now))
            channel.on("close", lambda: self.room.conference.spawn(self.close("channel closed")))

    def _on_message(self, label: str, message: object) -> None:
        if self.closed:
            return
        if not isinstance(message, bytes) or label != LABEL_RELAY:
            self._drop("a relay receiver sends binary feedback on keyface-relay only")
            return
        now = time.monotonic()
        if self.room.session.check(self.name, "reliable", message, now) is None:
            return  # counted by the room (size, rate)
        self.room.route(self.room.relay.from_receiver(self.name, message, now))

    def send(self, channel: Channel, payload: bytes | str) -> None:
        """One relayed message: motion gathered into batches (``relay_batch_s``), the rest
        at once."""
        batch_s = self.room.config.relay_batch_s
        if channel == "reliable" or batch_s <= 0 or not isinstance(payload, bytes):
            self._send(channel, payload)
            return
        for message in self._motion.add(payload):
            self._send(channel, message)
        if len(self._motion) and self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(batch_s, self._flush)

    def _flush(self) -> None:
        self._flush_at = None
        if not self.closed:
            for message in self._motion.flush():
                self._send("unreliable", message)

    def _send(self, channel: Channel, payload: bytes | str) -> None:
        """One message, unless this receiver's queue for it is full."""
        cfg = self.room.config
        ch = self.channels.get(LABEL_RELAY if channel == "reliable" else LABEL_RELAY_MOTION)
        limit = cfg.relay_max_buffer if channel == "reliable" else cfg.relay_motion_buffer
        if ch is None or ch.readyState != "open" or ch.bufferedAmount > limit:
            self.shed += 1
            return
        ch.send(payload)
        self.sent += 1
        self.downlink.add(time.monotonic(), 8 * len(payload))

    def tick(self, now: float) -> None:
        if self.pc.connectionState == "connected":
            self.participant.last_seen = now

    def _release(self) -> None:
        self.room.session.leave(self.name)
        self.room.relay.remove_receiver(self.name)
        if self._flush_at is not None:
            self._flush_at.cancel()

    def state(self, now: float) -> dict[str, Any]:
        out = super().state(now)
        relay = self.room.relay
        subscribed = self.name in relay.receivers
        out.update(
            mode=self.mode,
            streams=sorted(relay.streams) if subscribed else [],
            downlink_kbps=round(self.downlink.rate(now) / 1000, 2),
            downlink_kbps_mean=round(
                self.downlink.total / 1000 / max(now - self.joined_at, 1e-9), 2
            ),
            relayed=self.sent,
            shed=self.shed,
            malformed=relay.receiver_malformed.get(self.name, 0) + self.malformed_messages,
            rate_limited=self.participant.rate_limited,
            oversize=self.participant.oversize,
        )
        return out


# -------------------------------------------------------------------------------------- rooms
class LiveRoom:
    """A :class:`RoomSession` with its peers and its timer."""

    def __init__(self, conference: Conference, name: str) -> None:
        self.conference = conference
        self.config = conference.config
        self.name = name
        self.session = RoomSession(name, self.config.limits, decode=not self.config.relay)
        self.relay = RelayRoom(self.config.relay_refresh_interval_s)
        """Forwarding to relay receivers (every room has one: a transcoding server serves
        relay receivers too)."""
        self.peers: dict[str, Peer] = {}
        self.lock = asyncio.Lock()
        self.created_at = time.monotonic()
        self._timer = asyncio.ensure_future(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            try:
                self.tick(time.monotonic())
            except Exception:  # the timer must survive anything
                logger.exception("room %s: tick failed", log_field(self.name))

    def route(self, messages: list[Outgoing]) -> None:
        """Send the relay's messages: to receivers on their relay channels, to senders
        (refresh requests) on their reliable channel."""
        for m in messages:
            peer = self.peers.get(m.participant)
            if isinstance(peer, RelayReceiverPeer):
                peer.send(m.channel, m.payload)
            elif isinstance(peer, ChannelPeer) and isinstance(m.payload, bytes):
                peer.send_feedback(m.channel, m.payload)

    def tick(self, now: float) -> None:
        for peer in list(self.peers.values()):
            if isinstance(peer, (ReceiverPeer, RelayReceiverPeer)):
                peer.tick(now)
        self.route(self.relay.tick(now))
        for name in self.session.expire(now):
            peer = self.peers.get(name)
            if peer is not None:
                self.conference.spawn(peer.close("timed out"))
        for peer in list(self.peers.values()):
            if isinstance(peer, SenderPeer):
                peer.tick(now)

    def _forget(self, peer: Peer) -> None:
        if self.peers.get(peer.name) is peer:
            del self.peers[peer.name]
        if not self.peers and not self.lock.locked():
            self.conference._drop_room(self)

    def stop(self) -> None:
        self._timer.cancel()

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "room": self.name,
            "max_participants": self.config.limits.max_participants,
            "participants": [p.state(now) for p in self.peers.values()],
            "unknown_datagrams": self.session.unknown_datagrams,
            "server_mode": "relay" if self.config.relay else "video",
        }


class Conference:
    """All rooms of one server. Create and use it inside a running event loop."""

    def __init__(self, config: ServerConfig) -> None:
        if not config.relay:  # relay mode renders nothing
            get_renderer(config.generator)  # fail now, not at the first sender, on a bad name
        apply_thread_policy()  # the worker pool is the parallelism (keyface.threads)
        self.config = config
        self.rooms: dict[str, LiveRoom] = {}
        self.pool = ThreadPoolExecutor(
            max_workers=config.workers or os.cpu_count() or 2, thread_name_prefix="keyface-room"
        )
        self.low_pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="keyface-low", initializer=_lower_priority
        )
        """Senders over part of their CPU share (``RoomSession.cpu_standing``) are served
        here, one job at a time across all of them, on a thread of the lowest priority
        (``SCHED_IDLE``)."""
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, holding a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rtc_configuration(self) -> RTCConfiguration:
        return RTCConfiguration(iceServers=[RTCIceServer(u) for u in self.config.ice_servers])

    async def join(self, room: str, request: JoinRequest) -> JoinAnswer:
        """Check the token, join the room and answer the offer.

        Raises ``TokenError`` (401/403), ``RoomError`` (``RoomFull``: 403), :class:`BadRequest`
        (400) or :class:`ServerBusy` (503); each has ``http_status``.
        """
        claims = verify_token(self.config.secret, request.token, room, time.time(), request.role)
        kind = self._peer_kind(claims.role, request.mode)
        live = self.rooms.get(room)
        if live is None:
            if len(self.rooms) >= self.config.max_rooms:
                raise ServerBusy(f"the server holds {self.config.max_rooms} rooms already")
            live = self.rooms[room] = LiveRoom(self, room)
        try:
            async with live.lock:
                old = live.peers.get(claims.participant)
                if old is not None:
                    self._check_replace(live, old, request)
                    await old.close("replaced by a new join")
                now = time.monotonic()
                participant = live.session.join(claims.participant, claims.role, now)
                pc = RTCPeerConnection(self._rtc_configuration())
                peer = kind(live, participant, pc)
                live.peers[peer.name] = peer
                if isinstance(peer, ChannelPeer):
                    live.route(live.relay.add_sender(peer.name))
                try:
                    answer = await asyncio.wait_for(peer.negotiate(request), NEGOTIATION_TIMEOUT_S)
                except Exception as exc:
                    await peer.close("negotiation failed")
                    why = str(exc) or type(exc).__name__
                    raise BadRequest(f"cannot use this offer: {why}") from None
        finally:
            self._drop_room_if_empty(live)
        return answer

    def _peer_kind(self, role: Role, mode: str | None) -> type[Peer]:
        """The peer class of a join: a sender decodes or relays as the server does; a
        receiver gets what it asks for (``mode``), by default the server's mode."""
        if role == "send":
            return RelaySenderPeer if self.config.relay else SenderPeer
        mode = mode or ("relay" if self.config.relay else "video")
        if mode == "video" and self.config.relay:
            raise BadRequest(
                "this server relays only (keyface serve --relay): join with mode relay"
            )
        return RelayReceiverPeer if mode == "relay" else ReceiverPeer

    @staticmethod
    def _check_replace(live: LiveRoom, old: Peer, request: JoinRequest) -> None:
        """Replayed-token policy: a join for a participant that is connected replaces it only
        with that connection's resume key (the same client re-joining); otherwise it is
        refused (409) and logged, so a leaked token cannot kick its holder. A holder that
        lost its key (a crash) gets back in once its old connection is no longer connected
        (failed or closed, at the latest after ``idle_timeout_s``)."""
        if old.closed or old.pc.connectionState != "connected":
            return
        if request.resume is not None and secrets.compare_digest(
            request.resume.encode(), old.resume_key.encode()
        ):
            return
        logger.warning(
            "room %s: a join for %s, who is connected, without its resume key: refused "
            "(a replayed or leaked token?)",
            log_field(live.name),
            log_field(old.name),
        )
        raise ParticipantConnected(
            f"{old.name} is connected; only that connection can re-join (resume key)"
        )

    def state(self, room: str, token: str) -> dict[str, Any]:
        """The room's participants and their figures; ``token`` must be valid for ``room``."""
        verify_token(self.config.secret, token, room, time.time())
        live = self.rooms.get(room)
        if live is None:
            return {
                "room": room,
                "max_participants": self.config.limits.max_participants,
                "participants": [],
                "unknown_datagrams": 0,
                "server_mode": "relay" if self.config.relay else "video",
            }
        return live.state()

    def _drop_room_if_empty(self, live: LiveRoom) -> None:
        if not live.peers and not live.lock.locked():
            self._drop_room(live)

    def _drop_room(self, live: LiveRoom) -> None:
        if self.rooms.get(live.name) is live:
            del self.rooms[live.name]
            live.stop()
            logger.info("room %s: closed (empty)", log_field(live.name))

    async def close(self) -> None:
        """Close every connection and stop the workers."""
        peers = [p for room in list(self.rooms.values()) for p in list(room.peers.values())]
        await asyncio.gather(*(p.close("server shutting down") for p in peers))
        for room in list(self.rooms.values()):
            room.stop()
        self.rooms.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.low_pool.shutdown(wait=False, cancel_futures=True)
