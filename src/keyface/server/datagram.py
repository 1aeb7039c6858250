"""The conference datagram format (sans-I/O): one tag byte (version, kind, IDR flag), then the
stream header, one frame's keyface packets, or a refresh request. Specified in
docs/bitstream.md ("Datagrams"), beside the file format whose packets it carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from keyface.bitstream import (
    AuxPacket,
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
from keyface.codec.limits import MAX_BASE_BACK

Channel = Literal["reliable", "unreliable"]

DATAGRAM_VERSION = 1
KIND_HEADER = 1
"""Body: the stream header record (``bytes(StreamHeader)``). Reliable channel."""
KIND_FRAME = 2
"""Body: the keyface packets of one frame: [KEYFRAME] [AUX] MOTION (AUX: hybrid streams, one
picture, the frame's). Reliable if it has a keyframe."""
KIND_FEEDBACK = 3
"""Body: one REFRESH_REQUEST packet (server -> sender). Reliable channel."""
KIND_ACK = 4
"""Body: ``newest`` varint, ``held`` u32 LE: the receiver holds the motion-coder state after
frame ``newest`` and after frame ``newest - 1 - i`` for every set bit ``i`` (server -> sender,
unreliable channel). A sender that sees acknowledgements codes from acknowledged frames."""
KIND_AUX_REFRESH = 5
"""Body: ``frame_index`` varint: the receiver lost aux pictures and asks for a random-access
one at or after that frame (server -> sender, reliable channel; hybrid streams)."""
FLAG_IDR = 0x08
"""FRAME only: the sender emptied its reference buffer before this keyframe."""
FLAG_BASED = 0x10
"""FRAME only: ``base_back`` and ``keys`` varints follow ``key_back``. The MOTION packet
continues from the motion-coder state after frame ``frame_index - base_back`` (0: the packet
resets); ``keys`` counts the keyframes the sender coded since its newest IDR, that IDR
included, so a receiver notices a missed keyframe whatever else was lost."""
FLAG_REDUNDANT = 0x20
"""FRAME with FLAG_BASED only: before the frame's own packets, ``copies`` varint (1 ..
``MAX_COPIES``), then copies of the MOTION packets of that many frames just before this one,
oldest first, each as ``key_back``, ``base_back`` and ``keys`` varints and the packet as first
sent."""
MAX_COPIES = 2
"""Most previous frames one datagram carries again."""
ACK_SPAN = 32
"""Frames before ``newest`` an ACK's ``held`` mask covers."""
_KIND_MASK = 0x07
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
class Ack:
    """What a receiver holds: the motion-coder state after these frames (``KIND_ACK``)."""

    newest: int
    held: int = 0
    """Bit ``i``: the state after frame ``newest - 1 - i`` is held too."""

    def frames(self) -> list[int]:
        """The acknowledged frame indices, newest first."""
        out = [self.newest]
        out += [self.newest - 1 - i for i in range(ACK_SPAN) if self.held >> i & 1]
        return [f for f in out if f >= 0]


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
    base_back: int | None = None
    """FLAG_BASED: the motion continues from the state after frame ``frame_index -
    base_back`` (0: it resets); ``None``: from the frame before (a version-1 sender)."""
    keys: int | None = None
    """FLAG_BASED: keyframes the sender coded since its newest IDR, that IDR included."""
    copies: tuple[ParsedDatagram, ...] = ()
    """FLAG_REDUNDANT: the datagrams of the frames just before this one, oldest first, as far
    as the receiver needs them (MOTION packet, ``key_back``, ``base_back`` and ``keys``; never
    a keyframe)."""
    ack: Ack | None = None
    aux: AuxPacket | None = None
    """The frame's aux picture (hybrid streams)."""
    aux_refresh: int | None = None
    """KIND_AUX_REFRESH: the frame from which a random-access aux picture is asked for."""

    @property
    def key_index(self) -> int:
        return self.frame_index - self.key_back

    @property
    def base(self) -> int | None:
        """The frame whose motion-coder state this one continues from (``None``: the
        previous one, or a reset)."""
        if self.base_back is None or self.base_back == 0:
            return None
        return self.frame_index - self.base_back


def _tag(kind: int, flags: int = 0) -> bytes:
    return bytes([(DATAGRAM_VERSION << 6) | flags | kind])


def encode_header_datagram(header: StreamHeader) -> bytes:
    return _tag(KIND_HEADER) + bytes(header)


@dataclass(frozen=True)
class RedundantMotion:
    """A copy of an earlier frame's motion to carry again (``FLAG_REDUNDANT``)."""

    key_back: int
    base_back: int
    keys: int
    motion: MotionPacket


def encode_frame_datagram(
    frame_index: int,
    key_back: int,
    idr: bool,
    packets: list[Packet],
    base_back: int | None = None,
    copies: tuple[RedundantMotion, ...] = (),
    keys: int = 1,
) -> bytes:
    """A FRAME datagram. ``base_back`` (FLAG_BASED): the MOTION packet continues from the
    state after frame ``frame_index - base_back`` (0 if it resets); ``None`` writes a
    version-1 frame (continues from the previous frame); ``keys`` (written with it): the
    keyframes since the newest IDR, that IDR included. ``copies``: the motion of the frames
    just before, oldest first, carried again (needs ``base_back``)."""
    flags = FLAG_IDR if idr else 0
    body = encode_varint(frame_index) + encode_varint(key_back)
    if base_back is not None:
        flags |= FLAG_BASED
        body += encode_varint(base_back) + encode_varint(keys)
    if copies:
        if base_back is None:
            raise ValueError("redundant copies need a based frame")
        if len(copies) > MAX_COPIES:
            raise ValueError(f"at most {MAX_COPIES} copies")
        first = frame_index - len(copies)
        if [c.motion.first_frame for c in copies] != list(range(first, frame_index)):
            raise ValueError("the copies must be of the frames just before, oldest first")
        flags |= FLAG_REDUNDANT
        body += encode_varint(len(copies))
        for c in copies:
            body += (
                encode_varint(c.key_back)
                + encode_varint(c.base_back)
                + encode_varint(c.keys)
                + bytes(c.motion)
            )
    return _tag(KIND_FRAME, flags) + body + b"".join(bytes(p) for p in packets)


def encode_feedback_datagram(request: RefreshRequestPacket) -> bytes:
    return _tag(KIND_FEEDBACK) + bytes(request)


def encode_aux_refresh_datagram(frame_index: int) -> bytes:
    return _tag(KIND_AUX_REFRESH) + encode_varint(frame_index)


def encode_ack_datagram(ack: Ack) -> bytes:
    if ack.newest < 0 or not 0 <= ack.held < 1 << ACK_SPAN:
        raise ValueError("ack out of range")
    return _tag(KIND_ACK) + encode_varint(ack.newest) + ack.held.to_bytes(4, "little")


def frame_index_of(data: bytes) -> int | None:
    """The frame index of a FRAME datagram from its tag byte and first varint alone, without
    parsing its packets (``None`` for another kind or a broken start): for counting."""
    if len(data) < 2 or data[0] >> 6 != DATAGRAM_VERSION or data[0] & _KIND_MASK != KIND_FRAME:
        return None
    try:
        return decode_varint(data, 1)[0]
    except BitstreamError:
        return None


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
    if tag >> 6 != DATAGRAM_VERSION:
        raise DatagramError(f"unknown datagram version (tag 0x{tag:02x})")
    kind, idr = tag & _KIND_MASK, bool(tag & FLAG_IDR)
    based, redundant = bool(tag & FLAG_BASED), bool(tag & FLAG_REDUNDANT)
    if (idr or based or redundant) and kind != KIND_FRAME:
        raise DatagramError("frame flags on a datagram that is not a frame")
    if redundant and not based:
        raise DatagramError("redundant motion in a frame that names no base")
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
        if kind == KIND_ACK:
            newest, pos = decode_varint(data, 1)
            if len(data) != pos + 4:
                raise DatagramError("ack datagram must be newest varint + 4 bytes")
            return ParsedDatagram(kind, ack=Ack(newest, int.from_bytes(data[pos:], "little")))
        if kind == KIND_AUX_REFRESH:
            frame_index, pos = decode_varint(data, 1)
            if pos != len(data):
                raise DatagramError("aux refresh datagram must be one varint")
            return ParsedDatagram(kind, aux_refresh=frame_index)
        if kind != KIND_FRAME:
            raise DatagramError(f"unknown datagram kind {kind}")
        frame_index, pos = decode_varint(data, 1)
        key_back, pos = decode_varint(data, pos)
        base_back = keys = None
        copies: tuple[ParsedDatagram, ...] = ()
        if based:
            base_back, pos = decode_varint(data, pos)
            keys, pos = decode_varint(data, pos)
        if redundant:
            copies, pos = _copies(data, pos, frame_index)
        packets = _packets(data, pos)
    except BitstreamError as exc:
        raise DatagramError(str(exc)) from None
    aux = packets[-2] if len(packets) >= 2 and isinstance(packets[-2], AuxPacket) else None
    keyframe = packets[0] if len(packets) == 2 + (aux is not None) else None
    motion = packets[-1] if packets else None
    if (
        not 1 <= len(packets) <= 3
        or not isinstance(motion, MotionPacket)
        or (keyframe is not None and not isinstance(keyframe, KeyframePacket))
        or (len(packets) == 3 and (keyframe is None or aux is None))
    ):
        raise DatagramError("frame datagram must hold [KEYFRAME] [AUX] MOTION")
    if aux is not None and (aux.first_frame != frame_index or len(aux.pictures) != 1):
        raise DatagramError("AUX packet does not hold exactly the datagram's frame")
    if motion.first_frame != frame_index or motion.n_frames != 1:
        raise DatagramError("MOTION packet does not cover exactly the datagram's frame")
    if keyframe is not None and (keyframe.frame_index != frame_index or key_back != 0):
        raise DatagramError("KEYFRAME packet is not for the datagram's frame")
    if key_back > frame_index or (idr and keyframe is None):
        raise DatagramError("inconsistent keyframe distance or IDR flag")
    _check_base(frame_index, base_back, motion)
    return ParsedDatagram(
        kind,
        idr=idr,
        frame_index=frame_index,
        key_back=key_back,
        keyframe=keyframe,
        motion=motion,
        base_back=base_back,
        keys=keys,
        copies=copies,
        aux=aux,
    )


def _check_base(frame_index: int, base_back: int | None, motion: MotionPacket) -> None:
    if base_back is None:
        return
    if (base_back == 0) != motion.reset:
        raise DatagramError("base_back must be 0 exactly when the MOTION packet resets")
    if base_back > min(frame_index, MAX_BASE_BACK):
        raise DatagramError(f"base_back {base_back} reaches before frame 0 or too far back")


def _copies(data: bytes, pos: int, frame_index: int) -> tuple[tuple[ParsedDatagram, ...], int]:
    n, pos = decode_varint(data, pos)
    if not 1 <= n <= min(MAX_COPIES, frame_index):
        raise DatagramError(f"{n} redundant copies in frame {frame_index}")
    out = []
    for index in range(frame_index - n, frame_index):
        copy, pos = _copy(data, pos, index)
        out.append(copy)
    return tuple(out), pos


def _copy(data: bytes, pos: int, index: int) -> tuple[ParsedDatagram, int]:
    key_back, pos = decode_varint(data, pos)
    base_back, pos = decode_varint(data, pos)
    keys, pos = decode_varint(data, pos)
    packet, pos = parse_packet(data, pos)
    if not isinstance(packet, MotionPacket) or packet.first_frame != index or packet.n_frames != 1:
        raise DatagramError(f"redundant copy must be frame {index}'s MOTION packet")
    if key_back > index:
        raise DatagramError("inconsistent keyframe distance in the redundant copy")
    _check_base(index, base_back, packet)
    copy = ParsedDatagram(
        KIND_FRAME,
        frame_index=index,
        key_back=key_back,
        motion=packet,
        base_back=base_back,
        keys=keys,
    )
    return copy, pos
