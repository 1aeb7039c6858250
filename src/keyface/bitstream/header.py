"""The stream header: what a decoder must know before the first packet.

On the wire the header is the file prefix::

    MAGIC b"KFAC" | version u8 | header_len varint | header | header_crc u32

:class:`StreamHeader` holds the decoded fields; ``bytes(header)`` produces the whole prefix
and :meth:`StreamHeader.parse` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction
from typing import Final

from ._wire import (
    MAX_HEADER_LEN,
    U32,
    VARINT_LIMIT,
    BitstreamError,
    Cursor,
    FieldError,
    Malformed,
    NeedMore,
    check_ascii,
    check_bool,
    check_bytes,
    check_f32,
    check_int,
    crc32,
    encode_varint,
    f32,
    scan_varint,
    str8,
    u8,
    u16,
    u32,
)

MAGIC: Final = b"KFAC"
"""The four bytes every keyface stream starts with."""

VERSION: Final = 2
"""The newest format version this build writes; it reads :data:`READ_VERSIONS`. A stream
without an auxiliary stream is written as version 1 (byte for byte what earlier builds wrote,
so they still read it); one with an auxiliary stream (hybrid, bidirectional) as version 2,
which earlier builds refuse with "unsupported keyface stream version 2"."""

READ_VERSIONS: Final = (1, 2)
"""The format versions this build reads."""

FLAG_CROPPED: Final = 0x01
"""Header ``flags`` bit 0: crop geometry follows."""

FLAG_BACKGROUND: Final = 0x02
"""Header ``flags`` bit 1: the stream carries BACKGROUND packets."""

FLAG_PROMOTES: Final = 0x04
"""Header ``flags`` bit 2: DETAIL packets may name a predicted frame, which then becomes a
reference (docs/bitstream.md §9.2). Readers that predate it reject the stream (a set reserved
bit) instead of decoding it with the wrong references."""

FLAG_AUX: Final = 0x08
"""Header ``flags`` bit 3 (version 2 only): the stream carries an auxiliary stream; its
section (:class:`AuxInfo`) follows ``generator``."""

_KNOWN_FLAGS = FLAG_CROPPED | FLAG_BACKGROUND | FLAG_PROMOTES
_KNOWN_FLAGS_V2 = _KNOWN_FLAGS | FLAG_AUX
_HEADER = "header"
_MAX_VARINT = VARINT_LIMIT - 1


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalising fields of a frozen dataclass


class RefreshMode(IntEnum):
    """How the encoder decides to send a new keyframe (``refresh_mode`` header field).

    The meaning of ``refresh_threshold`` depends on the mode and is defined by the codec.
    """

    PSNR = 0
    """Refresh when reconstruction quality drops below the threshold."""
    MOTION = 1
    """Refresh when the motion since the last keyframe exceeds the threshold."""
    FIXED = 2
    """Refresh at a fixed frame interval."""


@dataclass(frozen=True)
class CropGeometry:
    """The square face crop that was coded, in pixels of the original (source) video.

    ``(cx, cy)`` is the centre of the crop box and ``side`` its edge length; the box may
    extend past the source frame (the encoder pads). Floats are stored as float32 and are
    rounded to float32 on construction, so a round trip compares equal.
    """

    source_width: int
    source_height: int
    cx: float
    cy: float
    side: float

    def __post_init__(self) -> None:
        w = _HEADER
        for name in ("source_width", "source_height"):
            _set(self, name, check_int(w, f"crop {name}", getattr(self, name), 1, 0xFFFF))
        _set(self, "cx", check_f32(w, "crop cx", self.cx))
        _set(self, "cy", check_f32(w, "crop cy", self.cy))
        side = check_f32(w, "crop side", self.side)
        if side <= 0:
            raise FieldError(w, f"crop side must be > 0, got {side}")
        _set(self, "side", side)


class StreamMode(IntEnum):
    """How frames are made (``--mode``)."""

    ANIMATION = 0
    """Keyframes and motion only (version 1 streams)."""
    HYBRID = 1
    """Animation fused with a low-delay auxiliary stream; past keyframes only, no delay."""
    BIDIRECTIONAL = 2
    """Groups of ``gop`` frames between two keyframes (the last one opens the next group);
    each frame is animated from the past or the future keyframe, whichever is closer to its
    auxiliary picture; ``gop - 1`` frames of delay."""


MIN_GOP: Final = 5
MAX_GOP: Final = 30


@dataclass(frozen=True)
class AuxInfo:
    """The auxiliary-stream section of a version 2 header (docs/bitstream.md §13)."""

    mode: StreamMode
    """``HYBRID`` or ``BIDIRECTIONAL``."""
    codec: str
    """The aux stream's codec (e.g. ``"x265"``)."""
    scale: int
    """Downsampling factor (2, 4 or 8): the aux picture is ``width / scale`` (even) wide."""
    qp: int
    """The aux codec's quantisation parameter (informative, 0..51)."""
    fusion: str
    """The fusion the encoder assumed (the decoder's default)."""
    gop: int = 0
    """Frames per group, both keyframes included (bidirectional, 5..30); 0 in hybrid mode."""

    def __post_init__(self) -> None:
        w = "header aux section"
        mode = check_int(w, "mode", self.mode, 0, 0xFF)
        if mode not in (StreamMode.HYBRID, StreamMode.BIDIRECTIONAL):
            raise FieldError(w, f"mode must be 1 (hybrid) or 2 (bidirectional), got {mode}")
        _set(self, "mode", StreamMode(mode))
        _set(self, "codec", check_ascii(w, "aux_codec", self.codec))
        scale = check_int(w, "aux_scale", self.scale, 0, 0xFF)
        if scale not in (2, 4, 8):
            raise FieldError(w, f"aux_scale must be 2, 4 or 8, got {scale}")
        _set(self, "scale", scale)
        _set(self, "qp", check_int(w, "aux_qp", self.qp, 0, 51))
        _set(self, "fusion", check_ascii(w, "fusion", self.fusion))
        gop = check_int(w, "gop", self.gop, 0, 0xFF)
        if self.mode == StreamMode.BIDIRECTIONAL and not MIN_GOP <= gop <= MAX_GOP:
            raise FieldError(w, f"gop must be in {MIN_GOP}..{MAX_GOP}, got {gop}")
        if self.mode == StreamMode.HYBRID and gop != 0:
            raise FieldError(w, f"gop must be 0 in hybrid mode, got {gop}")
        _set(self, "gop", gop)

    def encode(self) -> bytes:
        return (
            u8(self.mode)
            + u8(self.gop)
            + str8(self.codec)
            + u8(self.scale)
            + u8(self.qp)
            + str8(self.fusion)
        )

    @classmethod
    def parse(cls, c: Cursor) -> AuxInfo:
        mode, gop = c.u8("mode"), c.u8("gop")
        codec, scale, qp = c.str8("aux_codec"), c.u8("aux_scale"), c.u8("aux_qp")
        return cls(mode=mode, gop=gop, codec=codec, scale=scale, qp=qp, fusion=c.str8("fusion"))  # type: ignore[arg-type]  # validated


@dataclass(frozen=True)
class StreamHeader:
    """Everything a decoder needs before the first packet.

    All fields are validated (and numpy scalars converted to Python numbers) on
    construction; an invalid value raises :class:`BitstreamError`. Float fields are
    rounded to float32, the precision they are stored with.
    """

    width: int
    """Coded picture width in pixels (1..65535)."""
    height: int
    """Coded picture height in pixels (1..65535)."""
    fps_num: int
    """Frame rate numerator (>= 1); the rate is ``fps_num / fps_den`` frames per second."""
    fps_den: int
    """Frame rate denominator (>= 1)."""
    frame_count: int
    """Number of frames, or 0 when unknown (live streams)."""
    crop: CropGeometry | None
    """The face crop within the source video, or ``None`` if the picture is not a crop."""
    has_background: bool
    """Whether BACKGROUND packets may appear in the stream."""
    motion_name: str
    """Name of the motion model (printable ASCII, at most 255 characters)."""
    motion_version: int
    """Version of the motion model (0..255)."""
    motion_digest: int
    """CRC-32 of the motion model file (0..2**32-1); decoders check they load the same one."""
    quant_level: int
    """Motion quantisation level (0..255)."""
    intra_codec: str
    """Name of the intra (keyframe) codec whose bitstream KEYFRAME packets carry."""
    refresh_mode: RefreshMode
    """How the encoder chose keyframes."""
    buffer_size: int
    """Number of reference frames the decoder keeps (1..5)."""
    refresh_threshold: float
    """Threshold for ``refresh_mode`` (float32)."""
    generator: str
    """The renderer the encoder assumed (e.g. ``"warp"``)."""
    promotes: bool = False
    """Whether DETAIL packets may turn predicted frames into references (flags bit 2)."""
    aux: AuxInfo | None = None
    """The auxiliary stream (hybrid and bidirectional modes; flags bit 3, version 2), or
    ``None`` (animation only)."""
    extension: bytes = b""
    """Header bytes after the v1 fields: reserved for later versions, kept verbatim."""

    def __post_init__(self) -> None:
        w = _HEADER
        _set(self, "width", check_int(w, "width", self.width, 1, 0xFFFF))
        _set(self, "height", check_int(w, "height", self.height, 1, 0xFFFF))
        _set(self, "fps_num", check_int(w, "fps_num", self.fps_num, 1, _MAX_VARINT))
        _set(self, "fps_den", check_int(w, "fps_den", self.fps_den, 1, _MAX_VARINT))
        _set(self, "frame_count", check_int(w, "frame_count", self.frame_count, 0, _MAX_VARINT))
        if self.crop is not None and not isinstance(self.crop, CropGeometry):
            kind = type(self.crop).__name__
            raise FieldError(w, f"crop must be a CropGeometry or None, got {kind}")
        _set(self, "has_background", check_bool(w, "has_background", self.has_background))
        _set(self, "promotes", check_bool(w, "promotes", self.promotes))
        _set(self, "motion_name", check_ascii(w, "motion_name", self.motion_name))
        _set(self, "motion_version", check_int(w, "motion_version", self.motion_version, 0, 0xFF))
        digest = check_int(w, "motion_digest", self.motion_digest, 0, 0xFFFFFFFF)
        _set(self, "motion_digest", digest)
        _set(self, "quant_level", check_int(w, "quant_level", self.quant_level, 0, 0xFF))
        _set(self, "intra_codec", check_ascii(w, "intra_codec", self.intra_codec))
        mode = check_int(w, "refresh_mode", self.refresh_mode, 0, 0xFF)
        try:
            _set(self, "refresh_mode", RefreshMode(mode))
        except ValueError:
            raise FieldError(
                w, f"refresh_mode must be 0 (psnr), 1 (motion) or 2 (fixed), got {mode}"
            ) from None
        _set(self, "buffer_size", check_int(w, "buffer_size", self.buffer_size, 1, 5))
        _set(self, "refresh_threshold", check_f32(w, "refresh_threshold", self.refresh_threshold))
        _set(self, "generator", check_ascii(w, "generator", self.generator))
        if self.aux is not None and not isinstance(self.aux, AuxInfo):
            raise FieldError(w, f"aux must be an AuxInfo or None, got {type(self.aux).__name__}")
        _set(self, "extension", check_bytes(w, "extension", self.extension))
        size = len(self.encode_fields())
        if size > MAX_HEADER_LEN:
            raise FieldError(w, f"header is {size} bytes long (at most {MAX_HEADER_LEN})")

    @property
    def fps(self) -> Fraction:
        """The exact frame rate, e.g. ``Fraction(30000, 1001)``."""
        return Fraction(self.fps_num, self.fps_den)

    @property
    def version(self) -> int:
        """The format version this header is written with: 2 with an aux stream, else 1."""
        return 2 if self.aux is not None else 1

    @property
    def mode(self) -> StreamMode:
        """How the stream's frames are made."""
        return StreamMode.ANIMATION if self.aux is None else self.aux.mode

    @property
    def delay_frames(self) -> int:
        """Frames the encoder holds back before it can send a frame (bidirectional: the rest
        of the group, ``gop - 1``; else 0)."""
        aux = self.aux
        return aux.gop - 1 if aux is not None and aux.mode == StreamMode.BIDIRECTIONAL else 0

    @property
    def flags(self) -> int:
        """The header ``flags`` byte these fields encode to."""
        return (
            (FLAG_CROPPED if self.crop is not None else 0)
            | (FLAG_BACKGROUND if self.has_background else 0)
            | (FLAG_PROMOTES if self.promotes else 0)
            | (FLAG_AUX if self.aux is not None else 0)
        )

    def encode_fields(self) -> bytes:
        """The ``header`` bytes alone (what ``header_len`` counts and ``header_crc`` covers)."""
        parts = [
            u16(self.width),
            u16(self.height),
            encode_varint(self.fps_num),
            encode_varint(self.fps_den),
            encode_varint(self.frame_count),
            u8(self.flags),
        ]
        if self.crop is not None:
            c = self.crop
            parts += [u16(c.source_width), u16(c.source_height), f32(c.cx), f32(c.cy), f32(c.side)]
        parts += [
            str8(self.motion_name),
            u8(self.motion_version),
            u32(self.motion_digest),
            u8(self.quant_level),
            str8(self.intra_codec),
            u8(self.refresh_mode),
            u8(self.buffer_size),
            f32(self.refresh_threshold),
            str8(self.generator),
            self.aux.encode() if self.aux is not None else b"",
            self.extension,
        ]
        return b"".join(parts)

    def __bytes__(self) -> bytes:
        """The whole file prefix: magic, version, header length, header and its CRC."""
        body = self.encode_fields()
        return MAGIC + u8(self.version) + encode_varint(len(body)) + body + u32(crc32(body))

    @classmethod
    def parse_fields(cls, body: bytes, version: int = 1) -> StreamHeader:
        """Decode the ``header`` bytes alone (no magic, length or CRC) of format ``version``."""
        c = Cursor(bytes(body), _HEADER)
        width = c.u16("width")
        height = c.u16("height")
        fps_num = c.varint("fps_num")
        fps_den = c.varint("fps_den")
        frame_count = c.varint("frame_count")
        flags = c.u8("flags")
        known = _KNOWN_FLAGS_V2 if version >= 2 else _KNOWN_FLAGS
        if flags & ~known:
            raise FieldError(
                _HEADER,
                f"flags 0x{flags:02x} sets bits reserved in v{version} (only 0x{known:02x} is "
                "defined)",
            )
        if version >= 2 and not flags & FLAG_AUX:
            raise FieldError(_HEADER, "a version 2 header must have an aux section (flag 0x08)")
        crop = None
        if flags & FLAG_CROPPED:
            crop = CropGeometry(
                source_width=c.u16("source_width"),
                source_height=c.u16("source_height"),
                cx=c.f32("crop_cx"),
                cy=c.f32("crop_cy"),
                side=c.f32("crop_side"),
            )
        fields = {
            "motion_name": c.str8("motion_name"),
            "motion_version": c.u8("motion_version"),
            "motion_digest": c.u32("motion_digest"),
            "quant_level": c.u8("quant_level"),
            "intra_codec": c.str8("intra_codec"),
            "refresh_mode": c.u8("refresh_mode"),
            "buffer_size": c.u8("buffer_size"),
            "refresh_threshold": c.f32("refresh_threshold"),
            "generator": c.str8("generator"),
        }
        aux = AuxInfo.parse(c) if flags & FLAG_AUX else None
        return cls(
            width=width,
            height=height,
            fps_num=fps_num,
            fps_den=fps_den,
            frame_count=frame_count,
            crop=crop,
            has_background=bool(flags & FLAG_BACKGROUND),
            promotes=bool(flags & FLAG_PROMOTES),
            aux=aux,
            extension=c.rest(),
            **fields,  # type: ignore[arg-type]  # validated
        )

    @classmethod
    def parse(cls, data: bytes) -> tuple[StreamHeader, int]:
        """Parse the file prefix at the start of ``data``.

        Returns the header and the number of bytes it occupies (the offset of the first
        packet). Raises :class:`BitstreamError` if ``data`` is not a keyface stream, has
        another version, is cut short or is damaged.
        """
        buf = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        size = header_size(buf, len(buf))
        if size is None or size > len(buf):
            raise header_truncated(buf, len(buf))
        return decode_header_record(bytes(buf[:size])), size


# ------------------------------------------------------------------ record-level helpers
# Shared with the incremental StreamReader; `buf` always starts at stream byte 0.


def header_size(buf: bytes | bytearray, end: int) -> int | None:
    """Total size of the header record at the start of ``buf[:end]``.

    Returns ``None`` while the size is not yet known (fewer bytes than magic, version and
    header length). Raises :class:`BitstreamError` as soon as the bytes available show the
    input is foreign, of another version, or declares an absurd header length.
    """
    n = min(end, len(MAGIC))
    if bytes(buf[:n]) != MAGIC[:n]:
        raise BitstreamError(f"not a keyface stream (magic {bytes(buf[:4])!r})", 0)
    if end <= len(MAGIC):
        return None
    version = buf[len(MAGIC)]
    if version not in READ_VERSIONS:
        readable = " and ".join(str(v) for v in READ_VERSIONS)
        raise BitstreamError(
            f"unsupported keyface stream version {version} (this build reads {readable})", 4
        )
    try:
        length, pos = scan_varint(buf, 5, end)
    except NeedMore:
        return None
    except Malformed as exc:
        raise BitstreamError(f"stream header at byte 0: header_len: {exc}", 0) from None
    if length > MAX_HEADER_LEN:
        raise BitstreamError(
            f"stream header at byte 0: declared header_len {length} exceeds the"
            f" {MAX_HEADER_LEN}-byte limit",
            0,
        )
    return pos + length + 4


def header_truncated(buf: bytes | bytearray, end: int) -> BitstreamError:
    """The error for input that ends inside the header record (``header_size`` passed)."""
    if end == 0:
        return BitstreamError("not a keyface stream (empty input)", 0)
    if end < len(MAGIC):
        where = "inside the magic"
    elif end == len(MAGIC):
        where = "before the version byte"
    else:
        size = header_size(buf, end)
        if size is None:
            where = "inside header_len"
        else:
            return BitstreamError(
                f"truncated stream header at byte 0 (needs {size} bytes, got {end})", 0
            )
    return BitstreamError(f"truncated stream header at byte 0 (ends after {end} bytes, {where})", 0)


def decode_header_record(record: bytes) -> StreamHeader:
    """Decode one complete header record (exactly ``header_size`` bytes)."""
    length, start = scan_varint(record, 5, len(record))
    body = record[start : start + length]
    (stored,) = U32.unpack_from(record, start + length)
    computed = crc32(body)
    if stored != computed:
        raise BitstreamError(
            f"CRC mismatch in stream header at byte 0"
            f" (stored 0x{stored:08x}, computed 0x{computed:08x})",
            0,
        )
    return StreamHeader.parse_fields(body, record[len(MAGIC)])
