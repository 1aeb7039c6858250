"""Packets: the records that follow the stream header.

On the wire every packet is::

    type u8 | payload_len varint | payload | crc u32

where ``crc`` is the CRC-32 of the type byte, the ``payload_len`` bytes and the payload.
Each packet class is a frozen dataclass with a ``TYPE`` constant, ``bytes(packet)`` for the
full packet and a ``parse_payload`` classmethod for the payload alone;
:func:`parse_packet` reads a full packet from a buffer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Union

from ._wire import (
    MAX_PAYLOAD_LEN,
    U32,
    VARINT_LIMIT,
    BitstreamError,
    Cursor,
    FieldError,
    Malformed,
    NeedMore,
    check_bool,
    check_bytes,
    check_int,
    crc32,
    encode_varint,
    scan_varint,
    u8,
    u16,
    u32,
)

_MAX_VARINT = VARINT_LIMIT - 1
MOTION_FLAG_RESET = 0x01
"""MOTION ``flags`` bit 0: reset the entropy coder / predictor state before this packet."""


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalising fields of a frozen dataclass


def _check_payload_size(where: str, size: int) -> None:
    if size > MAX_PAYLOAD_LEN:
        raise FieldError(where, f"payload is {size} bytes long (at most {MAX_PAYLOAD_LEN})")


class _PacketBase:
    """Behaviour shared by all packet classes (they are frozen dataclasses)."""

    TYPE: ClassVar[int]
    NAME: ClassVar[str]

    @property
    def packet_type(self) -> int:
        """The type byte this packet is written with."""
        return self.TYPE

    def encode_payload(self) -> bytes:
        """The payload bytes (without type, length and CRC)."""
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        """The full packet: type, payload length, payload and CRC."""
        payload = self.encode_payload()
        head = u8(self.packet_type) + encode_varint(len(payload))
        return head + payload + u32(crc32(head, payload))

    def __repr__(self) -> str:
        # Like the dataclass repr, but long byte strings are shown by their length only.
        parts = []
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if isinstance(value, bytes) and len(value) > 16:
                parts.append(f"{field.name}=<{len(value)} bytes>")
            else:
                parts.append(f"{field.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class KeyframePacket(_PacketBase):
    """An intra-coded picture for frame ``frame_index`` (type 0x01).

    ``data`` is the bitstream of the intra codec named by the header's ``intra_codec``;
    ``quality`` (0..100) is the setting it was coded with.
    """

    TYPE: ClassVar[int] = 0x01
    NAME: ClassVar[str] = "KEYFRAME"

    frame_index: int
    quality: int
    data: bytes

    def __post_init__(self) -> None:
        w = "KEYFRAME packet"
        _set(self, "frame_index", check_int(w, "frame_index", self.frame_index, 0, _MAX_VARINT))
        _set(self, "quality", check_int(w, "quality", self.quality, 0, 100))
        _set(self, "data", check_bytes(w, "data", self.data))
        _check_payload_size(w, len(encode_varint(self.frame_index)) + 1 + len(self.data))

    def encode_payload(self) -> bytes:
        return encode_varint(self.frame_index) + u8(self.quality) + self.data

    @classmethod
    def parse_payload(cls, payload: bytes) -> KeyframePacket:
        """Decode a KEYFRAME payload; raises :class:`BitstreamError` if it is invalid."""
        c = Cursor(bytes(payload), "KEYFRAME packet")
        return cls(frame_index=c.varint("frame_index"), quality=c.u8("quality"), data=c.rest())


@dataclass(frozen=True, repr=False)
class MotionPacket(_PacketBase):
    """Entropy-coded motion for frames ``first_frame .. first_frame + n_frames - 1`` (0x02).

    ``reset`` means the entropy coder / predictor state is reset before decoding ``data``,
    so a decoder can start (or resume after loss) at this packet.
    """

    TYPE: ClassVar[int] = 0x02
    NAME: ClassVar[str] = "MOTION"

    first_frame: int
    n_frames: int
    reset: bool
    data: bytes

    def __post_init__(self) -> None:
        w = "MOTION packet"
        _set(self, "first_frame", check_int(w, "first_frame", self.first_frame, 0, _MAX_VARINT))
        _set(self, "n_frames", check_int(w, "n_frames", self.n_frames, 1, _MAX_VARINT))
        if self.first_frame + self.n_frames > VARINT_LIMIT:
            raise FieldError(w, "first_frame + n_frames exceeds 2**64")
        _set(self, "reset", check_bool(w, "reset", self.reset))
        _set(self, "data", check_bytes(w, "data", self.data))
        fixed = len(encode_varint(self.first_frame)) + len(encode_varint(self.n_frames)) + 1
        _check_payload_size(w, fixed + len(self.data))

    @property
    def frames(self) -> range:
        """The frame indices this packet covers."""
        return range(self.first_frame, self.first_frame + self.n_frames)

    def encode_payload(self) -> bytes:
        flags = MOTION_FLAG_RESET if self.reset else 0
        return (
            encode_varint(self.first_frame) + encode_varint(self.n_frames) + u8(flags) + self.data
        )

    @classmethod
    def parse_payload(cls, payload: bytes) -> MotionPacket:
        """Decode a MOTION payload; raises :class:`BitstreamError` if it is invalid."""
        c = Cursor(bytes(payload), "MOTION packet")
        first_frame = c.varint("first_frame")
        n_frames = c.varint("n_frames")
        flags = c.u8("flags")
        if flags & ~MOTION_FLAG_RESET:
            raise FieldError(
                "MOTION packet",
                f"flags 0x{flags:02x} sets bits reserved in v1 (only 0x01 is defined)",
            )
        return cls(
            first_frame=first_frame,
            n_frames=n_frames,
            reset=bool(flags & MOTION_FLAG_RESET),
            data=c.rest(),
        )


@dataclass(frozen=True, repr=False)
class BackgroundPacket(_PacketBase):
    """An intra-coded full source frame, used to paste the face crop back (type 0x03)."""

    TYPE: ClassVar[int] = 0x03
    NAME: ClassVar[str] = "BACKGROUND"

    frame_index: int
    data: bytes

    def __post_init__(self) -> None:
        w = "BACKGROUND packet"
        _set(self, "frame_index", check_int(w, "frame_index", self.frame_index, 0, _MAX_VARINT))
        _set(self, "data", check_bytes(w, "data", self.data))
        _check_payload_size(w, len(encode_varint(self.frame_index)) + len(self.data))

    def encode_payload(self) -> bytes:
        return encode_varint(self.frame_index) + self.data

    @classmethod
    def parse_payload(cls, payload: bytes) -> BackgroundPacket:
        """Decode a BACKGROUND payload; raises :class:`BitstreamError` if it is invalid."""
        c = Cursor(bytes(payload), "BACKGROUND packet")
        return cls(frame_index=c.varint("frame_index"), data=c.rest())


@dataclass(frozen=True, repr=False)
class RefreshRequestPacket(_PacketBase):
    """A receiver's request for a new keyframe at or after ``frame_index`` (type 0x04)."""

    TYPE: ClassVar[int] = 0x04
    NAME: ClassVar[str] = "REFRESH_REQUEST"

    frame_index: int

    def __post_init__(self) -> None:
        w = "REFRESH_REQUEST packet"
        _set(self, "frame_index", check_int(w, "frame_index", self.frame_index, 0, _MAX_VARINT))

    def encode_payload(self) -> bytes:
        return encode_varint(self.frame_index)

    @classmethod
    def parse_payload(cls, payload: bytes) -> RefreshRequestPacket:
        """Decode a REFRESH_REQUEST payload; trailing bytes are an error."""
        c = Cursor(bytes(payload), "REFRESH_REQUEST packet")
        packet = cls(frame_index=c.varint("frame_index"))
        c.finish()
        return packet


@dataclass(frozen=True, repr=False)
class DetailPacket(_PacketBase):
    """A rectangle of keyframe ``frame_index`` coded again at a higher quality (type 0x05).

    The encoder spends more bits where viewers look (the eyes, the mouth) than on the rest of
    a keyframe: the decoder decodes ``data`` (an intra picture of ``width x height`` in the
    header's ``intra_codec``) and blends it into the keyframe picture at ``(x, y)`` with a soft
    edge before the picture enters the reference buffer. It follows its KEYFRAME packet and
    precedes the MOTION packet that covers the frame. A reader that skips it (v1 readers treat
    type 0x05 as unknown) still decodes the stream, with the keyframe as first coded.
    """

    TYPE: ClassVar[int] = 0x05
    NAME: ClassVar[str] = "DETAIL"

    frame_index: int
    x: int
    y: int
    width: int
    height: int
    quality: int
    data: bytes

    def __post_init__(self) -> None:
        w = "DETAIL packet"
        _set(self, "frame_index", check_int(w, "frame_index", self.frame_index, 0, _MAX_VARINT))
        for name in ("x", "y"):
            _set(self, name, check_int(w, name, getattr(self, name), 0, 0xFFFF))
        for name in ("width", "height"):
            _set(self, name, check_int(w, name, getattr(self, name), 1, 0xFFFF))
        _set(self, "quality", check_int(w, "quality", self.quality, 0, 100))
        _set(self, "data", check_bytes(w, "data", self.data))
        _check_payload_size(w, len(encode_varint(self.frame_index)) + 9 + len(self.data))

    def encode_payload(self) -> bytes:
        return (
            encode_varint(self.frame_index)
            + u16(self.x)
            + u16(self.y)
            + u16(self.width)
            + u16(self.height)
            + u8(self.quality)
            + self.data
        )

    @classmethod
    def parse_payload(cls, payload: bytes) -> DetailPacket:
        """Decode a DETAIL payload; raises :class:`BitstreamError` if it is invalid."""
        c = Cursor(bytes(payload), "DETAIL packet")
        return cls(
            frame_index=c.varint("frame_index"),
            x=c.u16("x"),
            y=c.u16("y"),
            width=c.u16("width"),
            height=c.u16("height"),
            quality=c.u8("quality"),
            data=c.rest(),
        )


@dataclass(frozen=True, repr=False)
class AuxPacket(_PacketBase):
    """Pictures of the auxiliary stream for frames ``first_frame .. first_frame + n - 1``
    (type 0x06, format v2; docs/bitstream.md §13).

    ``pictures[k]`` is frame ``first_frame + k``'s coded aux picture (the packed form of
    :mod:`keyface.auxstream`, in the header's ``aux_codec``), or ``b""`` when the frame has
    none (the decoder keeps the previous aux picture). On the wire::

        first_frame varint | n varint | n x (length varint | picture bytes)

    It precedes the MOTION packet that covers the same frames.
    """

    TYPE: ClassVar[int] = 0x06
    NAME: ClassVar[str] = "AUX"

    first_frame: int
    pictures: tuple[bytes, ...]

    def __post_init__(self) -> None:
        w = "AUX packet"
        _set(self, "first_frame", check_int(w, "first_frame", self.first_frame, 0, _MAX_VARINT))
        if not isinstance(self.pictures, (tuple, list)) or not self.pictures:
            raise FieldError(w, "pictures must be a non-empty sequence of bytes")
        pictures = tuple(check_bytes(w, "picture", p) for p in self.pictures)
        _set(self, "pictures", pictures)
        _check_payload_size(w, len(self.encode_payload()))

    @property
    def frames(self) -> range:
        """The frame indices this packet covers."""
        return range(self.first_frame, self.first_frame + len(self.pictures))

    def encode_payload(self) -> bytes:
        parts = [encode_varint(self.first_frame), encode_varint(len(self.pictures))]
        for picture in self.pictures:
            parts += [encode_varint(len(picture)), picture]
        return b"".join(parts)

    @classmethod
    def parse_payload(cls, payload: bytes) -> AuxPacket:
        """Decode an AUX payload; raises :class:`BitstreamError` if it is invalid (a count
        larger than the payload can hold is refused before anything is allocated)."""
        c = Cursor(bytes(payload), "AUX packet")
        first_frame = c.varint("first_frame")
        n = c.varint("n")
        if n == 0 or n > len(payload):
            raise FieldError("AUX packet", f"n = {n} pictures does not fit the payload")
        pictures = []
        for k in range(n):
            pictures.append(c.take(c.varint(f"picture {k} length"), f"picture {k}"))
        c.finish()
        return cls(first_frame=first_frame, pictures=tuple(pictures))


@dataclass(frozen=True, repr=False)
class EndPacket(_PacketBase):
    """The last packet of a complete stream; ``frame_count`` frames were coded (type 0x7F)."""

    TYPE: ClassVar[int] = 0x7F
    NAME: ClassVar[str] = "END"

    frame_count: int

    def __post_init__(self) -> None:
        w = "END packet"
        _set(self, "frame_count", check_int(w, "frame_count", self.frame_count, 0, _MAX_VARINT))

    def encode_payload(self) -> bytes:
        return encode_varint(self.frame_count)

    @classmethod
    def parse_payload(cls, payload: bytes) -> EndPacket:
        """Decode an END payload; trailing bytes are an error."""
        c = Cursor(bytes(payload), "END packet")
        packet = cls(frame_count=c.varint("frame_count"))
        c.finish()
        return packet


@dataclass(frozen=True, repr=False)
class UnknownPacket(_PacketBase):
    """A packet of a type this version does not define, kept verbatim.

    Newer writers may add packet types; v1 readers return them as ``UnknownPacket`` (after
    checking the CRC) and players skip them. Writing one back reproduces the same bytes.
    ``TYPE`` is ``None`` here: the type byte is the ``type`` field.
    """

    TYPE: ClassVar[int | None] = None  # type: ignore[assignment]
    NAME: ClassVar[str] = "unknown"

    type: int
    payload: bytes

    def __post_init__(self) -> None:
        w = "unknown packet"
        _set(self, "type", check_int(w, "type", self.type, 0, 0xFF))
        if self.type in PACKET_TYPES:
            name = PACKET_TYPES[self.type].NAME
            raise FieldError(w, f"type 0x{self.type:02x} is the known type {name}")
        _set(self, "payload", check_bytes(w, "payload", self.payload))
        _check_payload_size(w, len(self.payload))

    @property
    def packet_type(self) -> int:
        return self.type

    def encode_payload(self) -> bytes:
        return self.payload

    @classmethod
    def parse_payload(cls, payload: bytes, packet_type: int) -> UnknownPacket:
        """Wrap the payload of a packet whose type byte is ``packet_type``."""
        return cls(type=packet_type, payload=bytes(payload))


KnownPacket = Union[  # noqa: UP007  (a runtime alias that also works with isinstance)
    KeyframePacket,
    MotionPacket,
    BackgroundPacket,
    RefreshRequestPacket,
    DetailPacket,
    AuxPacket,
    EndPacket,
]

Packet = Union[KnownPacket, UnknownPacket]  # noqa: UP007
"""Any packet :func:`parse_packet` can return."""

PACKET_TYPES: dict[int, type[KnownPacket]] = {
    cls.TYPE: cls
    for cls in (
        KeyframePacket,
        MotionPacket,
        BackgroundPacket,
        RefreshRequestPacket,
        DetailPacket,
        AuxPacket,
        EndPacket,
    )
}
"""The packet classes, by type byte (DETAIL was added within v1: a reader without it skips it
as an unknown type; AUX belongs to v2 streams, which v1 readers refuse by their version)."""

PACKET_CLASSES: tuple[type, ...] = (*PACKET_TYPES.values(), UnknownPacket)


def describe_type(packet_type: int) -> str:
    """``"MOTION packet"``, or ``"packet of unknown type 0x42"``."""
    cls = PACKET_TYPES.get(packet_type)
    if cls is None:
        return f"packet of unknown type 0x{packet_type:02x}"
    return f"{cls.NAME} packet"


# ------------------------------------------------------------------ record-level helpers
# Shared with the incremental StreamReader: `pos` indexes `buf`, `at` is the stream offset
# reported in messages (they differ when the reader has discarded consumed bytes).


def packet_size(buf: bytes | bytearray, pos: int, end: int, at: int) -> int | None:
    """Total size of the packet starting at ``buf[pos]`` (``buf[pos:end]`` is available).

    Returns ``None`` while the size is not yet known (the type byte or ``payload_len`` is
    incomplete). Raises :class:`BitstreamError` as soon as ``payload_len`` is invalid or
    larger than :data:`MAX_PAYLOAD_LEN`, without waiting for (or allocating) the payload.
    """
    if pos >= end:
        return None
    what = describe_type(buf[pos])
    try:
        length, after = scan_varint(buf, pos + 1, end)
    except NeedMore:
        return None
    except Malformed as exc:
        raise BitstreamError(f"{what} at byte {at}: payload_len: {exc}", at) from None
    if length > MAX_PAYLOAD_LEN:
        raise BitstreamError(
            f"{what} at byte {at}: declared payload_len {length} exceeds the"
            f" {MAX_PAYLOAD_LEN}-byte limit",
            at,
        )
    return after - pos + length + 4


def packet_truncated(buf: bytes | bytearray, pos: int, end: int, at: int) -> BitstreamError:
    """The error for input that ends inside the packet at ``buf[pos]`` (``pos < end``)."""
    what = describe_type(buf[pos])
    size = packet_size(buf, pos, end, at)
    if size is None:
        detail = f"ends after {end - pos} bytes, inside payload_len"
    else:
        detail = f"needs {size} bytes, got {end - pos}"
    return BitstreamError(f"truncated {what} at byte {at} ({detail})", at)


def decode_packet(record: bytes, at: int) -> Packet:
    """Decode one complete packet record (exactly ``packet_size`` bytes) found at ``at``."""
    packet_type = record[0]
    length, start = scan_varint(record, 1, len(record))
    (stored,) = U32.unpack_from(record, start + length)
    computed = crc32(record[: start + length])
    if stored != computed:
        raise BitstreamError(
            f"CRC mismatch in {describe_type(packet_type)} at byte {at}"
            f" (stored 0x{stored:08x}, computed 0x{computed:08x})",
            at,
        )
    payload = record[start : start + length]
    cls = PACKET_TYPES.get(packet_type)
    try:
        if cls is None:
            return UnknownPacket.parse_payload(payload, packet_type)
        return cls.parse_payload(payload)
    except FieldError as exc:
        raise exc.at(at) from None


def parse_packet(data: bytes, offset: int = 0) -> tuple[Packet, int]:
    """Parse the packet starting at ``data[offset]``; return it and the offset after it.

    Raises :class:`BitstreamError` if there is no packet there, if it is cut short, if its
    CRC does not match or if a field is invalid. Unknown packet types with a valid CRC are
    returned as :class:`UnknownPacket`.
    """
    buf = data if isinstance(data, (bytes, bytearray)) else bytes(data)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= len(buf):
        raise BitstreamError(f"offset {offset!r} is outside the data (0..{len(buf)})", None)
    if offset == len(buf):
        raise BitstreamError(f"expected a packet at byte {offset}, found end of data", offset)
    size = packet_size(buf, offset, len(buf), offset)
    if size is None or offset + size > len(buf):
        raise packet_truncated(buf, offset, len(buf), offset)
    return decode_packet(bytes(buf[offset : offset + size]), offset), offset + size
