"""Keyframe (intra picture) coding: one RGB picture to bytes and back.

Codecs (registry name -> class):

* ``hevc``: HEVC Main intra, raw compact bitstream (x265 / FFmpeg via PyAV), 8-bit 4:2:0.
* ``vvc``: VVC Main 10 intra, raw compact bitstream (VVenC in imageio-ffmpeg's ffmpeg;
  FFmpeg's native decoder, in-process through PyAV when available).
* ``heif``: HEVC intra in a standard HEIF file (pillow_heif); ~380 bytes of container.
* ``avif``: AV1 intra in a standard AVIF file (Pillow); ~280 bytes of container.
* ``hevc-ld``: a stream's keyframes as one low-delay HEVC sequence (x265 P pictures, in
  process; :mod:`keyface.intra.sequence`): each keyframe after an IDR one is predicted from
  the keyframes before it, so encoder and decoder each hold their own instance
  (:class:`SequenceIntraCodec`); other pictures are ``hevc`` intra pictures.
* ``vvc-ld``: the same with VVC (:mod:`keyface.intra.vvc_sequence`): VVenC codes each keyframe
  by coding the sequence since its IDR picture again, so it is an encoder for files, not for
  live senders; other pictures are ``vvc`` intra pictures.

``quality`` is one scale for all codecs, 1..100, higher is better and bigger. ``hevc`` and
``vvc`` use ``QP = round(51 * (100 - quality) / 99)``; ``heif`` and ``avif`` map it through
anchor tables calibrated so that a given quality gives about the PSNR of ``hevc`` on 256x256
faces. The useful range for 256x256 keyframes of 1-4 kB is quality ~25..55 (QP ~38..23).

Measured (``benchmarks/intra_rd.py``; 12 frames of six 256x256 clips, 2 cores shared; bytes
and RGB PSNR are means, times medians; AVIF speed 5, x265 ``slow``, VVenC ``fast``):

=====  ======================  ======================  ======================  ==========
codec  q20 bytes / dB          q30 bytes / dB          q40 bytes / dB          enc / dec
=====  ======================  ======================  ======================  ==========
vvc       789 / 35.00             1267 / 37.71            2095 / 40.56         ~300 / 5 ms
hevc      860 / 34.00             1432 / 36.92            2418 / 40.04          ~50 / 3 ms
avif     1200 / 34.09             1864 / 37.22            3182 / 40.17         ~450 / 4 ms
heif     1328 / 34.05             2078 / 37.25            3457 / 40.73          ~60 / 2 ms
=====  ======================  ======================  ======================  ==========

PSNR (dB) at a byte budget, 256x256 faces (176x144 carphone in brackets):

=====  =============  =============  =============  =============
codec  1000 B         2000 B         3000 B         4000 B
=====  =============  =============  =============  =============
vvc    36.38 (31.56)  40.29 (35.88)  42.61 (38.61)  44.24 (40.61)
hevc   34.88 (30.32)  38.91 (34.47)  41.36 (37.33)  43.03 (39.44)
avif   32.60 (27.80)  37.65 (32.78)  39.88 (35.34)  41.47 (37.13)
heif   31.63 (27.36)  36.98 (32.56)  39.77 (35.52)  41.74 (37.76)
=====  =============  =============  =============  =============

Default: ``vvc``. In the 1000-4000 byte range it is 1.2-1.5 dB above ``hevc`` (about 20 %
fewer bytes at equal PSNR) and 2-4 dB above the container formats, whose ~280-380 bytes of
boxes weigh heavily at this size; it decodes in ~5 ms in-process (budget 50 ms). Its cost is
the encoder: ~0.2-0.6 s per 256x256 keyframe (an ffmpeg process), acceptable for keyframes
sent every few seconds. ``hevc`` is the fast-encoding fallback (~50 ms).
"""

from __future__ import annotations

from keyface.intra._base import IntraCodec, IntraCodecError, SequenceIntraCodec
from keyface.intra._nal import annexb_spans, split_annexb
from keyface.registry import Registry

__all__ = [
    "CODECS",
    "DEFAULT_INTRA_CODEC",
    "FILE_ONLY",
    "IntraCodec",
    "IntraCodecError",
    "SequenceIntraCodec",
    "annexb_spans",
    "available_intra_codecs",
    "get_intra_codec",
    "live_intra_codecs",
    "split_annexb",
]

CODECS: Registry[IntraCodec] = Registry("intra codec", error=IntraCodecError)
"""Intra codecs by the name streams store; a codec's module is imported on first use."""


@CODECS.register("vvc", summary="VVC Main 10 intra (VVenC), the default", speed="slow")
def _vvc() -> IntraCodec:
    from keyface.intra.vvc import VvcIntraCodec

    return VvcIntraCodec()


@CODECS.register("hevc", summary="HEVC Main intra (x265)")
def _hevc() -> IntraCodec:
    from keyface.intra.hevc import HevcIntraCodec

    return HevcIntraCodec()


@CODECS.register(
    "hevc-ld",
    summary="keyframes as one low-delay HEVC sequence (x265 P pictures)",
    cached=False,  # each encoder and decoder holds its own sequence
)
def _hevc_ld() -> IntraCodec:
    from keyface.intra.sequence import HevcSequenceCodec

    return HevcSequenceCodec()


@CODECS.register(
    "vvc-ld",
    summary="keyframes as one low-delay VVC sequence (VVenC P pictures; files only)",
    speed="slow",
    cached=False,
)
def _vvc_ld() -> IntraCodec:
    from keyface.intra.vvc_sequence import VvcSequenceCodec

    return VvcSequenceCodec()


@CODECS.register("avif", summary="AV1 intra in AVIF (Pillow)", speed="slow")
def _avif() -> IntraCodec:
    from keyface.intra.avif import AvifIntraCodec

    return AvifIntraCodec()


@CODECS.register("heif", summary="HEVC intra in HEIF (pillow-heif)")
def _heif() -> IntraCodec:
    from keyface.intra.heif import HeifIntraCodec

    return HeifIntraCodec()


#: The codec the keyface encoder uses for keyframes unless told otherwise.
DEFAULT_INTRA_CODEC: str = "vvc"


def available_intra_codecs() -> list[str]:
    """Names accepted by :func:`get_intra_codec`, sorted."""
    return sorted(CODECS.names())


FILE_ONLY: frozenset[str] = frozenset({"vvc-ld"})
"""Codecs for files only: their encoder holds back or repeats work a live sender cannot wait
for (``vvc-ld`` runs VVenC over the whole keyframe sequence for each keyframe)."""


def live_intra_codecs() -> list[str]:
    """Names a live sender may use: :func:`available_intra_codecs` without :data:`FILE_ONLY`."""
    return [name for name in available_intra_codecs() if name not in FILE_ONLY]


def get_intra_codec(name: str) -> IntraCodec:
    """The codec registered as ``name`` (shared, stateless; a :class:`SequenceIntraCodec` is
    a new instance each time: its keyframes are one sequence); IntraCodecError if unknown."""
    if not isinstance(name, str) or name not in CODECS:
        names = ", ".join(available_intra_codecs())
        raise IntraCodecError(f"unknown intra codec {name!r} (available: {names})")
    return CODECS.get(name)
