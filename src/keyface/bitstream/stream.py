"""Whole streams: the incremental :class:`StreamReader`, :func:`write_stream`, :func:`read_stream`.

Sans-I/O: nothing here reads files or sockets. Callers hand bytes in and get bytes or
parsed events out, so the same code serves files, pipes and network transports.

Stream-level rules (beyond each record being valid on its own):

* the header comes first, exactly once;
* an END packet is the last packet: any byte after it is an error;
* END's ``frame_count`` must equal the header's ``frame_count`` unless the header says 0;
* BACKGROUND packets may only appear when the header's ``has_background`` flag is set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Union

from ._wire import BitstreamError
from .header import StreamHeader, decode_header_record, header_size, header_truncated
from .packets import (
    PACKET_CLASSES,
    BackgroundPacket,
    EndPacket,
    Packet,
    decode_packet,
    describe_type,
    packet_size,
    packet_truncated,
)

Event = Union[StreamHeader, Packet]  # noqa: UP007
"""What :meth:`StreamReader.next_event` returns: the header first, then packets."""

_COMPACT_AT = 1 << 16  # discard consumed bytes once this many have piled up


def _stream_rule_violation(header: StreamHeader, packet: Packet) -> str | None:
    """Why ``packet`` may not appear in a stream with ``header``, or ``None`` if it may."""
    if isinstance(packet, BackgroundPacket) and not header.has_background:
        return "BACKGROUND packet in a stream whose header has has_background = 0"
    if isinstance(packet, EndPacket) and header.frame_count not in (0, packet.frame_count):
        return (
            f"END frame_count {packet.frame_count} disagrees with the header's"
            f" frame_count {header.frame_count}"
        )
    return None


class StreamReader:
    """Incremental parser for a keyface stream arriving in pieces of any size.

    Feed bytes as they arrive and pull events::

        reader = StreamReader()
        for chunk in chunks:
            reader.feed(chunk)
            while (event := reader.next_event()) is not None:
                handle(event)          # a StreamHeader first, then packets
        reader.close()                 # raises if the input ended inside a record

    ``next_event`` returns ``None`` when it needs more data; it never blocks or loops.
    Errors are raised as soon as the available bytes prove the stream invalid (a foreign
    magic after the first byte, an oversized ``payload_len`` before the payload arrives).
    After an error the reader is stuck: every later ``next_event`` raises the same error,
    because the format has no resynchronisation markers.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # index in _buf of the first unconsumed byte
        self._base = 0  # stream offset of _buf[0]
        self._header: StreamHeader | None = None
        self._ended = False
        self._error: BitstreamError | None = None
        self._closed = False

    @property
    def offset(self) -> int:
        """Bytes consumed so far: the stream offset just after the last returned event."""
        return self._base + self._pos

    @property
    def header(self) -> StreamHeader | None:
        """The stream header, once it has been returned by :meth:`next_event`."""
        return self._header

    @property
    def ended(self) -> bool:
        """Whether the END packet has been returned (the stream is complete)."""
        return self._ended

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet consumed as events."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append received bytes (bytes, bytearray or memoryview)."""
        if self._closed:
            raise RuntimeError("StreamReader.feed() called after close()")
        self._buf += data

    def next_event(self) -> Event | None:
        """The next complete event, or ``None`` if more data is needed.

        Raises :class:`BitstreamError` if the stream is invalid.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except BitstreamError as exc:
            self._error = exc
            raise

    def events(self) -> Iterator[Event]:
        """Yield every event that the data fed so far completes."""
        while (event := self.next_event()) is not None:
            yield event

    def close(self) -> None:
        """Declare the end of the input.

        Raises :class:`BitstreamError` if fed bytes remain unconsumed: "truncated ... at
        byte N" when the input ends inside a record (or no header arrived at all), or a
        request to drain :meth:`next_event` first if a complete record is still waiting.
        Does nothing if the reader already raised an error or was closed before.
        """
        if self._closed:
            return
        self._closed = True
        if self._error is not None:
            return
        avail = len(self._buf)
        if self._header is None:
            size = header_size(self._buf, avail)
            if size is None or size > avail:
                raise header_truncated(self._buf, avail)
        elif self.buffered:
            at = self.offset
            if self._ended:
                raise BitstreamError(f"unexpected data after the END packet at byte {at}", at)
            size = packet_size(self._buf, self._pos, avail, at)
            if size is None or size > self.buffered:
                raise packet_truncated(self._buf, self._pos, avail, at)
        else:
            return
        raise BitstreamError(
            f"close() with a complete record still unread at byte {self.offset};"
            " call next_event() until it returns None first",
            self.offset,
        )

    # ---------------------------------------------------------------- internals

    def _consume(self, size: int) -> None:
        self._pos += size
        if self._pos >= _COMPACT_AT and 2 * self._pos >= len(self._buf):
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0

    def _next_event(self) -> Event | None:
        buf, avail = self._buf, len(self._buf) - self._pos
        if self._header is None:
            size = header_size(buf, len(buf))  # the header is always at _buf[0]
            if size is None or size > avail:
                return None
            header = decode_header_record(bytes(buf[:size]))
            self._consume(size)
            self._header = header
            return header
        if avail == 0:
            return None
        at = self.offset
        if self._ended:
            raise BitstreamError(f"unexpected data after the END packet at byte {at}", at)
        size = packet_size(buf, self._pos, len(buf), at)
        if size is None or size > avail:
            return None
        packet = decode_packet(bytes(buf[self._pos : self._pos + size]), at)
        problem = _stream_rule_violation(self._header, packet)
        if problem is not None:
            raise BitstreamError(f"{describe_type(packet.packet_type)} at byte {at}: {problem}", at)
        self._consume(size)
        self._ended = isinstance(packet, EndPacket)
        return packet


def write_stream(header: StreamHeader, packets: Iterable[Packet]) -> bytes:
    """Serialise a whole stream: the header followed by ``packets`` in order.

    The packets are written as given (add an :class:`EndPacket` to mark the stream
    complete). Raises :class:`BitstreamError` if they break a stream-level rule, e.g. a
    packet after END, and :class:`TypeError` for objects that are not packets.
    """
    if not isinstance(header, StreamHeader):
        raise TypeError(f"write_stream: header must be a StreamHeader, got {type(header).__name__}")
    out = bytearray(bytes(header))
    ended = False
    for index, packet in enumerate(packets):
        if not isinstance(packet, PACKET_CLASSES):
            raise TypeError(f"write_stream: packet #{index} is a {type(packet).__name__}")
        what = describe_type(packet.packet_type)
        if ended:
            raise BitstreamError(f"write_stream: packet #{index} ({what}) follows the END packet")
        problem = _stream_rule_violation(header, packet)
        if problem is not None:
            raise BitstreamError(f"write_stream: packet #{index}: {problem}")
        out += bytes(packet)
        ended = isinstance(packet, EndPacket)
    return bytes(out)


@dataclass(frozen=True)
class ParsedStream:
    """The result of :func:`read_stream`.

    ``packets`` holds every packet before the first damage, ``error`` says what broke
    (``None`` if nothing did) and ``valid_bytes`` is how many leading bytes of the input
    were parsed successfully (header plus ``packets``).
    """

    header: StreamHeader
    packets: list[Packet]
    error: BitstreamError | None
    valid_bytes: int

    @property
    def complete(self) -> bool:
        """Whether the stream's END packet was read, i.e. nothing was cut off.

        A stream cut exactly at a packet boundary has no ``error`` but is not complete.
        Bytes after END make ``error`` non-``None`` while ``complete`` stays true.
        """
        return bool(self.packets) and isinstance(self.packets[-1], EndPacket)


def read_stream(data: bytes) -> ParsedStream:
    """Parse a whole stream held in memory, keeping everything before the first damage.

    A missing, foreign, unsupported or damaged header raises :class:`BitstreamError`
    (there is nothing to keep). Damage after the header is reported in
    :attr:`ParsedStream.error` instead, with the packets before it intact.
    """
    reader = StreamReader()
    reader.feed(data)
    header = reader.next_event()
    if header is None:
        reader.close()  # always raises: the input ends inside the header
        raise AssertionError("unreachable")  # pragma: no cover
    assert isinstance(header, StreamHeader)
    packets: list[Packet] = []
    error: BitstreamError | None = None
    try:
        for event in reader.events():
            assert not isinstance(event, StreamHeader)
            packets.append(event)
        reader.close()
    except BitstreamError as exc:
        error = exc
    return ParsedStream(header=header, packets=packets, error=error, valid_bytes=reader.offset)
