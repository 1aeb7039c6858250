"""Relay mode (sans-I/O): a room forwards each sender's datagrams to its receivers without
decoding them; the receivers decode keyface themselves (``keyface serve --relay``,
docs/server.md "Relay mode").

:class:`RelayRoom` is one room's forwarding state. The transport calls it with the bytes a
participant sent and ``now``; it answers with :class:`Outgoing` messages (to receivers: the
datagrams in a small envelope naming the stream; to senders: refresh requests) and never
reads a clock, opens a socket or builds a decoder. The limits (sizes, rates, tokens,
participants) are the :class:`~keyface.server.room.RoomSession`'s, checked before.

What a receiver needs to start or to recover is bought with the sender's existing refresh
mechanism, gated per sender (:class:`RefreshGate`): at most one REFRESH_REQUEST (and one
AUX_REFRESH) goes to a sender per ``refresh_interval_s``, however many receivers ask; a
request made while the gate is closed is sent when it opens unless an IDR came meanwhile.
A late joiner gets the newest stream header, background and avatar photo at once, and the
newest IDR datagram as well when no other keyframe has been forwarded since it (then every
reference the stream's frames name is in the receiver's buffer, and its motion decodes from
the next motion reset without asking the sender for anything); otherwise the room asks the
sender for an IDR through the gate.

Envelope (server <-> receiver, binary data channel messages)::

    u8      kind      1 DATAGRAM, 2 BACKGROUND, 3 AVATAR, 4 BATCH
    varint  stream    the sender's stream id in this room (announced, below); 0 for BATCH
    bytes   payload   DATAGRAM: a conference datagram (docs/bitstream.md 12) byte for byte;
                      BACKGROUND: the sender's BACKGROUND packet record; AVATAR: its photo;
                      BATCH: (varint length, envelope of kind 1-3) repeated

and text messages (server -> receiver, reliable channel), JSON objects:
``{"type": "stream", "stream": ID, "participant": NAME}`` when a sender's stream becomes
available (at the join for the senders present) and ``{"type": "end", "stream": ID}`` when
it leaves. A receiver sends back DATAGRAM envelopes holding a FEEDBACK (REFRESH_REQUEST) or
AUX_REFRESH datagram for that stream; anything else from it is counted and dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from keyface.bitstream import (
    BitstreamError,
    RefreshRequestPacket,
    StreamHeader,
    decode_varint,
    encode_varint,
)
from keyface.server.datagram import (
    DATAGRAM_VERSION,
    FLAG_IDR,
    KIND_ACK,
    KIND_AUX_REFRESH,
    KIND_FEEDBACK,
    KIND_FRAME,
    KIND_HEADER,
    Channel,
    DatagramError,
    encode_aux_refresh_datagram,
    encode_feedback_datagram,
    parse_datagram,
)
from keyface.server.room import log_field

logger = logging.getLogger(__name__)

MSG_DATAGRAM = 1
"""Envelope kind: a conference datagram of the stream, byte for byte."""
MSG_BACKGROUND = 2
"""Envelope kind: the stream's BACKGROUND packet record (``keyface send --full-frame``)."""
MSG_AVATAR = 3
"""Envelope kind: the stream's avatar photo, JPEG or PNG bytes (``keyface send --avatar``)."""
MSG_BATCH = 4
"""Envelope kind: several envelopes in one message (stream id 0; payload: ``varint length,
envelope`` repeated; no batch inside a batch). The server batches what it sends a receiver
on ``keyface-relay-motion`` over ``ServerConfig.relay_batch_s``: one SCTP message instead of
one per sender (each costs the server and the receiver a packet, a DTLS record and an SCTP
acknowledgement)."""
MSG_KINDS = (MSG_DATAGRAM, MSG_BACKGROUND, MSG_AVATAR, MSG_BATCH)
MAX_BATCH_BYTES = 1100
"""Largest batch: one SCTP packet (aiortc's user data limit is 1200 bytes), so a lost batch
costs one packet's worth, as unbatched datagrams would."""

DEFAULT_REFRESH_INTERVAL_S = 1.0
"""Fewest seconds between two refresh requests the relay sends one sender. A 256x256 HEVC
IDR is 1-3 kB, so a room full of receivers asking at once costs a sender at most ~24 kbit/s
more (an IDR a second) instead of an IDR per request."""

_KIND_MASK = 0x07


class RelayError(DatagramError):
    """An envelope that is not well formed."""


@dataclass(frozen=True)
class RelayMessage:
    """One envelope: ``kind`` (``MSG_*``), the ``stream`` id and its ``payload``."""

    kind: int
    stream: int
    payload: bytes

    def __bytes__(self) -> bytes:
        return encode_relay_message(self.kind, self.stream, self.payload)


_SMALL = [bytes([n]) for n in range(128)]


def _varint(n: int) -> bytes:
    """``encode_varint`` with a fast path for the one-byte values (stream ids, batch item
    lengths): the relay writes two per datagram and receiver (profiled)."""
    return _SMALL[n] if 0 <= n < 128 else encode_varint(n)


def encode_relay_message(kind: int, stream: int, payload: bytes) -> bytes:
    if kind not in MSG_KINDS:
        raise ValueError(f"unknown relay message kind {kind}")
    return bytes([kind]) + _varint(stream) + bytes(payload)


def parse_relay_message(data: bytes) -> RelayMessage:
    """Parse one envelope; raises :class:`RelayError` (a ``DatagramError``) when malformed."""
    if not isinstance(data, (bytes, bytearray)) or len(data) < 3:
        raise RelayError("relay message is not bytes or shorter than 3 bytes")
    data = bytes(data)
    if data[0] not in MSG_KINDS:
        raise RelayError(f"unknown relay message kind {data[0]}")
    try:
        stream, pos = decode_varint(data, 1)
    except BitstreamError as exc:
        raise RelayError(f"relay message stream id: {exc}") from None
    if pos >= len(data):
        raise RelayError("relay message without a payload")
    return RelayMessage(data[0], stream, data[pos:])


def encode_batch(envelopes: list[bytes]) -> bytes:
    """One ``MSG_BATCH`` message holding ``envelopes`` (each a kind 1-3 envelope)."""
    body = b"".join(_varint(len(e)) + e for e in envelopes)
    return encode_relay_message(MSG_BATCH, 0, body)


def relay_messages(data: bytes) -> list[RelayMessage]:
    """The envelopes of one data channel message: itself, or a batch's contents. Raises
    :class:`RelayError` when malformed (a batch inside a batch included)."""
    m = parse_relay_message(data)
    if m.kind != MSG_BATCH:
        return [m]
    out, pos, body = [], 0, m.payload
    try:
        while pos < len(body):
            size, pos = decode_varint(body, pos)
            if size > len(body) - pos:
                raise RelayError("batch item runs past the end")
            inner = parse_relay_message(body[pos : pos + size])
            if inner.kind == MSG_BATCH:
                raise RelayError("a batch inside a batch")
            out.append(inner)
            pos += size
    except BitstreamError as exc:
        raise RelayError(f"batch: {exc}") from None
    return out


class Batcher:
    """Envelopes for one receiver's channel, gathered until :meth:`flush` (the transport's
    timer) or until the next one would make the batch larger than ``max_bytes``."""

    def __init__(self, max_bytes: int = MAX_BATCH_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: list[bytes] = []
        self._size = 0

    def add(self, envelope: bytes) -> list[bytes]:
        """Queue ``envelope``; returns the messages to send now (a full batch, or an
        envelope too large to batch)."""
        item = len(envelope) + (1 if len(envelope) < 128 else len(encode_varint(len(envelope))))
        out = []
        if self._items and self._size + item > self.max_bytes - 2:
            out = self.flush()
        if item > self.max_bytes - 2:
            return [*out, envelope]
        self._items.append(envelope)
        self._size += item
        return out

    def flush(self) -> list[bytes]:
        items, self._items, self._size = self._items, [], 0
        if not items:
            return []
        return [items[0] if len(items) == 1 else encode_batch(items)]

    def __len__(self) -> int:
        return len(self._items)


def announce(stream: int, participant: str) -> str:
    """The text message that names a stream."""
    return json.dumps({"type": "stream", "stream": stream, "participant": participant})


def announce_end(stream: int) -> str:
    return json.dumps({"type": "end", "stream": stream})


@dataclass(frozen=True)
class Outgoing:
    """A message for the transport: to ``participant`` on its ``channel`` (a receiver's
    ``keyface-relay`` / ``keyface-relay-motion``, a sender's ``keyface-reliable``)."""

    participant: str
    channel: Channel
    payload: bytes | str


class RefreshGate:
    """At most one request per ``interval_s``; a request asked while closed waits for the
    gate to open (:meth:`due`) and is dropped when the answer came meanwhile
    (:meth:`answered`). The clock is passed in."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._sent_at: float | None = None
        self.pending = False

    def ask(self, now: float) -> bool:
        """A receiver asks; True: send the request now."""
        if self._sent_at is None or now - self._sent_at >= self.interval_s:
            self._sent_at, self.pending = now, False
            return True
        self.pending = True
        return False

    def answered(self) -> None:
        """What was asked for has been forwarded to every receiver."""
        self.pending = False

    def due(self, now: float) -> bool:
        """True when a waiting request should be sent now."""
        if self.pending and self._sent_at is not None and now - self._sent_at >= self.interval_s:
            self._sent_at, self.pending = now, False
            return True
        return False


@dataclass
class RelayStats:
    """One stream's counters."""

    datagrams: int = 0
    """Datagrams (and photos) taken from the sender and forwarded."""
    bytes: int = 0
    malformed: int = 0
    """Messages from the sender not forwarded: not a HEADER or FRAME datagram, or a header
    that is not a live one."""
    keyframes: int = 0
    idrs: int = 0
    copies: int = 0
    """Messages handed to the transport for receivers (each datagram once per receiver)."""
    copy_bytes: int = 0
    late_joins_served: int = 0
    """Receivers that joined after the stream's IDR and got it from the relay's copy."""
    refresh_asked: int = 0
    """Refreshes receivers asked for (their REFRESH_REQUESTs and late joins needing one)."""
    refresh_sent: int = 0
    """REFRESH_REQUESTs sent to the sender (the gate's output)."""
    aux_refresh_asked: int = 0
    aux_refresh_sent: int = 0


@dataclass
class RelayStream:
    """One sender's stream in a relay room, with what a late joiner needs."""

    participant: str
    id: int
    refresh: RefreshGate
    aux_refresh: RefreshGate
    header: bytes | None = None
    """The newest HEADER datagram, as an envelope."""
    header_value: StreamHeader | None = None
    idr: bytes | None = None
    """The newest IDR FRAME datagram, as an envelope."""
    keyframes_since_idr: int = 0
    background: bytes | None = None
    avatar: bytes | None = None
    highest: int = -1
    """Highest frame index forwarded."""
    stats: RelayStats = field(default_factory=RelayStats)

    @property
    def random_access(self) -> list[bytes]:
        """What a receiver joining now needs before the live datagrams, or ``[]`` when that
        is not enough (no IDR yet, or keyframes after it that only the live stream had)."""
        if self.header is None or self.idr is None or self.keyframes_since_idr:
            return []
        return [self.header, self.idr]


class RelayRoom:
    """One room's forwarding state: the senders' streams and the receivers subscribed to all
    of them. Never raises on what participants send; the caller applies the room's limits
    first (``RoomSession.check``)."""

    def __init__(self, refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S) -> None:
        self.refresh_interval_s = refresh_interval_s
        self.streams: dict[str, RelayStream] = {}
        self.receivers: dict[str, None] = {}
        """Subscribed receivers, in join order."""
        self.by_id: dict[int, RelayStream] = {}
        self._next_id = 1
        self.receiver_malformed: dict[str, int] = {}
        self.acks_ignored = 0

    # -- membership ------------------------------------------------------------------------
    def add_sender(self, participant: str) -> list[Outgoing]:
        """A sender joined: a new stream id, announced to the receivers."""
        self.remove_sender(participant)
        stream = RelayStream(
            participant,
            self._next_id,
            RefreshGate(self.refresh_interval_s),
            RefreshGate(self.refresh_interval_s),
        )
        self._next_id += 1
        self.streams[participant] = stream
        self.by_id[stream.id] = stream
        text = announce(stream.id, participant)
        return [Outgoing(r, "reliable", text) for r in self.receivers]

    def remove_sender(self, participant: str) -> list[Outgoing]:
        stream = self.streams.pop(participant, None)
        if stream is None:
            return []
        del self.by_id[stream.id]
        text = announce_end(stream.id)
        return [Outgoing(r, "reliable", text) for r in self.receivers]

    def add_receiver(self, participant: str, now: float) -> list[Outgoing]:
        """A receiver's channel is open: announce every stream and hand over what it needs
        to start; ask a sender for an IDR (gated) where the relay's copy is not enough."""
        self.receivers[participant] = None
        self.receiver_malformed.setdefault(participant, 0)
        out: list[Outgoing] = []
        for stream in self.streams.values():
            out.append(Outgoing(participant, "reliable", announce(stream.id, stream.participant)))
            cached = [m for m in (stream.background, stream.avatar) if m is not None]
            start = stream.random_access
            if start:
                stream.stats.late_joins_served += 1
            elif stream.header is not None:
                start = [stream.header]
            mine = [Outgoing(participant, "reliable", m) for m in cached + start]
            self._count(stream, mine)
            out += mine
            if not stream.random_access and stream.highest >= 0:
                out += self._ask_refresh(stream, now)  # frames went by: the next IDR will do
        return out

    def remove_receiver(self, participant: str) -> None:
        self.receivers.pop(participant, None)
        self.receiver_malformed.pop(participant, None)

    # -- messages --------------------------------------------------------------------------
    def from_sender(
        self, participant: str, channel: Channel, payload: bytes, now: float
    ) -> list[Outgoing]:
        """A datagram from a sender's ``keyface-reliable`` / ``keyface-motion`` channel:
        forwarded on the same kind of channel to every receiver, or dropped (counted) if it
        is not a HEADER or FRAME datagram. Only the tag byte and the frame index are read
        (and a HEADER parsed): the packets are forwarded as they are."""
        stream = self.streams.get(participant)
        if stream is None:
            return []
        try:
            kind, idr, index = _peek(payload)
        except DatagramError as exc:
            return self._sender_malformed(stream, str(exc))
        if kind == KIND_HEADER:
            try:
                header, _ = StreamHeader.parse(payload[1:])
            except BitstreamError as exc:
                return self._sender_malformed(stream, f"stream header: {exc}")
            if header.frame_count != 0 or header.has_background:
                return self._sender_malformed(stream, "stream header is not a live one")
            envelope = encode_relay_message(MSG_DATAGRAM, stream.id, payload)
            if header != stream.header_value:  # a new stream: older IDRs no longer apply
                stream.header_value, stream.idr, stream.keyframes_since_idr = header, None, 0
            stream.header = envelope
        else:
            envelope = encode_relay_message(MSG_DATAGRAM, stream.id, payload)
            stream.highest = max(stream.highest, index)
            if idr:
                stream.idr, stream.keyframes_since_idr = envelope, 0
                stream.stats.idrs += 1
                stream.stats.keyframes += 1
                stream.refresh.answered()
            elif channel == "reliable":  # keyframes travel reliably (conservative: any frame)
                stream.keyframes_since_idr += 1
                stream.stats.keyframes += 1
        return self._fan_out(stream, channel, envelope, len(payload))

    def from_sender_photo(self, participant: str, kind: int, payload: bytes) -> list[Outgoing]:
        """A BACKGROUND packet record or an avatar photo (``MSG_BACKGROUND`` /
        ``MSG_AVATAR``): kept for late joiners and forwarded reliably."""
        stream = self.streams.get(participant)
        if stream is None or kind not in (MSG_BACKGROUND, MSG_AVATAR):
            return []
        envelope = encode_relay_message(kind, stream.id, payload)
        if kind == MSG_BACKGROUND:
            stream.background = envelope
        else:
            stream.avatar = envelope
        return self._fan_out(stream, "reliable", envelope, len(payload))

    def from_receiver(self, participant: str, payload: bytes, now: float) -> list[Outgoing]:
        """Feedback from a receiver: a refresh or aux refresh request for one stream, passed
        through that stream's gate; acknowledgements are ignored (a sender codes for every
        receiver of the room, so it cannot continue from what one of them holds)."""
        if participant not in self.receivers:
            return []
        try:
            message = parse_relay_message(payload)
            if message.kind != MSG_DATAGRAM:
                raise RelayError("receivers send DATAGRAM envelopes only")
            d = parse_datagram(message.payload)
        except DatagramError as exc:
            return self._receiver_malformed(participant, str(exc))
        stream = self.by_id.get(message.stream)
        if stream is None:
            return self._receiver_malformed(participant, f"no stream {message.stream}")
        if d.kind == KIND_FEEDBACK:
            return self._ask_refresh(stream, now)
        if d.kind == KIND_AUX_REFRESH:
            stream.stats.aux_refresh_asked += 1
            if stream.aux_refresh.ask(now):
                return [self._aux_request(stream)]
            return []
        if d.kind == KIND_ACK:
            self.acks_ignored += 1
            return []
        return self._receiver_malformed(participant, "receivers send feedback only")

    def tick(self, now: float) -> list[Outgoing]:
        """Send the requests that waited for their gate."""
        out: list[Outgoing] = []
        for stream in self.streams.values():
            if stream.refresh.due(now):
                out.append(self._refresh_request(stream))
            if stream.aux_refresh.due(now):
                out.append(self._aux_request(stream))
        return out

    # -- internals ---------------------------------------------------------------------------
    def _fan_out(
        self, stream: RelayStream, channel: Channel, envelope: bytes, size: int
    ) -> list[Outgoing]:
        stream.stats.datagrams += 1
        stream.stats.bytes += size
        out = [Outgoing(r, channel, envelope) for r in self.receivers]
        stream.stats.copies += len(out)
        stream.stats.copy_bytes += len(out) * len(envelope)
        return out

    @staticmethod
    def _count(stream: RelayStream, out: list[Outgoing]) -> None:
        for o in out:
            if isinstance(o.payload, bytes):
                stream.stats.copies += 1
                stream.stats.copy_bytes += len(o.payload)

    def _ask_refresh(self, stream: RelayStream, now: float) -> list[Outgoing]:
        stream.stats.refresh_asked += 1
        return [self._refresh_request(stream)] if stream.refresh.ask(now) else []

    def _refresh_request(self, stream: RelayStream) -> Outgoing:
        stream.stats.refresh_sent += 1
        logger.info("relay: asking %s for an IDR", log_field(stream.participant))
        request = RefreshRequestPacket(frame_index=stream.highest + 1)
        return Outgoing(stream.participant, "reliable", encode_feedback_datagram(request))

    def _aux_request(self, stream: RelayStream) -> Outgoing:
        stream.stats.aux_refresh_sent += 1
        payload = encode_aux_refresh_datagram(stream.highest + 1)
        return Outgoing(stream.participant, "reliable", payload)

    def _sender_malformed(self, stream: RelayStream, why: str) -> list[Outgoing]:
        stream.stats.malformed += 1
        logger.debug("relay: %s: dropped: %s", log_field(stream.participant), log_field(why))
        return []

    def _receiver_malformed(self, participant: str, why: str) -> list[Outgoing]:
        self.receiver_malformed[participant] = self.receiver_malformed.get(participant, 0) + 1
        logger.debug("relay: receiver %s: dropped: %s", log_field(participant), log_field(why))
        return []


def _peek(payload: bytes) -> tuple[int, bool, int]:
    """(kind, IDR flag, frame index) of a datagram a sender may send (HEADER: index -1);
    raises ``DatagramError`` for anything else. Reads the tag byte and two varints."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) < 2:
        raise DatagramError("datagram is not bytes or shorter than 2 bytes")
    tag = payload[0]
    if tag >> 6 != DATAGRAM_VERSION:
        raise DatagramError(f"unknown datagram version (tag 0x{tag:02x})")
    kind = tag & _KIND_MASK
    if kind == KIND_HEADER:
        if tag & 0x38:
            raise DatagramError("frame flags on a header")
        return kind, False, -1
    if kind != KIND_FRAME:
        raise DatagramError(f"a sender may send HEADER and FRAME datagrams, not kind {kind}")
    try:
        index, pos = decode_varint(payload, 1)
        key_back, _ = decode_varint(payload, pos)
    except BitstreamError as exc:
        raise DatagramError(f"frame datagram: {exc}") from None
    if key_back > index:
        raise DatagramError("inconsistent keyframe distance")
    return kind, bool(tag & FLAG_IDR), index
