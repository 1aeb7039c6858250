"""The encoder state machine (sans-I/O): frames and landmarks in, bitstream packets out.

For every frame the encoder quantises the motion, then decides how the decoder gets the frame:

* ``RefreshMode.PSNR`` (DAC, Algorithm 1): render the frame from every buffered reference
  exactly as the decoder will, keep the best; if its PSNR is below the threshold, code the frame
  as a new keyframe instead, raising the intra quality until the keyframe itself clears the
  threshold (or ``max_keyframe_quality`` is reached).
* ``RefreshMode.MOTION`` (ZTE quality gate): pick the reference with the smallest motion
  distance (:mod:`keyface.motion.distance`) and code a keyframe when even that is above the
  threshold. No rendering, so it is much cheaper.
* ``RefreshMode.FIXED``: a keyframe every ``threshold`` frames (0: the first frame only),
  drawn from the newest keyframe; no other rule applies.

In the PSNR and MOTION modes ``max_interval`` adds a keyframe whenever the newest one is that
many frames old (the call ladder's regular keyframes).

In the PSNR and MOTION modes the content rule (:mod:`keyface.codec.content`) comes first: a
frame is rendered only from a reference whose mouth and eyes are open at least about as wide
as the frame's, and a keyframe is coded when no reference is (``content_refresh``).

Keyframes enter a FIFO buffer of up to five references that the decoder mirrors exactly.

Motion is sent in MOTION packets of ``motion_chunk`` frames; a packet may start with a coder
reset (decodable without the motion before it). The reset policy is part of
:class:`CodecConfig`: the first packet always resets, then every ``reset_interval`` frames and,
with ``reset_at_keyframes``, at every keyframe (which then starts its own packet). Live links
use both (``keyface.server``); files need neither. Each frame's :class:`FrameDecision` says
whether its packet reset and whether its keyframe is an IDR (the buffer was empty, so the
decoder needs nothing older).

The encoder knows motion only through the :class:`keyface.motion.MotionRepresentation`
protocol (parameters, keypoints, the gate distance, the optional field component), so a new
representation needs no change here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from keyface.auxstream import AuxDecoder, AuxEncoder, downsample
from keyface.bitstream import (
    NO_AUX,
    AuxInfo,
    AuxPacket,
    BackgroundPacket,
    DetailPacket,
    EndPacket,
    KeyframePacket,
    MotionPacket,
    Packet,
    RefreshMode,
    StreamHeader,
    StreamMode,
)
from keyface.codec.config import BufferEntry, CodecConfig, ReferenceBuffer, crop_geometry
from keyface.codec.content import (
    EYE_READ_SHARE,
    EYE_READ_STEPS,
    GAZE_MARGIN,
    ContentRule,
    EyeReader,
    MeshEyeReader,
    looks_elsewhere,
    unread_eyes,
)
from keyface.codec.detail import UPDATE_BOOST, blend_detail, detail_boxes
from keyface.entropy import CodedFrame, MotionCoderState, MotionSnapshot, encode_frames
from keyface.imageops import psnr
from keyface.intra import SequenceIntraCodec, get_intra_codec
from keyface.motion import (
    FaceState,
    FaceStateSource,
    FieldComponent,
    ImageMotionSource,
    body_weight,
    estimate_field,
    get_representation,
)
from keyface.motion.facemesh_pca import MESH_FACES
from keyface.render import WarpRenderer
from keyface.renderers import get_renderer
from keyface.types import CropBox, check_image

PROMOTED_WEIGHT = 2.0
"""A promoted reference counts as this many times farther than its motion distance when the
encoder picks the reference to render from: it is chosen only where it holds content the
keyframes lack, or is much nearer."""
REFERENCE_HOLD = 1.3
"""The motion rule keeps rendering from the previous frame's reference while its (weighted)
motion distance is within this factor of the nearest one's and under the gate's threshold.
Without it the choice flipped between references whose distances were alike, every few
frames: each flip swaps the whole picture for another keyframe's coding noise and background,
the pumping that ``flicker`` and a viewer see behind the head (issue 18,
``benchmarks/ripple.py``)."""
HOLD_MOUTH_SLACK = 0.03
"""The hold keeps a reference only while its mouth opening (inner-lip gap over width) is within
this of being as near the frame's as the nearest reference's: held for its background alone, a
reference with another mouth made lp_d6's mouth LPIPS 13 % worse."""


PSNR_CHECK_GAP = 1.0
"""``CodecConfig.psnr_check`` codes at most one keyframe per this many seconds: a scene the
warp cannot follow at all (a fast zoom) would otherwise get a keyframe at every check."""


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
    idr: bool = False
    """A keyframe coded with an empty reference buffer (the first frame, or after
    ``force_keyframe(idr=True)``): a decoder can start here."""
    motion_reset: bool = False
    """This frame starts a MOTION packet whose coder state is reset (see the reset policy in
    :class:`CodecConfig`)."""
    promoted: bool = False
    """A predicted frame whose missing eyes or mouth were sent as DETAIL rectangles; it became
    a reference (``content_update="detail"``)."""
    refresh: str | None = None
    """Why a keyframe was coded, or a frame promoted: ``"first"`` (empty buffer), ``"forced"``,
    ``"gate"`` (motion distance), ``"psnr"``, ``"interval"`` (fixed mode, ``max_interval``),
    ``"mouth"`` or ``"eyes"`` (no reference holds the frame's mouth or eye state); ``None``
    otherwise."""


@dataclass
class EncoderStats:
    frames: int = 0
    keyframes: int = 0
    header_bytes: int = 0
    keyframe_bytes: int = 0
    motion_bytes: int = 0
    background_bytes: int = 0
    detail_bytes: int = 0
    """DETAIL rectangles of promoted frames (those of keyframes count as keyframe bytes)."""
    aux_bytes: int = 0
    """AUX packets (the auxiliary stream of the hybrid and bidirectional modes)."""
    updates: int = 0
    """Predicted frames promoted to references with DETAIL rectangles."""
    eye_details: int = 0
    """Reference pictures whose eyes were coded again because they did not read open
    (``CodecConfig.eye_check``)."""
    psnr_checks: int = 0
    """Frames rendered at the encoder by ``CodecConfig.psnr_check``."""
    other_bytes: int = 0
    decisions: list[FrameDecision] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return (
            self.header_bytes
            + self.keyframe_bytes
            + self.motion_bytes
            + self.background_bytes
            + self.detail_bytes
            + self.aux_bytes
            + self.other_bytes
        )

    def add_packet(self, packet: Packet) -> None:
        n = len(bytes(packet))
        if isinstance(packet, KeyframePacket):
            self.keyframe_bytes += n
        elif isinstance(packet, DetailPacket):
            # Frames append their decision before their packets are counted.
            k = packet.frame_index
            if k < len(self.decisions) and self.decisions[k].keyframe:
                self.keyframe_bytes += n
            else:
                self.detail_bytes += n
        elif isinstance(packet, MotionPacket):
            self.motion_bytes += n
        elif isinstance(packet, BackgroundPacket):
            self.background_bytes += n
        elif isinstance(packet, AuxPacket):
            self.aux_bytes += n
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
        rep = get_representation(config.motion_representation)
        if not 0 <= config.quant_level < rep.num_levels:
            raise ValueError(
                f"quant_level must be in 0..{rep.num_levels - 1} for {rep.name}, "
                f"got {config.quant_level}"
            )
        self.representation = rep.for_level(config.quant_level)
        self._warp = WarpRenderer()
        self.intra = get_intra_codec(config.intra_codec)
        self.renderer = get_renderer(config.generator)
        self.state = MotionCoderState(
            self.representation.quant_level(config.quant_level), self.representation.statistics
        )
        self.buffer = ReferenceBuffer(config.buffer_size)
        self.stats = EncoderStats()
        self.last_idr = -1
        """Frame index of the newest IDR keyframe (-1 before the first frame)."""
        self._field_part: FieldComponent | None = self.representation.field_component
        rep = self.representation
        self._image_source: ImageMotionSource | None = (
            rep if isinstance(rep, ImageMotionSource) else None
        )
        """Where the parameters come from when not from landmarks (learned keypoints)."""
        self._face: FaceStateSource | None = rep if isinstance(rep, FaceStateSource) else None
        """Where the mouth and eyes are and how open: the decoded keypoints' representation,
        or, for keypoints that name neither (FOMM), the face mesh on the source's landmarks
        (:meth:`_face_points`); ``None``: neither."""
        self._face_on_landmarks = self._face is None and config.landmark_content
        if self._face_on_landmarks:
            self._face = MESH_FACES
        if config.mode == "auto":
            raise ValueError("mode 'auto' is a ladder: resolve it with ratecontrol.config_at")
        self.mode = StreamMode[config.mode.upper()]
        bidirectional = self.mode == StreamMode.BIDIRECTIONAL
        self._content = self._face is not None and config.content_refresh and not bidirectional
        self._group_content = (
            self._face is not None
            and config.content_refresh
            and bidirectional
            and config.group_cut is not None
        )
        """Bidirectional groups under the content rule (:meth:`_split_group`)."""
        self.content_rule = ContentRule(
            gaze_margin=GAZE_MARGIN if config.gaze_rule == "refresh" else 0.0
        )
        self._gaze_choice = config.gaze_rule == "choose"
        """Prefer references whose irises sit where the frame's do (``gaze_rule="choose"``)."""
        self._promote = (
            self._content
            and not self._face_on_landmarks
            and config.content_update == "detail"
            and RefreshMode(config.refresh_mode) == RefreshMode.MOTION
        )
        # The bidirectional groups check their keyframes' eyes too (DETAIL rectangles of a
        # keyframe decode in any mode): their references are keyframes only.
        keyframe_eyes = bidirectional and self._face is not None
        self.eye_reader: EyeReader | None = (
            MeshEyeReader() if (self._promote or keyframe_eyes) and config.eye_check else None
        )
        """Reads the eyes of reference pictures (``CodecConfig.eye_check``; streams that carry
        DETAIL packets only); replaceable (tests)."""
        aux_info: AuxInfo | None = None
        self._aux: AuxEncoder | None = None
        self._aux_mirror: AuxDecoder | None = None
        """The decoder's aux pictures, for the bidirectional choice of keyframe."""
        if self.mode != StreamMode.ANIMATION and config.aux_scale == 0:
            # Bidirectional groups without an aux stream: the encoder chooses each frame's
            # keyframe against the source itself and signals it.
            aux_info = AuxInfo(
                mode=self.mode, codec=NO_AUX, scale=0, qp=0, fusion="", gop=config.gop
            )
        elif self.mode != StreamMode.ANIMATION:
            from keyface.fusion import DEFAULT_FUSION

            aux_info = AuxInfo(
                mode=self.mode,
                codec=config.aux_codec,
                scale=config.aux_scale,
                qp=config.aux_qp,
                fusion=config.fusion or DEFAULT_FUSION,
                gop=config.gop if bidirectional else 0,
            )
            self._aux = AuxEncoder(
                config.size, config.aux_scale, config.aux_qp, self.fps, config.aux_codec
            )
            if bidirectional:
                self._aux_mirror = AuxDecoder(config.size, config.aux_scale, config.aux_codec)
        self._aux_pending: list[bytes] = []
        self._group: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        """Bidirectional mode: the frames of the group being collected (index, image,
        landmarks); the group is coded when its last frame (a keyframe) arrives."""
        """Send missing eyes or mouth as DETAIL rectangles on a rendered frame, not a keyframe."""
        self._pending: list[CodedFrame] = []
        self._pending_first = 0
        self._pending_reset = False
        self._next_index = 0
        self._reset_requested = True  # the first packet always resets
        self._last_reset = -1
        self._last_params: np.ndarray | None = None
        self._last_q: np.ndarray | None = None
        self._shown_from: int | None = None
        """Frame index of the reference the previous frame was rendered from (or is)."""
        self._with_background = with_background
        self._background_sent = False
        self._force_keyframe = False
        self.header = StreamHeader(
            width=config.size,
            height=config.size,
            fps_num=self.fps.numerator,
            fps_den=self.fps.denominator,
            frame_count=frame_count,
            crop=None if crop is None else crop_geometry(crop),
            has_background=with_background,
            promotes=self._promote,
            motion_name=self.representation.name,
            motion_version=self.representation.version,
            motion_digest=self.representation.digest,
            quant_level=config.quant_level,
            intra_codec=config.intra_codec,
            refresh_mode=RefreshMode.FIXED if bidirectional else RefreshMode(config.refresh_mode),
            buffer_size=config.buffer_size,
            refresh_threshold=config.gop - 1 if bidirectional else config.threshold,
            generator=config.generator,
            aux=aux_info,
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
        packets: list[Packet] = []
        if self._with_background and not self._background_sent:
            if background is None:
                raise ValueError("the first frame needs its full source frame (background)")
            data = self.intra.encode(background, self.config.keyframe_quality)
            packets.append(BackgroundPacket(frame_index=index, data=data))
            self._background_sent = True
        if self.mode == StreamMode.BIDIRECTIONAL:
            self._group.append((index, image, landmarks))
            if index == 0 or len(self._group) >= self.config.gop - 1:
                packets.extend(self._code_group())
            for p in packets:
                self.stats.add_packet(p)
            return packets
        params = self._params(image, landmarks)
        q = self.state.quantize(params)
        keypoints = self.representation.keypoints(self.state.dequantize(q), size)

        face = self._face_points(keypoints, landmarks)
        state = self._state(face, landmarks) if self._content else None
        decision, field_q, reason = self._decide(index, image, keypoints, params, state)
        if decision is None and reason in ("mouth", "eyes") and self._promote:
            assert state is not None and face is not None
            promoted = self._update(index, image, keypoints, face, params, q, state, reason)
            if promoted is not None:
                decision, field_q, detail_packets = promoted
                packets.extend(detail_packets)
        if decision is None:
            if self.config.reset_at_keyframes and self._pending:
                packets.extend(self._flush_motion())  # the keyframe starts its own packet
            keyframe_packets, decision = self._keyframe(
                index, image, keypoints, face, q, state, reason
            )
            packets.extend(keyframe_packets)
        elif field_q is not None:
            q = field_q
        elif self._field_part is not None and decision.reference is not None:
            entry = self.buffer[decision.reference]
            q = self._field(entry, image, keypoints, params, self._last_q)[0]
        if not self._pending:
            self._pending_first = index
            self._pending_reset = self._reset_due(index, decision.keyframe)
            if self._pending_reset:
                decision = replace(decision, motion_reset=True)
        self.stats.decisions.append(decision)
        self.stats.frames += 1
        self._shown_from = (
            index if decision.keyframe or decision.promoted else decision.reference_frame
        )
        self._pending.append(CodedFrame(q=q, reference=decision.reference))
        if self._aux is not None:
            self._aux_pending.append(self._aux.encode(image))
        self._last_q = q
        if len(self._pending) >= self.config.motion_chunk:
            packets.extend(self._flush_motion())
        for p in packets:
            self.stats.add_packet(p)
        return packets

    def force_keyframe(self, idr: bool = False) -> None:
        """Code the next frame as a keyframe. ``idr``: empty the reference buffer first, so
        the decoder needs nothing older (recovery after loss on a live link)."""
        self._force_keyframe = True
        if idr:
            self.buffer = ReferenceBuffer(self.config.buffer_size)

    def continue_motion(self, snapshot: MotionSnapshot, distance: int = 1) -> None:
        """Code the next frame's motion from the coder state ``snapshot``, taken ``distance``
        frames before it, instead of the state after the previous frame: a live sender
        continues from a frame its receiver acknowledged. Needs ``motion_chunk == 1``."""
        if self._pending or self.config.motion_chunk != 1:
            raise RuntimeError("continue_motion needs one frame per MOTION packet")
        self.state.restore(snapshot, distance)

    def refresh_aux(self) -> None:
        """Code the next frame's aux picture as a random-access one (hybrid modes: a receiver
        that lost aux pictures asked for it)."""
        if self._aux is not None:
            self._aux.refresh()

    def reset_motion(self) -> None:
        """Start the next MOTION packet with a coder reset (decodable without earlier motion),
        whatever the reset policy says."""
        self._reset_requested = True

    def flush(self) -> list[Packet]:
        """Emit the motion still pending and the END packet."""
        packets: list[Packet] = []
        while self._group:  # a group cut short by the content rule leaves frames behind
            packets.extend(self._code_group())
        if self._pending:
            packets.extend(self._flush_motion())
        packets.append(EndPacket(frame_count=self._next_index))
        for p in packets:
            self.stats.add_packet(p)
        return packets

    # -- internals ------------------------------------------------------------------------
    def _face_points(
        self, keypoints: np.ndarray, landmarks: np.ndarray | None
    ) -> np.ndarray | None:
        """The points a frame's face state and DETAIL rectangles are measured on: its decoded
        keypoints, or the source's face-mesh ``landmarks`` (crop pixels) for keypoints that
        name no mouth or eyes (encoder-side only: the decoder follows the signalled reference
        and the rectangles' positions); ``None``: no face in the frame."""
        if not self._face_on_landmarks:
            return keypoints
        return None if landmarks is None else np.asarray(landmarks)[:, :2]

    def _state(self, face: np.ndarray | None, landmarks: np.ndarray | None) -> FaceState | None:
        """A frame's state for the content rule, measured on ``face`` (:meth:`_face_points`;
        ``None``: no face, no state), its eyes on the source's ``landmarks`` with
        ``CodecConfig.eye_landmarks``."""
        if self._face is None or face is None:
            return None
        state = self._face.face_state(face)
        if self.config.eye_landmarks and landmarks is not None:
            state = replace(state, eyes=MESH_FACES.eyes(np.asarray(landmarks)[:, :2]))
        return state

    def _params(self, image: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        if self._image_source is not None:  # measured on the picture, face or not
            return self._image_source.analyze_image(image)
        if landmarks is not None:
            params = self.representation.analyze(landmarks, self.config.size)
            self._last_params = params
        elif self._last_params is not None:
            params = self._last_params
        else:
            params = self.representation.neutral()  # until a face is seen
        return params

    def _reset_due(self, index: int, keyframe: bool) -> bool:
        """Whether the MOTION packet that starts at frame ``index`` resets the coder."""
        interval = self.config.reset_interval
        return (
            self._reset_requested
            or (keyframe and self.config.reset_at_keyframes)
            or (interval is not None and index - self._last_reset >= interval)
        )

    def _field(
        self,
        entry: BufferEntry,
        image: np.ndarray,
        keypoints: np.ndarray,
        params: np.ndarray,
        previous: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(q, field)``: the quantised parameters with the body-motion grid measured against
        the warp of ``entry``, and that grid as the decoder will dequantise it. The grid is
        held at ``previous``'s (quantised parameters) within the quantiser's hysteresis
        (``None``: no hold)."""
        rep = self._field_part
        assert rep is not None
        reference = entry.reference
        flow = self._warp.flow(reference, keypoints)
        size = self.config.size
        weight = body_weight(keypoints, size, size)
        field = estimate_field(image, reference.image, flow, rep.field_grid, weight)
        measured = rep.with_field(params, field)
        q = rep.quantize_field(measured, self.state.steps, previous)
        return q, rep.field(self.state.dequantize(q))

    def _psnr_check_due(self, index: int) -> bool:
        """Whether frame ``index`` is one that ``psnr_check`` renders: every N-th frame, no aux
        stream, and the newest keyframe at least :data:`PSNR_CHECK_GAP` seconds (and ``3 N``
        frames) old."""
        every = self.config.psnr_check
        if every <= 0 or self._aux is not None or index % every:
            return False
        newest = self._newest_keyframe()
        age = index - newest if newest is not None else 10**9
        return age >= max(3 * every, round(PSNR_CHECK_GAP * self.fps))

    def _newest_keyframe(self) -> int | None:
        """Frame index of the newest buffered keyframe (promoted frames are not keyframes),
        ``None`` when the buffer holds none."""
        return max((e.frame_index for e in self.buffer if not e.promoted), default=None)

    def _holding(self, indices: Iterable[int], state: FaceState) -> list[int]:
        """The buffer entries of ``indices`` that hold ``state``'s mouth and eyes (the content
        rule; an entry without a state holds everything)."""
        return [
            i
            for i in indices
            if self.buffer[i].state is None or self.content_rule.holds(self.buffer[i].state, state)
        ]

    def _mouth_as_near(self, held: int, nearest: int, state: FaceState | None) -> bool:
        """Whether buffer entry ``held`` shows a mouth about as open as the frame's (``state``)
        as the ``nearest`` one does (within ``HOLD_MOUTH_SLACK``); True without states."""
        a, b = self.buffer[held].state, self.buffer[nearest].state
        if state is None or a is None or b is None:
            return True
        return abs(a.mouth - state.mouth) <= abs(b.mouth - state.mouth) + HOLD_MOUTH_SLACK

    def _decide(
        self,
        index: int,
        image: np.ndarray,
        keypoints: np.ndarray,
        params: np.ndarray,
        state: FaceState | None,
    ) -> tuple[FrameDecision | None, np.ndarray | None, str | None]:
        """Pick a reference for ``index``: ``(decision, q, None)``, with the quantised
        parameters including the body-motion grid when the choice measured it, or
        ``(None, None, reason)`` when a keyframe must be coded."""
        if len(self.buffer) == 0 or self._force_keyframe:
            reason = "forced" if self._force_keyframe else "first"
            self._force_keyframe = False
            return None, None, reason
        mode = RefreshMode(self.config.refresh_mode)
        threshold = self.config.threshold
        if mode == RefreshMode.FIXED:
            interval = int(threshold)
            if interval > 0 and index - self.buffer[0].frame_index >= interval:
                return None, None, "interval"
            return FrameDecision(index, False, 0, self.buffer[0].frame_index, 0.0), None, None
        if self.config.max_interval > 0:
            newest = self._newest_keyframe()
            if newest is not None and index - newest >= self.config.max_interval:
                return None, None, "interval"
        candidates = list(range(len(self.buffer)))
        if state is not None:
            # The content rule: only references that hold this mouth and these eyes.
            held = self._holding(candidates, state)
            if not held:
                newest = self.buffer[0].state
                assert newest is not None
                return None, None, self.content_rule.missing(newest, state) or "mouth"
            candidates = self._looking_alike(held, state)
        if mode == RefreshMode.MOTION:
            # The gate looks at the keyframes only: a promoted frame (a rendered picture) must
            # not put off the refresh that a keyframe's age calls for.
            dists = [
                self.representation.gate_distance(e.reference.keypoints, keypoints)
                for e in self.buffer
            ]
            intra = [d for d, e in zip(dists, self.buffer, strict=True) if not e.promoted]
            if min(intra or dists) > threshold:
                return None, None, "gate"
            # Render from a keyframe where one will do: a promoted picture was warped once
            # already (PROMOTED_WEIGHT makes it look that much farther).
            weighted = {
                i: dists[i] * (PROMOTED_WEIGHT if self.buffer[i].promoted else 1.0)
                for i in candidates
            }
            k = min(candidates, key=weighted.__getitem__)
            held_on = [i for i in candidates if self.buffer[i].frame_index == self._shown_from]
            if (
                held_on
                and dists[held_on[0]] <= threshold
                and weighted[held_on[0]] <= REFERENCE_HOLD * weighted[k]
                and self._mouth_as_near(held_on[0], k, state)
            ):
                k = held_on[0]  # no flip between alike references (REFERENCE_HOLD)
            entry = self.buffer[k]
            decision = FrameDecision(index, False, k, entry.frame_index, dists[k])
            if not self._psnr_check_due(index):
                return decision, None, None
            q, field = (
                self._field(entry, image, keypoints, params, self._last_q)
                if self._field_part is not None
                else (None, None)
            )
            self.stats.psnr_checks += 1
            if psnr(self.renderer.render(entry.reference, keypoints, field), image) < (
                self.config.psnr_floor
            ):
                return None, None, "psnr"
            return decision, q, None
        # PSNR: render every candidate as the decoder would, with its own body-motion grid.
        scores, coded = [], []
        for i in candidates:
            e = self.buffer[i]
            q, field = (
                self._field(e, image, keypoints, params, self._last_q)
                if self._field_part is not None
                else (None, None)
            )
            scores.append(psnr(self.renderer.render(e.reference, keypoints, field), image))
            coded.append(q)
        k = int(np.argmax(scores))
        if scores[k] < threshold:
            return None, None, "psnr"
        best = candidates[k]
        entry = self.buffer[best]
        return FrameDecision(index, False, best, entry.frame_index, scores[k]), coded[k], None

    def _keyframe(
        self,
        index: int,
        image: np.ndarray,
        keypoints: np.ndarray,
        face: np.ndarray | None,
        q: np.ndarray,
        state: FaceState | None,
        reason: str | None,
    ) -> tuple[list[Packet], FrameDecision]:
        """Code frame ``index`` as a keyframe (``face``: see :meth:`_face_points`)."""
        quality = self.config.keyframe_quality
        idr = len(self.buffer) == 0
        data, decoded = self._code_keyframe(image, quality, idr)
        score = psnr(decoded, image)
        if RefreshMode(self.config.refresh_mode) == RefreshMode.PSNR and index > 0:
            # DAC: lower the QP until the keyframe itself satisfies the quality constraint.
            while score < self.config.threshold and quality < self.config.max_keyframe_quality:
                quality = min(quality + 10, self.config.max_keyframe_quality)
                # A sequence codec starts again from an IDR keyframe here: the decoder never
                # sees the attempt before, which the encoder's sequence already holds.
                data, decoded = self._code_keyframe(image, quality, True)
                score = psnr(decoded, image)
        packets: list[Packet] = [KeyframePacket(frame_index=index, quality=quality, data=data)]
        if self._face is not None and face is not None and self.config.detail_boost > 0:
            # The eyes and/or the mouth of the keyframe coded again, better.
            regions = self._face.detail_regions(face)
            groups = [group for part in self.config.detail_parts for group in regions[part]]
            quality_detail = min(100, quality + self.config.detail_boost)
            decoded = self._rectangles(index, image, groups, quality_detail, decoded, packets)
        source = None
        if self.eye_reader is not None and face is not None:
            source = self.eye_reader.ears(image)
            decoded = self._readable_eyes(index, image, source, face, decoded, quality, packets)
        if idr:
            self.last_idr = index
        reference = self.renderer.prepare(decoded, keypoints)
        state = self._held_state(state, source)
        self.buffer.push(BufferEntry(frame_index=index, reference=reference, q=q, state=state))
        self.stats.keyframes += 1
        decision = FrameDecision(index, True, None, index, score, quality, idr=idr, refresh=reason)
        return packets, decision

    def _code_keyframe(
        self, image: np.ndarray, quality: int, idr: bool
    ) -> tuple[bytes, np.ndarray]:
        """A keyframe's data and the picture the decoder will get: the next picture of the
        keyframe sequence for a sequence codec (``hevc-ld``; an IDR one if ``idr``), else a
        stand-alone intra picture."""
        if isinstance(self.intra, SequenceIntraCodec):
            data = self.intra.encode_keyframe(image, quality, idr=idr)
            return data, self.intra.decode_keyframe(data)
        data = self.intra.encode(image, quality)
        return data, self.intra.decode(data)

    def _update(
        self,
        index: int,
        image: np.ndarray,
        keypoints: np.ndarray,
        face: np.ndarray,
        params: np.ndarray,
        q: np.ndarray,
        state: FaceState,
        reason: str,
    ) -> tuple[FrameDecision, np.ndarray, list[Packet]] | None:
        """Promote frame ``index`` to a reference: rendered from the nearest reference, with the
        eyes or mouth that reference lacks coded as DETAIL rectangles (placed on ``face``,
        :meth:`_face_points`). ``None`` when even the nearest reference is beyond the motion
        gate (a keyframe is due anyway)."""
        assert self._face is not None
        dists = [
            self.representation.gate_distance(e.reference.keypoints, keypoints) for e in self.buffer
        ]
        best = int(np.argmin(dists))
        if dists[best] > self.config.threshold:
            return None
        entry = self.buffer[best]
        if self._field_part is not None:
            q, field = self._field(entry, image, keypoints, params, self._last_q)
        else:
            field = None
        picture = self.renderer.render(entry.reference, keypoints, field)
        assert entry.state is not None
        parts = self.content_rule.missing_parts(entry.state, state) or [reason]
        regions = self._face.detail_regions(face)
        quality = min(
            100, self.config.keyframe_quality + max(UPDATE_BOOST, self.config.detail_boost)
        )
        packets: list[Packet] = []
        source = None  # the face mesh's reading of the source's eyes, where it is needed
        if self.eye_reader is None or "eyes" not in parts:
            groups = [g for part in parts for g in regions[part]]
            picture = self._rectangles(index, image, groups, quality, picture, packets)
        else:  # the eyes at the first quality that shows them open
            groups = [g for part in parts if part != "eyes" for g in regions[part]]
            picture = self._rectangles(index, image, groups, quality, picture, packets)
            source = self.eye_reader.ears(image)
            picture = self._readable_eyes(
                index, image, source, face, picture, quality, packets, missing=True
            )
        if not packets:
            return None
        if self.eye_reader is not None and "eyes" not in parts:
            source = self.eye_reader.ears(image)
            picture = self._readable_eyes(
                index, image, source, face, picture, self.config.keyframe_quality, packets
            )
        reference = self.renderer.prepare(picture, keypoints)
        state = self._held_state(state, source)
        self.buffer.push(BufferEntry(index, reference=reference, q=q, state=state, promoted=True))
        self.stats.updates += 1
        decision = FrameDecision(
            index, False, best, entry.frame_index, dists[best], promoted=True, refresh=reason
        )
        return decision, q, packets

    def _held_state(
        self, state: FaceState | None, source: tuple[float, float] | None
    ) -> FaceState | None:
        """The state a new reference holds (``CodecConfig.eye_source_state``): ``state`` (its
        keypoints'), each eye narrowed to what the face mesh reads on the source picture
        (``source``, ``None``: not read) where that is under :data:`EYE_READ_SHARE` of the
        keypoints' (a blink's edge)."""
        if not self.config.eye_source_state or state is None or source is None:
            return state

        def held(keypoints: float, picture: float) -> float:
            return picture if picture < EYE_READ_SHARE * keypoints else keypoints

        return replace(state, eyes=(held(state.eyes[0], source[0]), held(state.eyes[1], source[1])))

    def _readable_eyes(
        self,
        index: int,
        image: np.ndarray,
        source: tuple[float, float] | None,
        face: np.ndarray,
        picture: np.ndarray,
        quality: int,
        packets: list[Packet],
        missing: bool = False,
    ) -> np.ndarray:
        """``picture`` (a reference to be, its eyes placed by ``face``) with the eyes that the
        face mesh reads less open on it than on the source ``image`` (its reading ``source``,
        read once by the caller) coded again as DETAIL
        rectangles (appended to ``packets``) at the first of ``quality`` +
        :data:`EYE_READ_STEPS` (``missing``: both eyes, starting at ``quality`` itself: the
        eyes a content update must send) after which they read open; at the last step where
        none does. Without an eye reader, a face in ``image`` or an eye that fails, ``picture``
        as it was (``missing``: the eyes at ``quality``)."""
        assert self._face is not None
        eyes = self._face.detail_regions(face)["eyes"]
        if missing:
            todo = list(range(len(eyes)))
            qualities = [quality]
        else:
            todo = unread_eyes(source, self.eye_reader.ears(picture)) if source else []
            qualities = []
        if not todo:
            return picture
        base = self.config.keyframe_quality
        qualities += [min(100, base + s) for s in EYE_READ_STEPS if base + s > quality]
        if source is None:
            qualities = qualities[:1]
        for k, q in enumerate(qualities):
            trial: list[Packet] = []
            out = self._rectangles(index, image, [eyes[e] for e in todo], q, picture, trial)
            last = k == len(qualities) - 1
            if last or (source and not unread_eyes(source, self.eye_reader.ears(out))):
                packets.extend(trial)
                if not missing or k > 0:
                    self.stats.eye_details += 1
                return out
        return picture

    def _rectangles(
        self,
        index: int,
        image: np.ndarray,
        groups: list[np.ndarray],
        quality: int,
        picture: np.ndarray,
        packets: list[Packet],
    ) -> np.ndarray:
        """Code the rectangle of ``image`` around each group of keypoints at ``quality`` as a
        DETAIL packet of frame ``index`` (appended to ``packets``); returns ``picture`` with the
        decoded rectangles blended in, as the decoder will hold it."""
        size = self.config.size
        for x, y, w, h in detail_boxes(groups, size, size):
            data = self.intra.encode(np.ascontiguousarray(image[y : y + h, x : x + w]), quality)
            picture = blend_detail(picture, self.intra.decode(data), x, y)
            packets.append(DetailPacket(index, x, y, w, h, quality, data))
        return picture

    def _code_group(self) -> list[Packet]:
        """Bidirectional mode: code the collected group. Its last frame becomes a keyframe
        (it also opens the next group); every other frame is animated from the past or the
        future keyframe, whichever :func:`choose_keyframe` prefers against the frame's aux
        picture, as the decoder will see it (without an aux stream: against the frame itself,
        downsampled 4x, and with ``group_switch`` the whole group at once,
        :func:`plan_references`); a frame only one keyframe holds (the content rule) takes
        that one. Packets: AUX, KEYFRAME (+ DETAIL), MOTION."""
        group, self._group = self._group, []
        size = self.config.size
        coded = []
        faces = []
        for index, image, landmarks in group:
            params = self._params(image, landmarks)
            q = self.state.quantize(params)
            keypoints = self.representation.keypoints(self.state.dequantize(q), size)
            coded.append((index, params, q, keypoints))
            faces.append(self._face_points(keypoints, landmarks))
        states: list[FaceState | None] = [None] * len(group)
        cut = False
        if self._group_content and self._face is not None:
            states = [self._state(f, m) for f, (_, _, m) in zip(faces, group, strict=True)]
            end = self._split_group(states)
            cut = end < len(group) - 1
            if cut:  # the rest opens the next group
                self._group = group[end + 1 :]
                group, coded, states = group[: end + 1], coded[: end + 1], states[: end + 1]
                faces = faces[: end + 1]
        before = self._last_q  # the past keyframe's parameters
        self._last_q = coded[-1][2]
        if self._aux is not None and self._aux_mirror is not None:
            pictures = [self._aux.encode(image) for _, image, _ in group]
            aux = [self._aux_mirror.decode(p) for p in pictures]
        else:
            pictures = []
            aux = [downsample(image, size // 4) for _, image, _ in group]
        last, image_last, _ = group[-1]
        reason = "first" if len(self.buffer) == 0 else "gop"
        if cut:
            reason = "content"
        packets, key_decision = self._keyframe(
            last, image_last, coded[-1][3], faces[-1], coded[-1][2], states[-1], reason
        )
        self._pending_first = group[0][0]
        self._pending_reset = self._reset_due(self._pending_first, True)
        candidates = [e.reference.image for e in self.buffer][:2]  # the future, the past
        switch = self.config.group_switch if self._aux is None else 0.0
        inner = len(group) - 1  # the frames between the keyframes
        held = [self._holders(states[k], len(candidates)) for k in range(inner)]
        if switch > 0 and len(candidates) == 2:
            small = [downsample(c, aux[0].shape[0]) for c in candidates]  # once a group
            scores = [_keyframe_scores(small, aux[k]) for k in range(inner)]
            plan = plan_references(scores, held, switch)
        else:
            plan = [
                h[0] if len(h) == 1 else choose_keyframe(candidates, aux[k])
                for k, h in enumerate(held)
            ]
        drawn_from = len(candidates) - 1  # the frame before the group is the past keyframe
        for k, ((index, params, q, keypoints), (_, image, _)) in enumerate(
            zip(coded, group, strict=True)
        ):
            if index == last:
                decision = key_decision
            else:
                ref = plan[k]
                entry = self.buffer[ref]
                if self._field_part is not None:
                    # The grid is measured against the frame's keyframe: hold it at the
                    # previous frame's while both are drawn from the same one (the past
                    # keyframe's for the first frame), so that it does not jitter.
                    same = ref == drawn_from
                    q = self._field(entry, image, keypoints, params, before if same else None)[0]
                    before, drawn_from = q, ref
                decision = FrameDecision(index, False, ref, entry.frame_index, 0.0)
            if k == 0 and self._pending_reset:
                decision = replace(decision, motion_reset=True)
            self.stats.decisions.append(decision)
            self.stats.frames += 1
            self._pending.append(CodedFrame(q=q, reference=decision.reference))
        self._aux_pending = pictures
        return [*packets, *self._flush_motion()]

    def _split_group(self, states: list[FaceState | None]) -> int:
        """The content rule in a group (bidirectional mode): the position in the collected
        group whose frame becomes its closing keyframe. The group is cut short at a frame
        that neither the past keyframe nor the planned closing one holds (a blink between two
        open-eyed keyframes, a mouth opened wider than both), until every frame up to the
        closing one is held by one of its two keyframes; the frames after the cut open the
        next group (the latency bound ``gop`` is kept). The first group (no past keyframe)
        is a single keyframe and is never cut."""
        end = len(states) - 1
        if not self.buffer:
            return end
        past = self.buffer[0].state
        parts = set(self.config.group_cut or ())
        if not parts:
            return end

        def lacks(reference: FaceState | None, frame: FaceState | None) -> bool:
            if reference is None or frame is None:  # no face: not judged
                return False
            return bool(parts.intersection(self.content_rule.missing_parts(reference, frame)))

        while end > 0:
            future = states[end]
            cut = next(
                (k for k in range(end) if lacks(past, states[k]) and lacks(future, states[k])),
                None,
            )
            if cut is None:
                break
            end = cut
        return end

    def _holders(self, state: FaceState | None, count: int) -> list[int]:
        """Which of the ``count`` newest buffered keyframes hold ``state`` (all of them
        without the content rule)."""
        if state is None or not self._group_content:
            return list(range(count))
        return self._looking_alike(self._holding(range(count), state), state)

    def _looking_alike(self, held: list[int], state: FaceState) -> list[int]:
        """``held`` narrowed to the references whose eyes look where ``state``'s do, where the
        gaze rule chooses (``gaze_rule="choose"``) and one does; ``held`` otherwise."""
        if not self._gaze_choice:
            return held
        alike = [
            i
            for i in held
            if self.buffer[i].state is None
            or not looks_elsewhere(self.buffer[i].state, state, GAZE_MARGIN)
        ]
        return alike or held

    def _flush_motion(self) -> list[Packet]:
        """The pending frames' AUX packet (hybrid modes) and MOTION packet."""
        aux: list[Packet] = []
        if self._aux_pending:
            aux = [AuxPacket(first_frame=self._pending_first, pictures=tuple(self._aux_pending))]
            self._aux_pending = []
        reset = self._pending_reset
        if reset:
            self.state.reset()
            self._reset_requested = False
            self._last_reset = self._pending_first
        data = encode_frames(self.state, self._pending)
        packet = MotionPacket(
            first_frame=self._pending_first, n_frames=len(self._pending), reset=reset, data=data
        )
        self._pending = []
        return [*aux, packet]


def _keyframe_scores(pictures: list[np.ndarray], target: np.ndarray) -> list[float]:
    """PSNR of each picture, downsampled to ``target``'s size, against ``target``."""
    side = target.shape[0]
    return [psnr(downsample(p, side), target) for p in pictures]


def plan_references(scores: list[list[float]], held: list[list[int]], switch: float) -> list[int]:
    """The keyframe each frame of a group is drawn from (``CodecConfig.group_switch``): the
    sequence that maximises the frames' scores (``scores[k][i]``: PSNR in dB of keyframe ``i``,
    0 the future and 1 the past, against frame ``k``) less ``switch`` dB for every change of
    keyframe from one frame to the next, counting the past keyframe before the group and the
    future one that closes it (the picture a viewer sees changes there too); frame ``k`` may
    only take a keyframe in ``held[k]`` (the content rule; empty: either). Viterbi over two
    states: the best plan flips at most where the scores or the content rule pay for it."""
    cost = np.array([switch, 0.0])  # the frame before the group is the past keyframe
    back: list[np.ndarray] = []
    for k, row in enumerate(scores):
        allowed = np.zeros(2, bool)
        allowed[held[k] or [0, 1]] = True
        stay = cost
        cross = cost[::-1] + switch
        came = np.where(stay <= cross, np.arange(2), 1 - np.arange(2))
        cost = np.minimum(stay, cross) - np.asarray(row, np.float64)
        cost = np.where(allowed, cost, np.inf)
        back.append(came)
    if not back:
        return []
    cost = cost + np.array([0.0, switch])  # the group closes on the future keyframe
    ref = int(np.argmin(cost))
    plan = []
    for came in reversed(back):
        plan.append(ref)
        ref = int(came[ref])
    return plan[::-1]


def choose_keyframe(pictures: list[np.ndarray], aux: np.ndarray) -> int:
    """The bidirectional choice of keyframe (the paper's Algorithm 1): the index of the picture
    in ``pictures`` (buffer order: 0 the future keyframe, 1 the past one) whose downsampled
    version has the highest PSNR against the frame's decoded aux picture ``aux``. Encoder and
    decoder call this on the same pictures, so they agree; the encoder also signals it."""
    return int(np.argmax(_keyframe_scores(pictures, aux)))
