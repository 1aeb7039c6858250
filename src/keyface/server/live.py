"""The speaker's end of a call (sans-I/O): :class:`SenderSession` codes face crops with the
codec's live settings (one MOTION packet per frame, motion-coder resets, IDR keyframes on
request) and turns each frame into datagrams."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from keyface.bitstream import (
    KeyframePacket,
    MotionPacket,
    StreamHeader,
)
from keyface.codec.config import CodecConfig
from keyface.codec.encoder import EncoderCore
from keyface.server.datagram import (
    Datagram,
    DatagramError,
    encode_frame_datagram,
    encode_header_datagram,
    parse_datagram,
)
from keyface.types import CropBox

logger = logging.getLogger(__name__)


DEFAULT_RESET_INTERVAL = 10
"""Frames between motion-coder resets on a live link (``keyface send --reset-interval``): a
lost unreliable MOTION datagram costs at most this many frames. 10 rather than 30: +3 % bits
and about a third of the concealed frames under 5 % motion loss (benchmarks/server_loss.py,
docs/server.md)."""


def live_codec_config(config: CodecConfig, reset_interval: int | None) -> CodecConfig:
    """``config`` as a live sender codes it: one MOTION packet per frame (one datagram),
    motion-coder resets every ``reset_interval`` frames and at every keyframe (a receiver can
    start at any keyframe, a lost datagram costs at most ``reset_interval`` frames). Frame
    datagrams carry a keyframe and motion only, so the content rule sends keyframes and no
    DETAIL rectangles are coded."""
    if reset_interval is not None and reset_interval < 1:
        raise ValueError("reset_interval must be >= 1 or None")
    return replace(
        config,
        motion_chunk=1,
        reset_interval=reset_interval,
        reset_at_keyframes=True,
        content_update="keyframe",
        detail_boost=0,
    )


@dataclass
class SenderStats:
    frames: int = 0
    keyframes: int = 0
    idr_keyframes: int = 0
    resets: int = 0
    datagrams: int = 0
    bits: int = 0
    refresh_requests: int = 0
    refresh_ignored: int = 0
    bad_feedback: int = 0


class SenderSession:
    """The speaker's end: frames in, datagrams out; REFRESH_REQUEST feedback in."""

    def __init__(
        self,
        config: CodecConfig,
        fps: Fraction,
        *,
        crop: CropBox | None = None,
        reset_interval: int | None = DEFAULT_RESET_INTERVAL,
        rate_window_s: float = 2.0,
    ) -> None:
        self.encoder = EncoderCore(live_codec_config(config, reset_interval), fps, crop=crop)
        self.stats = SenderStats()
        self.rate_window_s = rate_window_s
        self._sent: deque[tuple[float, int]] = deque()
        self._last_key = -1

    @property
    def header(self) -> StreamHeader:
        return self.encoder.header

    def force_keyframe(self) -> None:
        """Code the next frame as an IDR keyframe."""
        self.encoder.force_keyframe(idr=True)

    def push_frame(
        self, image_crop: np.ndarray, landmarks: np.ndarray | None, now: float
    ) -> list[Datagram]:
        """Encode the next face crop; returns the datagrams to send, in order."""
        index = self.stats.frames
        packets = self.encoder.encode(image_crop, landmarks)
        self.stats.frames += 1
        keyframe = any(isinstance(p, KeyframePacket) for p in packets)
        idr = self.encoder.stats.decisions[-1].idr
        out: list[Datagram] = []
        if idr:  # every IDR carries the header, so a receiver can (re)start there
            out.append(Datagram("reliable", encode_header_datagram(self.header)))
            self.stats.idr_keyframes += 1
        if keyframe:
            self._last_key = index
            self.stats.keyframes += 1
        self.stats.resets += sum(isinstance(p, MotionPacket) and p.reset for p in packets)
        payload = encode_frame_datagram(index, index - self._last_key, idr, packets)
        out.append(Datagram("reliable" if keyframe else "unreliable", payload))
        for d in out:
            bits = 8 * len(d.payload)
            self.stats.bits += bits
            self.stats.datagrams += 1
            self._sent.append((now, bits))
        self._expire(now)
        return out

    def receive_feedback(self, payload: bytes) -> None:
        """Handle a datagram from the server; malformed ones are counted and dropped."""
        try:
            d = parse_datagram(payload)
            if d.refresh is None:
                raise DatagramError("not a feedback datagram")
        except DatagramError as exc:
            self.stats.bad_feedback += 1
            logger.debug("sender: dropped feedback datagram: %s", exc)
            return
        self.stats.refresh_requests += 1
        if d.refresh.frame_index <= self.encoder.last_idr:
            self.stats.refresh_ignored += 1  # an IDR at or after that frame is already out
            return
        self.force_keyframe()

    def uplink_kbps(self, now: float) -> float:
        """Sent bit rate over the last ``rate_window_s`` seconds (kbit/s)."""
        self._expire(now)
        return sum(bits for _, bits in self._sent) / 1000.0 / self.rate_window_s

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0][0] <= now - self.rate_window_s:
            self._sent.popleft()
