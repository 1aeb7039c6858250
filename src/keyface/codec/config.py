"""Encoder settings and the reference buffer shared by encoder and decoder."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from keyface.bitstream import MAX_GOP, MIN_GOP, CropGeometry, RefreshMode
from keyface.codec.limits import MAX_FRAMES_PER_PACKET
from keyface.intra import DEFAULT_INTRA_CODEC
from keyface.motion import DEFAULT_REPRESENTATION, FIELD_REPRESENTATION, FaceState
from keyface.render import Reference
from keyface.renderers import DEFAULT_RENDERER
from keyface.types import CropBox

MAX_BUFFER = 5
MODES = ("animation", "hybrid", "bidirectional")
"""The stream modes (``CodecConfig.mode``, ``keyface encode --mode``); ``"auto"`` also names the
one ladder over them (``keyface.codec.ratecontrol.config_at`` resolves it to one of these)."""


def crop_geometry(box: CropBox) -> CropGeometry:
    """A crop box as a stream header stores it (floats rounded to float32)."""
    return CropGeometry(box.source_width, box.source_height, box.cx, box.cy, box.side)


def crop_box(geometry: CropGeometry) -> CropBox:
    """The crop box a stream header's geometry describes."""
    g = geometry
    return CropBox(g.cx, g.cy, g.side, g.source_width, g.source_height)


DEFAULT_THRESHOLDS: dict[RefreshMode, float] = {
    RefreshMode.PSNR: 22.0,
    RefreshMode.MOTION: 0.32,
    RefreshMode.FIXED: 0.0,
}
"""Default refresh threshold per mode: PSNR in dB below which a new keyframe is coded (DAC
Algorithm 1), motion distance above which one is coded (ZTE gate), keyframe interval in frames
(0 = only the first frame) for the fixed mode. Chosen with ``benchmarks/refresh.py``."""


GAZE_RULES = ("off", "choose", "refresh")
"""The values of :attr:`CodecConfig.gaze_rule`."""


@dataclass(frozen=True)
class CodecConfig:
    """Everything the encoder decides; what the decoder needs of it goes in the stream header."""

    size: int = 256
    """Side of the square coded picture (the face crop)."""
    intra_codec: str = DEFAULT_INTRA_CODEC
    keyframe_quality: int = 22
    """Intra quality 1..100 of the first keyframe (and of refreshes unless raised)."""
    max_keyframe_quality: int = 90
    """PSNR refresh raises the quality of a new keyframe up to this until it clears the
    threshold."""
    quant_level: int = 2
    refresh_mode: RefreshMode = RefreshMode.MOTION
    refresh_threshold: float | None = None
    """``None``: the mode's entry of ``DEFAULT_THRESHOLDS``."""
    buffer_size: int = MAX_BUFFER
    motion_chunk: int = MAX_FRAMES_PER_PACKET
    """Frames per MOTION packet: 1 for the lowest latency (live links), the most the bitstream
    allows (64) for files. Each packet costs its framing and the range coder's last word,
    about 9 bytes: on the 12 validation people 64-frame packets code the animation's rungs in
    0.11 kbit/s less than 16-frame ones (2-4 %, the same pictures; docs/motion.md). A file
    cut short loses the frames of its last packet."""
    generator: str = DEFAULT_RENDERER
    """The renderer the encoder renders with where it must predict the decoder (the PSNR
    refresh rule, the prepared references); written in the header."""
    motion_field: bool = True
    """Send the body-motion grid (:mod:`keyface.motion.field`) with every predicted frame:
    the hair, shoulders and background follow the real frame instead of being held still."""
    motion: str | None = None
    """Motion representation by registry name (``keyface.motion.REPRESENTATIONS``); ``None``:
    the face mesh, with the body-motion grid unless ``motion_field`` is off."""
    reset_interval: int | None = None
    """Reset the motion coder in the MOTION packet that starts at least this many frames after
    the last reset (a lost packet then costs at most this many frames); ``None``: only the
    first packet resets (files)."""
    reset_at_keyframes: bool = False
    """Every keyframe starts a MOTION packet that resets the motion coder, so a receiver can
    start at any keyframe (live links)."""
    detail_boost: int = 0
    """Code the rectangles around the eyes and the mouth of every keyframe again at this many
    quality steps above the keyframe (DETAIL packets, :mod:`keyface.codec.detail`); 0: never.
    Needs a face state (the representation's, or the landmarks' with ``landmark_content``);
    off by default (``keyface encode --detail-boost``; measured in docs/codec.md)."""
    detail_parts: tuple[str, ...] = ("eyes", "mouth")
    """Which parts ``detail_boost`` codes again (of ``"eyes"``, ``"mouth"``)."""
    content_update: str = "detail"
    """What the content rule sends when no reference holds a frame: ``"detail"`` (the frame
    rendered from the nearest reference with the missing eyes or mouth coded as DETAIL
    rectangles, promoted to a reference: a few hundred bytes instead of a keyframe;
    ``RefreshMode.MOTION`` only) or ``"keyframe"`` (a new keyframe; what live senders use, their
    datagrams carry no DETAIL packets). Measured in docs/codec.md."""
    eye_check: bool = True
    """Run the face mesh on every reference picture (keyframe or promoted frame) and code the
    eyes that it shows less open than the source (:func:`keyface.codec.content.unread_eyes`)
    again as DETAIL rectangles, better, until they read open: the lowest rungs blur eyes shut,
    and every frame warped from such a picture keeps them shut (issue 18). Needs
    ``content_refresh`` and ``content_update="detail"``, or the bidirectional mode (its
    keyframes: at its lowest rung, eye state wrong in 6 % of frames instead of 17 %, for 7 %
    more bits; docs/hybrid.md); encoder-side only."""
    eye_source_state: bool = False
    """With the eye check: a reference taken where the face mesh reads an eye on the source
    picture itself less open than its keypoints say (a blink's edge: the tracker smooths over
    it, the picture shows a half-shut eye) holds that eye as the picture shows it, so that later
    frames with the eye open are not warped from it (issue 18; encoder-side only)."""
    eye_landmarks: bool = False
    """Measure each frame's and each reference's eye openness for the content rule on the
    source's face-mesh landmarks instead of the quantised keypoints (the mouth and the gaze
    stay the keypoints'). The coarsest quantiser levels (the ladder's floor, 4-12 shape
    coefficients) keep almost nothing of the eyes' shape, so a first keyframe taken with an eye
    shut or half shut read as open and held every later open eye (issue 18). The animation
    ladder sets it below ``ratecontrol.EYE_LANDMARKS_BELOW``; the one ladder's groups do not
    (measured there, docs/codec.md, it moved the eye state both ways and cost open mouths).
    Encoder-side only: the decoder follows the signalled reference."""
    psnr_check: int = 0
    """``RefreshMode.MOTION`` without an aux stream: render every ``psnr_check``-th frame
    as the decoder will and code a keyframe when its PSNR is below ``psnr_floor`` (DAC's rule as
    a safety net under ZTE's gate, which sees only the face's keypoints: a camera zoom, a
    lighting change or a head turn the warp cannot follow pass it); at most one such keyframe a
    second (``keyface.codec.encoder.PSNR_CHECK_GAP``). 0: never."""
    psnr_floor: float = 16.0
    """The PSNR in dB below which ``psnr_check`` codes a keyframe."""
    max_interval: int = 0
    """``RefreshMode.PSNR`` and ``MOTION``: also code a keyframe when the newest one is this
    many frames old, whatever the rule says (the call ladder's regular keyframes, which the
    content rule, the gate and the PSNR check still precede); 0: never. Encoder-side only."""
    content_refresh: bool = True
    """Render each frame only from references that hold its mouth and eye state, and code a
    keyframe when none does (:mod:`keyface.codec.content`; needs a face state, see
    ``landmark_content``; not in ``RefreshMode.FIXED``). Encoder-side: streams decode the same
    either way."""
    gaze_rule: str = "choose"
    """Whether the content rule looks at where the eyes look (a warp barely moves an iris: drawn
    from a sideways glance, eyes that look ahead keep looking sideways): ``"off"``;
    ``"choose"``: among the references that hold a frame, prefer those whose irises sit within
    :data:`keyface.codec.content.GAZE_MARGIN` of the frame's, never a keyframe for it;
    ``"refresh"``: a reference whose irises do not is not holding the frame's eyes, so a
    glance no reference shows gets a keyframe (or, in the groups, a cut). Encoder-side only.
    On the 12 validation people (docs/codec.md, "Where the eyes look") ``"choose"`` costs no
    bits and moves whole-frame LPIPS by +0.6 % BD-rate for eyes that look the wrong way in
    0-6 % fewer frames; ``"refresh"`` in 6-23 % fewer, for +9 % bits at equal LPIPS."""
    landmark_content: bool = False
    """For keypoints that name no mouth or eyes (FOMM): judge the content rule and the eye
    check on the source's face-mesh landmarks (encoder-side; the decoder needs nothing: it
    follows the signalled reference). A frame no reference holds becomes a keyframe, never a
    promoted update (a picture the model drew is a poor reference: with promotions the
    stream needed 2.8 times the bits of the gate alone for the same LPIPS). Off by default:
    with the only FOMM model trained here (a 64x64 blur) it costs 26-73 % more bits, and at
    equal rate open-mouth LPIPS, DISTS and the eye state are worse; ``keyface encode --content
    keyframe`` turns it on (docs/motion.md, "Mouths and eyes of FOMM streams")."""
    group_cut: tuple[str, ...] | None = None
    """Bidirectional mode: whether and how its groups follow the content rule (with
    ``content_refresh``). ``None`` (the default): they do not, each frame is animated from the
    keyframe whose picture is nearer (the paper's choice). ``()``: each frame is animated from
    a keyframe that holds its mouth and eyes where only one does. ``("eyes",)``,
    ``("mouth",)`` or both: also cut a group short at a frame whose eyes (mouth) neither
    keyframe holds, with a keyframe there (:meth:`keyface.codec.encoder.Encoder._split_group`).
    Off by default in ``--mode bidirectional`` (the paper's choice); the one ladder's groups
    (``mode="auto"``, :data:`keyface.codec.ratecontrol.GROUPS_CUT`) cut on eyes and mouth:
    with ``hevc-ld`` keyframes that costs ~12 % more bits at equal whole-frame LPIPS for
    23-29 % better open mouths and eye state wrong in ~2.5 % of frames instead of ~4-5 %
    (docs/hybrid.md, "Groups along the rate axis"; with intra keyframes it cost 10-70 % more
    bits)."""
    group_switch: float = 0.0
    """Bidirectional groups without an aux stream: what a change of keyframe from one frame to
    the next costs, in dB of the choice's score (the keyframe's picture, downsampled, PSNR
    against the frame), when the frames of a group are assigned to their two keyframes
    together (:func:`keyface.codec.encoder.plan_references`), so that a group does not flip
    between its keyframes (each flip changes the background to the other keyframe's; such
    frames scored 2-3 times the flicker of others). 0: each frame takes the better keyframe on
    its own. Encoder-side only (these streams signal each frame's keyframe)."""
    mode: str = "animation"
    """``"animation"`` (keyframes and motion), ``"hybrid"`` (plus the low-delay auxiliary
    stream, fused at the decoder) or ``"bidirectional"`` (groups of ``gop`` frames between two
    keyframes, plus the auxiliary stream); docs/hybrid.md."""
    aux_scale: int = 4
    """The auxiliary stream's downsampling factor (2, 4 or 8); 0: none (bidirectional only:
    the encoder then chooses each frame's keyframe against the source and signals it)."""
    aux_qp: int = 40
    """The auxiliary stream's constant QP (0..51)."""
    aux_codec: str = "x265"
    gop: int = 15
    """Frames per group in the bidirectional mode, both keyframes included (5..30)."""
    fusion: str | None = None
    """The fusion written in the header as the decoder's default (``None``: the default of
    :mod:`keyface.fusion`)."""

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 1024:
            raise ValueError(f"size must be in 16..1024, got {self.size}")
        if not 1 <= self.buffer_size <= MAX_BUFFER:
            raise ValueError(f"buffer_size must be in 1..{MAX_BUFFER}, got {self.buffer_size}")
        if not 1 <= self.keyframe_quality <= 100:
            raise ValueError(f"keyframe_quality must be in 1..100, got {self.keyframe_quality}")
        if not 1 <= self.motion_chunk <= MAX_FRAMES_PER_PACKET:
            raise ValueError(f"motion_chunk must be in 1..{MAX_FRAMES_PER_PACKET}")
        if self.content_update not in ("keyframe", "detail"):
            raise ValueError(
                f"content_update must be 'keyframe' or 'detail', got {self.content_update!r}"
            )
        if not 0 <= self.detail_boost <= 99:
            raise ValueError(f"detail_boost must be in 0..99, got {self.detail_boost}")
        if not self.detail_parts or not set(self.detail_parts) <= {"eyes", "mouth"}:
            raise ValueError(f"detail_parts must name eyes and/or mouth, got {self.detail_parts}")
        if self.group_cut is not None and not set(self.group_cut) <= {"eyes", "mouth"}:
            raise ValueError(f"group_cut must name eyes and/or mouth, got {self.group_cut}")
        if self.gaze_rule not in GAZE_RULES:
            raise ValueError(
                f"gaze_rule must be one of {', '.join(GAZE_RULES)}, got {self.gaze_rule!r}"
            )
        if self.group_switch < 0:
            raise ValueError(f"group_switch must be >= 0, got {self.group_switch}")
        if self.max_interval < 0:
            raise ValueError(f"max_interval must be >= 0, got {self.max_interval}")
        if self.psnr_check < 0:
            raise ValueError(f"psnr_check must be >= 0, got {self.psnr_check}")
        if self.reset_interval is not None and self.reset_interval < 1:
            raise ValueError("reset_interval must be >= 1 or None")
        if self.mode not in (*MODES, "auto"):
            raise ValueError(f"mode must be one of {', '.join(MODES)} or auto, got {self.mode!r}")
        if self.aux_scale not in (0, 2, 4, 8):
            raise ValueError(f"aux_scale must be 2, 4 or 8 (or 0: none), got {self.aux_scale}")
        if self.aux_scale == 0 and self.mode == "hybrid":
            raise ValueError("the hybrid mode needs an aux stream (aux_scale 2, 4 or 8)")
        if not 0 <= self.aux_qp <= 51:
            raise ValueError(f"aux_qp must be in 0..51, got {self.aux_qp}")
        if not MIN_GOP <= self.gop <= MAX_GOP:
            raise ValueError(f"gop must be in {MIN_GOP}..{MAX_GOP}, got {self.gop}")
        if self.mode == "bidirectional" and self.buffer_size < 2:
            raise ValueError("the bidirectional mode needs buffer_size >= 2")

    @property
    def motion_representation(self) -> str:
        """The registry name of the motion representation this configuration codes with."""
        if self.motion is not None:
            return self.motion
        return FIELD_REPRESENTATION if self.motion_field else DEFAULT_REPRESENTATION

    @property
    def threshold(self) -> float:
        if self.refresh_threshold is not None:
            return float(self.refresh_threshold)
        return DEFAULT_THRESHOLDS[RefreshMode(self.refresh_mode)]


@dataclass
class BufferEntry:
    """A keyframe held in the reference buffer."""

    frame_index: int
    reference: Reference
    q: np.ndarray
    state: FaceState | None = None
    """The mouth and eye state of the reference's keypoints (encoder side, when the
    representation has one)."""
    promoted: bool = False
    """A rendered frame with DETAIL rectangles, not an intra-coded keyframe."""


@dataclass
class ReferenceBuffer:
    """FIFO of up to ``capacity`` keyframes; index 0 is the newest (mirrored by both ends)."""

    capacity: int
    _entries: deque[BufferEntry] = field(default_factory=deque)

    def push(self, entry: BufferEntry) -> None:
        self._entries.appendleft(entry)
        while len(self._entries) > self.capacity:
            self._entries.pop()

    def __getitem__(self, index: int) -> BufferEntry:
        return self._entries[index]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[BufferEntry]:
        return iter(self._entries)

    def frame_indices(self) -> list[int]:
        return [e.frame_index for e in self._entries]
