"""The decoder state machine (sans-I/O): bitstream packets in, frames out.

The decoder mirrors the encoder's reference buffer: a KEYFRAME packet announces the intra
picture of one frame; the MOTION packet that covers that frame supplies its keypoints, and the
pair enters the buffer. Every other frame is rendered from the buffer entry its motion names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keyface.bitstream import (
    BackgroundPacket,
    BitstreamError,
    DetailPacket,
    EndPacket,
    KeyframePacket,
    MotionPacket,
    Packet,
    StreamHeader,
)
from keyface.codec.config import BufferEntry, ReferenceBuffer
from keyface.codec.detail import blend_detail
from keyface.entropy import MotionCoderState, MotionCodingError, decode_frames
from keyface.intra import IntraCodecError, get_intra_codec
from keyface.motion import UnknownRepresentationError, get_representation
from keyface.render import Reference, Renderer
from keyface.renderers import get_renderer

MAX_DETAILS = 8
"""DETAIL rectangles one frame may carry (the reference encoder sends at most three)."""
MAX_PENDING_PROMOTIONS = 64
"""Frames ahead of the decoder that may hold DETAIL rectangles (hostile streams)."""


@dataclass(frozen=True)
class DecodedFrame:
    index: int
    image: np.ndarray
    keyframe: bool
    reference_frame: int
    """Frame index of the keyframe this frame was rendered from (itself for a keyframe)."""
    keypoints: np.ndarray
    reference: Reference | None = None
    """The prepared reference it was rendered from (what full-frame composition holds the
    body with); for a keyframe, its own."""


class DecoderCore:
    """Decode the packets of one stream in order."""

    def __init__(self, header: StreamHeader, renderer: Renderer | None = None) -> None:
        self.header = header
        try:
            rep = get_representation(header.motion_name)
            self.intra = get_intra_codec(header.intra_codec)
        except (UnknownRepresentationError, IntraCodecError) as exc:
            raise BitstreamError(f"stream needs what this build lacks: {exc}") from None
        if rep.version != header.motion_version or rep.digest != header.motion_digest:
            raise BitstreamError(
                f"stream uses motion model {header.motion_name} v{header.motion_version} "
                f"(digest {header.motion_digest:08x}); this build has v{rep.version} "
                f"(digest {rep.digest:08x})"
            )
        if not 0 <= header.quant_level < rep.num_levels:
            raise BitstreamError(f"header: unknown quantiser level {header.quant_level}")
        self.representation = rep.for_level(header.quant_level)
        self._field_part = self.representation.field_component
        self.state = MotionCoderState(
            self.representation.quant_level(header.quant_level), self.representation.statistics
        )
        self.renderer = renderer if renderer is not None else get_renderer()
        self.buffer = ReferenceBuffer(header.buffer_size)
        self.background: np.ndarray | None = None
        self._keyframes: dict[int, np.ndarray] = {}
        self._promotions: dict[int, list[tuple[np.ndarray, int, int]]] = {}
        self._next_frame = 0
        self.finished = False

    @property
    def frames_decoded(self) -> int:
        return self._next_frame

    def resync(self, frame_index: int, clear_buffer: bool = False) -> None:
        """Continue at ``frame_index`` after lost packets (live links): frames before it are
        skipped; the next MOTION packet must start there and carry the reset flag.
        ``clear_buffer`` drops the references too (the sender coded an IDR keyframe)."""
        self._next_frame = frame_index
        self._keyframes = {k: v for k, v in self._keyframes.items() if k >= frame_index}
        self._promotions = {k: v for k, v in self._promotions.items() if k >= frame_index}
        if clear_buffer:
            self.buffer = ReferenceBuffer(self.header.buffer_size)

    def receive(self, packet: Packet) -> list[DecodedFrame]:
        """Process one packet; returns the frames it completes (in display order)."""
        if self.finished:
            raise BitstreamError("packet after the END packet")
        if isinstance(packet, KeyframePacket):
            if packet.frame_index < self._next_frame:
                raise BitstreamError(f"KEYFRAME for frame {packet.frame_index} arrives too late")
            if packet.frame_index in self._promotions:
                raise BitstreamError(f"KEYFRAME for frame {packet.frame_index} after its DETAIL")
            self._keyframes[packet.frame_index] = self._decode_intra(packet.data, "keyframe")
            return []
        if isinstance(packet, DetailPacket):
            self._detail(packet)
            return []
        if isinstance(packet, BackgroundPacket):
            self.background = self._decode_intra(packet.data, "background")
            return []
        if isinstance(packet, MotionPacket):
            return self._motion(packet)
        if isinstance(packet, EndPacket):
            if packet.frame_count != self._next_frame:
                raise BitstreamError(
                    f"END says {packet.frame_count} frames, {self._next_frame} were decoded"
                )
            self.finished = True
            return []
        return []  # packets of later versions / other uses are skipped

    def _detail(self, packet: DetailPacket) -> None:
        """Blend a DETAIL rectangle into its pending keyframe picture, or hold it for the
        predicted frame it promotes to a reference (streams with ``promotes``)."""
        index = packet.frame_index
        picture = self._keyframes.get(index)
        promote = picture is None and self.header.promotes and index >= self._next_frame
        if picture is None and not promote:
            raise BitstreamError(f"DETAIL for frame {index}, which has no pending keyframe")
        h, w = self.header.height, self.header.width
        if packet.x + packet.width > w or packet.y + packet.height > h:
            raise BitstreamError(
                f"DETAIL rectangle {packet.width}x{packet.height} at ({packet.x}, {packet.y}) "
                f"leaves the {w}x{h} picture"
            )
        patch = self._decode_intra(packet.data, "detail")
        if patch.shape[:2] != (packet.height, packet.width):
            raise BitstreamError(
                f"DETAIL picture is {patch.shape[1]}x{patch.shape[0]}, "
                f"the packet says {packet.width}x{packet.height}"
            )
        if picture is not None:
            self._keyframes[index] = blend_detail(picture, patch, packet.x, packet.y)
            return
        pending = self._promotions.setdefault(index, [])
        if len(pending) >= MAX_DETAILS or len(self._promotions) > MAX_PENDING_PROMOTIONS:
            raise BitstreamError(f"too many DETAIL packets pending at frame {index}")
        pending.append((patch, packet.x, packet.y))

    def _decode_intra(self, data: bytes, what: str) -> np.ndarray:
        try:
            return self.intra.decode(data)
        except IntraCodecError as exc:
            raise BitstreamError(f"undecodable {what} picture ({exc})") from None

    def _motion(self, packet: MotionPacket) -> list[DecodedFrame]:
        if packet.first_frame != self._next_frame:
            raise BitstreamError(
                f"MOTION packet starts at frame {packet.first_frame}, expected {self._next_frame}"
            )
        if packet.reset:
            self.state.reset()
        indices = range(packet.first_frame, packet.first_frame + packet.n_frames)
        is_key = [i in self._keyframes for i in indices]
        try:
            coded = decode_frames(self.state, packet.data, is_key)
        except MotionCodingError as exc:
            raise BitstreamError(str(exc)) from None
        size = self.header.width
        out: list[DecodedFrame] = []
        for index, frame in zip(indices, coded, strict=True):
            params = self.state.dequantize(frame.q)
            keypoints = self.representation.keypoints(params, size)
            if frame.reference is None:
                image = self._keyframes.pop(index)
                ref = self.renderer.prepare(image, keypoints)
                self.buffer.push(BufferEntry(frame_index=index, reference=ref, q=frame.q))
                # The renderer may have enhanced the keyframe: show what the frames after it
                # are rendered from.
                out.append(DecodedFrame(index, ref.image, True, index, keypoints, ref))
                continue
            if frame.reference >= len(self.buffer):
                raise BitstreamError(
                    f"frame {index} names reference {frame.reference}, "
                    f"buffer holds {len(self.buffer)}"
                )
            entry = self.buffer[frame.reference]
            field = self._field_part.field(params) if self._field_part is not None else None
            image = self.renderer.render(entry.reference, keypoints, field)
            details = self._promotions.pop(index, None)
            if details:  # the rendered frame with its DETAIL rectangles becomes a reference
                for patch, x, y in details:
                    image = blend_detail(image, patch, x, y)
                promoted = self.renderer.prepare(image, keypoints)
                self.buffer.push(BufferEntry(frame_index=index, reference=promoted, q=frame.q))
                image = promoted.image
            out.append(
                DecodedFrame(index, image, False, entry.frame_index, keypoints, entry.reference)
            )
        self._next_frame = indices.stop
        return out
