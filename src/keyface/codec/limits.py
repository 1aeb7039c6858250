"""What one :class:`~keyface.codec.DecoderCore` accepts: the bounds every decoder input is
checked against before it is used, and the memory they add up to (docs/bitstream.md, 9.4).

The container format allows far more than any keyface encoder writes (pictures up to 65535
pixels a side, 2**64 frames in one MOTION packet, keyframes for any future frame); a decoder
that trusts those numbers can be made to allocate gigabytes by a file of a few hundred bytes
(issue 14: 4 GB from a 911-byte MOTION packet, 1.4 GB from a 270-byte VVC keyframe of
4096x4096, 600 MB of keyframes at far-future indices). These are the decoder's limits, not the
format's: a stream beyond them is refused with a one-line :class:`BitstreamError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keyface.bitstream import BitstreamError, StreamHeader

MAX_CODED_PIXELS = 1024 * 1024
"""Largest coded picture (``width * height`` of the header): the encoder codes 256, 384 or
512 pixels a side (``--size``); twice that a side is accepted."""
MAX_SOURCE_PIXELS = 7680 * 4320
"""Largest BACKGROUND picture (``source_width * source_height``): 8K UHD."""
MAX_FRAMES_PER_PACKET = 64
"""Most frames one MOTION packet may cover (``n_frames``); ``CodecConfig.motion_chunk`` is
refused above it, so every keyface encoder stays within it (its default, for files)."""
MAX_PENDING_KEYFRAMES = MAX_FRAMES_PER_PACKET
"""Most keyframe pictures held before the MOTION packet that covers them."""
MAX_DETAILS_PER_FRAME = 8
"""Most DETAIL rectangles one frame may carry (the reference encoder sends at most three);
their area together is at most one picture's, and frames waiting for their promotion count
against ``MAX_PENDING_KEYFRAMES`` with the keyframes."""
MAX_KEYFRAME_LEAD = MAX_FRAMES_PER_PACKET
"""A KEYFRAME for frame ``k`` must satisfy ``k < next_frame + MAX_KEYFRAME_LEAD``: the
encoder sends a keyframe while its frame is in the MOTION packet being filled, so at most one
packet ahead of the decoder."""
MAX_BASE_BACK = 32
"""Live links: a frame may be coded from the motion-coder state of a frame at most this many
frames before it (``DecoderCore(keep_states=...)`` holds no more; docs/server.md)."""
KEYPOINT_MARGIN = 4.0
"""Decoded keypoints must lie within ``KEYPOINT_MARGIN`` picture sizes of the picture (a face
tracked out of the crop stays far inside this); a face smaller than ``MIN_FACE_PX`` across is
refused too (the warp's similarity fit would divide by ~0)."""
MIN_FACE_PX = 1.0
INTRA_DECODE_MARGIN = 64
"""The intra decoders are told to refuse pictures above ``(w + m) * (2 h + 2 m)`` pixels
before allocating them (VVC keyframes of small pictures are coded taller, see
``keyface.intra.vvc``); the decoded size must then equal the header's exactly."""


@dataclass(frozen=True)
class MemoryBound:
    """What the bounded state of one decoder can hold, in bytes (``total``)."""

    frame_bytes: int
    pending_keyframes: int
    references: int
    output: int
    background: int

    @property
    def total(self) -> int:
        return self.pending_keyframes + self.references + self.output + self.background


def check_header(header: StreamHeader) -> None:
    """Refuse a stream whose pictures exceed this decoder's limits."""
    pixels = header.width * header.height
    if pixels > MAX_CODED_PIXELS:
        raise BitstreamError(
            f"stream exceeds this decoder's limits: {header.width}x{header.height} pictures "
            f"(at most {MAX_CODED_PIXELS} pixels)"
        )
    if header.crop is not None and header.has_background:
        src = header.crop.source_width * header.crop.source_height
        if src > MAX_SOURCE_PIXELS:
            raise BitstreamError(
                f"stream exceeds this decoder's limits: {header.crop.source_width}x"
                f"{header.crop.source_height} background (at most {MAX_SOURCE_PIXELS} pixels)"
            )


def picture_size(header: StreamHeader, what: str) -> tuple[int, int]:
    """``(width, height)`` a KEYFRAME (``what="keyframe"``) or BACKGROUND picture must have."""
    if what == "background":
        if header.crop is None:
            return header.width, header.height
        return header.crop.source_width, header.crop.source_height
    return header.width, header.height


def intra_max_pixels(size: tuple[int, int]) -> int:
    """The pixel count intra decoders refuse to allocate beyond for a ``size`` picture."""
    w, h = size
    return (w + INTRA_DECODE_MARGIN) * (2 * h + 2 * INTRA_DECODE_MARGIN)


def check_keypoints(keypoints: np.ndarray, width: int, height: int, index: int) -> None:
    """Decoded keypoints must be finite, near the picture and span at least a pixel."""
    if not np.all(np.isfinite(keypoints)):
        raise BitstreamError(f"frame {index}: motion decodes to non-finite keypoints")
    lo = -KEYPOINT_MARGIN * np.array([width, height])
    hi = (1 + KEYPOINT_MARGIN) * np.array([width, height])
    if np.any(keypoints < lo) or np.any(keypoints > hi):
        raise BitstreamError(f"frame {index}: motion puts the face far outside the picture")
    extent = keypoints.max(axis=0) - keypoints.min(axis=0)
    if float(extent.min()) < MIN_FACE_PX:
        raise BitstreamError(f"frame {index}: motion shrinks the face below {MIN_FACE_PX} px")


def memory_bound(header: StreamHeader) -> MemoryBound:
    """Upper bound of the pictures a decoder of ``header`` holds at once (bytes), before the
    renderer's own per-reference data: pending keyframes, the reference buffer, one MOTION
    packet's output and the background."""
    frame = header.width * header.height * 3
    background = 0
    if header.has_background:
        w, h = picture_size(header, "background")
        background = w * h * 3
    return MemoryBound(
        frame_bytes=frame,
        pending_keyframes=MAX_PENDING_KEYFRAMES * frame,
        references=header.buffer_size * frame,
        output=MAX_FRAMES_PER_PACKET * frame,
        background=background,
    )
