"""The conference datagram format (sans-I/O): one tag byte (version, kind, IDR flag), then the
stream header, one frame's keyface packets, or a refresh request. Specified in
docs/bitstream.md ("Datagrams"), beside the file format whose packets it carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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

Channel = Literal["reliable", "unreliable"]

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
