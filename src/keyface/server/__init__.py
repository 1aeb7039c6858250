"""Conference server building blocks (sans-I/O): room tokens and sender / room sessions.

The transport (aiortc data channels, HTTP signalling) is a thin layer on top, not built yet:
see ``docs/server.md``.
"""

from keyface.server.session import (
    AlreadyJoined,
    Datagram,
    DatagramError,
    LiveEncoder,
    Participant,
    ParticipantDecoder,
    ReceiverStats,
    RenderedFrame,
    RoomError,
    RoomFull,
    RoomLimits,
    RoomSession,
    SenderSession,
    SenderStats,
    TokenBucket,
    parse_datagram,
)
from keyface.server.tokens import (
    TokenClaims,
    TokenError,
    TokenExpired,
    TokenForbidden,
    TokenInvalid,
    TokenWrongRole,
    TokenWrongRoom,
    make_token,
    verify_token,
)

__all__ = [
    "AlreadyJoined",
    "Datagram",
    "DatagramError",
    "LiveEncoder",
    "Participant",
    "ParticipantDecoder",
    "ReceiverStats",
    "RenderedFrame",
    "RoomError",
    "RoomFull",
    "RoomLimits",
    "RoomSession",
    "SenderSession",
    "SenderStats",
    "TokenBucket",
    "TokenClaims",
    "TokenError",
    "TokenExpired",
    "TokenForbidden",
    "TokenInvalid",
    "TokenWrongRole",
    "TokenWrongRoom",
    "make_token",
    "parse_datagram",
    "verify_token",
]
