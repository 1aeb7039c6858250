"""The speaker's end of a call (sans-I/O): :class:`SenderSession` codes face crops with the
codec's live settings (one MOTION packet per frame, motion from acknowledged frames or with
periodic resets, IDR keyframes on request) and turns each frame into datagrams."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from keyface.bitstream import (
    AuxPacket,
    KeyframePacket,
    MotionPacket,
    StreamHeader,
)
from keyface.codec.config import CodecConfig
from keyface.codec.encoder import EncoderCore
from keyface.codec.limits import MAX_BASE_BACK
from keyface.entropy import MotionSnapshot
from keyface.renderers import DEFAULT_RENDERER
from keyface.server.datagram import (
    ACK_SPAN,
    MAX_COPIES,
    Datagram,
    DatagramError,
    RedundantMotion,
    encode_frame_datagram,
    encode_header_datagram,
    parse_datagram,
)
from keyface.types import CropBox

logger = logging.getLogger(__name__)


DEFAULT_RESET_INTERVAL = 10
"""Frames between motion-coder resets on a live link whose receiver sends no
acknowledgements (``keyface send --reset-interval``): a lost unreliable MOTION datagram then
costs at most this many frames. With acknowledgements (every keyface server sends them) the
sender codes each frame from an acknowledged one and needs no periodic resets (docs/server.md,
"Loss")."""
ACK_TIMEOUT_S = 1.0
"""Acknowledgements count as flowing while the newest arrived at most this long ago; when they
stop, the sender goes back to coding each frame from the previous one with periodic resets."""
RTT_WINDOW_S = 2.0
"""The round trip is the median of those seen over this long."""
LOSS_MEMORY_S = 2.0
"""After a loss shows in the acknowledgements, a frame whose predecessor is not acknowledged
yet carries a copy of that predecessor's motion for this long."""


LIVE_MIRROR = "warp"
"""The renderer a live sender predicts its own frames with in place of the default renderer
(its mirror of the decoder: the PSNR check and the content rule look at those predictions).
The server draws with its own renderer whatever this is, so the default's keyframe enhancer
(66 ms a keyframe on this CPU) buys the sender nothing: on the 12 validation people at
``medium`` the receiver's pictures came out the same with either mirror (same keyframes and
rate, LPIPS 0.0966 / 0.0967 on the call ladder, 0.1104 / 0.1103 on the animation ladder, eye
state 5.8 / 5.9 %, 5.9 / 5.9 %; docs/server.md, "The call ladder")."""


def live_generator(generator: str, mirror: str | None = LIVE_MIRROR) -> str:
    """The renderer a live sender predicts its frames with when its config names
    ``generator``: ``mirror`` in place of the default renderer (``None``: keep it); any other
    renderer (a FOMM model's, a ``.safetensors`` file) as named."""
    return mirror if mirror is not None and generator == DEFAULT_RENDERER else generator


def live_codec_config(
    config: CodecConfig, reset_interval: int | None, mirror: str | None = LIVE_MIRROR
) -> CodecConfig:
    """``config`` as a live sender codes it: one MOTION packet per frame (one datagram),
    motion-coder resets every ``reset_interval`` frames and at every keyframe (a receiver can
    start at any keyframe, a lost datagram costs at most ``reset_interval`` frames). Frame
    datagrams carry a keyframe and motion only, so the content rule sends keyframes and no
    DETAIL rectangles are coded. The sender predicts its frames with
    :func:`live_generator` (``mirror`` in place of the default renderer)."""
    if reset_interval is not None and reset_interval < 1:
        raise ValueError("reset_interval must be >= 1 or None")
    if config.mode == "bidirectional":
        raise ValueError(
            "live calls code the animation or the hybrid mode (bidirectional adds a group's delay)"
        )
    return replace(
        config,
        motion_chunk=1,
        reset_interval=reset_interval,
        reset_at_keyframes=True,
        content_update="keyframe",
        detail_boost=0,
        generator=live_generator(config.generator, mirror),
    )


@dataclass
class SenderStats:
    frames: int = 0
    keyframes: int = 0
    idr_keyframes: int = 0
    resets: int = 0
    datagrams: int = 0
    bits: int = 0
    motion_bits: int = 0
    """MOTION packets as sent, redundant copies included."""
    refresh_requests: int = 0
    refresh_ignored: int = 0
    bad_feedback: int = 0
    acks: int = 0
    based: int = 0
    """Frames coded from an acknowledged frame's state (FLAG_BASED datagrams that do not reset)."""
    redundant: int = 0
    """Frames that carried copies of earlier frames' motion."""
    copies: int = 0
    """Copies carried (at most ``MAX_COPIES`` a frame)."""
    losses_seen: int = 0
    """Unreliable frames the acknowledgements showed the receiver never decoded."""
    aux_bits: int = 0
    """Hybrid streams: AUX packets as sent."""
    aux_refreshes: int = 0
    """Random-access aux pictures coded because the receiver asked."""


@dataclass(frozen=True)
class _SentFrame:
    time: float
    snapshot: MotionSnapshot
    """The motion-coder state after this frame (what a later frame may continue from)."""
    copy: RedundantMotion
    """What a later datagram carries if this frame is lost (``copy.base_back``: 0 if its MOTION
    packet reset, else the frame it continued from, counted back)."""
    reliable: bool


class SenderSession:
    """The speaker's end: frames in, datagrams out; REFRESH_REQUEST and ACK feedback in.

    Until acknowledgements arrive (and whenever they stop for ``ACK_TIMEOUT_S``) each frame's
    motion continues from the previous frame, with a reset every ``reset_interval`` frames, in
    version-1 datagrams. While they flow, each frame continues from the newest acknowledged
    frame (FLAG_BASED), so a lost datagram costs only its own frame; after a loss has shown,
    a frame whose predecessor is not acknowledged yet also carries that predecessor's motion
    (FLAG_REDUNDANT), so a single loss costs no frame at all. ``feedback=False`` ignores
    acknowledgements (the version-1 behaviour); ``redundancy=False`` never sends copies.
    ``mirror``: the renderer the sender predicts its frames with in place of the default
    renderer (:func:`live_codec_config`).
    """

    def __init__(
        self,
        config: CodecConfig,
        fps: Fraction,
        *,
        crop: CropBox | None = None,
        reset_interval: int | None = DEFAULT_RESET_INTERVAL,
        rate_window_s: float = 2.0,
        feedback: bool = True,
        redundancy: bool = True,
        mirror: str | None = LIVE_MIRROR,
    ) -> None:
        live = live_codec_config(config, reset_interval, mirror)
        # The session, not the encoder, decides when motion resets (acknowledged bases need none).
        self.encoder = EncoderCore(replace(live, reset_interval=None), fps, crop=crop)
        self.reset_interval = reset_interval
        self.feedback = feedback
        self.redundancy = redundancy
        self.stats = SenderStats()
        self.rate_window_s = rate_window_s
        self._sent: deque[tuple[float, int]] = deque()
        self._frames: dict[int, _SentFrame] = {}
        self._acked: set[int] = set()
        self._ack_at: float | None = None
        self._loss_checked = -1
        self._loss_at: float | None = None
        self._rtt_samples: deque[tuple[float, float]] = deque()
        self.rtt_s: float | None = None
        """The median time from sending a frame to its acknowledgement over the last
        ``RTT_WINDOW_S`` (a frame that waited in the receiver's reorder buffer behind a lost
        one is acknowledged late: the median leaves such waits out, and a copy goes only
        where an acknowledgement is later than usual)."""
        self._last_key = -1
        self._keys = 0
        """Keyframes since the newest IDR, that IDR included."""
        self._last_reset = -1
        self._now = 0.0

    @property
    def header(self) -> StreamHeader:
        return self.encoder.header

    @property
    def acknowledged(self) -> bool:
        """Whether acknowledgements are flowing (frames are coded from acknowledged ones)."""
        return (
            self.feedback and self._ack_at is not None and self._now - self._ack_at <= ACK_TIMEOUT_S
        )

    def force_keyframe(self) -> None:
        """Code the next frame as an IDR keyframe."""
        self.encoder.force_keyframe(idr=True)

    def push_frame(
        self, image_crop: np.ndarray, landmarks: np.ndarray | None, now: float
    ) -> list[Datagram]:
        """Encode the next face crop; returns the datagrams to send, in order."""
        self._now = now
        index = self.stats.frames
        based = self.acknowledged
        copies = self._copies(index) if based else ()
        # With a copy of the previous frame aboard, this frame can continue from it: the
        # receiver decodes the copies first (the oldest continues from an acknowledged frame).
        base = index - 1 if copies else self._base(index) if based else None
        if base is not None:
            self.encoder.continue_motion(self._frames[base].snapshot, index - base)
        elif based or (
            self.reset_interval is not None and index - self._last_reset >= self.reset_interval
        ):
            self.encoder.reset_motion()
        packets = self.encoder.encode(image_crop, landmarks)
        self.stats.frames += 1
        keyframe = any(isinstance(p, KeyframePacket) for p in packets)
        idr = self.encoder.stats.decisions[-1].idr
        motion = packets[-1]
        assert isinstance(motion, MotionPacket) and motion.first_frame == index
        if motion.reset:
            self._last_reset = index
            self.stats.resets += 1
        base_back = 0 if motion.reset else (index - base if base is not None else 1)
        out: list[Datagram] = []
        if idr:  # every IDR carries the header, so a receiver can (re)start there
            out.append(Datagram("reliable", encode_header_datagram(self.header)))
            self.stats.idr_keyframes += 1
        if keyframe:
            self._last_key = index
            self._keys = 1 if idr else self._keys + 1
            self.stats.keyframes += 1
        key_back = index - self._last_key
        if keyframe:
            copies = ()  # a keyframe's datagram is reliable and resets the motion
        payload = encode_frame_datagram(
            index, key_back, idr, packets, base_back if based else None, copies, self._keys
        )
        out.append(Datagram("reliable" if keyframe else "unreliable", payload))
        self.stats.motion_bits += 8 * len(bytes(motion))
        self.stats.aux_bits += sum(8 * len(bytes(p)) for p in packets if isinstance(p, AuxPacket))
        if copies:
            self.stats.redundant += 1
            self.stats.copies += len(copies)
            self.stats.motion_bits += sum(8 * len(bytes(c.motion)) for c in copies)
        if based and base is not None and not motion.reset:
            self.stats.based += 1
        copy = RedundantMotion(key_back, base_back, self._keys, motion)
        self._frames[index] = _SentFrame(now, self.encoder.state.snapshot(), copy, keyframe)
        self._frames.pop(index - MAX_BASE_BACK - 1, None)
        for d in out:
            bits = 8 * len(d.payload)
            self.stats.bits += bits
            self.stats.datagrams += 1
            self._sent.append((now, bits))
        self._expire(now)
        return out

    def receive_feedback(self, payload: bytes, now: float | None = None) -> None:
        """Handle a datagram from the server (a refresh request or an acknowledgement);
        malformed ones are counted and dropped. ``now``: when it arrived (default: the time
        of the newest frame)."""
        if now is not None:
            self._now = max(self._now, now)
        try:
            d = parse_datagram(payload)
            if d.refresh is None and d.ack is None and d.aux_refresh is None:
                raise DatagramError("not a feedback datagram")
        except DatagramError as exc:
            self.stats.bad_feedback += 1
            logger.debug("sender: dropped feedback datagram: %s", exc)
            return
        if d.ack is not None:
            self._acknowledge(d.ack.newest, d.ack.frames())
            return
        if d.aux_refresh is not None:
            self.stats.aux_refreshes += 1
            self.encoder.refresh_aux()
            return
        assert d.refresh is not None
        self.stats.refresh_requests += 1
        if d.refresh.frame_index <= self.encoder.last_idr:
            self.stats.refresh_ignored += 1  # an IDR at or after that frame is already out
            return
        self.force_keyframe()

    def uplink_kbps(self, now: float) -> float:
        """Sent bit rate over the last ``rate_window_s`` seconds (kbit/s)."""
        self._expire(now)
        return sum(bits for _, bits in self._sent) / 1000.0 / self.rate_window_s

    # -- internals ---------------------------------------------------------------------------
    def _acknowledge(self, newest: int, frames: list[int]) -> None:
        if newest >= self.stats.frames:
            self.stats.bad_feedback += 1  # acknowledges a frame never sent
            return
        self.stats.acks += 1
        if not self.feedback:
            return
        self._ack_at = self._now
        if newest not in self._acked and newest in self._frames:
            samples = self._rtt_samples
            samples.append((self._now, max(self._now - self._frames[newest].time, 0.0)))
            while samples[0][0] < self._now - RTT_WINDOW_S:
                samples.popleft()
            self.rtt_s = float(np.median([rtt for _, rtt in samples]))
        self._acked.update(f for f in frames if f in self._frames)
        horizon = self.stats.frames - MAX_BASE_BACK - 1
        self._acked = {f for f in self._acked if f > horizon}
        # Frames before the newest acknowledged one that are not held were never decoded.
        for f in range(max(self._loss_checked + 1, newest - ACK_SPAN), newest):
            sent = self._frames.get(f)
            if sent is not None and not sent.reliable and f not in self._acked:
                self.stats.losses_seen += 1
                self._loss_at = self._now
        self._loss_checked = max(self._loss_checked, newest)

    def _base(self, index: int) -> int | None:
        """The newest acknowledged frame this one can continue from (``None``: reset)."""
        held = [f for f in self._acked if index - f <= MAX_BASE_BACK and f in self._frames]
        return max(held) if held else None

    def _copies(self, index: int) -> tuple[RedundantMotion, ...]:
        """Copies of the motion of the frames just before this one that are probably lost:
        sent unreliably at least a round trip ago and not acknowledged (on links whose round
        trip exceeds a frame period no copy is sent), while losses have shown lately. The
        receiver must be able to decode them: the oldest copy resets or continues from an
        acknowledged frame, each later one from the copy before it (a frame that continued
        from a lost, uncopied one is not worth a copy: nothing can decode it)."""
        if (
            not self.redundancy
            or self.rtt_s is None
            or self._loss_at is None
            or self._now - self._loss_at > LOSS_MEMORY_S
        ):
            return ()
        chain: list[RedundantMotion] = []
        f = index - 1
        while len(chain) < MAX_COPIES:
            sent = self._frames.get(f)
            if (
                sent is None
                or sent.reliable
                or f in self._acked
                or self._now - sent.time < self.rtt_s
            ):
                return ()
            chain.append(sent.copy)
            back = sent.copy.base_back
            if not back or f - back in self._acked:  # decodable start
                return tuple(reversed(chain))
            if back != 1:
                return ()
            f -= 1
        return ()

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0][0] <= now - self.rate_window_s:
            self._sent.popleft()
