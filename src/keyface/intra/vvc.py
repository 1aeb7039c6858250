"""``vvc``: one VVC (H.266) Main 10 intra picture, raw bitstream, minimal overhead.

Encoder: VVenC (``libvvenc``) inside the static ``ffmpeg`` of ``imageio-ffmpeg``, run as a
subprocess with pipes (raw ``yuv420p10le`` in, raw ``.266`` out), constant QP, ``qpa=0`` (no
perceptual QP adaptation, so the QP maps straight from the quality; with it the keyframes
gained nothing at equal rate and the same picture did not always code to the same bytes:
results/intra_vvc/report.md), chroma QP offsets -4
(+0.3 dB RGB PSNR at equal size), preset ``fast`` (``medium`` gains ~0.15 dB for 3x the time:
~1.3 s instead of ~0.4 s at 256x256). Decoder: FFmpeg's native ``vvc`` decoder, in-process
through PyAV when PyAV's FFmpeg has it (~5-10 ms at 256x256), else the same ``ffmpeg``
executable as a subprocess (~40-60 ms, mostly process start-up). Both are the same
conforming decoder: the pictures are identical (checked by the tests).

Colour conversion is ours (:mod:`keyface.intra._color`, BT.601 full range, 10 bit); odd sides
are padded by edge replication and cropped back; the stream is stored in the compact form of
:mod:`keyface.intra._nal`: ~10-20 bytes besides the slice data (up to ~50 when VVenC sends
content-specific ALF filters) instead of ~180-220 bytes of SPS/PPS/APS.

Quality: ``QP = round(51 * (100 - quality) / 99)``, the same QP scale as ``hevc``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import av
import numpy as np

from keyface.ffmpeg import FfmpegError, FfmpegFailed, run_ffmpeg
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
from keyface.intra._dicts import VVC_DICTIONARY
from keyface.intra._nal import NalPacker, PictureFlags
from keyface.intra.hevc import check_decoded_frame, frame_to_planes

VvcDecoder = Literal["auto", "pyav", "ffmpeg"]
_PRESETS = ("faster", "fast", "medium", "slow", "slower")
_VVENC_PARAMS = "CbQpOffset=-4:CrQpOffset=-4"


def _vvc_type(nal: bytes) -> int:
    return (nal[1] >> 3) & 0x1F


# AUD 20, EOS 21, EOB 22, SEI 23/24, FD 25, reserved/unspecified 26..31.
_PACKER = NalPacker(
    what="vvc",
    is_vcl=lambda nal: _vvc_type(nal) < 12,
    is_droppable=lambda nal: _vvc_type(nal) >= 20,
    dictionary=VVC_DICTIONARY,
)


def pyav_has_vvc_decoder() -> bool:
    """Whether PyAV's FFmpeg has the native ``vvc`` decoder."""
    try:
        return av.codec.Codec("vvc", "r") is not None
    except (av.FFmpegError, ValueError):
        return False


def vvenc_args(
    size: tuple[int, int], preset: str, qp: int, params: str, *options: str
) -> list[str]:
    """FFmpeg arguments that code ``yuv420p10le`` pictures of ``size`` (w, h) from stdin with
    VVenC at ``preset`` and constant ``qp`` (``params``: ``-vvenc-params``) to a VVC Annex B
    stream on stdout; ``options``: more output options."""
    w, h = size
    return [
        "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{w}x{h}", "-framerate", "25",
        "-i", "pipe:0", *options,
        "-c:v", "libvvenc", "-preset", preset, "-qp", str(qp), "-qpa", "0",
        "-vvenc-params", params,
        "-f", "vvc", "pipe:1",
    ]  # fmt: skip


def raw10(planes: tuple[np.ndarray, ...]) -> bytes:
    """10-bit 4:2:0 planes as VVenC's ``yuv420p10le`` input."""
    return b"".join(p.astype("<u2").tobytes() for p in planes)


def frame_planes(frame: av.VideoFrame, what: str) -> tuple[np.ndarray, ...]:
    """The (Y, Cb, Cr) planes of a decoded 10-bit 4:2:0 VVC ``frame``; IntraCodecError names
    ``what``."""
    check_decoded_frame(frame, ("yuv420p10le",), what)
    try:
        return frame_to_planes(frame, np.dtype("<u2"))
    except ValueError as exc:
        raise IntraCodecError(f"corrupt {what} data ({one_line(exc)})") from None


def planes_rgb(
    planes: tuple[np.ndarray, ...], flags: PictureFlags, max_pixels: int | None, what: str
) -> np.ndarray:
    """The RGB picture of decoded VVC planes (``flags`` from the compact packing), checked
    against ``max_pixels``; IntraCodecError names ``what``."""
    h, w = planes[0].shape
    check_pixels(w, h, max_pixels, what)
    if w < 2 or h < 2:
        raise IntraCodecError(f"corrupt {what} data (picture too small)")
    try:
        rgb = decode_planes(planes, flags, 10)
    except (ValueError, IndexError) as exc:
        raise IntraCodecError(f"corrupt {what} data ({one_line(exc)})") from None
    return decoded_image(rgb, what)


class _FfmpegFailed(IntraCodecError):
    """ffmpeg ran and exited with an error."""


def _run(args: list[str], stdin: bytes, timeout: float, what: str) -> bytes:
    try:
        return run_ffmpeg(args, stdin=stdin, timeout=timeout, what=what).stdout
    except FfmpegFailed as exc:
        raise _FfmpegFailed(str(exc)) from None
    except FfmpegError as exc:
        raise IntraCodecError(str(exc)) from None


def _parse_y4m(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first frame of a ``yuv4mpegpipe`` stream in ``C420p10`` as (Y, Cb, Cr) uint16 planes."""
    end = data.find(b"\n")
    frame_end = data.find(b"\n", end + 1)
    if not data.startswith(b"YUV4MPEG2 ") or end < 0 or frame_end < 0:
        raise IntraCodecError("corrupt vvc data (no picture decoded)")
    fields = {tok[:1]: tok[1:] for tok in data[10:end].split(b" ") if tok}
    try:
        w, h = int(fields[b"W"]), int(fields[b"H"])
    except (KeyError, ValueError):
        raise IntraCodecError("corrupt vvc data (unreadable decoder output)") from None
    cw, ch = (w + 1) // 2, (h + 1) // 2
    sizes = (w * h, cw * ch, cw * ch)
    raw = np.frombuffer(data, dtype="<u2", count=sum(sizes), offset=frame_end + 1)
    y = raw[: sizes[0]].reshape(h, w)
    cb = raw[sizes[0] : sizes[0] + sizes[1]].reshape(ch, cw)
    cr = raw[sizes[0] + sizes[1] :].reshape(ch, cw)
    return y, cb, cr


class VvcIntraCodec:
    """VVC intra picture via VVenC (ffmpeg subprocess), compact raw bitstream."""

    name = "vvc"

    def __init__(
        self, preset: str = "fast", decoder: VvcDecoder = "auto", timeout: float = 120.0
    ) -> None:
        if preset not in _PRESETS:
            raise IntraCodecError(f"unknown vvc preset {preset!r} (available: {_PRESETS})")
        if decoder not in ("auto", "pyav", "ffmpeg"):
            raise IntraCodecError(f"unknown vvc decoder {decoder!r} (auto, pyav, ffmpeg)")
        self.preset = preset
        self.timeout = float(timeout)
        if decoder == "auto":
            decoder = "pyav" if pyav_has_vvc_decoder() else "ffmpeg"
        self.decoder: VvcDecoder = decoder

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """Encode an RGB image at the common ``quality`` (1..100)."""
        qp = quality_to_qp(quality)
        planes, flags = encode_planes(check_input_image(image), 10)
        try:
            stream = self._encode_planes(planes, qp)
        except _FfmpegFailed:
            # FFmpeg's libvvenc wrapper gives the coded picture a buffer of W*H bytes, so a
            # picture that codes to more (small or noisy pictures at high quality) fails.
            # Extend it downwards (last row replicated: nearly free) to enlarge the buffer;
            # the decoder crops the extra rows.
            extra = planes[0].shape[0] + 64
            taller = tuple(
                np.pad(p, ((0, extra if i == 0 else extra // 2), (0, 0)), mode="edge")
                for i, p in enumerate(planes)
            )
            stream = self._encode_planes(taller, qp)
            flags = replace(flags, extra_rows=extra)
        return _PACKER.pack(stream, flags)

    def _encode_planes(self, planes: tuple[np.ndarray, ...], qp: int) -> bytes:
        h, w = planes[0].shape
        args = vvenc_args((w, h), self.preset, qp, _VVENC_PARAMS, "-frames:v", "1")
        return _run(args, raw10(planes), self.timeout, "vvc encoder")

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """Decode bytes made by :meth:`encode`; IntraCodecError if they are not such bytes
        or the picture has more than ``max_pixels`` pixels (refused before allocation)."""
        annexb, flags = _PACKER.unpack(data)
        if self.decoder == "pyav":
            planes = self._decode_pyav(annexb, max_pixels)
        else:
            planes = self._decode_ffmpeg(annexb, max_pixels)
        return planes_rgb(planes, flags, max_pixels, "vvc")

    @staticmethod
    def _decode_pyav(annexb: bytes, max_pixels: int | None) -> tuple[np.ndarray, ...]:
        try:
            ctx = av.CodecContext.create("vvc", "r")
            ctx.options = ffmpeg_max_pixels(max_pixels)
            frames = list(ctx.decode(av.Packet(annexb))) + list(ctx.decode(None))
        except MemoryError as exc:
            raise IntraCodecError(oversize("vvc", max_pixels, exc)) from None
        except (av.FFmpegError, ValueError) as exc:
            raise IntraCodecError(f"corrupt vvc data ({one_line(exc)})") from None
        if not frames:
            raise IntraCodecError("corrupt vvc data (no picture decoded)")
        return frame_planes(frames[0], "vvc")

    def _decode_ffmpeg(self, annexb: bytes, max_pixels: int | None) -> tuple[np.ndarray, ...]:
        limit = [] if max_pixels is None else ["-max_pixels", str(int(max_pixels))]
        args = [
            "-xerror", *limit, "-f", "vvc", "-i", "pipe:0", "-frames:v", "1",
            "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p10le", "-strict", "-1", "pipe:1",
        ]  # fmt: skip
        out = _run(args, annexb, self.timeout, "vvc decoder")
        try:
            return _parse_y4m(out)
        except ValueError:
            raise IntraCodecError("corrupt vvc data (incomplete picture)") from None
