"""Sans-I/O conference sessions: sender -> server room, as state machines with the clock passed in.

Nothing here opens a socket, starts a task or reads the clock; a transport (aiortc data
channels, a test loop) moves :class:`Datagram` payloads and calls these objects with ``now``.

* :class:`SenderSession` runs on the speaker's device: it wraps the encoder in live mode (one
  MOTION packet per frame) and turns every frame into datagrams: keyframes (and the stream
  header) on the reliable channel, motion on the unreliable one.
* :class:`ParticipantDecoder` runs on the server, one per sender: it reorders datagrams,
  decodes them, conceals lost or late motion by holding the last picture, and asks the sender
  for a refresh (an IDR keyframe) when its reference buffer can no longer be trusted.
* :class:`RoomSession` holds the participants of one room: participant limit, per-client
  packet size and rate limits (token buckets), leave and idle timeout.

The datagram framing, the loss recovery and the measured cost of the periodic motion resets
are described in ``docs/server.md``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Literal

import numpy as np

from keyface.bitstream import (
    BitstreamError,
    KeyframePacket,
    MotionPacket,
    Packet,
    RefreshRequestPacket,
    StreamHeader,
    decode_varint,
    encode_varint,
    parse_packet,
)
from keyface.codec.config import CodecConfig
from keyface.codec.decoder import DecoderCore
from keyface.codec.encoder import EncoderCore
from keyface.render import Reference, Renderer
from keyface.server.tokens import Role, TokenClaims, verify_token
from keyface.types import CropBox

logger = logging.getLogger(__name__)

Channel = Literal["reliable", "unreliable"]

# ------------------------------------------------------------------------- datagram framing
DATAGRAM_VERSION = 1
KIND_HEADER = 1
"""Body: the stream header record (``bytes(StreamHeader)``). Reliable channel."""
KIND_FRAME = 2
"""Body: the keyface packets of one frame: [KEYFRAME] MOTION. Reliable if it has a keyframe."""
KIND_FEEDBACK = 3
"""Body: one REFRESH_REQUEST packet (server -> sender). Reliable channel."""
FLAG_IDR = 0x08
"""FRAME only: the sender emptied its reference buffer before this keyframe."""
_KIND_MASK = 0x07
_RESERVED_MASK = 0x30
MAX_DATAGRAM = 1 << 20
"""Longest datagram :func:`parse_datagram` accepts at all (rooms set tighter limits)."""


class DatagramError(ValueError):
    """A datagram that is not well formed."""


@dataclass(frozen=True)
class Datagram:
    """One message for the transport: which channel and the bytes to send."""

    channel: Channel
    payload: bytes


@dataclass(frozen=True)
class ParsedDatagram:
    kind: int
    idr: bool = False
    frame_index: int = 0
    key_back: int = 0
    """``frame_index`` minus the index of the newest keyframe the sender had coded."""
    header: StreamHeader | None = None
    keyframe: KeyframePacket | None = None
    motion: MotionPacket | None = None
    refresh: RefreshRequestPacket | None = None

    @property
    def key_index(self) -> int:
        return self.frame_index - self.key_back


def _tag(kind: int, flags: int = 0) -> bytes:
    return bytes([(DATAGRAM_VERSION << 6) | flags | kind])


def encode_header_datagram(header: StreamHeader) -> bytes:
    return _tag(KIND_HEADER) + bytes(header)


def encode_frame_datagram(
    frame_index: int, key_back: int, idr: bool, packets: list[Packet]
) -> bytes:
    head = _tag(KIND_FRAME, FLAG_IDR if idr else 0)
    return (
        head
        + encode_varint(frame_index)
        + encode_varint(key_back)
        + b"".join(bytes(p) for p in packets)
    )


def encode_feedback_datagram(request: RefreshRequestPacket) -> bytes:
    return _tag(KIND_FEEDBACK) + bytes(request)


def _packets(data: bytes, offset: int) -> list[Packet]:
    out = []
    while offset < len(data):
        packet, offset = parse_packet(data, offset)
        out.append(packet)
    return out


def parse_datagram(data: bytes) -> ParsedDatagram:
    """Parse one datagram; raises :class:`DatagramError` for anything malformed."""
    if not isinstance(data, (bytes, bytearray)) or not 1 <= len(data) <= MAX_DATAGRAM:
        raise DatagramError("datagram is empty, too long or not bytes")
    data = bytes(data)
    tag = data[0]
    if tag >> 6 != DATAGRAM_VERSION or tag & _RESERVED_MASK:
        raise DatagramError(f"unknown datagram version or flags (tag 0x{tag:02x})")
    kind, idr = tag & _KIND_MASK, bool(tag & FLAG_IDR)
    if idr and kind != KIND_FRAME:
        raise DatagramError("IDR flag on a datagram that is not a frame")
    try:
        if kind == KIND_HEADER:
            header, size = StreamHeader.parse(data[1:])
            if size != len(data) - 1:
                raise DatagramError("bytes after the stream header")
            return ParsedDatagram(kind, header=header)
        if kind == KIND_FEEDBACK:
            packets = _packets(data, 1)
            if len(packets) != 1 or not isinstance(packets[0], RefreshRequestPacket):
                raise DatagramError("feedback datagram must hold one REFRESH_REQUEST")
            return ParsedDatagram(kind, refresh=packets[0])
        if kind != KIND_FRAME:
            raise DatagramError(f"unknown datagram kind {kind}")
        frame_index, pos = decode_varint(data, 1)
        key_back, pos = decode_varint(data, pos)
        packets = _packets(data, pos)
    except BitstreamError as exc:
        raise DatagramError(str(exc)) from None
    keyframe = packets[0] if len(packets) == 2 else None
    motion = packets[-1] if packets else None
    if (
        len(packets) not in (1, 2)
        or not isinstance(motion, MotionPacket)
        or (keyframe is not None and not isinstance(keyframe, KeyframePacket))
    ):
        raise DatagramError("frame datagram must hold [KEYFRAME] MOTION")
    if motion.first_frame != frame_index or motion.n_frames != 1:
        raise DatagramError("MOTION packet does not cover exactly the datagram's frame")
    if keyframe is not None and (keyframe.frame_index != frame_index or key_back != 0):
        raise DatagramError("KEYFRAME packet is not for the datagram's frame")
    if key_back > frame_index or (idr and keyframe is None):
        raise DatagramError("inconsistent keyframe distance or IDR flag")
    return ParsedDatagram(
        kind, idr=idr, frame_index=frame_index, key_back=key_back, keyframe=keyframe, motion=motion
    )


# ---------------------------------------------------------------------------- sender side
DEFAULT_RESET_INTERVAL = 10
"""Frames between motion-coder resets on a live link (``keyface send --reset-interval``): a
lost unreliable MOTION datagram costs at most this many frames. 10 rather than 30: +3 % bits
and about a third of the concealed frames under 5 % motion loss (benchmarks/server_loss.py,
docs/server.md)."""


def live_codec_config(config: CodecConfig, reset_interval: int | None) -> CodecConfig:
    """``config`` as a live sender codes it: one MOTION packet per frame (one datagram),
    motion-coder resets every ``reset_interval`` frames and at every keyframe (a receiver can
    start at any keyframe, a lost datagram costs at most ``reset_interval`` frames)."""
    if reset_interval is not None and reset_interval < 1:
        raise ValueError("reset_interval must be >= 1 or None")
    return replace(config, motion_chunk=1, reset_interval=reset_interval, reset_at_keyframes=True)


@dataclass
class SenderStats:
    frames: int = 0
    keyframes: int = 0
    idr_keyframes: int = 0
    resets: int = 0
    datagrams: int = 0
    bits: int = 0
    refresh_requests: int = 0
    refresh_ignored: int = 0
    bad_feedback: int = 0


class SenderSession:
    """The speaker's end: frames in, datagrams out; REFRESH_REQUEST feedback in."""

    def __init__(
        self,
        config: CodecConfig,
        fps: Fraction,
        *,
        crop: CropBox | None = None,
        reset_interval: int | None = DEFAULT_RESET_INTERVAL,
        rate_window_s: float = 2.0,
    ) -> None:
        self.encoder = EncoderCore(live_codec_config(config, reset_interval), fps, crop=crop)
        self.stats = SenderStats()
        self.rate_window_s = rate_window_s
        self._sent: deque[tuple[float, int]] = deque()
        self._last_key = -1

    @property
    def header(self) -> StreamHeader:
        return self.encoder.header

    def force_keyframe(self) -> None:
        """Code the next frame as an IDR keyframe."""
        self.encoder.force_keyframe(idr=True)

    def push_frame(
        self, image_crop: np.ndarray, landmarks: np.ndarray | None, now: float
    ) -> list[Datagram]:
        """Encode the next face crop; returns the datagrams to send, in order."""
        index = self.stats.frames
        packets = self.encoder.encode(image_crop, landmarks)
        self.stats.frames += 1
        keyframe = any(isinstance(p, KeyframePacket) for p in packets)
        idr = self.encoder.stats.decisions[-1].idr
        out: list[Datagram] = []
        if idr:  # every IDR carries the header, so a receiver can (re)start there
            out.append(Datagram("reliable", encode_header_datagram(self.header)))
            self.stats.idr_keyframes += 1
        if keyframe:
            self._last_key = index
            self.stats.keyframes += 1
        self.stats.resets += sum(isinstance(p, MotionPacket) and p.reset for p in packets)
        payload = encode_frame_datagram(index, index - self._last_key, idr, packets)
        out.append(Datagram("reliable" if keyframe else "unreliable", payload))
        for d in out:
            bits = 8 * len(d.payload)
            self.stats.bits += bits
            self.stats.datagrams += 1
            self._sent.append((now, bits))
        self._expire(now)
        return out

    def receive_feedback(self, payload: bytes) -> None:
        """Handle a datagram from the server; malformed ones are counted and dropped."""
        try:
            d = parse_datagram(payload)
            if d.refresh is None:
                raise DatagramError("not a feedback datagram")
        except DatagramError as exc:
            self.stats.bad_feedback += 1
            logger.debug("sender: dropped feedback datagram: %s", exc)
            return
        self.stats.refresh_requests += 1
        if d.refresh.frame_index <= self.encoder.last_idr:
            self.stats.refresh_ignored += 1  # an IDR at or after that frame is already out
            return
        self.force_keyframe()

    def uplink_kbps(self, now: float) -> float:
        """Sent bit rate over the last ``rate_window_s`` seconds (kbit/s)."""
        self._expire(now)
        return sum(bits for _, bits in self._sent) / 1000.0 / self.rate_window_s

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0][0] <= now - self.rate_window_s:
            self._sent.popleft()


# ---------------------------------------------------------------------------- server side
@dataclass(frozen=True)
class RenderedFrame:
    participant: str
    index: int
    image: np.ndarray
    concealed: bool
    """True when the picture is a held copy of the last one (motion lost, late or unusable)."""
    keypoints: np.ndarray | None = None
    """The decoded keypoints the picture was rendered with (held ones when concealed)."""
    reference: Reference | None = None
    """The prepared reference it was rendered from (full-frame composition holds the body
    with it; the held one when concealed)."""


@dataclass
class ReceiverStats:
    datagrams: int = 0
    bytes: int = 0
    malformed: int = 0
    late: int = 0
    duplicate: int = 0
    decoded: int = 0
    concealed: int = 0
    lost: int = 0
    """Frames whose datagram never arrived in time."""
    unrendered: int = 0
    """Frames skipped with no picture to hold (before the first keyframe)."""
    undecodable: int = 0
    lost_keyframes: int = 0
    refresh_requests: int = 0
    recoveries: list[int] = field(default_factory=list)
    """Per loss episode: frames from the first unusable frame to the next decoded one."""


class ParticipantDecoder:
    """Decode one sender's datagrams on the server. Never raises on bad input.

    Datagrams are put back in frame order; a frame missing while ``reorder_window`` later
    frames are waiting, or for ``max_delay_s``, is declared lost and concealed.
    """

    def __init__(
        self,
        participant: str,
        *,
        reorder_window: int = 3,
        max_delay_s: float = 0.15,
        refresh_retry_s: float = 0.5,
        max_pending: int = 64,
        renderer: Renderer | None = None,
    ) -> None:
        self.participant = participant
        self.reorder_window = reorder_window
        self.max_delay_s = max_delay_s
        self.refresh_retry_s = refresh_retry_s
        self.max_pending = max_pending
        self.renderer = renderer
        self.header: StreamHeader | None = None
        self.decoder: DecoderCore | None = None
        self.stats = ReceiverStats()
        self.next_frame: int | None = None
        """Next frame to render; ``None`` until the first IDR."""
        self.synced = False
        """The motion coder state is in lockstep with the sender's."""
        self.need_idr = True
        """The reference buffer cannot be trusted until the next IDR keyframe."""
        self._pending: dict[int, tuple[ParsedDatagram, float]] = {}
        self._newest_key = -1
        self._highest_seen = -1
        self._last_image: np.ndarray | None = None
        self._last_keypoints: np.ndarray | None = None
        self._last_reference: Reference | None = None
        self._unusable_since: int | None = None
        self._refresh_at: float | None = None
        self._outbox: list[Datagram] = []

    # -- public ------------------------------------------------------------------------------
    def receive(self, payload: bytes, now: float) -> list[RenderedFrame]:
        self.stats.datagrams += 1
        self.stats.bytes += len(payload)
        try:
            d = parse_datagram(payload)
        except DatagramError as exc:
            return self._malformed(str(exc))
        if d.kind == KIND_HEADER:
            assert d.header is not None
            self._header(d.header)
            return []
        if d.kind != KIND_FRAME:
            return self._malformed("feedback datagram from a sender")
        f = d.frame_index
        self._highest_seen = max(self._highest_seen, f)
        if self.next_frame is not None and f < self.next_frame:
            self.stats.late += 1
            logger.debug(
                "%s: frame %d arrived late (next is %d)", self.participant, f, self.next_frame
            )
            return []
        if f in self._pending:
            self.stats.duplicate += 1
            return []
        self._pending[f] = (d, now)
        while len(self._pending) > self.max_pending:
            del self._pending[min(self._pending)]
        return self._drain(now)

    def tick(self, now: float) -> list[RenderedFrame]:
        """Resolve frames that waited too long; repeat a refresh request that went unanswered."""
        out = self._drain(now)
        if self.need_idr and self._refresh_at is not None:
            self._request_refresh(now)  # repeated every refresh_retry_s until an IDR comes
        return out

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._outbox = self._outbox, []
        return out

    # -- internals ---------------------------------------------------------------------------
    def _malformed(self, why: str) -> list[RenderedFrame]:
        self.stats.malformed += 1
        logger.debug("%s: dropped malformed datagram: %s", self.participant, why)
        return []

    def _header(self, header: StreamHeader) -> None:
        if header == self.header:
            return
        try:
            decoder = DecoderCore(header, renderer=self.renderer)
        except BitstreamError as exc:  # e.g. another motion model
            self._malformed(f"unusable stream header: {exc}")
            return
        if header.frame_count != 0 or header.has_background:
            self._malformed("stream header is not a live one")
            return
        self.header, self.decoder = header, decoder
        self.need_idr = True

    def _drain(self, now: float) -> list[RenderedFrame]:
        out: list[RenderedFrame] = []
        while self._pending:
            if self.next_frame is None:  # start at the first IDR
                idrs = [f for f, (d, _) in self._pending.items() if d.idr]
                if not idrs:
                    if self._overdue(min(self._pending), now):
                        self._request_refresh(now)
                    break
                start = min(idrs)
                for f in [f for f in self._pending if f < start]:
                    del self._pending[f]
                    self.stats.unrendered += 1
                self.next_frame = start
            f = self.next_frame
            if f in self._pending:
                d, _ = self._pending.pop(f)
                out.extend(self._frame(d, now))
                self.next_frame = f + 1
                continue
            first = min(self._pending)
            if not self._overdue(first, now):
                break
            # Frames next_frame .. first - 1 are lost.
            self.synced = False
            self._mark_unusable(f)
            gap = first - f
            self.stats.lost += gap
            if gap > self.max_pending:  # a jump: do not hold thousands of frames
                self.stats.unrendered += gap
            else:
                for g in range(f, first):
                    out.extend(self._conceal(g))
            self.next_frame = first
        return out

    def _overdue(self, first: int, now: float) -> bool:
        """Whether the frames missing before pending frame ``first`` should be given up."""
        newest = max(self._pending)
        base = first if self.next_frame is None else self.next_frame
        waited = now - self._pending[first][1]
        return newest - base >= self.reorder_window or waited >= self.max_delay_s

    def _frame(self, d: ParsedDatagram, now: float) -> list[RenderedFrame]:
        f = d.frame_index
        assert d.motion is not None
        if self.decoder is None:
            self._need_idr(f, now, "no stream header yet")
            return self._conceal(f)
        if d.key_index > self._newest_key and d.keyframe is None:
            self.stats.lost_keyframes += 1
            self._need_idr(f, now, f"keyframe {d.key_index} never arrived")
            self._newest_key = d.key_index
        if d.idr:
            self.decoder.resync(f, clear_buffer=True)
            self.synced = True
            self.need_idr = False
            self._refresh_at = None
        elif self.need_idr:
            return self._conceal(f)
        elif not self.synced:
            if not d.motion.reset:
                return self._conceal(f)
            self.decoder.resync(f, clear_buffer=False)
            self.synced = True
        try:
            if d.keyframe is not None:
                self.decoder.receive(d.keyframe)
            frames = self.decoder.receive(d.motion)
        except BitstreamError as exc:
            self.stats.undecodable += 1
            self.synced = False
            self._need_idr(f, now, f"undecodable frame {f}: {exc}")
            return self._conceal(f)
        if d.keyframe is not None:
            self._newest_key = max(self._newest_key, f)
        out = []
        for frame in frames:
            self._last_image, self._last_keypoints = frame.image, frame.keypoints
            self._last_reference = frame.reference
            self.stats.decoded += 1
            if self._unusable_since is not None:
                self.stats.recoveries.append(frame.index - self._unusable_since)
                self._unusable_since = None
            out.append(
                RenderedFrame(
                    self.participant,
                    frame.index,
                    frame.image,
                    False,
                    frame.keypoints,
                    frame.reference,
                )
            )
        return out

    def _conceal(self, index: int) -> list[RenderedFrame]:
        self._mark_unusable(index)
        if self._last_image is None:
            self.stats.unrendered += 1
            return []
        self.stats.concealed += 1
        # Holding the last keypoints renders the last picture again: reuse it.
        return [
            RenderedFrame(
                self.participant,
                index,
                self._last_image,
                True,
                self._last_keypoints,
                self._last_reference,
            )
        ]

    def _mark_unusable(self, index: int) -> None:
        if self._unusable_since is None:
            self._unusable_since = index

    def _need_idr(self, index: int, now: float, why: str) -> None:
        logger.info("%s: %s; asking for a refresh", self.participant, why)
        self.need_idr = True
        self.synced = False
        self._mark_unusable(index)
        self._request_refresh(now)

    def _request_refresh(self, now: float) -> None:
        if self._refresh_at is not None and now - self._refresh_at < self.refresh_retry_s:
            return
        self._refresh_at = now
        self.stats.refresh_requests += 1
        request = RefreshRequestPacket(frame_index=self._highest_seen + 1)
        self._outbox.append(Datagram("reliable", encode_feedback_datagram(request)))


# ------------------------------------------------------------------------------------ rooms
class RoomError(Exception):
    """A join that the room refuses; ``http_status`` says how to answer."""

    http_status = 409


class RoomFull(RoomError):
    http_status = 403


class AlreadyJoined(RoomError):
    http_status = 409


@dataclass(frozen=True)
class RoomLimits:
    max_participants: int = 8
    packet_rate: float = 200.0
    """Datagrams per second per participant (sustained)."""
    packet_burst: float = 400.0
    byte_rate: float = 250_000.0
    """Bytes per second per participant (sustained; 2 Mbit/s)."""
    byte_burst: float = 1_000_000.0
    max_unreliable_size: int = 1200
    max_reliable_size: int = 256 * 1024
    idle_timeout_s: float = 15.0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; the clock is passed in."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self._t = now

    def take(self, amount: float, now: float) -> bool:
        if now > self._t:
            self.tokens = min(self.burst, self.tokens + (now - self._t) * self.rate)
            self._t = now
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True


@dataclass
class Participant:
    name: str
    role: Role
    joined_at: float
    last_seen: float
    packets: TokenBucket
    bytes: TokenBucket
    decoder: ParticipantDecoder | None
    rate_limited: int = 0
    oversize: int = 0
    rejected: int = 0
    """Datagrams from a participant that may not send them (a receiver sending media)."""


class RoomSession:
    """The participants of one room on the server. Never raises on datagrams."""

    def __init__(
        self,
        room: str,
        limits: RoomLimits | None = None,
        *,
        reorder_window: int = 3,
        max_delay_s: float = 0.15,
        refresh_retry_s: float = 0.5,
        renderer: Renderer | None = None,
    ) -> None:
        self.room = room
        self.limits = limits or RoomLimits()
        self.participants: dict[str, Participant] = {}
        self.unknown_datagrams = 0
        self.timed_out: list[str] = []
        self._decoder_options = {
            "reorder_window": reorder_window,
            "max_delay_s": max_delay_s,
            "refresh_retry_s": refresh_retry_s,
            "renderer": renderer,
        }

    def join(self, participant: str, role: Role, now: float) -> Participant:
        if participant in self.participants:
            raise AlreadyJoined(f"{participant!r} is already in room {self.room!r}")
        if len(self.participants) >= self.limits.max_participants:
            raise RoomFull(f"room {self.room!r} is full ({self.limits.max_participants})")
        lim = self.limits
        p = Participant(
            name=participant,
            role=role,
            joined_at=now,
            last_seen=now,
            packets=TokenBucket(lim.packet_rate, lim.packet_burst, now),
            bytes=TokenBucket(lim.byte_rate, lim.byte_burst, now),
            decoder=ParticipantDecoder(participant, **self._decoder_options)  # type: ignore[arg-type]
            if role == "send"
            else None,
        )
        self.participants[participant] = p
        logger.info("room %s: %s joined as %s", self.room, participant, role)
        return p

    def join_with_token(self, secret: bytes, token: str, now: float) -> TokenClaims:
        """Verify ``token`` for this room (raises a ``TokenError``) and join its bearer."""
        claims = verify_token(secret, token, self.room, now)
        self.join(claims.participant, claims.role, now)
        return claims

    def leave(self, participant: str) -> bool:
        p = self.participants.pop(participant, None)
        if p is not None:
            logger.info("room %s: %s left", self.room, participant)
        return p is not None

    def admit(
        self, participant: str, channel: Channel, payload: bytes, now: float
    ) -> ParticipantDecoder | None:
        """The checks of :meth:`receive_datagram` without the decoding: size and rate limits,
        unknown participants, receivers sending media. Returns the decoder that should get
        ``payload``, or ``None`` when the datagram is dropped (and counted).

        A transport that decodes each sender on its own worker uses this on its event loop
        and calls ``decoder.receive(payload, now)`` on the worker."""
        p = self.participants.get(participant)
        if p is None:
            self.unknown_datagrams += 1
            return None
        p.last_seen = now
        size = len(payload) if isinstance(payload, (bytes, bytearray)) else math.inf
        limit = (
            self.limits.max_reliable_size
            if channel == "reliable"
            else self.limits.max_unreliable_size
        )
        if size > limit:
            p.oversize += 1
            logger.debug("room %s: %s sent %s bytes on %s", self.room, participant, size, channel)
            return None
        if not p.packets.take(1, now) or not p.bytes.take(size, now):
            p.rate_limited += 1
            return None
        if p.decoder is None:
            p.rejected += 1
            return None
        return p.decoder

    def receive_datagram(
        self, participant: str, channel: Channel, payload: bytes, now: float
    ) -> list[RenderedFrame]:
        decoder = self.admit(participant, channel, payload, now)
        return [] if decoder is None else decoder.receive(bytes(payload), now)

    def expire(self, now: float) -> list[str]:
        """Remove the participants silent for ``idle_timeout_s``; returns their names (also
        appended to ``timed_out``)."""
        gone = [
            name
            for name, p in self.participants.items()
            if now - p.last_seen > self.limits.idle_timeout_s
        ]
        for name in gone:
            logger.info("room %s: %s timed out", self.room, name)
            del self.participants[name]
            self.timed_out.append(name)
        return gone

    def tick(self, now: float) -> list[RenderedFrame]:
        """Time passes: late frames are resolved, idle participants removed."""
        self.expire(now)
        out: list[RenderedFrame] = []
        for p in list(self.participants.values()):
            if p.decoder is not None:
                out.extend(p.decoder.tick(now))
        return out

    def datagrams_to_send(self) -> list[tuple[str, Datagram]]:
        """Feedback for senders, as ``(participant, datagram)``."""
        out: list[tuple[str, Datagram]] = []
        for name, p in self.participants.items():
            if p.decoder is not None:
                out.extend((name, d) for d in p.decoder.datagrams_to_send())
        return out
