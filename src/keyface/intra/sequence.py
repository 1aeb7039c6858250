"""``hevc-ld``: a stream's keyframes as one low-delay HEVC sequence (x265 P pictures, in process).

Keyframes of one stream are half a second to a few seconds apart and show the same person in
front of the same background. Coded as stand-alone intra pictures, each pays again for what
the one before already showed. Here the keyframes are the pictures of one low-delay HEVC
stream: the first one, and any the caller marks, is an IDR picture, and every other keyframe
is a P picture predicted from the keyframes before it (no reordering). x265 hands each picture
back as soon as it is given, so a live sender can use it as well as a file encoder. The
measurement that motivated it is ``benchmarks/keyframe_sequence.py`` (docs/hybrid.md).

Keyframes go through :meth:`HevcSequenceCodec.encode_keyframe` and
:meth:`~HevcSequenceCodec.decode_keyframe`, which keep the state of the sequence: an encoder
and a decoder each hold their own instance (the registry builds one per call), and keyframes
must be decoded in the order they were coded. A P keyframe whose earlier keyframes were not
decoded is refused with :class:`~keyface.intra.IntraCodecError`; an IDR keyframe always
decodes. Every other picture of the stream (DETAIL rectangles, BACKGROUND) is a stand-alone
HEVC intra picture, as the ``hevc`` codec codes it at the sequence's preset, through
:meth:`~HevcSequenceCodec.encode` and :meth:`~HevcSequenceCodec.decode`.

Each keyframe's data is one access unit in the compact form of :mod:`keyface.intra._nal`
(parameter sets repeated in every unit, packed to a few bytes by the preset dictionary), so
``hevc`` and ``hevc-ld`` data look alike; the header's codec name says which rules apply.
Encoder: x265 preset ``slower``, constant QP (the common quality scale, as ``hevc``), P
pictures at the I pictures' QP (``ipratio=1``), no B pictures, no look-ahead, no scene cuts; a
change of quality, of picture size, or an ``idr`` request starts the sequence again with an IDR.
Unlike the other keyface HEVC pictures, the sequence keeps some of x265's psycho-visual rate
distortion (``psy-rd=1``): its pictures are warped into the frames between keyframes, where
texture that looks right counts for more than the last decibel. Chosen at the one ladder's
group rungs (u 1 to 2.1, 14-45 kbit/s) on the 12 validation people against ``slow`` without
it: BD-rate -5.9 % on LPIPS, -7.7 % on eye-region LPIPS, -0.9 % on open-mouth LPIPS, +1.5 % on
PSNR (``slower`` alone -2.1 % on LPIPS, ``psy-rd=1`` alone -2.3 %, ``psy-rd=2`` with
``psy-rdoq=1`` -4.8 % but +7 % on PSNR and +2 % on open-mouth LPIPS; docs/hybrid.md).
"""

from __future__ import annotations

import av
import numpy as np

from keyface.intra._base import (
    IntraCodecError,
    check_input_image,
    ffmpeg_max_pixels,
    one_line,
    oversize,
    quality_to_qp,
)
from keyface.intra._color import encode_planes
from keyface.intra._nal import split_annexb
from keyface.intra.hevc import (
    _PACKER,
    X265_COMMON,
    HevcIntraCodec,
    _hevc_type,
    planes_to_frame,
    rgb_picture,
    x265_context,
)

_X265_PARAMS = (
    f"log-level=none:{X265_COMMON}:psy-rd=1:bframes=0:rc-lookahead=0:ipratio=1:scenecut=0:"
    "keyint=-1:min-keyint=1"
)
"""x265 settings of the sequence (``psy-rd=1`` overrides the common ``psy-rd=0``)."""
PRESET = "slower"
_IRAP = range(16, 24)
"""HEVC NAL unit types of random-access pictures (BLA, IDR, CRA)."""


def is_random_access(annexb: bytes) -> bool:
    """Whether the first picture slice of an Annex B access unit is a random-access picture."""
    for nal in split_annexb(annexb):
        kind = _hevc_type(nal) if nal else 63
        if kind < 32:
            return kind in _IRAP
    return False


class HevcSequenceCodec:
    """Keyframes as one low-delay HEVC sequence; other pictures as ``hevc`` intra pictures."""

    name = "hevc-ld"

    def __init__(self, preset: str = PRESET) -> None:
        self.preset = preset
        self._intra = HevcIntraCodec(preset)
        self._encoder: av.CodecContext | None = None
        self._key: tuple[int, int, int] | None = None
        self._pts = 0
        self._decoder = SequenceDecoder("hevc", "hevc-ld")

    # -- stand-alone pictures ---------------------------------------------------------------
    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """A stand-alone intra picture (DETAIL, BACKGROUND), as the ``hevc`` codec codes it at
        :data:`PRESET`."""
        return self._intra.encode(image, quality)

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """A stand-alone intra picture made by :meth:`encode`."""
        return self._intra.decode(data, max_pixels)

    # -- the keyframe sequence --------------------------------------------------------------
    def encode_keyframe(self, image: np.ndarray, quality: int, idr: bool = False) -> bytes:
        """The next keyframe of the sequence: an IDR picture if ``idr``, if it is the first,
        or if the quality or the picture size changed; otherwise a P picture."""
        qp = quality_to_qp(quality)
        planes, flags = encode_planes(check_input_image(image), 8)
        h, w = planes[0].shape
        if idr or self._encoder is None or self._key != (w, h, qp):
            self._open(w, h, qp)
        assert self._encoder is not None
        frame = planes_to_frame(planes, "yuv420p")
        frame.pts = self._pts
        self._pts += 1
        try:
            packets = list(self._encoder.encode(frame))
        except (av.FFmpegError, ValueError) as exc:
            self._encoder = None
            raise IntraCodecError(f"hevc-ld encoder failed: {one_line(exc)}") from None
        if len(packets) != 1:  # the settings above make x265 return every picture at once
            self._encoder = None
            raise IntraCodecError(f"hevc-ld encoder returned {len(packets)} packets for a picture")
        return _PACKER.pack(bytes(packets[0]), flags)

    def _open(self, width: int, height: int, qp: int) -> None:
        try:
            ctx = x265_context(width, height, self.preset, f"{_X265_PARAMS}:qp={qp}")
            ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            raise IntraCodecError(f"hevc-ld encoder failed: {one_line(exc)}") from None
        self._encoder, self._key, self._pts = ctx, (width, height, qp), 0

    def decode_keyframe(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """The next keyframe of the sequence (made by :meth:`encode_keyframe`, in order)."""
        annexb, flags = _PACKER.unpack(data)
        frame = self._decoder.decode(annexb, is_random_access(annexb), max_pixels)
        return rgb_picture(frame, flags, max_pixels, "hevc-ld")


class SequenceDecoder:
    """The decoder side of a keyframe sequence (``hevc-ld``, ``vvc-ld``): one FFmpeg decoder,
    started afresh at each random-access picture and fed one access unit per keyframe, which
    must give back exactly that picture. A P picture with no decoder started, or one FFmpeg
    cannot decode whole (a reference missing or damaged), is refused; so is any picture after
    a refusal, until the next random-access one."""

    def __init__(self, codec: str, what: str, options: dict[str, str] | None = None) -> None:
        self.codec, self.what, self.options = codec, what, dict(options or {})
        self._context: av.CodecContext | None = None

    def decode(self, annexb: bytes, fresh: bool, max_pixels: int | None) -> av.VideoFrame:
        """The picture of one access unit; ``fresh``: it is a random-access picture."""
        what = self.what
        if fresh:  # a fresh decoder: nothing before it is needed
            try:
                self._context = av.CodecContext.create(self.codec, "r")
                self._context.options = {**ffmpeg_max_pixels(max_pixels), **self.options}
            except (av.FFmpegError, ValueError) as exc:
                raise IntraCodecError(f"{what} decoder failed: {one_line(exc)}") from None
        if self._context is None:
            raise IntraCodecError(
                f"{what} keyframe predicted from earlier keyframes that were not decoded"
            )
        try:
            frames = list(self._context.decode(av.Packet(annexb)))
        except MemoryError as exc:
            self._context = None
            raise IntraCodecError(oversize(what, max_pixels, exc)) from None
        except (av.FFmpegError, ValueError) as exc:
            self._context = None
            raise IntraCodecError(f"corrupt {what} data ({one_line(exc)})") from None
        if len(frames) != 1 or frames[0].is_corrupt:
            self._context = None
            if not fresh:  # FFmpeg finds no reference picture, or conceals a missing one
                raise IntraCodecError(
                    f"{what} keyframe predicted from earlier keyframes that were not decoded "
                    "(one is missing or damaged)"
                )
            raise IntraCodecError(f"corrupt {what} data (no picture decoded)")
        return frames[0]
