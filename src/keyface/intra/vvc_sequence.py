"""``vvc-ld``: a stream's keyframes as one low-delay VVC sequence (VVenC P pictures), for files.

The VVC counterpart of ``hevc-ld`` (:mod:`keyface.intra.sequence`): the first keyframe, and any
the caller marks, is an IDR picture, every other keyframe a P picture predicted from the
keyframes before it. VVC codes these sequences with fewer bits than HEVC at the same quality,
but the only VVC encoder here, VVenC inside the static ``ffmpeg`` of ``imageio-ffmpeg``, cannot
hand back one picture at a time: it holds about a dozen pictures before it writes the first,
and FFmpeg's wrapper offers no way to flush it and go on. So each keyframe is coded by running
VVenC again over the whole sequence since its IDR picture, and the new access unit is taken
from the end of that run:

* With VVenC's temporal filter and block importance mapping off (``MCTF=0:BIM=0``), no look
  ahead and no reordering (``PicReordering=0``), a picture's bits do not depend on the
  pictures after it, except that VVenC codes the last picture of a stream differently. Each
  run therefore ends with one copy of the new picture, whose access unit is thrown away.
* The earlier access units of a run must come out byte for byte as they were sent; the codec
  checks this and, should VVenC ever disagree, starts again from an IDR keyframe (counted in
  :attr:`VvcSequenceCodec.restarts`), so encoder and decoder never drift apart.
* The cost of a keyframe grows with the number of keyframes since the IDR one. After
  :data:`MAX_RUN` keyframes the sequence starts again from an IDR picture, which bounds the
  encoder's work (and lets a viewer join a long file there) at the price of one intra
  picture every :data:`MAX_RUN` keyframes.

This makes ``vvc-ld`` an encoder for files, slower than ``hevc-ld`` (``benchmarks/speed.py``),
not for a live sender. The decoder is FFmpeg's native ``vvc`` decoder in process (PyAV), one
access unit at a time, as ``hevc-ld``'s: a P keyframe whose earlier keyframes were not decoded
is refused with :class:`~keyface.intra.IntraCodecError`. Stand-alone pictures (DETAIL
rectangles, BACKGROUND) are ``vvc`` intra pictures at the same preset. Each keyframe's data is
one access unit in the compact form of :mod:`keyface.intra._nal` (the ``vvc`` dictionary).

Encoder: VVenC preset ``fast``, constant QP on the common quality scale (``qpa=0``), chroma QP
offsets -4 (as ``vvc``), every P picture at that QP (:data:`LD_PARAMS`), one thread (the same
bytes on every run and machine count).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av
import numpy as np

from keyface.ffmpeg import FfmpegError, FfmpegFailed, run_ffmpeg
from keyface.intra._base import (
    IntraCodecError,
    check_input_image,
    one_line,
    quality_to_qp,
)
from keyface.intra._color import encode_planes
from keyface.intra._nal import PictureFlags, split_annexb
from keyface.intra.sequence import SequenceDecoder
from keyface.intra.vvc import (
    _PACKER,
    _VVENC_PARAMS,
    VvcIntraCodec,
    _vvc_type,
    frame_planes,
    planes_rgb,
    pyav_has_vvc_decoder,
    raw10,
    vvenc_args,
)

PRESET = "fast"
MAX_RUN = 32
"""Keyframes after which the sequence starts again from an IDR picture (bounds the encoder's
work per keyframe: a run codes up to ``MAX_RUN + 1`` pictures)."""
LD_PARAMS = (
    f"{_VVENC_PARAMS}:PicReordering=0:DecodingRefreshType=none:MaxParallelFrames=0:MCTF=0:"
    "BIM=0:ALF=0:GOPSize=1:Frame1=P 1 0 0.0 0.0 0 0 1.0 0 0 0 0 0 0 0 1 1 1 0 0"
)
"""VVenC settings of the sequence: low delay, nothing that looks at later pictures, and every
P picture at the same QP, predicted from the keyframe before it (``Frame1``: one GOP entry,
QP offset 0, no QP offset model). VVenC's own low-delay GOP of 8 gives 7 of every 8 pictures
a QP 5-8 higher than the IDR picture's; for keyframes that each stand in for a group of
frames that cost more than it saved. No adaptive loop filter (``ALF=0``): a Wiener filter
fitted to the squared error, it smooths away texture the warp then spreads over every frame
(keyframes alone at equal bytes: LPIPS 0.050 without it, 0.058 with it, x265's ``hevc-ld``
0.052; docs/hybrid.md)."""
_IRAP = range(7, 10)
"""VVC NAL unit types of random-access pictures (IDR_W_RADL, IDR_N_LP, CRA)."""


def is_random_access(annexb: bytes) -> bool:
    """Whether the first picture slice of a VVC Annex B access unit is a random-access one."""
    for nal in split_annexb(annexb):
        kind = _vvc_type(nal) if len(nal) >= 2 else 31
        if kind < 12:
            return kind in _IRAP
    return False


@dataclass
class _Run:
    """The pictures of the current sequence (since its IDR picture) and what was sent."""

    size: tuple[int, int]
    qp: int
    flags: PictureFlags
    raw: list[bytes] = field(default_factory=list)  # each picture's yuv420p10le bytes
    units: list[bytes] = field(default_factory=list)  # each picture's access unit as sent


class VvcSequenceCodec:
    """Keyframes as one low-delay VVC sequence; other pictures as ``vvc`` intra pictures."""

    name = "vvc-ld"

    def __init__(self, preset: str = PRESET, max_run: int = MAX_RUN, timeout: float = 300.0):
        if max_run < 1:
            raise IntraCodecError(f"max_run must be >= 1, got {max_run}")
        if not pyav_has_vvc_decoder():
            raise IntraCodecError("vvc-ld needs PyAV built with FFmpeg's vvc decoder")
        self._intra = VvcIntraCodec(preset, decoder="pyav", timeout=timeout)
        self.preset = preset
        self.max_run = int(max_run)
        self.timeout = float(timeout)
        self.restarts = 0
        """How often VVenC did not repeat an earlier access unit and an IDR keyframe was sent
        instead (none in the tests and the trial runs of 2026-12-07; the benchmarks do not
        count it)."""
        self._run: _Run | None = None
        # Without ``low_delay`` FFmpeg's vvc decoder holds each picture back until the next
        # one arrives.
        self._decoder = SequenceDecoder("vvc", "vvc-ld", {"flags": "low_delay", "threads": "1"})

    # -- stand-alone pictures ---------------------------------------------------------------
    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """A stand-alone intra picture (DETAIL, BACKGROUND), as the ``vvc`` codec codes it."""
        return self._intra.encode(image, quality)

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """A stand-alone intra picture made by :meth:`encode`."""
        return self._intra.decode(data, max_pixels)

    # -- the keyframe sequence --------------------------------------------------------------
    def encode_keyframe(self, image: np.ndarray, quality: int, idr: bool = False) -> bytes:
        """The next keyframe of the sequence: an IDR picture if ``idr``, if it is the first,
        if the quality or the picture size changed or after :attr:`max_run` keyframes;
        otherwise a P picture."""
        qp = quality_to_qp(quality)
        planes, flags = encode_planes(check_input_image(image), 10)
        h, w = planes[0].shape
        raw = raw10(planes)
        run = self._run
        if (
            idr
            or run is None
            or (run.size, run.qp, run.flags) != ((w, h), qp, flags)
            or len(run.units) >= self.max_run
        ):
            run = _Run((w, h), qp, flags)
        units = self._code(run, raw)
        if units[: len(run.units)] != run.units:  # VVenC did not repeat itself: start again
            self.restarts += 1
            run = _Run((w, h), qp, flags)
            units = self._code(run, raw)
        run.raw.append(raw)
        run.units.append(units[len(run.units)])
        self._run = run
        return _PACKER.pack(run.units[-1], flags)

    def _code(self, run: _Run, raw: bytes) -> list[bytes]:
        """Access units of ``run``'s pictures, ``raw`` and ``raw`` again (the last one is
        coded as a stream's end and thrown away)."""
        options = ("-period", "100000", "-threads", "1")
        args = vvenc_args(run.size, self.preset, run.qp, LD_PARAMS, *options)
        stdin = b"".join([*run.raw, raw, raw])
        try:
            stream = run_ffmpeg(args, stdin=stdin, timeout=self.timeout, what="vvc-ld").stdout
        except (FfmpegFailed, FfmpegError) as exc:
            self._run = None
            raise IntraCodecError(f"vvc-ld encoder failed: {one_line(exc)}") from None
        units = _access_units(stream)
        if len(units) != len(run.raw) + 2:
            self._run = None
            raise IntraCodecError(
                f"vvc-ld encoder returned {len(units)} pictures for {len(run.raw) + 2}"
            )
        return units

    def decode_keyframe(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """The next keyframe of the sequence (made by :meth:`encode_keyframe`, in order)."""
        annexb, flags = _PACKER.unpack(data)
        frame = self._decoder.decode(annexb, is_random_access(annexb), max_pixels)
        return planes_rgb(frame_planes(frame, "vvc-ld"), flags, max_pixels, "vvc-ld")


def _access_units(stream: bytes) -> list[bytes]:
    """The access units of a VVC Annex B stream, as FFmpeg's parser splits them."""
    try:
        with av.open(io.BytesIO(stream), format="vvc") as container:
            units = [bytes(p) for p in container.demux(video=0) if p.size]
    except (av.FFmpegError, ValueError) as exc:
        raise IntraCodecError(f"vvc-ld encoder output unreadable ({one_line(exc)})") from None
    if sum(len(u) for u in units) != len(stream):
        raise IntraCodecError("vvc-ld encoder output: access units do not add up to the stream")
    return units


__all__ = ["LD_PARAMS", "MAX_RUN", "VvcSequenceCodec", "is_random_access"]
