"""Fuzzing keyface's untrusted inputs (issue 14, item 2): structure-aware mutations that keep
every CRC valid, and the targets they are fed to.

A byte flip in a keyface stream is almost always caught by a CRC, so plain mutation only tests
the container parser. :class:`RawStream` holds a stream as its records (header bytes, then
``(type, payload)`` of each packet) and re-serialises them with freshly computed CRCs, so the
damage reaches the decoder behind the parser: the kind of input that found the decoder's
defects (a MOTION packet with a huge ``n_frames``, oversized keyframes, out-of-range motion).

Targets (each takes bytes and returns normally for any input; anything else they raise is a
finding):

* :func:`parse_target`: ``read_stream`` and the incremental ``StreamReader`` must agree;
* :func:`decode_target`: ``keyface.pipeline.decode_bytes`` with a real renderer (only
  ``BitstreamError`` may stop it, and it returns it);
* :func:`datagram_target`: a live sender's datagrams into a ``RoomSession`` (never raises);
* :func:`join_target`: an HTTP join body through ``parse_json_body``, ``JoinRequest`` and the
  token check (only the documented ``ValueError`` / ``JoinError`` / ``TokenError``).

``tests/test_fuzz.py`` runs them under hypothesis (a few hundred inputs, in CI);
``benchmarks/fuzz.py`` runs long seeded campaigns with a peak-memory bound.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from keyface.bitstream import BitstreamError, StreamReader, encode_varint, read_stream
from keyface.bitstream._wire import Malformed, NeedMore, scan_varint

MAGIC = b"KFAC"
VERSIONS = (1, 2)
INTERESTING_INTS: tuple[int, ...] = (
    0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 39, 40, 41, 63, 64, 65, 127, 128, 255, 256,
    1023, 1024, 4096, 65535, 65536, 1 << 20, 1 << 31, 1 << 32, 1 << 40, (1 << 63) - 1,
    (1 << 64) - 1,
)  # fmt: skip
"""Values a mutated varint or fixed field takes (boundaries of the decoder's limits)."""
PACKET_TYPES: tuple[int, ...] = (0x01, 0x02, 0x03, 0x04, 0x7F, 0x05, 0x06, 0x42)


def packet_record(packet_type: int, payload: bytes) -> bytes:
    """A packet record with a valid CRC, whatever the payload holds."""
    head = bytes([packet_type]) + encode_varint(len(payload))
    return head + payload + zlib.crc32(head + payload).to_bytes(4, "little")


def header_record(header: bytes, version: int = 1) -> bytes:
    """The file prefix (magic, version, length, header, CRC) around raw header bytes."""
    crc = zlib.crc32(header).to_bytes(4, "little")
    return MAGIC + bytes([version]) + encode_varint(len(header)) + header + crc


@dataclass
class RawStream:
    """A stream as records: raw header bytes and ``(type, payload)`` packets."""

    header: bytes
    packets: list[tuple[int, bytes]] = field(default_factory=list)
    tail: bytes = b""
    """Bytes after the last whole record (kept, so truncation survives a round trip)."""
    version: int = 1

    @classmethod
    def split(cls, data: bytes) -> RawStream | None:
        """The records of ``data``; ``None`` if it does not start with a readable prefix."""
        if not data.startswith(MAGIC) or len(data) <= len(MAGIC) or data[4] not in VERSIONS:
            return None
        try:
            length, pos = scan_varint(data, len(MAGIC) + 1, len(data))
        except (NeedMore, Malformed):
            return None
        if pos + length + 4 > len(data):
            return None
        out = cls(header=bytes(data[pos : pos + length]), version=data[4])
        pos += length + 4
        while pos < len(data):
            try:
                size, start = scan_varint(data, pos + 1, len(data))
            except (NeedMore, Malformed):
                break
            if start + size + 4 > len(data):
                break
            out.packets.append((data[pos], bytes(data[start : start + size])))
            pos = start + size + 4
        out.tail = bytes(data[pos:])
        return out

    def join(self) -> bytes:
        """The stream with every CRC recomputed."""
        body = b"".join(packet_record(t, p) for t, p in self.packets)
        return header_record(self.header, self.version) + body + self.tail


def _varint_at(data: bytes, pos: int) -> tuple[int, int] | None:
    try:
        return scan_varint(data, pos, len(data))
    except (NeedMore, Malformed):
        return None


def _replace_varint(payload: bytes, index: int, value: int) -> bytes:
    """``payload`` with its ``index``-th leading varint replaced by ``value``."""
    pos = 0
    for _ in range(index):
        found = _varint_at(payload, pos)
        if found is None:
            return payload
        pos = found[1]
    found = _varint_at(payload, pos)
    end = found[1] if found is not None else min(pos + 1, len(payload))
    return payload[:pos] + encode_varint(value) + payload[end:]


def _flip_bytes(rng: random.Random, data: bytes, n: int) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    buf = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(buf))
        buf[i] = rng.randrange(256) if rng.random() < 0.5 else buf[i] ^ (1 << rng.randrange(8))
    return bytes(buf)


def mutate_stream(rng: random.Random, data: bytes, donors: Sequence[bytes] = ()) -> bytes:
    """One mutation of a keyface stream; most keep every CRC valid (see the module text)."""
    raw = RawStream.split(data)
    if raw is None or rng.random() < 0.05:  # plain byte damage (the parser's own job)
        return _flip_bytes(rng, data, rng.randint(1, 4))
    choice = rng.randrange(10)
    packets = raw.packets
    if choice == 0:  # a header field
        raw.header = _flip_bytes(rng, raw.header, rng.randint(1, 3))
    elif choice in (1, 2, 3) and packets:  # a leading varint of a packet (index, count)
        i = rng.randrange(len(packets))
        t, p = packets[i]
        packets[i] = (t, _replace_varint(p, rng.randrange(2), rng.choice(INTERESTING_INTS)))
    elif choice in (4, 5) and packets:  # the payload body (motion words, intra data)
        i = rng.randrange(len(packets))
        t, p = packets[i]
        packets[i] = (t, _flip_bytes(rng, p, rng.randint(1, 8)))
    elif choice == 6 and packets:  # drop, duplicate or move a packet
        i = rng.randrange(len(packets))
        what = rng.randrange(3)
        if what == 0:
            del packets[i]
        elif what == 1:
            packets.insert(rng.randrange(len(packets) + 1), packets[i])
        else:
            packets.insert(rng.randrange(len(packets)), packets.pop(i))
    elif choice == 7 and packets:  # another type on the same payload
        i = rng.randrange(len(packets))
        packets[i] = (rng.choice(PACKET_TYPES), packets[i][1])
    elif choice == 8 and donors:  # a packet from another stream
        other = RawStream.split(rng.choice(donors))
        if other is not None and other.packets:
            packets.insert(rng.randrange(len(packets) + 1), rng.choice(other.packets))
    else:  # truncate or extend
        out = raw.join()
        if rng.random() < 0.5:
            return out[: rng.randrange(len(out) + 1)]
        return out + _flip_bytes(rng, out[-8:], 2)
    return raw.join()


def input_rng(seed: int, index: int) -> random.Random:
    """The generator of input ``index`` of campaign ``seed``: each input is made on its own,
    so any range of a campaign can be run, split across processes or replayed alone."""
    return random.Random((seed << 40) + index)


def make_input(
    rng: random.Random, corpus: Sequence[bytes], mutate: Callable[..., bytes]
) -> tuple[int, bytes]:
    """``(which seed, input)``: a seed of ``corpus`` with 1-4 stacked ``mutate`` steps (the
    other seeds are the donors of packets)."""
    which = rng.randrange(len(corpus))
    data = corpus[which]
    for _ in range(rng.randint(1, 4)):
        data = mutate(rng, data, corpus)
    return which, data


# ----------------------------------------------------------------------------- targets
def parse_target(data: bytes) -> None:
    """The whole-file parser and the incremental reader agree on every input (a damaged
    header: both raise ``BitstreamError`` with the same message)."""
    try:
        parsed = read_stream(data)
    except BitstreamError as whole:
        reader = StreamReader()
        reader.feed(data)
        try:
            if reader.next_event() is None:
                reader.close()
        except BitstreamError as incremental:
            if str(incremental) != str(whole):
                raise AssertionError(f"header errors differ: {incremental} / {whole}") from None
            return
        raise AssertionError(
            f"read_stream refused the header ({whole}), the reader did not"
        ) from None
    reader = StreamReader()
    reader.feed(data)
    events = []
    error: BitstreamError | None = None
    try:
        while (event := reader.next_event()) is not None:
            events.append(event)
        reader.close()
    except BitstreamError as exc:
        error = exc
    packets = events[1:] if events else []
    if parsed.header is not None and (not events or events[0] != parsed.header):
        raise AssertionError("StreamReader and read_stream disagree on the header")
    if list(parsed.packets) != packets:
        raise AssertionError("StreamReader and read_stream disagree on the packets")
    if (parsed.error is None) != (error is None) and parsed.complete:
        raise AssertionError("StreamReader and read_stream disagree on the error")


def decode_target(renderer: object | None = None) -> Callable[[bytes], None]:
    """``decode_bytes`` with ``renderer`` (the default: the real default renderer)."""
    from keyface.pipeline import decode_bytes
    from keyface.renderers import get_renderer

    chosen = renderer if renderer is not None else get_renderer()

    def target(data: bytes) -> None:
        try:
            result = decode_bytes(data, renderer=chosen)  # type: ignore[arg-type]
        except BitstreamError:
            return  # no usable header (damaged, needs what this build lacks, over the limits)
        for frame in result.frames:
            if frame.image.dtype.name != "uint8" or frame.image.ndim != 3:
                raise AssertionError(f"frame {frame.index} is not a picture")

    return target


def split_datagrams(blob: bytes) -> list[tuple[str, bytes]]:
    """A fuzz input as channel-tagged datagrams: ``channel u8 | len u16 | bytes`` records."""
    out: list[tuple[str, bytes]] = []
    pos = 0
    while pos + 3 <= len(blob):
        channel = "reliable" if blob[pos] & 1 else "unreliable"
        n = int.from_bytes(blob[pos + 1 : pos + 3], "little")
        out.append((channel, bytes(blob[pos + 3 : pos + 3 + n])))
        pos += 3 + n
    return out


def join_datagrams(datagrams: Sequence[tuple[str, bytes]]) -> bytes:
    """Inverse of :func:`split_datagrams`."""
    parts = []
    for channel, payload in datagrams:
        tag = 1 if channel == "reliable" else 0
        parts.append(bytes([tag]) + len(payload).to_bytes(2, "little") + payload)
    return b"".join(parts)


def mutate_datagrams(rng: random.Random, blob: bytes, donors: Sequence[bytes] = ()) -> bytes:
    """One mutation of a datagram sequence: a FRAME datagram's packets (CRCs recomputed),
    its tag or indices, or the sequence (drop, duplicate, reorder)."""
    datagrams = split_datagrams(blob)
    if not datagrams:
        return _flip_bytes(rng, blob, 2)
    i = rng.randrange(len(datagrams))
    channel, payload = datagrams[i]
    choice = rng.randrange(6)
    if choice == 0:
        payload = _flip_bytes(rng, payload, rng.randint(1, 3))
    elif choice == 1 and len(payload) > 1:  # frame_index / key_back / base_back / the copy's
        payload = payload[:1] + _replace_varint(
            payload[1:], rng.randrange(_head_varints(payload)), rng.choice(INTERESTING_INTS)
        )
    elif choice in (2, 3) and len(payload) > 1:  # the packets inside (a copy's too), CRCs valid
        head_len = 1
        for _ in range(_head_varints(payload)):
            found = _varint_at(payload, head_len)
            if found is None:
                break
            head_len = found[1]
        inner = RawStream(header=b"", packets=[])
        pos = head_len
        rest = payload[head_len:]
        parsed = RawStream.split(header_record(b"") + rest)
        if parsed is not None and parsed.packets:
            inner = parsed
            j = rng.randrange(len(inner.packets))
            t, p = inner.packets[j]
            if choice == 2:
                p = _replace_varint(p, rng.randrange(2), rng.choice(INTERESTING_INTS))
            else:
                p = _flip_bytes(rng, p, rng.randint(1, 6))
            inner.packets[j] = (t, p)
            body = b"".join(packet_record(t, q) for t, q in inner.packets) + inner.tail
            payload = payload[:pos] + body
    elif choice == 4:
        if rng.random() < 0.5:
            del datagrams[i]
            return join_datagrams(datagrams)
        datagrams.insert(rng.randrange(len(datagrams) + 1), (channel, payload))
    elif donors:
        other = split_datagrams(rng.choice(donors))
        if other:
            datagrams.insert(rng.randrange(len(datagrams) + 1), rng.choice(other))
    datagrams[i] = (channel, payload)
    return join_datagrams(datagrams)


def _head_varints(payload: bytes) -> int:
    """Varints before a FRAME datagram's first packet record: frame_index and key_back, then
    base_back and keys (FLAG_BASED), then the number of copies and the first copy's key_back,
    base_back and keys (FLAG_REDUNDANT; its MOTION packet is the first record)."""
    from keyface.server.datagram import FLAG_BASED, FLAG_REDUNDANT

    tag = payload[0]
    return 2 + 2 * bool(tag & FLAG_BASED) + 4 * bool(tag & FLAG_REDUNDANT)


def datagram_target(renderer: object | None = None) -> Callable[[bytes], None]:
    """A fresh room with one sender fed the datagrams of the input, 10 ms apart, then ticked:
    ``RoomSession.receive_datagram`` must never raise."""
    from keyface.server.room import RoomLimits, RoomSession

    def target(blob: bytes) -> None:
        room = RoomSession("fuzz", RoomLimits(), renderer=renderer)  # type: ignore[arg-type]
        room.join("s", "send", 0.0)
        now = 0.0
        for channel, payload in split_datagrams(blob):
            now += 0.01
            room.receive_datagram("s", channel, payload, now)  # type: ignore[arg-type]
        room.tick(now + 1.0)
        room.datagrams_to_send()

    return target


def join_target(secret: bytes) -> Callable[[bytes], None]:
    """An HTTP join body: parsed with the server's limits, validated, its token checked."""
    from keyface.server.conference import JoinError, JoinRequest
    from keyface.server.http import parse_json_body
    from keyface.server.tokens import TokenError, verify_token

    def target(body: bytes) -> None:
        try:
            request = JoinRequest.from_json(parse_json_body(body))
            verify_token(secret, request.token, "fuzz", 1_000_000.0, request.role)
        except (ValueError, JoinError, TokenError):
            return

    return target


def mutate_json(rng: random.Random, body: bytes, donors: Sequence[bytes] = ()) -> bytes:
    """Byte damage, deep nesting or a field replaced in a join body."""
    choice = rng.randrange(4)
    if choice == 0:
        return _flip_bytes(rng, body, rng.randint(1, 6))
    if choice == 1:
        depth = rng.choice((2, 15, 16, 17, 100, 5000))
        return b"[" * depth + body + b"]" * rng.randrange(depth + 1)
    if choice == 2:
        cut = rng.randrange(len(body) + 1)
        return body[:cut] + rng.choice((b'"', b"\\", b"{", b"}", b"\x00", b"\xff")) + body[cut:]
    key = rng.choice((b'"sdp"', b'"type"', b'"token"', b'"role"', b'"resume"'))
    value = rng.choice((b"null", b"1e999", b"[]", b"{}", b'"x"', b"-0", b'"' + b"a" * 70000 + b'"'))
    return body.replace(key + b":", key + b":" + value + b",", 1)
