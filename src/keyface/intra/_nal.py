"""Compact storage of a one-picture HEVC / VVC Annex B stream.

An encoder's Annex B output is split into NAL units; units the decoder does not need (access
unit delimiters, SEI, end of sequence/stream, filler) are dropped. The rest is stored as::

    byte 0       (FORMAT_VERSION << 4) | picture flags (4 bits, see PictureFlags)
    [varint]     extra rows to crop at the bottom, only when flag bit 3 is set
    varint       n = length of the packed head
    n bytes      head, raw-deflated with a preset dictionary of typical parameter sets:
                 varint length of the body, then the NAL units before the first VCL unit
                 (VPS/SPS/PPS/APS ...) as Annex B
    rest         body: the VCL units (and anything after them) as Annex B with 3-byte start
                 codes, without the first start code

The body length (inside the packed head, ~2 bytes) makes truncated or extended data an error
instead of a silently concealed picture.

Parameter sets are ~80 bytes (HEVC) to ~180 bytes (VVC) per picture and vary little between
pictures, so the preset dictionary packs them into ~5-40 bytes. A changed encoder only makes
the head less compact, never undecodable. The picture flags let the codec pad to even sides
(4:2:0) or further down and crop back, and pick the chroma upsampling filter.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from keyface.bitstream import BitstreamError, decode_varint, encode_varint
from keyface.intra._base import IntraCodecError

FORMAT_VERSION = 1
START_CODE = b"\x00\x00\x01"
_MAX_HEAD = 1 << 16  # inflated parameter sets larger than this are not ours


def annexb_spans(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each NAL unit of an Annex B byte stream, its start code (3 or 4
    bytes) included: ``data[start:end]`` pieces concatenate back to ``data`` from the first
    start code on."""
    starts = []
    pos = data.find(START_CODE)
    while pos >= 0:
        starts.append(pos)
        pos = data.find(START_CODE, pos + len(START_CODE))
    spans = []
    for k, s in enumerate(starts):
        begin = s - 1 if s > 0 and data[s - 1] == 0 else s
        end = starts[k + 1] if k + 1 < len(starts) else len(data)
        if k + 1 < len(starts) and data[end - 1] == 0:
            end -= 1  # that zero belongs to the next (4-byte) start code
        spans.append((begin, end))
    return spans


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream, without start codes and trailing zero bytes."""
    nals = []
    for begin, end in annexb_spans(data):
        code = 4 if data[begin : begin + 4] == b"\x00" + START_CODE else 3
        nal = data[begin + code : end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
    return nals


def _varint(value: int) -> bytes:
    return encode_varint(value)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return decode_varint(data, pos)
    except BitstreamError as exc:
        raise IntraCodecError(f"bad length field ({exc})") from None


@dataclass(frozen=True)
class PictureFlags:
    """How to turn the decoded 4:2:0 picture back into RGB (4 low bits of byte 0 + a varint)."""

    odd_width: bool = False  # the picture was padded by one column: crop it
    odd_height: bool = False  # the picture was padded by one row: crop it
    nearest_chroma: bool = False  # upsample chroma by replication instead of bilinear
    extra_rows: int = 0  # further rows padded at the bottom (even): crop them

    def to_bits(self) -> int:
        bits = int(self.odd_width) | int(self.odd_height) << 1 | int(self.nearest_chroma) << 2
        return bits | int(self.extra_rows > 0) << 3


@dataclass(frozen=True)
class NalPacker:
    """Packs/unpacks one picture's Annex B stream for one codec family.

    ``is_vcl(nal)`` tells coded-slice units; ``is_droppable(nal)`` tells units not needed for
    decoding; ``dictionary`` is the preset deflate dictionary of typical parameter sets.
    """

    what: str
    is_vcl: Callable[[bytes], bool]
    is_droppable: Callable[[bytes], bool]
    dictionary: bytes

    def pack(self, annexb: bytes, flags: PictureFlags) -> bytes:
        """Compact form of the encoder output ``annexb``."""
        nals = [n for n in split_annexb(annexb) if len(n) >= 2 and not self.is_droppable(n)]
        first_vcl = next((i for i, n in enumerate(nals) if self.is_vcl(n)), None)
        if first_vcl is None:
            raise IntraCodecError(f"{self.what} encoder produced no coded picture")
        head = b"".join(START_CODE + n for n in nals[:first_vcl])
        body = START_CODE.join(nals[first_vcl:])
        packer = zlib.compressobj(
            9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, self.dictionary
        )
        zhead = packer.compress(_varint(len(body)) + head) + packer.flush()
        byte0 = bytes([(FORMAT_VERSION << 4) | flags.to_bits()])
        extra = _varint(flags.extra_rows) if flags.extra_rows > 0 else b""
        return byte0 + extra + _varint(len(zhead)) + zhead + body

    def unpack(self, data: bytes) -> tuple[bytes, PictureFlags]:
        """Inverse of :meth:`pack`: ``(annexb, flags)``; IntraCodecError if bad."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise IntraCodecError(f"{self.what} data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < 3:
            raise IntraCodecError(f"corrupt {self.what} data (only {len(data)} bytes)")
        byte0 = data[0]
        if byte0 >> 4 != FORMAT_VERSION:
            raise IntraCodecError(f"not {self.what} intra data (bad header byte 0x{byte0:02x})")
        try:
            extra_rows, pos = _read_varint(data, 1) if byte0 & 8 else (0, 1)
            size, pos = _read_varint(data, pos)
        except IntraCodecError:
            raise IntraCodecError(f"corrupt {self.what} data (truncated header)") from None
        if pos + size >= len(data):
            raise IntraCodecError(f"corrupt {self.what} data (truncated)")
        try:
            unpacker = zlib.decompressobj(-15, self.dictionary)
            head = unpacker.decompress(data[pos : pos + size], _MAX_HEAD)
            if unpacker.unconsumed_tail or unpacker.unused_data or not unpacker.eof:
                raise zlib.error("bad length")
            body_size, start = _read_varint(head, 0)
        except (zlib.error, IntraCodecError):
            raise IntraCodecError(f"corrupt {self.what} data (parameter sets)") from None
        head = head[start:]
        body = data[pos + size :]
        if body_size != len(body):
            raise IntraCodecError(
                f"corrupt {self.what} data (truncated? {len(body)} bytes, expected {body_size})"
            )
        if head and not head.startswith(START_CODE):
            raise IntraCodecError(f"corrupt {self.what} data (parameter sets)")
        annexb = head.replace(START_CODE, b"\x00" + START_CODE) + START_CODE + body
        flags = PictureFlags(bool(byte0 & 1), bool(byte0 & 2), bool(byte0 & 4), extra_rows)
        return annexb, flags
