"""The decoder state machine (sans-I/O): bitstream packets in, frames out.

The decoder mirrors the encoder's reference buffer: a KEYFRAME packet announces the intra
picture of one frame; the MOTION packet that covers that frame supplies its keypoints, and the
pair enters the buffer. Every other frame is rendered from the buffer entry its motion names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keyface.auxstream import AuxDecoder, AuxError
from keyface.bitstream import (
    AuxPacket,
    BackgroundPacket,
    BitstreamError,
    DetailPacket,
    EndPacket,
    KeyframePacket,
    MotionPacket,
    Packet,
    StreamHeader,
    StreamMode,
)
from keyface.codec import limits
from keyface.codec.config import BufferEntry, ReferenceBuffer
from keyface.codec.detail import blend_detail
from keyface.entropy import (
    MotionCoderState,
    MotionCodingError,
    MotionSnapshot,
    decode_frames,
)
from keyface.intra import IntraCodecError, SequenceIntraCodec, get_intra_codec
from keyface.motion import UnknownRepresentationError, get_representation, own_renderer
from keyface.render import Reference, Renderer
from keyface.renderers import DEFAULT_RENDERER, get_renderer


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
    aux: np.ndarray | None = None
    """The frame's decoded auxiliary picture (small; hybrid modes), if it had one."""


class DecoderCore:
    """Decode the packets of one stream in order."""

    def __init__(
        self,
        header: StreamHeader,
        renderer: Renderer | None = None,
        keep_states: int = 0,
        fusion: str | None = None,
        aux_only: bool = False,
    ) -> None:
        """``renderer``: default the renderer the stream's motion representation brings
        (``fomm``: the model's generator; :func:`keyface.motion.own_renderer`), else
        :data:`~keyface.renderers.DEFAULT_RENDERER`; another one for such a stream is a
        :class:`BitstreamError`. ``keep_states``: hold the motion-coder state after each of
        the newest that many frames, so that a live link can continue from any of them
        (:meth:`continue_from`);
        at most ``limits.MAX_BASE_BACK``. ``fusion``: the fusion of hybrid streams (default:
        the one the header names, else :data:`keyface.fusion.DEFAULT_FUSION`). ``aux_only``:
        output the auxiliary stream alone, upsampled (no keyframes decoded, nothing
        rendered)."""
        if not 0 <= keep_states <= limits.MAX_BASE_BACK:
            raise ValueError(f"keep_states must be in 0..{limits.MAX_BASE_BACK}")
        self.header = header
        limits.check_header(header)
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
        own = own_renderer(header.motion_name)
        if own is not None and renderer is not None and renderer.name != own:
            raise BitstreamError(
                f"a {header.motion_name} stream is drawn by its own renderer {own!r}, "
                f"not {renderer.name!r}"
            )
        self.renderer = renderer if renderer is not None else get_renderer(own or DEFAULT_RENDERER)
        self.buffer = ReferenceBuffer(header.buffer_size)
        self.background: np.ndarray | None = None
        self._keyframes: dict[int, np.ndarray] = {}
        self._promotions: dict[int, list[tuple[np.ndarray, int, int]]] = {}
        self._next_frame = 0
        self.finished = False
        self._keep_states = keep_states
        self._states: dict[int, MotionSnapshot] = {}
        self.mode = header.mode
        self.aux_only = aux_only
        self.live = keep_states > 0
        """A live link (``keep_states``): lost AUX packets fall back to animation only."""
        self._aux: AuxDecoder | None = None
        self._aux_frames: dict[int, np.ndarray] = {}
        self._aux_next = 0
        self._aux_last: np.ndarray | None = None
        self.fusion = None
        if header.has_aux_stream:
            assert header.aux is not None
            from keyface.fusion import UnknownFusionError, available_fusions, get_fusion

            try:
                self._aux = AuxDecoder(header.width, header.aux.scale, header.aux.codec)
            except ValueError as exc:
                raise BitstreamError(f"header: {exc}") from None
            if header.width != header.height:
                raise BitstreamError("header: hybrid streams need a square picture")
            name = fusion
            if name is None:
                name = header.aux.fusion if header.aux.fusion in available_fusions() else None
            try:
                self.fusion = get_fusion(name)
            except UnknownFusionError as exc:
                raise BitstreamError(str(exc)) from None
        elif aux_only:
            raise BitstreamError("the stream has no auxiliary stream")

    @property
    def frames_decoded(self) -> int:
        return self._next_frame

    def resync(self, frame_index: int, clear_buffer: bool = False) -> None:
        """Continue at ``frame_index`` after lost packets (live links): frames before it are
        skipped; the next MOTION packet must start there and carry the reset flag.
        ``clear_buffer`` drops the references too (the sender coded an IDR keyframe)."""
        self._next_frame = frame_index
        self._aux_frames = {k: v for k, v in self._aux_frames.items() if k >= frame_index}
        self._keyframes = {k: v for k, v in self._keyframes.items() if k >= frame_index}
        self._promotions = {k: v for k, v in self._promotions.items() if k >= frame_index}
        if clear_buffer:
            self.buffer = ReferenceBuffer(self.header.buffer_size)

    def holds_state(self, frame_index: int) -> bool:
        """Whether :meth:`continue_from` can start from ``frame_index``."""
        return frame_index in self._states

    def continue_from(self, base: int, frame_index: int) -> None:
        """Continue at ``frame_index`` with the motion-coder state as it was after frame
        ``base`` (live links, where the sender coded that frame from an acknowledged one):
        frames between are skipped. Raises :class:`BitstreamError` if that state is not held."""
        if not base < frame_index <= base + limits.MAX_BASE_BACK:
            raise BitstreamError(f"frame {frame_index} cannot continue from frame {base}")
        snapshot = self._states.get(base)
        if snapshot is None:
            raise BitstreamError(f"the motion state after frame {base} is not held")
        self.resync(frame_index)
        self.state.restore(snapshot, frame_index - base)

    def receive(self, packet: Packet) -> list[DecodedFrame]:
        """Process one packet; returns the frames it completes (in display order)."""
        if self.finished:
            raise BitstreamError("packet after the END packet")
        if isinstance(packet, AuxPacket):
            return self._aux_packet(packet)
        if self.aux_only:  # the aux stream alone: nothing else is decoded
            if not isinstance(packet, EndPacket):
                return []
            self._next_frame = self._aux_next
        if isinstance(packet, KeyframePacket):
            if packet.frame_index < self._next_frame:
                raise BitstreamError(f"KEYFRAME for frame {packet.frame_index} arrives too late")
            if packet.frame_index in self._promotions:
                raise BitstreamError(f"KEYFRAME for frame {packet.frame_index} after its DETAIL")
            self._check_frame_index(packet.frame_index, "KEYFRAME")
            self._keyframes[packet.frame_index] = self._decode_intra(
                packet.data, "keyframe", keyframe=True
            )
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

    def _aux_packet(self, packet: AuxPacket) -> list[DecodedFrame]:
        """Decode the aux pictures of ``packet`` (in order; they wait for their frames'
        motion), or, with ``aux_only``, output them upsampled."""
        if self._aux is None:
            raise BitstreamError("AUX packet in a stream without an auxiliary stream")
        first = packet.first_frame
        if first != self._aux_next:
            if first < self._aux_next or not self.live:
                raise BitstreamError(
                    f"AUX packet starts at frame {first}, expected {self._aux_next}"
                )
            self._aux.reset()  # pictures were lost: wait for a random-access one
            self._aux_last = None
        if len(packet.pictures) > limits.MAX_FRAMES_PER_PACKET:
            raise BitstreamError(
                f"AUX packet covers {len(packet.pictures)} frames "
                f"(this decoder takes at most {limits.MAX_FRAMES_PER_PACKET})"
            )
        count = self.header.frame_count
        if count and packet.frames.stop > count:
            raise BitstreamError(
                f"AUX packet covers frames up to {packet.frames.stop - 1}: the stream has "
                f"{count} frames"
            )
        if first >= self._next_frame + limits.MAX_KEYFRAME_LEAD or (
            len(self._aux_frames) + len(packet.pictures) > 2 * limits.MAX_FRAMES_PER_PACKET
        ):
            raise BitstreamError(f"AUX packet for frame {first} is too far ahead of the motion")
        out: list[DecodedFrame] = []
        for index, data in zip(packet.frames, packet.pictures, strict=True):
            if data:
                try:
                    self._aux_last = self._aux.decode(data)
                except AuxError as exc:
                    if not self.live:
                        raise BitstreamError(f"frame {index}: {exc}") from None
                    self._aux_last = None  # animation only until a random-access picture
            if self._aux_last is None:
                continue
            if self.aux_only:
                from keyface.fusion import upsample_aux

                image = upsample_aux(self._aux_last, self.header.width)
                empty = np.zeros((0, 2), np.float32)
                out.append(DecodedFrame(index, image, False, index, empty, aux=self._aux_last))
            else:
                self._aux_frames[index] = self._aux_last
        self._aux_next = packet.frames.stop
        return out

    @property
    def aux_synced(self) -> bool:
        """Whether aux pictures are being decoded (hybrid modes; a live receiver that lost
        one waits for a random-access picture and asks the sender for it)."""
        return self._aux is not None and self._aux.synced

    def _fuse(self, index: int, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        aux = self._aux_frames.pop(index, None)
        if aux is None or self.fusion is None:
            return image, aux
        return self.fusion.fuse(image, aux), aux

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
        if promote:
            self._check_frame_index(index, "DETAIL")
        patch = self._decode_intra(packet.data, "DETAIL", (packet.width, packet.height))
        if picture is not None:
            self._keyframes[index] = blend_detail(picture, patch, packet.x, packet.y)
            return
        # Promotions wait like keyframes (limits.MAX_PENDING_KEYFRAMES between them), with at
        # most one picture's area of rectangles each: the decoder's memory bound holds.
        pending = self._promotions.get(index, [])
        area = sum(p.shape[0] * p.shape[1] for p, _, _ in pending) + packet.width * packet.height
        if len(pending) >= limits.MAX_DETAILS_PER_FRAME or area > w * h:
            raise BitstreamError(f"too many DETAIL rectangles for frame {index}")
        if not pending and len(self._keyframes) + len(self._promotions) >= (
            limits.MAX_PENDING_KEYFRAMES
        ):
            raise BitstreamError(
                f"DETAIL for frame {index}: {limits.MAX_PENDING_KEYFRAMES} pictures already wait"
            )
        self._promotions[index] = [*pending, (patch, packet.x, packet.y)]

    def _check_frame_index(self, index: int, what: str) -> None:
        """Bounds of a KEYFRAME's index (``limits``): within the header's frame count and at
        most one MOTION packet ahead; a new index past ``MAX_PENDING_KEYFRAMES`` waiting."""
        count = self.header.frame_count
        if count and index >= count:
            raise BitstreamError(f"{what} for frame {index}: the stream has {count} frames")
        if index >= self._next_frame + limits.MAX_KEYFRAME_LEAD:
            raise BitstreamError(
                f"{what} for frame {index} is more than {limits.MAX_KEYFRAME_LEAD} frames "
                f"ahead of frame {self._next_frame}"
            )
        if index not in self._keyframes and len(self._keyframes) >= limits.MAX_PENDING_KEYFRAMES:
            raise BitstreamError(
                f"{what} for frame {index}: {limits.MAX_PENDING_KEYFRAMES} keyframes already wait"
            )

    def _decode_intra(
        self,
        data: bytes,
        what: str,
        size: tuple[int, int] | None = None,
        keyframe: bool = False,
    ) -> np.ndarray:
        """The intra picture ``data`` of ``size`` (a DETAIL rectangle's, given by its packet),
        else of the size the header gives a keyframe or a background. A ``keyframe`` of a
        sequence codec (``hevc-ld``) is the next picture of its sequence."""
        width, height = size if size is not None else limits.picture_size(self.header, what)
        decode = self.intra.decode
        if keyframe and isinstance(self.intra, SequenceIntraCodec):
            decode = self.intra.decode_keyframe
        try:
            image = decode(data, max_pixels=limits.intra_max_pixels((width, height)))
        except IntraCodecError as exc:
            raise BitstreamError(f"undecodable {what} picture ({exc})") from None
        if image.shape[:2] != (height, width):
            source = "the packet" if size is not None else "the stream header"
            raise BitstreamError(
                f"{what} picture is {image.shape[1]}x{image.shape[0]}, "
                f"{source} says {width}x{height}"
            )
        return image

    def _motion(self, packet: MotionPacket) -> list[DecodedFrame]:
        if packet.first_frame != self._next_frame:
            raise BitstreamError(
                f"MOTION packet starts at frame {packet.first_frame}, expected {self._next_frame}"
            )
        if packet.n_frames > limits.MAX_FRAMES_PER_PACKET:
            raise BitstreamError(
                f"MOTION packet covers {packet.n_frames} frames "
                f"(this decoder takes at most {limits.MAX_FRAMES_PER_PACKET})"
            )
        count = self.header.frame_count
        if count and packet.first_frame + packet.n_frames > count:
            raise BitstreamError(
                f"MOTION packet covers frames up to {packet.first_frame + packet.n_frames - 1}: "
                f"the stream has {count} frames"
            )
        if packet.reset:
            self.state.reset()
        indices = range(packet.first_frame, packet.first_frame + packet.n_frames)
        is_key = [i in self._keyframes for i in indices]
        try:
            coded = decode_frames(self.state, packet.data, is_key)
        except MotionCodingError as exc:
            raise BitstreamError(str(exc)) from None
        size, height = self.header.width, self.header.height
        bidirectional = self.mode == StreamMode.BIDIRECTIONAL
        # Every frame's motion is checked before any is rendered: damage in a packet loses
        # that packet, never leaves the renderer with absurd keypoints.
        motion = []
        held = len(self.buffer)  # what the buffer will hold when the frame is rendered
        if bidirectional:  # the packet's keyframes enter the buffer before any frame renders
            held = min(held + sum(is_key), self.buffer.capacity)
        for index, frame in zip(indices, coded, strict=True):
            params = self.state.dequantize(frame.q)
            keypoints = self.representation.keypoints(params, size)
            limits.check_keypoints(keypoints, size, height, index)
            if frame.reference is None:
                if not bidirectional:
                    held = min(held + 1, self.buffer.capacity)
            elif frame.reference >= held:
                raise BitstreamError(
                    f"frame {index} names reference {frame.reference}, buffer holds {held}"
                )
            elif index in self._promotions:  # rendered, then promoted to a reference
                held = min(held + 1, self.buffer.capacity)
            motion.append((index, frame, params, keypoints))
        out: list[DecodedFrame] = []
        prepared: dict[int, Reference] = {}
        if bidirectional:
            keys = [m for m in motion if m[1].reference is None]
            for index, frame, _, keypoints in keys:
                ref = self.renderer.prepare(self._keyframes.pop(index), keypoints)
                self.buffer.push(BufferEntry(frame_index=index, reference=ref, q=frame.q))
                prepared[index] = ref
            motion = [m for m in motion if m[1].reference is not None] + keys
        for index, frame, params, keypoints in motion:
            if frame.reference is None:
                if bidirectional:
                    ref = prepared[index]
                else:
                    image = self._keyframes.pop(index)
                    ref = self.renderer.prepare(image, keypoints)
                    self.buffer.push(BufferEntry(frame_index=index, reference=ref, q=frame.q))
                # The renderer may have enhanced the keyframe: show what the frames after it
                # are rendered from.
                aux = self._aux_frames.pop(index, None)
                out.append(DecodedFrame(index, ref.image, True, index, keypoints, ref, aux))
                continue
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
            image, aux = self._fuse(index, image)
            out.append(
                DecodedFrame(
                    index, image, False, entry.frame_index, keypoints, entry.reference, aux
                )
            )
        if bidirectional:
            out.sort(key=lambda f: f.index)
        self._next_frame = indices.stop
        if self._keep_states:
            last = indices.stop - 1
            self._states[last] = self.state.snapshot()
            for old in [k for k in self._states if k <= last - self._keep_states]:
                del self._states[old]
        return out
