"""The encoder state machine (sans-I/O): frames and landmarks in, bitstream packets out.

For every frame the encoder quantises the motion, then decides how the decoder gets the frame:

* ``RefreshMode.PSNR`` (DAC, Algorithm 1): render the frame from every buffered reference
  exactly as the decoder will, keep the best; if its PSNR is below the threshold, code the frame
  as a new keyframe instead, raising the intra quality until the keyframe itself clears the
  threshold (or ``max_keyframe_quality`` is reached).
* ``RefreshMode.MOTION`` (ZTE quality gate): pick the reference with the smallest motion
  distance (:mod:`keyface.motion.distance`) and code a keyframe when even that is above the
  threshold. No rendering, so it is much cheaper.
* ``RefreshMode.FIXED``: a keyframe every ``threshold`` frames (0: the first frame only).

Keyframes enter a FIFO buffer of up to five references that the decoder mirrors exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from keyface.bitstream import (
    BackgroundPacket,
    CropGeometry,
    EndPacket,
    KeyframePacket,
    MotionPacket,
    Packet,
    RefreshMode,
    StreamHeader,
)
from keyface.codec.config import BufferEntry, CodecConfig, ReferenceBuffer
from keyface.entropy import CodedFrame, MotionCoderState, encode_frames
from keyface.imageops import psnr
from keyface.intra import get_intra_codec
from keyface.motion import (
    DEFAULT_REPRESENTATION,
    FIELD_REPRESENTATION,
    FaceMeshField,
    body_weight,
    estimate_field,
    face_regions,
    get_representation,
    motion_distance,
)
from keyface.render import WarpRenderer, get_renderer
from keyface.types import CropBox, check_image


@dataclass(frozen=True)
class FrameDecision:
    """What the encoder did with one frame (for statistics and tests)."""

    index: int
    keyframe: bool
    reference: int | None
    """Buffer index used (0 = newest); ``None`` for a keyframe."""
    reference_frame: int
    """Frame index of the keyframe the decoder renders this frame from (itself if keyframe)."""
    score: float
    """PSNR of the chosen prediction (PSNR mode) or motion distance (MOTION mode)."""
    keyframe_quality: int | None = None


@dataclass
class EncoderStats:
    frames: int = 0
    keyframes: int = 0
    header_bytes: int = 0
    keyframe_bytes: int = 0
    motion_bytes: int = 0
    background_bytes: int = 0
    other_bytes: int = 0
    decisions: list[FrameDecision] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return (
            self.header_bytes
            + self.keyframe_bytes
            + self.motion_bytes
            + self.background_bytes
            + self.other_bytes
        )

    def add_packet(self, packet: Packet) -> None:
        n = len(bytes(packet))
        if isinstance(packet, KeyframePacket):
            self.keyframe_bytes += n
        elif isinstance(packet, MotionPacket):
            self.motion_bytes += n
        elif isinstance(packet, BackgroundPacket):
            self.background_bytes += n
        else:
            self.other_bytes += n


class EncoderCore:
    """Encode a sequence of square face crops; feed frames in order, then :meth:`flush`."""

    def __init__(
        self,
        config: CodecConfig,
        fps: Fraction,
        crop: CropBox | None = None,
        frame_count: int = 0,
        with_background: bool = False,
    ) -> None:
        self.config = config
        self.fps = Fraction(fps)
        name = FIELD_REPRESENTATION if config.motion_field else DEFAULT_REPRESENTATION
        self.representation = get_representation(name).for_level(config.quant_level)
        self._warp = WarpRenderer()
        self.intra = get_intra_codec(config.intra_codec)
        self.renderer = get_renderer(config.generator)
        self.state = MotionCoderState(
            self.representation.quant_level(config.quant_level), self.representation.statistics
        )
        self.buffer = ReferenceBuffer(config.buffer_size)
        self.regions = face_regions(self.representation.mean)
        self.stats = EncoderStats()
        self._pending: list[CodedFrame] = []
        self._pending_first = 0
        self._next_index = 0
        self._sent_reset = False
        self._last_params: np.ndarray | None = None
        self._last_q: np.ndarray | None = None
        self._with_background = with_background
        self._background_sent = False
        self._force_keyframe = False
        self.header = StreamHeader(
            width=config.size,
            height=config.size,
            fps_num=self.fps.numerator,
            fps_den=self.fps.denominator,
            frame_count=frame_count,
            crop=None
            if crop is None
            else CropGeometry(crop.source_width, crop.source_height, crop.cx, crop.cy, crop.side),
            has_background=with_background,
            motion_name=self.representation.name,
            motion_version=self.representation.version,
            motion_digest=self.representation.digest,
            quant_level=config.quant_level,
            intra_codec=config.intra_codec,
            refresh_mode=RefreshMode(config.refresh_mode),
            buffer_size=config.buffer_size,
            refresh_threshold=config.threshold,
            generator=config.generator,
        )
        self.stats.header_bytes = len(bytes(self.header))

    # -- public -----------------------------------------------------------------------------
    def encode(
        self,
        image: np.ndarray,
        landmarks: np.ndarray | None,
        background: np.ndarray | None = None,
    ) -> list[Packet]:
        """Encode the next frame; ``landmarks`` (478, 2|3) in crop pixels or ``None`` (no face:
        the previous motion is held). ``background`` is the full source frame, used once when
        the stream carries a background. Returns the packets that are ready."""
        check_image(image)
        size = self.config.size
        if image.shape[:2] != (size, size):
            raise ValueError(f"frame must be {size}x{size}, got {image.shape[1]}x{image.shape[0]}")
        index = self._next_index
        self._next_index += 1
        params = self._params(landmarks)
        q = self.state.quantize(params)
        keypoints = self.representation.keypoints(self.state.dequantize(q), size)

        packets: list[Packet] = []
        if self._with_background and not self._background_sent:
            if background is None:
                raise ValueError("the first frame needs its full source frame (background)")
            data = self.intra.encode(background, self.config.keyframe_quality)
            packets.append(BackgroundPacket(frame_index=index, data=data))
            self._background_sent = True

        decision, field_q = self._decide(index, image, keypoints, params)
        if decision is None:
            packet, decision = self._keyframe(index, image, keypoints, q)
            packets.append(packet)
        elif field_q is not None:
            q = field_q
        elif isinstance(self.representation, FaceMeshField) and decision.reference is not None:
            q = self._field(self.buffer[decision.reference], image, keypoints, params)[0]
        self.stats.decisions.append(decision)
        self.stats.frames += 1
        self._pending.append(CodedFrame(q=q, reference=decision.reference))
        self._last_q = q
        if len(self._pending) >= self.config.motion_chunk:
            packets.append(self._flush_motion())
        for p in packets:
            self.stats.add_packet(p)
        return packets

    def force_keyframe(self, idr: bool = False) -> None:
        """Code the next frame as a keyframe. ``idr``: empty the reference buffer first, so
        the decoder needs nothing older (recovery after loss on a live link)."""
        self._force_keyframe = True
        if idr:
            self.buffer = ReferenceBuffer(self.config.buffer_size)

    def reset_motion(self) -> None:
        """Start the next MOTION packet with a coder reset (decodable without earlier motion)."""
        self._sent_reset = False

    def flush(self) -> list[Packet]:
        """Emit the motion still pending and the END packet."""
        packets: list[Packet] = []
        if self._pending:
            packets.append(self._flush_motion())
        packets.append(EndPacket(frame_count=self._next_index))
        for p in packets:
            self.stats.add_packet(p)
        return packets

    # -- internals ------------------------------------------------------------------------
    def _params(self, landmarks: np.ndarray | None) -> np.ndarray:
        if landmarks is not None:
            params = self.representation.analyze(landmarks, self.config.size)
            self._last_params = params
        elif self._last_params is not None:
            params = self._last_params
        else:
            params = self.representation.statistics.mean.copy()
            params[3:5] = (128.0, 128.0)  # a centred face until one is seen
        return params

    def _field(
        self, entry: BufferEntry, image: np.ndarray, keypoints: np.ndarray, params: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(q, field)``: the quantised parameters with the body-motion grid measured against
        the warp of ``entry``, and that grid as the decoder will dequantise it."""
        rep = self.representation
        assert isinstance(rep, FaceMeshField)
        reference = entry.reference
        flow = self._warp.flow(reference, keypoints)
        size = self.config.size
        weight = body_weight(keypoints, size, size)
        field = estimate_field(image, reference.image, flow, rep.field_grid, weight)
        measured = rep.with_field(params, field)
        q = rep.quantize_field(measured, self.state.steps, self._last_q)
        return q, rep.field(self.state.dequantize(q))

    def _decide(
        self, index: int, image: np.ndarray, keypoints: np.ndarray, params: np.ndarray
    ) -> tuple[FrameDecision | None, np.ndarray | None]:
        """Pick a reference for ``index`` (``None`` when a keyframe must be coded), with the
        quantised parameters including the body-motion grid when the choice measured it."""
        if len(self.buffer) == 0 or self._force_keyframe:
            self._force_keyframe = False
            return None, None
        mode = RefreshMode(self.config.refresh_mode)
        threshold = self.config.threshold
        if mode == RefreshMode.FIXED:
            interval = int(threshold)
            if interval > 0 and index - self.buffer[0].frame_index >= interval:
                return None, None
            return FrameDecision(index, False, 0, self.buffer[0].frame_index, 0.0), None
        if mode == RefreshMode.MOTION:
            dists = [
                motion_distance(e.reference.keypoints, keypoints, self.regions).value
                for e in self.buffer
            ]
            best = int(np.argmin(dists))
            if dists[best] > threshold:
                return None, None
            entry = self.buffer[best]
            return FrameDecision(index, False, best, entry.frame_index, dists[best]), None
        # PSNR: render every candidate as the decoder would, with its own body-motion grid.
        scores, coded = [], []
        for e in self.buffer:
            q, field = (
                self._field(e, image, keypoints, params)
                if isinstance(self.representation, FaceMeshField)
                else (None, None)
            )
            scores.append(psnr(self.renderer.render(e.reference, keypoints, field), image))
            coded.append(q)
        best = int(np.argmax(scores))
        if scores[best] < threshold:
            return None, None
        entry = self.buffer[best]
        return FrameDecision(index, False, best, entry.frame_index, scores[best]), coded[best]

    def _keyframe(
        self, index: int, image: np.ndarray, keypoints: np.ndarray, q: np.ndarray
    ) -> tuple[KeyframePacket, FrameDecision]:
        quality = self.config.keyframe_quality
        data = self.intra.encode(image, quality)
        decoded = self.intra.decode(data)
        score = psnr(decoded, image)
        if RefreshMode(self.config.refresh_mode) == RefreshMode.PSNR and index > 0:
            # DAC: lower the QP until the keyframe itself satisfies the quality constraint.
            while score < self.config.threshold and quality < self.config.max_keyframe_quality:
                quality = min(quality + 10, self.config.max_keyframe_quality)
                data = self.intra.encode(image, quality)
                decoded = self.intra.decode(data)
                score = psnr(decoded, image)
        reference = self.renderer.prepare(decoded, keypoints)
        self.buffer.push(BufferEntry(frame_index=index, reference=reference, q=q))
        self.stats.keyframes += 1
        packet = KeyframePacket(frame_index=index, quality=quality, data=data)
        return packet, FrameDecision(index, True, None, index, score, quality)

    def _flush_motion(self) -> MotionPacket:
        reset = not self._sent_reset
        if reset:
            self.state.reset()
            self._sent_reset = True
        data = encode_frames(self.state, self._pending)
        packet = MotionPacket(
            first_frame=self._pending_first, n_frames=len(self._pending), reset=reset, data=data
        )
        self._pending_first += len(self._pending)
        self._pending = []
        return packet
