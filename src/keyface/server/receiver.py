"""The server's (or a receiver's) end of one sender (sans-I/O): :class:`ParticipantDecoder`
reorders datagrams in a small jitter buffer, decodes them (a lost frame's motion from the copy
the next datagram carries), conceals lost or late motion by holding the last picture,
acknowledges what it decoded and asks for a refresh when its references can no longer be
trusted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from keyface.bitstream import (
    BitstreamError,
    RefreshRequestPacket,
    StreamHeader,
)
from keyface.codec.decoder import DecoderCore
from keyface.codec.limits import MAX_BASE_BACK
from keyface.motion import own_renderer
from keyface.render import Reference, Renderer
from keyface.server.datagram import (
    ACK_SPAN,
    KIND_FRAME,
    KIND_HEADER,
    Ack,
    Datagram,
    DatagramError,
    ParsedDatagram,
    encode_ack_datagram,
    encode_aux_refresh_datagram,
    encode_feedback_datagram,
    parse_datagram,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderedFrame:
    participant: str
    index: int
    image: np.ndarray
    concealed: bool
    """True when the picture is a held copy of the last one (motion lost, late or unusable)."""
    keypoints: np.ndarray | None = None
    """The decoded keypoints the picture was rendered with (held ones when concealed)."""
    reference: Reference | None = None
    """The prepared reference it was rendered from (full-frame composition holds the body
    with it; the held one when concealed)."""


@dataclass
class ReceiverStats:
    datagrams: int = 0
    bytes: int = 0
    malformed: int = 0
    late: int = 0
    duplicate: int = 0
    decoded: int = 0
    concealed: int = 0
    lost: int = 0
    """Frames whose datagram never arrived in time."""
    unrendered: int = 0
    """Frames skipped with no picture to hold (before the first keyframe)."""
    undecodable: int = 0
    lost_keyframes: int = 0
    refresh_requests: int = 0
    aux_refresh_requests: int = 0
    """Hybrid streams: random-access aux pictures asked for after aux pictures were lost."""
    fused: int = 0
    """Hybrid streams: frames shown fused with their aux picture (the others: animation only)."""
    recovered: int = 0
    """Frames decoded from the copy of their motion that the next frame's datagram carried."""
    acks: int = 0
    recoveries: list[int] = field(default_factory=list)
    """Per loss episode: frames from the first unusable frame to the next decoded one."""


class ParticipantDecoder:
    """Decode one sender's datagrams on the server. Never raises on bad input.

    Datagrams are put back in frame order; a frame missing while ``reorder_window`` later
    frames are waiting, or for ``max_delay_s``, is declared lost and concealed. A frame whose
    datagram is lost but whose motion the next datagram carries again (FLAG_REDUNDANT) is
    decoded from that copy. After each decoded frame an ACK (unreliable) tells the sender which
    frames' motion-coder states are held, so that it codes from them: a frame coded from a held
    state decodes whatever was lost before it. Refresh requests are repeated while no IDR
    comes, ``refresh_retry_s`` apart at first and twice as far each time, up to
    ``max_refresh_retry_s``.
    """

    def __init__(
        self,
        participant: str,
        *,
        reorder_window: int = 3,
        max_delay_s: float = 0.15,
        refresh_retry_s: float = 0.5,
        max_refresh_retry_s: float = 4.0,
        max_pending: int = 64,
        renderer: Renderer | None = None,
    ) -> None:
        self.participant = participant
        self.reorder_window = reorder_window
        self.max_delay_s = max_delay_s
        self.refresh_retry_s = refresh_retry_s
        self.max_refresh_retry_s = max_refresh_retry_s
        self._retry_s = refresh_retry_s
        self.max_pending = max_pending
        self.renderer = renderer
        self.header: StreamHeader | None = None
        self.decoder: DecoderCore | None = None
        self.stats = ReceiverStats()
        self.next_frame: int | None = None
        """Next frame to render; ``None`` until the first IDR."""
        self.synced = False
        """The motion coder state is in lockstep with the sender's."""
        self.need_idr = True
        """The reference buffer cannot be trusted until the next IDR keyframe."""
        self._pending: dict[int, tuple[ParsedDatagram, float]] = {}
        self._newest_key = -1
        self._highest_seen = -1
        self._last_image: np.ndarray | None = None
        self._last_keypoints: np.ndarray | None = None
        self._last_reference: Reference | None = None
        self._unusable_since: int | None = None
        self._refresh_at: float | None = None
        self._outbox: list[Datagram] = []
        self._keys = 0
        """Keyframes decoded since the newest IDR, that IDR included."""
        self._copies: set[int] = set()
        """Pending frames that came as a redundant copy in a later frame's datagram."""
        self._ack_due = False
        self._aux_refresh_at: float | None = None

    # -- public ------------------------------------------------------------------------------
    def receive(self, payload: bytes, now: float) -> list[RenderedFrame]:
        self.stats.datagrams += 1
        self.stats.bytes += len(payload)
        try:
            d = parse_datagram(payload)
        except DatagramError as exc:
            return self._malformed(str(exc))
        if d.kind == KIND_HEADER:
            assert d.header is not None
            self._header(d.header)
            return []
        if d.kind != KIND_FRAME:
            return self._malformed("feedback datagram from a sender")
        f = d.frame_index
        self._highest_seen = max(self._highest_seen, f)
        if self.next_frame is not None and f < self.next_frame:
            if d.idr and self.need_idr:
                # The sender answered, but its IDR came after this decoder had given the frame
                # up (a reliable datagram retransmitted): ask again at once, no back-off.
                self._refresh_answered()
                self._request_refresh(now)
            self.stats.late += 1
            logger.debug(
                "%s: frame %d arrived late (next is %d)", self.participant, f, self.next_frame
            )
            return []
        if f in self._pending:
            if f not in self._copies:
                self.stats.duplicate += 1
                return []
            self._copies.discard(f)  # the frame's own datagram replaces the copy
        self._pending[f] = (d, now)
        for copy in d.copies:
            if copy.frame_index not in self._pending and (
                self.next_frame is None or copy.frame_index >= self.next_frame
            ):
                self._pending[copy.frame_index] = (copy, now)
                self._copies.add(copy.frame_index)
        while len(self._pending) > self.max_pending:
            del self._pending[min(self._pending)]
        self._copies &= self._pending.keys()
        return self._drain(now)

    def tick(self, now: float) -> list[RenderedFrame]:
        """Resolve frames that waited too long; repeat a refresh request that went unanswered."""
        out = self._drain(now)
        if self.need_idr and self._refresh_at is not None:
            self._request_refresh(now)  # repeated every refresh_retry_s until an IDR comes
        return out

    def datagrams_to_send(self) -> list[Datagram]:
        """Feedback for the sender: refresh requests, and one ACK when frames were decoded
        since the last call."""
        out, self._outbox = self._outbox, []
        if self._ack_due and self.decoder is not None and self.next_frame is not None:
            self._ack_due = False
            newest = self.next_frame - 1
            held = 0
            for i in range(ACK_SPAN):
                if self.decoder.holds_state(newest - 1 - i):
                    held |= 1 << i
            if self.decoder.holds_state(newest):
                self.stats.acks += 1
                out.append(Datagram("unreliable", encode_ack_datagram(Ack(newest, held))))
        return out

    # -- internals ---------------------------------------------------------------------------
    def _malformed(self, why: str) -> list[RenderedFrame]:
        self.stats.malformed += 1
        logger.debug("%s: dropped malformed datagram: %s", self.participant, why)
        return []

    def _header(self, header: StreamHeader) -> None:
        if header == self.header:
            return
        try:
            decoder = DecoderCore(
                header, renderer=self._renderer_for(header), keep_states=MAX_BASE_BACK
            )
        except BitstreamError as exc:  # e.g. another motion model, or a FOMM model not here
            logger.info("%s: cannot decode this stream: %s", self.participant, exc)
            self._malformed(f"unusable stream header: {exc}")
            return
        if header.frame_count != 0 or header.has_background:
            self._malformed("stream header is not a live one")
            return
        self.header, self.decoder = header, decoder
        self.need_idr = True

    def _renderer_for(self, header: StreamHeader) -> Renderer | None:
        """:attr:`renderer`, unless the stream's motion brings its own renderer (``fomm``:
        the model's generator): then ``None``, and the decoder makes that one."""
        own = own_renderer(header.motion_name)
        if own is None or (self.renderer is not None and self.renderer.name == own):
            return self.renderer
        return None

    def _drain(self, now: float) -> list[RenderedFrame]:
        out: list[RenderedFrame] = []
        while self._pending:
            if self.next_frame is None:  # start at the first IDR
                idrs = [f for f, (d, _) in self._pending.items() if d.idr]
                if not idrs:
                    if self._overdue(min(self._pending), now):
                        self._request_refresh(now)
                    break
                start = min(idrs)
                for f in [f for f in self._pending if f < start]:
                    del self._pending[f]
                    self.stats.unrendered += 1
                self.next_frame = start
            f = self.next_frame
            if f in self._pending:
                d, _ = self._pending.pop(f)
                copy = f in self._copies
                self._copies.discard(f)
                frames = self._frame(d, now)
                if copy and frames and not frames[0].concealed:
                    self.stats.recovered += 1
                out.extend(frames)
                self.next_frame = f + 1
                continue
            first = min(self._pending)
            if not self._overdue(first, now):
                break
            # Frames next_frame .. first - 1 are lost.
            self.synced = False
            self._mark_unusable(f)
            gap = first - f
            self.stats.lost += gap
            if gap > self.max_pending:  # a jump: do not hold thousands of frames
                self.stats.unrendered += gap
            else:
                for g in range(f, first):
                    out.extend(self._conceal(g))
            self.next_frame = first
        return out

    def _overdue(self, first: int, now: float) -> bool:
        """Whether the frames missing before pending frame ``first`` should be given up."""
        newest = max(self._pending)
        base = first if self.next_frame is None else self.next_frame
        waited = now - self._pending[first][1]
        return newest - base >= self.reorder_window or waited >= self.max_delay_s

    def _frame(self, d: ParsedDatagram, now: float) -> list[RenderedFrame]:
        f = d.frame_index
        assert d.motion is not None
        if self.decoder is None:
            self._need_idr(f, now, "no stream header yet")
            return self._conceal(f)
        if d.key_index > self._newest_key and d.keyframe is None:
            self.stats.lost_keyframes += 1
            self._need_idr(f, now, f"keyframe {d.key_index} never arrived")
            self._newest_key = d.key_index
        if d.idr:
            self.decoder.resync(f, clear_buffer=True)
            self.synced = True
            self.need_idr = False
            self._refresh_answered()
        elif self.need_idr:
            return self._conceal(f)
        elif d.keys is not None and d.keys != self._keys + (d.keyframe is not None):
            # A keyframe this decoder never decoded is in the sender's buffer (its datagram
            # and every frame that would have named it were lost): references disagree.
            self.stats.lost_keyframes += 1
            self._need_idr(
                f,
                now,
                f"sender coded {d.keys} keyframes since its IDR, not "
                f"{self._keys + (d.keyframe is not None)}",
            )
            return self._conceal(f)
        elif d.base is not None:  # continues from the state after an earlier frame
            if not self.decoder.holds_state(d.base):
                self.synced = False
                return self._conceal(f)
            self.decoder.continue_from(d.base, f)
            self.synced = True
        elif not self.synced:
            if not d.motion.reset:
                return self._conceal(f)
            self.decoder.resync(f, clear_buffer=False)
            self.synced = True
        try:
            if d.keyframe is not None:
                self.decoder.receive(d.keyframe)
            if d.aux is not None:
                self.decoder.receive(d.aux)
                self._check_aux(f, now)
            frames = self.decoder.receive(d.motion)
        except BitstreamError as exc:
            self.stats.undecodable += 1
            self.synced = False
            self._need_idr(f, now, f"undecodable frame {f}: {exc}")
            return self._conceal(f)
        if d.keyframe is not None:
            self._newest_key = max(self._newest_key, f)
            self._keys = 1 if d.idr else self._keys + 1
        self._ack_due = True
        out = []
        for frame in frames:
            self._last_image, self._last_keypoints = frame.image, frame.keypoints
            self._last_reference = frame.reference
            self.stats.decoded += 1
            self.stats.fused += frame.aux is not None and not frame.keyframe
            if self._unusable_since is not None:
                self.stats.recoveries.append(frame.index - self._unusable_since)
                self._unusable_since = None
            out.append(
                RenderedFrame(
                    self.participant,
                    frame.index,
                    frame.image,
                    False,
                    frame.keypoints,
                    frame.reference,
                )
            )
        return out

    def _conceal(self, index: int) -> list[RenderedFrame]:
        self._mark_unusable(index)
        if self._last_image is None:
            self.stats.unrendered += 1
            return []
        self.stats.concealed += 1
        # Holding the last keypoints renders the last picture again: reuse it.
        return [
            RenderedFrame(
                self.participant,
                index,
                self._last_image,
                True,
                self._last_keypoints,
                self._last_reference,
            )
        ]

    def _mark_unusable(self, index: int) -> None:
        if self._unusable_since is None:
            self._unusable_since = index

    def _need_idr(self, index: int, now: float, why: str) -> None:
        logger.info("%s: %s; asking for a refresh", self.participant, why)
        self.need_idr = True
        self.synced = False
        self._mark_unusable(index)
        self._request_refresh(now)

    def _check_aux(self, index: int, now: float) -> None:
        """Ask for a random-access aux picture while aux pictures cannot be decoded (one was
        lost): frames are shown as animation only meanwhile. Repeated ``refresh_retry_s``
        apart while none comes."""
        assert self.decoder is not None
        if self.decoder.aux_synced:
            self._aux_refresh_at = None
            return
        if self._aux_refresh_at is not None and now - self._aux_refresh_at < self.refresh_retry_s:
            return
        self._aux_refresh_at = now
        self.stats.aux_refresh_requests += 1
        self._outbox.append(Datagram("reliable", encode_aux_refresh_datagram(index + 1)))

    def _refresh_answered(self) -> None:
        """The sender sent an IDR: the next request (if any) goes at once, without back-off."""
        self._refresh_at = None
        self._retry_s = self.refresh_retry_s

    def _request_refresh(self, now: float) -> None:
        if self._refresh_at is not None:
            if now - self._refresh_at < self._retry_s:
                return
            self._retry_s = min(2 * self._retry_s, self.max_refresh_retry_s)  # back off
        self._refresh_at = now
        self.stats.refresh_requests += 1
        request = RefreshRequestPacket(frame_index=self._highest_seen + 1)
        self._outbox.append(Datagram("reliable", encode_feedback_datagram(request)))
