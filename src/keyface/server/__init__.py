"""Conference server: room tokens and sender / room sessions (the sans-I/O core, exported
here), and the WebRTC layer on top of them (import the modules directly; they need aiortc):

* ``keyface.server.conference``: rooms and peers on an asyncio loop (aiortc);
* ``keyface.server.http``: HTTP signalling (aiohttp), ``start_server``;
* ``keyface.server.media``: the video tracks the server publishes;
* ``keyface.server.client``: Python sender / receiver clients;
* ``keyface.server.sender``: the speaker's side (capture, face analysis, live coding).

See ``docs/server.md``.
"""

from keyface.server.session import (
    DEFAULT_RESET_INTERVAL,
    LIVE_MIRROR,
    AlreadyJoined,
    Datagram,
    DatagramError,
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
    live_codec_config,
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
    "DEFAULT_RESET_INTERVAL",
    "LIVE_MIRROR",
    "AlreadyJoined",
    "Datagram",
    "DatagramError",
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
    "live_codec_config",
    "make_token",
    "parse_datagram",
    "verify_token",
]
