"""Shared pieces of the intra codecs: error type, protocol, argument checks, quality mapping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

#: Smallest accepted image side, in pixels.
MIN_SIDE = 16
#: Largest accepted image side, in pixels (HEVC level 6.2 and VVC allow 8K+; keep it sane).
MAX_SIDE = 16384


class IntraCodecError(Exception):
    """An intra picture cannot be encoded or decoded.

    Raised for undecodable (garbage, truncated, foreign) data, an encoder failure, an invalid
    ``quality`` or an invalid image. The message is one line, meant for the user.
    """


@runtime_checkable
class IntraCodec(Protocol):
    """Encodes one RGB picture to bytes and back.

    ``name`` is the registry key, stored in the keyface bitstream header so that the decoder
    picks the same codec. ``quality`` is the common 1..100 scale (higher is better and bigger).
    """

    name: str

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """Encode an ``(H, W, 3)`` uint8 RGB image, ``H, W >= 16``."""
        ...

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """Decode bytes made by :meth:`encode` into an ``(H, W, 3)`` uint8 RGB image.

        ``max_pixels``: refuse (IntraCodecError) a picture of more pixels than that, before
        the decoder allocates it; the caller checks the exact size afterwards.
        """
        ...


@runtime_checkable
class SequenceIntraCodec(IntraCodec, Protocol):
    """An intra codec whose keyframes form one sequence (``hevc-ld``): each keyframe may be
    predicted from the keyframes before it, so an encoder and a decoder each hold their own
    instance, and keyframes are decoded in the order they were coded. :meth:`encode` and
    :meth:`decode` stay for stand-alone pictures (DETAIL rectangles, BACKGROUND)."""

    def encode_keyframe(self, image: np.ndarray, quality: int, idr: bool = False) -> bytes:
        """The next keyframe; ``idr``: one that needs no earlier keyframe."""
        ...

    def decode_keyframe(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """The next keyframe made by :meth:`encode_keyframe`, in coding order."""
        ...


def check_quality(quality: int) -> int:
    """Return ``quality`` as an ``int`` or raise :class:`IntraCodecError` unless in 1..100."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise IntraCodecError(f"quality must be an integer in 1..100, got {quality!r}")
    q = int(quality)
    if not 1 <= q <= 100:
        raise IntraCodecError(f"quality must be an integer in 1..100, got {q}")
    return q


def check_input_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a contiguous ``(H, W, 3)`` uint8 array or raise IntraCodecError."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise IntraCodecError(f"image must be an (H, W, 3) array, got shape {shape}")
    if image.dtype != np.uint8:
        raise IntraCodecError(f"image must be uint8, got {image.dtype}")
    h, w = int(image.shape[0]), int(image.shape[1])
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise IntraCodecError(
            f"image size {w}x{h} is outside the supported {MIN_SIDE}..{MAX_SIDE} pixels per side"
        )
    return np.ascontiguousarray(image)


def quality_to_qp(quality: int, max_qp: int = 51) -> int:
    """Common quality 1..100 to an HEVC/VVC quantisation parameter: 100 -> 0, 1 -> ``max_qp``."""
    q = check_quality(quality)
    return round(max_qp * (100 - q) / 99)


def qp_to_quality(qp: int, max_qp: int = 51) -> int:
    """The quality whose :func:`quality_to_qp` is ``qp`` (``0 <= qp <= max_qp``)."""
    if not 0 <= qp <= max_qp:
        raise IntraCodecError(f"QP must be in 0..{max_qp}, got {qp}")
    quality = max(1, round(100 - qp * 99 / max_qp))
    assert quality_to_qp(quality, max_qp) == qp
    return quality


def interp_table(quality: int, table: Sequence[tuple[int, int]]) -> int:
    """Piecewise-linear, rounded map of ``quality`` through ``(quality, value)`` anchors."""
    q = check_quality(quality)
    xs = [a for a, _ in table]
    ys = [b for _, b in table]
    return round(float(np.interp(q, xs, ys)))


def even_pad(image: np.ndarray) -> tuple[np.ndarray, bool, bool]:
    """Pad ``image`` to even width and height by edge replication.

    Returns ``(padded, odd_width, odd_height)``.
    """
    h, w = image.shape[:2]
    odd_h, odd_w = h % 2 == 1, w % 2 == 1
    if odd_h or odd_w:
        image = np.pad(image, ((0, int(odd_h)), (0, int(odd_w)), (0, 0)), mode="edge")
    return image, odd_w, odd_h


def decoded_image(image: np.ndarray, what: str) -> np.ndarray:
    """Check a decoder's output: ``(H, W, 3)`` uint8, sides >= 1; contiguous copy."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape) < 1:
        raise IntraCodecError(f"corrupt {what} data (decoded picture has shape {image.shape})")
    return np.ascontiguousarray(image)


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """IntraCodecError if a ``width`` x ``height`` picture exceeds ``max_pixels``."""
    if max_pixels is not None and width * height > max_pixels:
        raise IntraCodecError(
            f"{what} picture of {width}x{height} exceeds the {max_pixels}-pixel limit"
        )


def ffmpeg_max_pixels(max_pixels: int | None) -> dict[str, str]:
    """FFmpeg decoder options that make it refuse larger pictures before allocating them
    (libavcodec's ``max_pixels``, checked when the frame buffer is requested)."""
    return {} if max_pixels is None else {"max_pixels": str(int(max_pixels))}


def oversize(what: str, max_pixels: int | None, exc: BaseException) -> str:
    """The message for a decoder's allocation failure: with ``max_pixels`` set, the picture
    was larger than that (FFmpeg answers ENOMEM); otherwise the data asked for too much."""
    if max_pixels is not None:
        return f"{what} picture exceeds the {max_pixels}-pixel limit"
    return f"corrupt {what} data ({one_line(exc)})"


def one_line(exc: BaseException) -> str:
    """``str(exc)`` on one line (some libraries put newlines in their messages)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def check_isobmff(data: bytes, what: str) -> bytes:
    """Check that ``data`` is exactly a sequence of ISOBMFF boxes starting with ``ftyp``.

    HEIF/AVIF readers ignore trailing bytes; this makes truncated or extended files an error.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise IntraCodecError(f"{what} data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 16 or data[4:8] != b"ftyp":
        raise IntraCodecError(f"corrupt {what} data (not a {what.upper()} file)")
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise IntraCodecError(f"corrupt {what} data (truncated box)")
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 1 and end - pos >= 16:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:
            size = end - pos
        if size < 8 or pos + size > end:
            raise IntraCodecError(f"corrupt {what} data (truncated box)")
        pos += size
    return data
