"""The auxiliary stream's codec: one low-delay HEVC stream of the downsampled frames.

x265 through PyAV codes the frames ``scale`` times smaller (area downsampling, our own BT.601
colour conversion) as one stream of P frames at a constant QP: no B frames, no lookahead, one
coded picture out for every picture in (``zerolatency``), so it adds no delay. The first
picture, and any after :meth:`AuxEncoder.refresh`, is a random-access picture (IDR or CRA) that
carries its parameter sets; a decoder can start there. Preset ``slow`` (without lookahead or
B frames it stays low-delay): on two validation clips at 64x64 and QP 40 it needs 0-6 % fewer
bits than ``fast`` for +0.1-0.5 dB, at ~1.5 ms a picture (``veryslow``: ~10 ms, +0.3-0.6 dB).

Each coded picture is stored compactly (:func:`pack_frame`): its NAL units without start codes,
each as ``varint(len << 1 | short)`` then the unit, where ``short`` says that the unit's two
header bytes were the usual ones of a P slice (``0x02 0x01``) and were left out. At 64x64 and
QP 40 a still face costs ~6-12 bytes a picture, so the ~5 bytes saved per picture matter.
"""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np

from keyface.bitstream import BitstreamError, decode_varint, encode_varint
from keyface.intra._color import rgb_to_yuv420, yuv420_to_rgb
from keyface.intra._nal import split_annexb
from keyface.intra.hevc import frame_to_planes, planes_to_frame

AUX_SCALES = (2, 4, 8)
"""Downsampling factors the stream may use."""
DEFAULT_AUX_SCALE = 4
AUX_CODECS = ("x265",)
"""Codecs the auxiliary stream may use (the header stores the name)."""
MIN_AUX_SIDE = 16
"""The aux picture's smallest side (x265's smallest coding tree block is 16 pixels)."""

_P_SLICE_HEADER = b"\x02\x01"  # nal_unit_type 1 (TRAIL_R), layer 0, temporal id 1
_RANDOM_ACCESS = (16, 17, 18, 19, 20, 21)  # BLA, IDR, CRA NAL unit types
_DROPPABLE = 35  # AUD (35), EOS, EOB, FD, SEI (39, 40) and above: not needed to decode
_X265_PARAMS = (
    "log-level=none:info=0:hash=0:aud=0:annexb=1:repeat-headers=1:keyint=-1:scenecut=0:"
    "bframes=0:rc-lookahead=0:frame-threads=1:psy-rd=0:psy-rdoq=0:log2-max-poc-lsb=4:ref=1:"
    "no-temporal-mvp=1"
)


class AuxError(Exception):
    """An auxiliary picture cannot be coded or decoded (one line, meant for the user)."""


def aux_side(size: int, scale: int) -> int:
    """Side of the aux picture for a ``size`` x ``size`` crop: ``size / scale`` rounded down to
    even (4:2:0), at least :data:`MIN_AUX_SIDE`."""
    if scale not in AUX_SCALES:
        raise ValueError(f"aux scale must be one of {AUX_SCALES}, got {scale}")
    side = (size // scale) & ~1
    if side < MIN_AUX_SIDE:
        raise ValueError(f"a {size}x{size} crop is too small for aux scale {scale}")
    return side


def downsample(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` reduced to ``side`` x ``side`` (area average)."""
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def _nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def pack_frame(annexb: bytes) -> bytes:
    """The compact form of one coded picture's Annex B bytes (see the module docs)."""
    out = bytearray()
    for nal in split_annexb(annexb):
        if len(nal) < 2 or _nal_type(nal) >= _DROPPABLE:
            continue
        short = nal[:2] == _P_SLICE_HEADER
        body = nal[2:] if short else nal
        out += encode_varint(len(body) << 1 | int(short)) + body
    return bytes(out)


def unpack_frame(data: bytes) -> tuple[bytes, bool]:
    """``(annexb, random_access)`` of a picture packed by :func:`pack_frame`; AuxError if the
    bytes are not such a picture."""
    pos, units, random_access = 0, [], False
    try:
        while pos < len(data):
            value, pos = decode_varint(data, pos)
            length, short = value >> 1, value & 1
            if length == 0 or pos + length > len(data):
                raise AuxError("corrupt aux picture (bad NAL length)")
            nal = (_P_SLICE_HEADER if short else b"") + data[pos : pos + length]
            pos += length
            if len(nal) < 2 or nal[0] & 0x80:
                raise AuxError("corrupt aux picture (bad NAL header)")
            random_access |= _nal_type(nal) in _RANDOM_ACCESS
            units.append(b"\x00\x00\x00\x01" + nal)
    except BitstreamError as exc:
        raise AuxError(f"corrupt aux picture ({exc})") from None
    if not units:
        raise AuxError("empty aux picture")
    return b"".join(units), random_access


class AuxEncoder:
    """Code ``size`` x ``size`` RGB frames as the aux stream, one packed picture per frame."""

    def __init__(
        self,
        size: int,
        scale: int = DEFAULT_AUX_SCALE,
        qp: int = 40,
        fps: Fraction | int = 30,
        codec: str = "x265",
        preset: str = "slow",
    ) -> None:
        if codec not in AUX_CODECS:
            raise ValueError(f"aux codec must be one of {AUX_CODECS}, got {codec!r}")
        if not 0 <= qp <= 51:
            raise ValueError(f"aux QP must be in 0..51, got {qp}")
        self.size, self.scale, self.qp, self.codec = size, scale, qp, codec
        self.side = aux_side(size, scale)
        self._fps = Fraction(fps)
        self._preset = preset
        self._count = 0
        self._refresh = False
        self._ctx = self._open()

    def _open(self) -> av.VideoCodecContext:
        ctx = av.CodecContext.create("libx265", "w")
        ctx.width = ctx.height = self.side
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = 1 / self._fps
        ctx.options = {
            "preset": self._preset,
            "tune": "zerolatency",
            "forced-idr": "1",
            "x265-params": f"{_X265_PARAMS}:qp={self.qp}",
        }
        return ctx

    def refresh(self) -> None:
        """Code the next frame as a random-access picture (a receiver that lost aux pictures
        asks for one; a decoder may start there)."""
        self._refresh = True

    def encode(self, image: np.ndarray) -> bytes:
        """The next frame's packed aux picture (never empty: one picture in, one out)."""
        if image.shape != (self.size, self.size, 3) or image.dtype != np.uint8:
            raise ValueError(f"aux frames must be ({self.size}, {self.size}, 3) uint8")
        small = downsample(image, self.side)
        frame = planes_to_frame(rgb_to_yuv420(small), "yuv420p")
        frame.pts = self._count
        if self._refresh:
            frame.pict_type = av.video.frame.PictureType.I
            self._refresh = False
        self._count += 1
        try:
            data = b"".join(bytes(p) for p in self._ctx.encode(frame))
        except (av.FFmpegError, ValueError) as exc:
            raise AuxError(f"aux encoder failed: {exc}") from None
        if not data:
            raise AuxError("aux encoder held a picture back (it must be low-delay)")
        return pack_frame(data)

    def close(self) -> None:
        """Drain the encoder (nothing is held back; this only frees it)."""
        try:
            list(self._ctx.encode(None))
        except av.FFmpegError:
            pass


class AuxDecoder:
    """Decode packed aux pictures in order into ``side`` x ``side`` RGB frames.

    A picture that is not random-access needs the one before it: after :meth:`reset` (or a
    lost picture, which the caller signals by calling :meth:`reset`) the decoder refuses
    pictures (:class:`AuxError`) until a random-access one arrives.
    """

    def __init__(self, size: int, scale: int = DEFAULT_AUX_SCALE, codec: str = "x265") -> None:
        if codec not in AUX_CODECS:
            raise ValueError(f"aux codec must be one of {AUX_CODECS}, got {codec!r}")
        self.size, self.scale, self.codec = size, scale, codec
        self.side = aux_side(size, scale)
        self._ctx: av.VideoCodecContext | None = None

    @property
    def synced(self) -> bool:
        """Whether the next P picture can be decoded (a random-access picture was seen since
        the last :meth:`reset`)."""
        return self._ctx is not None

    def reset(self) -> None:
        """Forget the pictures decoded so far (one was lost): wait for a random-access one."""
        self._ctx = None

    def decode(self, data: bytes) -> np.ndarray:
        """The next aux frame, ``(side, side, 3)`` uint8; AuxError if the picture is damaged,
        of another size, or needs a picture this decoder does not hold."""
        annexb, random_access = unpack_frame(data)
        if random_access:
            self._ctx = av.CodecContext.create("hevc", "r")
            self._ctx.thread_type = "NONE"
            self._ctx.thread_count = 1
            # Refuse a picture larger than the stream's before the decoder allocates it.
            self._ctx.options = {"max_pixels": str(4 * self.side * self.side)}
        elif self._ctx is None:
            raise AuxError("aux picture needs earlier pictures (waiting for a refresh)")
        try:
            frames = list(self._ctx.decode(av.Packet(annexb)))
        except (av.FFmpegError, ValueError, MemoryError) as exc:
            self._ctx = None
            raise AuxError(f"corrupt aux picture ({str(exc).splitlines()[0]})") from None
        if len(frames) != 1:
            self._ctx = None
            raise AuxError(f"aux picture decoded to {len(frames)} pictures, expected 1")
        frame = frames[0]
        if (frame.width, frame.height) != (self.side, self.side) or frame.is_corrupt:
            self._ctx = None
            raise AuxError(
                f"aux picture is {frame.width}x{frame.height}"
                + (" and corrupt" if frame.is_corrupt else "")
                + f", the stream says {self.side}x{self.side}"
            )
        if frame.format.name not in ("yuv420p", "yuvj420p"):
            self._ctx = None
            raise AuxError(f"aux picture has format {frame.format.name}, expected yuv420p")
        return yuv420_to_rgb(*frame_to_planes(frame, np.dtype(np.uint8)))
