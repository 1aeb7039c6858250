"""``hevc``: one HEVC (H.265) Main intra picture, raw bitstream, minimal overhead.

Encoder: x265 through PyAV (``libx265``), preset ``slow``, one IDR frame at a constant QP,
8-bit 4:2:0, tuned for RGB fidelity (``psy-rd=0``, ``psy-rdoq=0``, chroma QP offsets -4:
+0.3 dB RGB PSNR at equal size on faces) and stripped of everything a decoder does not need
(no SEI, no AUD, no picture hash). Decoder: FFmpeg's native ``hevc`` through PyAV.
Colour conversion is ours (:mod:`keyface.intra._color`, BT.601 full range), so the stream
carries no colour metadata. Odd sides are padded by edge replication and cropped back; the
stream is stored in the compact form of :mod:`keyface.intra._nal`: ~8 bytes besides the
slice data, instead of ~80 bytes of VPS/SPS/PPS (and ~380 bytes of HEIF container).

Quality: ``QP = round(51 * (100 - quality) / 99)`` (quality 1 -> QP 51, 100 -> QP 0).
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from keyface.intra._base import (
    IntraCodecError,
    check_input_image,
    check_pixels,
    decoded_image,
    ffmpeg_max_pixels,
    one_line,
    oversize,
    quality_to_qp,
)
from keyface.intra._color import decode_planes, encode_planes
from keyface.intra._dicts import HEVC_DICTIONARY
from keyface.intra._nal import NalPacker, PictureFlags

X265_COMMON = (
    "info=0:hash=0:aud=0:annexb=1:repeat-headers=1:frame-threads=1:psy-rd=0:psy-rdoq=0:"
    "cbqpoffs=-4:crqpoffs=-4"
)
"""x265 settings every keyface HEVC picture shares (raw Annex B with parameter sets in every
access unit, nothing a decoder does not need, tuned for RGB fidelity)."""
_X265_PARAMS = f"log-level=none:keyint=1:min-keyint=1:{X265_COMMON}"


def _hevc_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


# AUD 35, EOS 36, EOB 37, FD 38, SEI 39/40, reserved/unspecified 41..63.
_PACKER = NalPacker(
    what="hevc",
    is_vcl=lambda nal: _hevc_type(nal) < 32,
    is_droppable=lambda nal: _hevc_type(nal) >= 35,
    dictionary=HEVC_DICTIONARY,
)


def planes_to_frame(planes: tuple[np.ndarray, ...], pix_fmt: str) -> av.VideoFrame:
    """An ``av.VideoFrame`` of format ``pix_fmt`` holding the given Y, Cb, Cr planes."""
    h, w = planes[0].shape
    frame = av.VideoFrame(w, h, pix_fmt)
    for plane, array in zip(frame.planes, planes, strict=True):
        width = plane.line_size // array.itemsize
        buf = np.zeros((array.shape[0], width), dtype=array.dtype)
        buf[:, : array.shape[1]] = array
        plane.update(buf.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return frame


def frame_to_planes(frame: av.VideoFrame, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """The Y, Cb, Cr planes of a decoded 4:2:0 ``frame`` as arrays of ``dtype``."""
    planes = []
    for plane in frame.planes:
        item = np.dtype(dtype).itemsize
        array = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // item)
        planes.append(array[:, : plane.width])
    return tuple(planes)


def check_decoded_frame(frame: av.VideoFrame, formats: tuple[str, ...], what: str) -> None:
    """IntraCodecError unless ``frame`` is a clean 4:2:0 picture of one of ``formats``."""
    if frame.format.name not in formats:
        raise IntraCodecError(f"corrupt {what} data (unexpected format {frame.format.name})")
    if frame.width < 2 or frame.height < 2:
        raise IntraCodecError(f"corrupt {what} data (picture too small)")
    if frame.is_corrupt:
        raise IntraCodecError(f"corrupt {what} data (decoder reported errors)")


def rgb_picture(
    frame: av.VideoFrame, flags: PictureFlags, max_pixels: int | None, what: str
) -> np.ndarray:
    """The RGB picture of a decoded 8-bit 4:2:0 HEVC ``frame`` (``flags`` from the compact
    packing), checked against ``max_pixels``; IntraCodecError names ``what``."""
    check_pixels(frame.width, frame.height, max_pixels, what)
    check_decoded_frame(frame, ("yuv420p", "yuvj420p"), what)
    try:
        rgb = decode_planes(frame_to_planes(frame, np.dtype(np.uint8)), flags, 8)
    except (ValueError, IndexError) as exc:
        raise IntraCodecError(f"corrupt {what} data ({one_line(exc)})") from None
    return decoded_image(rgb, what)


def x265_context(width: int, height: int, preset: str, params: str) -> av.CodecContext:
    """An x265 encoder for ``width`` x ``height`` 8-bit 4:2:0 pictures (``params``: its
    ``x265-params``); av.FFmpegError / ValueError if FFmpeg refuses it."""
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"preset": preset, "x265-params": params}
    return ctx


class HevcIntraCodec:
    """HEVC intra picture via x265 (PyAV), compact raw bitstream."""

    name = "hevc"

    def __init__(self, preset: str = "slow") -> None:
        self.preset = preset

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """Encode an RGB image at the common ``quality`` (1..100)."""
        qp = quality_to_qp(quality)
        planes, flags = encode_planes(check_input_image(image), 8)
        h, w = planes[0].shape
        frame = planes_to_frame(planes, "yuv420p")
        try:
            ctx = x265_context(w, h, self.preset, f"{_X265_PARAMS}:qp={qp}")
            packets = list(ctx.encode(frame)) + list(ctx.encode(None))
        except (av.FFmpegError, ValueError) as exc:
            raise IntraCodecError(f"hevc encoder failed: {one_line(exc)}") from None
        return _PACKER.pack(b"".join(bytes(p) for p in packets), flags)

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """Decode bytes made by :meth:`encode`; IntraCodecError if they are not such bytes
        or the picture has more than ``max_pixels`` pixels (refused before allocation)."""
        annexb, flags = _PACKER.unpack(data)
        try:
            ctx = av.CodecContext.create("hevc", "r")
            ctx.options = ffmpeg_max_pixels(max_pixels)
            frames = list(ctx.decode(av.Packet(annexb))) + list(ctx.decode(None))
        except MemoryError as exc:
            raise IntraCodecError(oversize("hevc", max_pixels, exc)) from None
        except (av.FFmpegError, ValueError) as exc:
            raise IntraCodecError(f"corrupt hevc data ({one_line(exc)})") from None
        if not frames:
            raise IntraCodecError("corrupt hevc data (no picture decoded)")
        return rgb_picture(frames[0], flags, max_pixels, "hevc")
