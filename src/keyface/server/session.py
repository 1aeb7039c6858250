"""Sans-I/O conference sessions: sender -> server room, as state machines with the clock passed in.

Nothing here opens a socket, starts a task or reads the clock; a transport (aiortc data
channels, a test loop) moves :class:`Datagram` payloads and calls these objects with ``now``.
The parts live in their own modules and are gathered here, the one import point:

* :mod:`keyface.server.datagram`: the datagram format (specified in docs/bitstream.md);
* :mod:`keyface.server.live`: :class:`SenderSession`, the speaker's device: the codec in live
  mode (one MOTION packet per frame) turning every frame into datagrams: keyframes (and the
  stream header) on the reliable channel, motion on the unreliable one;
* :mod:`keyface.server.receiver`: :class:`ParticipantDecoder`, one per sender on the server: it
  reorders datagrams, decodes them, conceals lost or late motion by holding the last picture,
  and asks the sender for a refresh (an IDR keyframe) when its reference buffer can no longer
  be trusted;
* :mod:`keyface.server.room`: :class:`RoomSession`, the participants of one room: participant
  limit, per-client packet size and rate limits (token buckets), leave and idle timeout.

The loss recovery and the measured cost of the periodic motion resets are described in
``docs/server.md``.
"""

from keyface.server.datagram import (
    DATAGRAM_VERSION,
    FLAG_IDR,
    KIND_FEEDBACK,
    KIND_FRAME,
    KIND_HEADER,
    MAX_DATAGRAM,
    Channel,
    Datagram,
    DatagramError,
    ParsedDatagram,
    encode_feedback_datagram,
    encode_frame_datagram,
    encode_header_datagram,
    parse_datagram,
)
from keyface.server.live import (
    DEFAULT_RESET_INTERVAL,
    LIVE_MIRROR,
    SenderSession,
    SenderStats,
    live_codec_config,
    live_generator,
)
from keyface.server.receiver import (
    ParticipantDecoder,
    ReceiverStats,
    RenderedFrame,
)
from keyface.server.room import (
    AlreadyJoined,
    Participant,
    RoomError,
    RoomFull,
    RoomLimits,
    RoomSession,
    TokenBucket,
    log_field,
)

__all__ = [
    "DATAGRAM_VERSION",
    "DEFAULT_RESET_INTERVAL",
    "FLAG_IDR",
    "KIND_FEEDBACK",
    "KIND_FRAME",
    "KIND_HEADER",
    "LIVE_MIRROR",
    "MAX_DATAGRAM",
    "AlreadyJoined",
    "Channel",
    "Datagram",
    "DatagramError",
    "ParsedDatagram",
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
    "encode_feedback_datagram",
    "encode_frame_datagram",
    "encode_header_datagram",
    "live_codec_config",
    "live_generator",
    "log_field",
    "parse_datagram",
]
