"""Wire-level building blocks of the keyface container (private module).

Everything here is standard library only: little-endian integer packing, LEB128 varints,
the CRC, a bounds-checked read cursor and the field validators shared by the header and
the packet classes. Nothing in this module knows about specific header fields or packet
types.
"""

from __future__ import annotations

import math
import numbers
import operator
import struct
import zlib

MAX_VARINT_BYTES = 10
"""A varint may use at most this many bytes (enough for any 64-bit value)."""

VARINT_LIMIT = 1 << 64
"""Varints hold values in ``0 .. VARINT_LIMIT - 1``."""

MAX_PAYLOAD_LEN = 64 * 1024 * 1024
"""Largest ``payload_len`` a packet may declare (64 MiB). Larger values are an error."""

MAX_HEADER_LEN = 1024 * 1024
"""Largest ``header_len`` a stream header may declare (1 MiB). Larger values are an error."""

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
F32 = struct.Struct("<f")


class BitstreamError(ValueError):
    """A keyface stream (or a value meant to be written into one) is invalid.

    The message is a single line saying what is wrong and, where it is known, at which
    byte offset of the stream. The offset is also available as :attr:`offset` (``None``
    when the problem is not tied to a position, e.g. an invalid field passed to a
    constructor).
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset

    def __reduce__(self) -> tuple[type[BitstreamError], tuple[str, int | None]]:
        # Keep errors picklable (multiprocessing) even for subclasses with other signatures.
        return (BitstreamError, (str(self), self.offset))


class FieldError(BitstreamError):
    """A field-level problem inside one record (the header or a packet payload).

    ``where`` names the record ("header", "KEYFRAME packet"), ``detail`` the problem.
    Packet parsing re-raises it with the packet's byte offset via :meth:`at`.
    """

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.where = where
        self.detail = detail

    def at(self, offset: int) -> BitstreamError:
        """The same problem, located at ``offset`` in the stream."""
        return BitstreamError(f"{self.where} at byte {offset}: {self.detail}", offset)


class NeedMore(Exception):
    """The buffer ends before the item being scanned is complete."""


class Malformed(Exception):
    """The bytes can never become valid, whatever follows (message = the detail)."""


# --------------------------------------------------------------------------- packing


def u8(value: int) -> bytes:
    return bytes((value,))


def u16(value: int) -> bytes:
    return U16.pack(value)


def u32(value: int) -> bytes:
    return U32.pack(value)


def f32(value: float) -> bytes:
    return F32.pack(value)


def str8(value: str) -> bytes:
    raw = value.encode("ascii")
    return u8(len(raw)) + raw


def crc32(*chunks: bytes) -> int:
    """zlib's CRC-32 (the one used by PNG, gzip and Ethernet) over the concatenated chunks."""
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return crc & 0xFFFFFFFF


# --------------------------------------------------------------------------- varints


def encode_varint(value: int) -> bytes:
    """Encode ``value`` (``0 <= value < 2**64``) as unsigned LEB128, 1 to 10 bytes.

    Seven bits per byte, least significant group first; the high bit of every byte except
    the last is set. The encoding is always the shortest one.
    """
    value = check_int("varint", "value", value, 0, VARINT_LIMIT - 1)
    out = bytearray()
    while True:
        group = value & 0x7F
        value >>= 7
        if value:
            out.append(group | 0x80)
        else:
            out.append(group)
            return bytes(out)


def scan_varint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``buf[pos:end]``; return ``(value, position after it)``.

    Raises :class:`NeedMore` if ``end`` comes first and :class:`Malformed` if the bytes
    are longer than 10, exceed 64 bits, or are not the shortest encoding (a final
    ``0x00`` group after a continuation byte).
    """
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= end:
            raise NeedMore
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise Malformed("non-minimal varint (redundant trailing zero group)")
            if value >= VARINT_LIMIT:
                raise Malformed("varint exceeds 64 bits")
            return value, pos + i + 1
    raise Malformed(f"varint longer than {MAX_VARINT_BYTES} bytes")


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode the varint starting at ``data[offset]``; return ``(value, new_offset)``.

    Raises :class:`BitstreamError` on truncation or on an invalid encoding.
    """
    try:
        return scan_varint(data, offset, len(data))
    except NeedMore:
        raise BitstreamError(f"truncated varint at byte {offset}", offset) from None
    except Malformed as exc:
        raise BitstreamError(f"{exc} at byte {offset}", offset) from None


# --------------------------------------------------------------------------- reading


class Cursor:
    """Bounds-checked reader over one record whose length is already known.

    Every problem is raised as :class:`FieldError` naming the record (``where``) and the
    field, e.g. ``"MOTION packet: payload too short for field n_frames"``.
    """

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.pos = 0
        self.where = where

    def _too_short(self, field: str) -> FieldError:
        noun = "payload too short" if self.where.endswith("packet") else "too short"
        return FieldError(self.where, f"{noun} for field {field}")

    def take(self, n: int, field: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self._too_short(field)
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return U16.unpack(self.take(2, field))[0]

    def u32(self, field: str) -> int:
        return U32.unpack(self.take(4, field))[0]

    def f32(self, field: str) -> float:
        return F32.unpack(self.take(4, field))[0]

    def varint(self, field: str) -> int:
        try:
            value, self.pos = scan_varint(self.data, self.pos, len(self.data))
        except NeedMore:
            raise self._too_short(field) from None
        except Malformed as exc:
            raise FieldError(self.where, f"{field}: {exc}") from None
        return value

    def str8(self, field: str) -> str:
        raw = self.take(self.u8(field), field)
        if not (raw.isascii() and raw.decode("ascii").isprintable()):
            raise FieldError(self.where, f"{field} is not printable ASCII: {raw!r}")
        return raw.decode("ascii")

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    def finish(self) -> None:
        left = len(self.data) - self.pos
        if left:
            raise FieldError(self.where, f"{left} unexpected trailing byte(s)")


# --------------------------------------------------------------------------- validation


def _bound(value: int) -> str:
    return "2**64-1" if value == VARINT_LIMIT - 1 else str(value)


def check_int(where: str, name: str, value: object, lo: int, hi: int) -> int:
    """Return ``value`` as a Python int in ``lo..hi`` (numpy integers accepted)."""
    if isinstance(value, bool):
        raise FieldError(where, f"{name} must be an integer, got bool")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise FieldError(where, f"{name} must be an integer, got {type(value).__name__}") from None
    if not lo <= number <= hi:
        raise FieldError(where, f"{name} must be in {lo}..{_bound(hi)}, got {number}")
    return number


def check_bool(where: str, name: str, value: object) -> bool:
    """Return ``value`` as a bool (``0``/``1`` accepted)."""
    if value is True or value is False:
        return value
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise FieldError(where, f"{name} must be a bool, got {value!r}")


def check_f32(where: str, name: str, value: object) -> float:
    """Return ``value`` rounded to the nearest float32 (so it survives a round trip)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FieldError(where, f"{name} must be a real number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise FieldError(where, f"{name} must be finite, got {number}")
    try:
        packed = F32.pack(number)
    except OverflowError:
        raise FieldError(where, f"{name} is out of float32 range: {number}") from None
    return F32.unpack(packed)[0]


def check_ascii(where: str, name: str, value: object) -> str:
    """Return ``value`` if it is printable ASCII of at most 255 characters."""
    if not isinstance(value, str):
        raise FieldError(where, f"{name} must be a str, got {type(value).__name__}")
    if not (value.isascii() and value.isprintable()):
        raise FieldError(where, f"{name} must be printable ASCII, got {value!r}")
    if len(value) > 255:
        raise FieldError(where, f"{name} is {len(value)} characters long (at most 255)")
    return value


def check_bytes(where: str, name: str, value: object) -> bytes:
    """Return ``value`` as immutable ``bytes`` (bytearray and memoryview accepted)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise FieldError(where, f"{name} must be bytes, got {type(value).__name__}")
