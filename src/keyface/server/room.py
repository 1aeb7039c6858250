"""Rooms and limits (sans-I/O): :class:`RoomSession` holds the participants of one room, the
participant limit, per-client packet size and rate limits (token buckets), leave and idle
timeout."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

from keyface.render import Renderer
from keyface.server.datagram import Channel, Datagram
from keyface.server.receiver import ParticipantDecoder, RenderedFrame
from keyface.server.tokens import Role, TokenClaims, verify_token

logger = logging.getLogger(__name__)


class RoomError(Exception):
    """A join that the room refuses; ``http_status`` says how to answer."""

    http_status = 409


class RoomFull(RoomError):
    http_status = 403


class AlreadyJoined(RoomError):
    http_status = 409


@dataclass(frozen=True)
class RoomLimits:
    max_participants: int = 8
    packet_rate: float = 200.0
    """Datagrams per second per participant (sustained)."""
    packet_burst: float = 400.0
    byte_rate: float = 250_000.0
    """Bytes per second per participant (sustained; 2 Mbit/s)."""
    byte_burst: float = 1_000_000.0
    max_unreliable_size: int = 1200
    max_reliable_size: int = 256 * 1024
    idle_timeout_s: float = 15.0
    first_frame_grace_s: float = 60.0
    """A participant that has sent nothing yet is removed after this long instead of
    ``idle_timeout_s``: a sender whose face tracker starts slowly on a loaded machine (issue 14:
    dropped by the 15 s timeout before its first frame) still gets in."""
    cpu_share: float = 0.5
    """Worker CPU seconds per second one sender may use (sustained): a sender at 256x256 uses
    about 0.15 (docs/server.md, load); one above it has its media shed (``cpu_limited``) so it
    cannot slow the other rooms sharing the worker pool (issue 14)."""
    cpu_burst_s: float = 3.0
    """Worker CPU seconds a sender may use at once (keyframes, start-up)."""
    cpu_low_priority_below_s: float = 2.5
    """A sender whose CPU bucket holds less than this many seconds (with the defaults: it has
    used 0.5 s more than its share lately) is served at low priority (``CpuStanding``), on
    what the other senders leave of the CPU. A 256x256 sender never gets there (about 0.15 s
    a second, a keyframe ~0.1 s); an abusive one does after its first 1024x1024 keyframe
    (1.4 s) and from then on cannot take a core from the other rooms (docs/server.md, "Load":
    cross-room isolation)."""


CpuStanding = Literal["normal", "low", "over"]
"""Where a sender stands against its worker CPU share: ``normal`` (run its jobs as usual),
``low`` (run them at low priority: it has been using more than its share) or ``over`` (in
debt: drop its media until it has paid back)."""


def log_field(value: object, limit: int = 160) -> str:
    """``value`` as one log-safe line: control and non-ASCII characters escaped (a newline in
    a room name cannot forge a log line), cut to ``limit`` characters."""
    text = str(value)
    safe = text[:limit].encode("unicode_escape").decode("ascii")
    return safe + ("..." if len(text) > limit else "")


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; the clock is passed in."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self._t = now

    def take(self, amount: float, now: float) -> bool:
        if now > self._t:
            self.tokens = min(self.burst, self.tokens + (now - self._t) * self.rate)
            self._t = now
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True

    def charge(self, amount: float, now: float) -> None:
        """Take ``amount`` after the fact (work measured once done); may go below zero, so
        the bucket stays empty until the debt is paid back at ``rate``."""
        self.take(0.0, now)
        self.tokens -= amount

    def available(self, now: float) -> float:
        """The tokens saved at ``now`` (negative while in debt)."""
        self.take(0.0, now)
        return self.tokens


@dataclass
class Participant:
    name: str
    role: Role
    joined_at: float
    last_seen: float
    packets: TokenBucket
    bytes: TokenBucket
    decoder: ParticipantDecoder | None
    cpu: TokenBucket | None = None
    """Worker CPU seconds (``RoomLimits.cpu_share``, ``cpu_burst_s``); charged by the
    transport with :meth:`RoomSession.charge`."""
    heard: bool = False
    """Whether any datagram came from it (before that, ``first_frame_grace_s`` applies)."""
    rate_limited: int = 0
    cpu_limited: int = 0
    """Datagrams dropped because the participant had used its worker CPU share."""
    oversize: int = 0
    rejected: int = 0
    """Datagrams from a participant that may not send them (a receiver sending media)."""


class RoomSession:
    """The participants of one room on the server. Never raises on datagrams."""

    def __init__(
        self,
        room: str,
        limits: RoomLimits | None = None,
        *,
        reorder_window: int = 3,
        max_delay_s: float = 0.15,
        refresh_retry_s: float = 0.5,
        renderer: Renderer | None = None,
        decode: bool = True,
    ) -> None:
        self.room = room
        self.decode = decode
        """Whether senders get a :class:`ParticipantDecoder` (``False``: relay mode, where the
        room only forwards, ``keyface.server.relay``)."""
        self.limits = limits or RoomLimits()
        self.participants: dict[str, Participant] = {}
        self.unknown_datagrams = 0
        self.timed_out: list[str] = []
        self._decoder_options = {
            "reorder_window": reorder_window,
            "max_delay_s": max_delay_s,
            "refresh_retry_s": refresh_retry_s,
            "renderer": renderer,
        }

    def join(self, participant: str, role: Role, now: float) -> Participant:
        if participant in self.participants:
            raise AlreadyJoined(f"{participant!r} is already in room {self.room!r}")
        if len(self.participants) >= self.limits.max_participants:
            raise RoomFull(f"room {self.room!r} is full ({self.limits.max_participants})")
        lim = self.limits
        p = Participant(
            name=participant,
            role=role,
            joined_at=now,
            last_seen=now,
            packets=TokenBucket(lim.packet_rate, lim.packet_burst, now),
            bytes=TokenBucket(lim.byte_rate, lim.byte_burst, now),
            cpu=TokenBucket(lim.cpu_share, lim.cpu_burst_s, now),
            decoder=ParticipantDecoder(participant, **self._decoder_options)  # type: ignore[arg-type]
            if role == "send" and self.decode
            else None,
        )
        self.participants[participant] = p
        logger.info("room %s: %s joined as %s", log_field(self.room), log_field(participant), role)
        return p

    def join_with_token(self, secret: bytes, token: str, now: float) -> TokenClaims:
        """Verify ``token`` for this room (raises a ``TokenError``) and join its bearer."""
        claims = verify_token(secret, token, self.room, now)
        self.join(claims.participant, claims.role, now)
        return claims

    def leave(self, participant: str) -> bool:
        p = self.participants.pop(participant, None)
        if p is not None:
            logger.info("room %s: %s left", log_field(self.room), log_field(participant))
        return p is not None

    def admit(
        self, participant: str, channel: Channel, payload: bytes, now: float
    ) -> ParticipantDecoder | None:
        """The checks of :meth:`receive_datagram` without the decoding: size and rate limits,
        unknown participants, receivers sending media. Returns the decoder that should get
        ``payload``, or ``None`` when the datagram is dropped (and counted).

        A transport that decodes each sender on its own worker uses this on its event loop
        and calls ``decoder.receive(payload, now)`` on the worker."""
        p = self.check(participant, channel, payload, now)
        if p is None:
            return None
        if p.decoder is None:
            p.rejected += 1
            return None
        if self.cpu_standing(participant, now) == "over":
            p.cpu_limited += 1
            return None
        return p.decoder

    def check(
        self, participant: str, channel: Channel, payload: bytes, now: float
    ) -> Participant | None:
        """The limits every message of a participant passes, whatever its role or the room's
        mode: the participant must be known, the message within the channel's size limit and
        the participant's two token buckets (messages, bytes). Returns the participant, or
        ``None`` when the message is dropped (and counted). Relay mode checks senders' and
        receivers' messages with it (``keyface.server.relay``)."""
        p = self.participants.get(participant)
        if p is None:
            self.unknown_datagrams += 1
            return None
        p.last_seen = now
        p.heard = True
        size = len(payload) if isinstance(payload, (bytes, bytearray)) else math.inf
        limit = (
            self.limits.max_reliable_size
            if channel == "reliable"
            else self.limits.max_unreliable_size
        )
        if size > limit:
            p.oversize += 1
            logger.debug(
                "room %s: %s sent %s bytes on %s",
                log_field(self.room),
                log_field(participant),
                size,
                channel,
            )
            return None
        if not p.packets.take(1, now) or not p.bytes.take(size, now):
            p.rate_limited += 1
            return None
        return p

    def cpu_standing(self, participant: str, now: float) -> CpuStanding:
        """How ``participant``'s next job should run, from its CPU bucket (``normal`` for a
        participant without one or unknown). The transport asks again when a queued job
        starts: a datagram admitted while the sender was within its share may run only after
        it has spent it (issue 14: a queue of 60 admitted 1024x1024 keyframes took a core for
        84 s)."""
        p = self.participants.get(participant)
        if p is None or p.cpu is None:
            return "normal"
        tokens = p.cpu.available(now)
        if tokens < 0:
            return "over"
        return "low" if tokens < self.limits.cpu_low_priority_below_s else "normal"

    def charge(self, participant: str, cpu_seconds: float, now: float) -> None:
        """The transport measured ``cpu_seconds`` of worker time spent on ``participant``'s
        datagrams; while the participant is over its share, :meth:`admit` drops its media."""
        p = self.participants.get(participant)
        if p is not None and p.cpu is not None:
            p.cpu.charge(cpu_seconds, now)

    def receive_datagram(
        self, participant: str, channel: Channel, payload: bytes, now: float
    ) -> list[RenderedFrame]:
        decoder = self.admit(participant, channel, payload, now)
        return [] if decoder is None else decoder.receive(bytes(payload), now)

    def expire(self, now: float) -> list[str]:
        """Remove the participants silent for ``idle_timeout_s``; returns their names (also
        appended to ``timed_out``)."""
        lim = self.limits
        gone = [
            name
            for name, p in self.participants.items()
            if now - p.last_seen
            > (lim.idle_timeout_s if p.heard else max(lim.idle_timeout_s, lim.first_frame_grace_s))
        ]
        for name in gone:
            logger.info("room %s: %s timed out", log_field(self.room), log_field(name))
            del self.participants[name]
            self.timed_out.append(name)
        return gone

    def tick(self, now: float) -> list[RenderedFrame]:
        """Time passes: late frames are resolved, idle participants removed."""
        self.expire(now)
        out: list[RenderedFrame] = []
        for p in list(self.participants.values()):
            if p.decoder is not None:
                out.extend(p.decoder.tick(now))
        return out

    def datagrams_to_send(self) -> list[tuple[str, Datagram]]:
        """Feedback for senders, as ``(participant, datagram)``."""
        out: list[tuple[str, Datagram]] = []
        for name, p in self.participants.items():
            if p.decoder is not None:
                out.extend((name, d) for d in p.decoder.datagrams_to_send())
        return out
