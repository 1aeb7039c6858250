"""The keyface container format (v1 and v2): stream header, packets, readers and writers.

A keyface stream is a header followed by packets::

    File   = b"KFAC" | version u8 | header_len varint | header | header_crc u32 | Packet*
    Packet = type u8 | payload_len varint | payload | crc u32

The full specification is ``docs/bitstream.md``. This package is pure standard-library
Python (no numpy, no torch) and sans-I/O: it turns values into bytes and bytes into
values, and leaves files and sockets to the caller.

Writing and reading a stream::

    from keyface import bitstream as bs

    data = bs.write_stream(header, [bs.KeyframePacket(0, 90, jpeg), ..., bs.EndPacket(n)])
    parsed = bs.read_stream(data)        # keeps everything before the first damage
    if parsed.error:
        log(parsed.error)                # e.g. "CRC mismatch in MOTION packet at byte 1234 ..."

Live streams use :class:`StreamReader` (``feed`` bytes, ``next_event`` until ``None``) on
the receiving side and ``bytes(header)`` / ``bytes(packet)`` on the sending side.

Only :class:`BitstreamError` (a ``ValueError``) escapes parsing, whatever the input.
"""

from ._wire import (
    MAX_HEADER_LEN,
    MAX_PAYLOAD_LEN,
    BitstreamError,
    decode_varint,
    encode_varint,
)
from .header import (
    FLAG_AUX,
    FLAG_BACKGROUND,
    FLAG_CROPPED,
    FLAG_PROMOTES,
    MAGIC,
    MAX_GOP,
    MIN_GOP,
    READ_VERSIONS,
    VERSION,
    AuxInfo,
    CropGeometry,
    RefreshMode,
    StreamHeader,
    StreamMode,
)
from .packets import (
    MOTION_FLAG_RESET,
    PACKET_TYPES,
    AuxPacket,
    BackgroundPacket,
    DetailPacket,
    EndPacket,
    KeyframePacket,
    MotionPacket,
    Packet,
    RefreshRequestPacket,
    UnknownPacket,
    parse_packet,
)
from .stream import Event, ParsedStream, StreamReader, read_stream, write_stream

__all__ = [
    "FLAG_AUX",
    "FLAG_BACKGROUND",
    "FLAG_CROPPED",
    "FLAG_PROMOTES",
    "MAGIC",
    "MAX_GOP",
    "MAX_HEADER_LEN",
    "MAX_PAYLOAD_LEN",
    "MIN_GOP",
    "MOTION_FLAG_RESET",
    "PACKET_TYPES",
    "READ_VERSIONS",
    "VERSION",
    "AuxInfo",
    "AuxPacket",
    "BackgroundPacket",
    "BitstreamError",
    "CropGeometry",
    "DetailPacket",
    "EndPacket",
    "Event",
    "KeyframePacket",
    "MotionPacket",
    "Packet",
    "ParsedStream",
    "RefreshMode",
    "RefreshRequestPacket",
    "StreamHeader",
    "StreamMode",
    "StreamReader",
    "UnknownPacket",
    "decode_varint",
    "encode_varint",
    "parse_packet",
    "read_stream",
    "write_stream",
]
