"""Tests for keyface.bitstream, the container format (spec: docs/bitstream.md).

The tests are organised from the bottom up:

1. varints, the only variable-length integer encoding;
2. golden streams: fixed values must serialise to fixed bytes (the format is frozen);
3. round trips of every record type;
4. the incremental StreamReader;
5. damage: truncation, bit flips and random garbage must give clear BitstreamErrors,
   never another exception, a hang or a huge allocation;
6. field validation and stream-level rules.

Golden values: when the format is changed *on purpose*, regenerate them with

    KEYFACE_REGEN_GOLDEN=1 python -m pytest tests/test_bitstream.py -k golden -s

which prints the new hex literals (paste them below, and update the worked example in
docs/bitstream.md) and skips the comparison.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import textwrap
import zlib
from fractions import Fraction

import pytest

from keyface import bitstream as bs
from keyface.bitstream import (
    BackgroundPacket,
    BitstreamError,
    CropGeometry,
    EndPacket,
    KeyframePacket,
    MotionPacket,
    RefreshMode,
    RefreshRequestPacket,
    StreamHeader,
    StreamReader,
    UnknownPacket,
    encode_varint,
    parse_packet,
    read_stream,
    write_stream,
)

# ----------------------------------------------------------------------------- fixtures


def make_header(**changes: object) -> StreamHeader:
    """A typical header (256x256 face crop of a 640x480 NTSC-rate video); override any field."""
    fields: dict[str, object] = dict(
        width=256,
        height=256,
        fps_num=30000,
        fps_den=1001,
        frame_count=3,
        crop=CropGeometry(source_width=640, source_height=480, cx=320.5, cy=200.25, side=300.0),
        has_background=True,
        motion_name="fomm",
        motion_version=1,
        motion_digest=0xDEADBEEF,
        quant_level=4,
        intra_codec="jpeg",
        refresh_mode=RefreshMode.PSNR,
        buffer_size=3,
        refresh_threshold=30.5,
        generator="warp",
    )
    fields.update(changes)
    return StreamHeader(**fields)  # type: ignore[arg-type]


def golden_packets() -> list[bs.Packet]:
    """One packet of every type, in a plausible order, ending with END."""
    return [
        BackgroundPacket(frame_index=0, data=b"BG"),
        KeyframePacket(frame_index=0, quality=90, data=b"\xff\xd8KEY\xff\xd9"),
        MotionPacket(first_frame=1, n_frames=2, reset=True, data=b"\x12\x34"),
        RefreshRequestPacket(frame_index=2),
        UnknownPacket(type=0x42, payload=b"future"),
        EndPacket(frame_count=3),
    ]


def tiny_stream() -> tuple[StreamHeader, list[bs.Packet]]:
    """The worked example of docs/bitstream.md: no crop, one keyframe, one motion packet."""
    header = StreamHeader(
        width=256,
        height=256,
        fps_num=25,
        fps_den=1,
        frame_count=2,
        crop=None,
        has_background=False,
        motion_name="fomm",
        motion_version=1,
        motion_digest=0x12345678,
        quant_level=4,
        intra_codec="jpeg",
        refresh_mode=RefreshMode.PSNR,
        buffer_size=2,
        refresh_threshold=32.0,
        generator="warp",
    )
    packets: list[bs.Packet] = [
        KeyframePacket(frame_index=0, quality=90, data=b"\xff\xd8\xff\xd9"),
        MotionPacket(first_frame=1, n_frames=1, reset=True, data=b"\x2a"),
        EndPacket(frame_count=2),
    ]
    return header, packets


GOLDEN_HEX = (
    "4b464143013600010001b0ea01e90703038002e0010040a043004048430000964304666f6d6d01efbeadde04"
    "046a70656700030000f44104776172706e4423fd030300424797dbc0b90109005affd84b4559ffd9f03d0e72"
    "020501020112348e50d595040102a3215d0f4206667574757265e8bf63147f01038496fe20"
)

TINY_HEX = (
    "4b4641430123000100011901020004666f6d6d017856341204046a70656700020000004204776172701e008a"
    "e90106005affd8ffd9dcc84f8902040101012aad5354727f010212a6f957"
)


def golden_bytes() -> bytes:
    return write_stream(make_header(), golden_packets())


def raw_packet(packet_type: int, payload: bytes) -> bytes:
    """A packet with a *valid* CRC around an arbitrary payload (to test field checks)."""
    head = bytes([packet_type]) + encode_varint(len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(head + payload))


def raw_header(body: bytes, version: int = 1) -> bytes:
    """A file prefix with a *valid* CRC around arbitrary header bytes."""
    return (
        b"KFAC" + bytes([version]) + encode_varint(len(body)) + body
        + struct.pack("<I", zlib.crc32(body))
    )  # fmt: skip


# ----------------------------------------------------------------------------- 1. varints


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint_known_encodings(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert bs.decode_varint(encoded) == (value, len(encoded))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated varint at byte 0"),
        (b"\x80", "truncated varint at byte 0"),
        (b"\x80\x00", "non-minimal varint"),  # 0 padded to two bytes
        (b"\xff" * 9 + b"\x02", "varint exceeds 64 bits"),
        (b"\x80" * 10 + b"\x01", "varint longer than 10 bytes"),
    ],
)
def test_varint_rejects_bad_encodings(data: bytes, message: str) -> None:
    with pytest.raises(BitstreamError, match=message):
        bs.decode_varint(data)


@pytest.mark.parametrize("value", [-1, 2**64])
def test_varint_rejects_out_of_range_values(value: int) -> None:
    with pytest.raises(BitstreamError, match=r"out of range|must be in"):
        encode_varint(value)


# ----------------------------------------------------------------------------- 2. golden


def _check_golden(name: str, actual: bytes, expected_hex: str) -> None:
    if os.environ.get("KEYFACE_REGEN_GOLDEN") == "1":
        chunks = [actual.hex()[i : i + 88] for i in range(0, 2 * len(actual), 88)]
        print(f"\n{name} = (\n" + "".join(f'    "{c}"\n' for c in chunks) + ")")
        pytest.skip(f"KEYFACE_REGEN_GOLDEN=1: printed the new {name}")
    assert actual.hex() == expected_hex, f"{name} changed: the v1 format must stay byte-exact"


def test_golden_stream_bytes() -> None:
    _check_golden("GOLDEN_HEX", golden_bytes(), GOLDEN_HEX)


def test_golden_tiny_stream_matches_the_spec_example() -> None:
    header, packets = tiny_stream()
    _check_golden("TINY_HEX", write_stream(header, packets), TINY_HEX)


def test_golden_stream_reads_back() -> None:
    parsed = read_stream(bytes.fromhex(GOLDEN_HEX))
    assert parsed.header == make_header()
    assert parsed.packets == golden_packets()
    assert parsed.error is None
    assert parsed.complete
    assert parsed.valid_bytes == len(GOLDEN_HEX) // 2


# ----------------------------------------------------------------------------- 3. round trips


@pytest.mark.parametrize(
    "packet",
    [
        *golden_packets(),
        KeyframePacket(frame_index=2**64 - 1, quality=0, data=b""),
        KeyframePacket(frame_index=12345, quality=100, data=bytes(range(256)) * 40),
        MotionPacket(first_frame=0, n_frames=1, reset=False, data=b""),
        BackgroundPacket(frame_index=7, data=b""),
        bs.DetailPacket(frame_index=3, x=0, y=65535, width=1, height=65535, quality=100, data=b""),
        EndPacket(frame_count=0),
        UnknownPacket(type=0x00, payload=b""),
        UnknownPacket(type=0xFF, payload=b"\x00" * 300),
    ],
    ids=repr,
)
def test_packet_round_trip(packet: bs.Packet) -> None:
    wire = bytes(packet)
    assert parse_packet(wire) == (packet, len(wire))
    # ... also from the middle of a buffer:
    assert parse_packet(b"xyz" + wire + b"more", 3) == (packet, 3 + len(wire))
    # ... and the payload alone:
    payload = packet.encode_payload()
    if isinstance(packet, UnknownPacket):
        assert UnknownPacket.parse_payload(payload, packet.type) == packet
    else:
        assert type(packet).parse_payload(payload) == packet
        assert wire[0] == type(packet).TYPE


def test_packet_wire_layout_is_type_length_payload_crc() -> None:
    wire = bytes(RefreshRequestPacket(frame_index=300))
    assert wire[:4] == b"\x04\x02\xac\x02"  # type 0x04, payload_len 2, varint 300
    assert wire[4:] == struct.pack("<I", zlib.crc32(wire[:4]))


@pytest.mark.parametrize(
    "header",
    [
        make_header(),
        make_header(crop=None, has_background=False),
        make_header(frame_count=0, refresh_mode=RefreshMode.FIXED, buffer_size=5),
        make_header(extension=b"\x01\x02 from the future"),
        make_header(motion_name="", intra_codec="", generator=""),
        make_header(width=65535, height=1, fps_num=2**64 - 1, motion_digest=0xFFFFFFFF),
    ],
    ids=["crop", "no-crop", "live-fixed", "extension", "empty-names", "extremes"],
)
def test_header_round_trip(header: StreamHeader) -> None:
    wire = bytes(header)
    assert wire.startswith(b"KFAC\x01")
    assert StreamHeader.parse(wire + b"trailing packets") == (header, len(wire))


def test_header_floats_are_rounded_to_float32_so_round_trips_compare_equal() -> None:
    header = make_header(
        crop=CropGeometry(640, 480, cx=0.1, cy=1 / 3, side=123.456), refresh_threshold=0.3
    )
    assert (
        header.crop is not None and header.crop.cx == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    )
    assert StreamHeader.parse(bytes(header))[0] == header


def test_header_converts_enum_and_numpy_like_integers() -> None:
    class IndexLike:  # what numpy integers look like to Python: they implement __index__
        def __index__(self) -> int:
            return 7

    header = make_header(refresh_mode=1, quant_level=IndexLike())
    assert header.refresh_mode is RefreshMode.MOTION
    assert header.quant_level == 7 and type(header.quant_level) is int
    assert make_header().fps == Fraction(30000, 1001)


def test_unknown_packets_pass_through_byte_exact() -> None:
    """A v1 reader keeps packets from newer writers and writes them back unchanged."""
    data = golden_bytes()
    parsed = read_stream(data)
    assert UnknownPacket(0x42, b"future") in parsed.packets
    assert write_stream(parsed.header, parsed.packets) == data


# ----------------------------------------------------------------------------- 4. StreamReader


def _all_events(chunks: list[bytes]) -> tuple[list[bs.Event], list[int]]:
    reader = StreamReader()
    events: list[bs.Event] = []
    offsets: list[int] = []
    for chunk in chunks:
        reader.feed(chunk)
        for event in reader.events():
            events.append(event)
            offsets.append(reader.offset)
    reader.close()
    return events, offsets


def test_stream_reader_one_byte_at_a_time_gives_the_same_events() -> None:
    data = golden_bytes()
    expected = [make_header(), *golden_packets()]
    whole, whole_offsets = _all_events([data])
    bytewise, bytewise_offsets = _all_events([data[i : i + 1] for i in range(len(data))])
    assert whole == bytewise == expected
    assert whole_offsets == bytewise_offsets
    assert whole_offsets[-1] == len(data)


def test_stream_reader_random_chunking() -> None:
    data = golden_bytes()
    rng = random.Random(1)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 10)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert _all_events(chunks)[0] == [make_header(), *golden_packets()]


def test_stream_reader_reports_true_stream_offsets_in_long_streams() -> None:
    """The reader discards consumed bytes as it goes; offsets must still be absolute."""
    header = make_header(frame_count=0)
    keyframes = [KeyframePacket(i, 80, bytes([i]) * 50_000) for i in range(6)]
    data = bytearray(write_stream(header, keyframes))
    starts = [len(bytes(header))]
    for packet in keyframes:
        starts.append(starts[-1] + len(bytes(packet)))
    data[starts[5] + 1000] ^= 0x10  # damage the payload of the last keyframe

    reader = StreamReader()
    events: list[bs.Event] = []
    with pytest.raises(BitstreamError) as info:
        for at in range(0, len(data), 7_000):
            reader.feed(data[at : at + 7_000])
            events.extend(reader.events())
    assert events == [header, *keyframes[:5]]
    assert reader.offset == starts[5]
    assert info.value.offset == starts[5]
    assert str(info.value).startswith(f"CRC mismatch in KEYFRAME packet at byte {starts[5]} (")


def test_stream_reader_returns_none_until_a_record_is_complete() -> None:
    header_bytes = bytes(make_header())
    reader = StreamReader()
    reader.feed(header_bytes[:-1])
    assert reader.next_event() is None
    assert reader.offset == 0
    reader.feed(header_bytes[-1:])
    assert reader.next_event() == make_header()
    assert reader.offset == len(header_bytes)
    assert reader.next_event() is None  # no packet yet: that is fine mid-stream
    reader.close()  # and so is stopping at a packet boundary
    assert not reader.ended


def test_stream_reader_rejects_foreign_data_after_one_byte() -> None:
    reader = StreamReader()
    reader.feed(b"R")
    with pytest.raises(BitstreamError, match="not a keyface stream"):
        reader.next_event()
    with pytest.raises(BitstreamError, match="not a keyface stream"):
        reader.next_event()  # the reader stays failed; there is no resync in the format


def test_stream_reader_rejects_huge_lengths_without_waiting_for_the_payload() -> None:
    reader = StreamReader()
    reader.feed(bytes(make_header()) + b"\x01" + encode_varint(2**40))
    reader.next_event()  # the header
    with pytest.raises(BitstreamError, match="exceeds the 67108864-byte limit"):
        reader.next_event()


def test_stream_reader_close_reports_truncation() -> None:
    data = golden_bytes()
    reader = StreamReader()
    reader.feed(data[:-2])
    events = list(reader.events())
    assert len(events) == 1 + len(golden_packets()) - 1
    with pytest.raises(BitstreamError, match=r"truncated END packet at byte \d+ \(needs 7"):
        reader.close()


def test_stream_reader_close_with_unread_events_asks_to_drain() -> None:
    reader = StreamReader()
    reader.feed(golden_bytes())
    with pytest.raises(BitstreamError, match="call next_event"):
        reader.close()


# ----------------------------------------------------------------------------- 5. damage

# Decision (documented in docs/bitstream.md): a stream cut exactly between two packets is
# indistinguishable from a live stream that is still going, so read_stream reports no
# error there - but `complete` is False because the END packet is missing. A cut anywhere
# inside a record is an error.


def test_truncation_at_every_offset() -> None:
    data = golden_bytes()
    packets = golden_packets()
    header_len = len(bytes(make_header()))
    boundaries = [header_len]
    for packet in packets:
        boundaries.append(boundaries[-1] + len(bytes(packet)))

    for cut in range(len(data) + 1):
        if cut < header_len:
            with pytest.raises(BitstreamError, match=r"truncated stream header|empty input"):
                read_stream(data[:cut])
            continue
        parsed = read_stream(data[:cut])
        n_whole = sum(1 for b in boundaries[1:] if b <= cut)
        assert parsed.packets == packets[:n_whole], cut
        assert parsed.valid_bytes == boundaries[n_whole]
        assert parsed.complete == (cut == len(data))
        if cut in boundaries:
            assert parsed.error is None
        else:
            assert parsed.error is not None
            assert str(parsed.error).startswith("truncated ")
            assert parsed.error.offset == boundaries[n_whole]


def test_every_single_byte_flip_is_detected() -> None:
    """Every byte is covered by the magic/version check or a CRC-32, which catches any
    error burst of up to 32 bits; non-minimal varints are rejected, so there is no "ignored
    spot": any flip is reported, and the packets before it are kept."""
    data = golden_bytes()
    header_len = len(bytes(make_header()))
    for position in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[position] ^= mask
            try:
                parsed = read_stream(bytes(damaged))
            except BitstreamError:
                assert position < header_len  # only header damage raises
                continue
            assert position >= header_len
            assert parsed.error is not None, (position, mask)
            assert parsed.packets == golden_packets()[: len(parsed.packets)]
            assert parsed.valid_bytes <= position


def test_random_damage_only_ever_raises_bitstream_error() -> None:
    data = golden_bytes()
    rng = random.Random(20240521)
    for _ in range(400):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            position = rng.randrange(len(damaged) + 1)
            if choice < 0.5 and position < len(damaged):
                damaged[position] = rng.randrange(256)
            elif choice < 0.75:
                damaged[position:position] = rng.randbytes(rng.randint(1, 8))
            else:
                del damaged[position : position + rng.randint(1, 8)]
        try:
            read_stream(bytes(damaged))
        except BitstreamError:
            pass


def test_random_payloads_with_valid_crcs_only_ever_raise_bitstream_error() -> None:
    """CRC-valid garbage reaches the field parsers: they must fail cleanly too."""
    rng = random.Random(7)
    for _ in range(2000):
        packet_type = rng.choice([0x01, 0x02, 0x03, 0x04, 0x7F, 0x42])
        payload = rng.randbytes(rng.randint(0, 14))
        try:
            packet, _ = parse_packet(raw_packet(packet_type, payload))
        except BitstreamError:
            continue
        assert bytes(packet) == raw_packet(packet_type, payload)  # canonical: exact bytes

    for _ in range(500):
        try:
            StreamHeader.parse(raw_header(rng.randbytes(rng.randint(0, 60))))
        except BitstreamError:
            pass


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^not a keyface stream \(empty input\)$"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"^not a keyface stream \(magic b'\\x89PNG'\)$"),
        (b"RIFF\x24\x00\x00\x00WAVE", r"^not a keyface stream \(magic b'RIFF'\)$"),
        (b"KFAC", r"^truncated stream header at byte 0 \(ends after 4 bytes, before the version"),
        (b"KFAC\x07\x00", r"^unsupported keyface stream version 7 \(this build reads 1 and 2\)$"),
        (
            b"KFAC\x01",
            r"^truncated stream header at byte 0 \(ends after 5 bytes, inside header_len",
        ),
        (b"KFAC\x01\x40", r"^truncated stream header at byte 0 \(needs 74 bytes, got 6\)$"),
    ],
    ids=["empty", "png", "wav", "magic-only", "version-7", "no-length", "no-body"],
)
def test_foreign_and_broken_files_give_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(BitstreamError, match=message):
        read_stream(data)


def test_error_messages_name_the_packet_and_its_offset() -> None:
    data = bytearray(golden_bytes())
    keyframe_at = len(bytes(make_header())) + len(bytes(golden_packets()[0]))
    data[keyframe_at + 5] ^= 0x20
    error = read_stream(bytes(data)).error
    assert error is not None
    assert str(error).startswith(f"CRC mismatch in KEYFRAME packet at byte {keyframe_at} (")
    assert error.offset == keyframe_at
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (raw_packet(0x01, b"\x00\x65jpeg"), "KEYFRAME packet at byte 0: quality must be in 0..100"),
        (
            raw_packet(0x01, b"\x00"),
            "KEYFRAME packet at byte 0: payload too short for field quality",
        ),
        (raw_packet(0x02, b"\x05\x00\x00"), "MOTION packet at byte 0: n_frames must be in 1.."),
        (
            raw_packet(0x02, b"\x05\x01\x02"),
            "MOTION packet at byte 0: flags 0x02 sets bits reserved",
        ),
        (
            raw_packet(0x03, b"\x80\x00"),
            "BACKGROUND packet at byte 0: frame_index: non-minimal varint",
        ),
        (raw_packet(0x04, b"\x01\x00"), "REFRESH_REQUEST packet at byte 0: 1 unexpected trailing"),
        (raw_packet(0x7F, b""), "END packet at byte 0: payload too short for field frame_count"),
        (b"\x01\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "payload_len: varint longer than 10"),
        (b"\x02\x80\x80\x80\x80\x10", "MOTION packet at byte 0: declared payload_len 4294967296"),
        (
            b"\x42\x03ab",
            r"truncated packet of unknown type 0x42 at byte 0 \(needs 9 bytes, got 4\)",
        ),
        (
            b"\x01\x80",
            r"truncated KEYFRAME packet at byte 0 \(ends after 2 bytes, inside payload_len",
        ),
        (b"", "expected a packet at byte 0, found end of data"),
    ],
)
def test_parse_packet_errors(packet: bytes, message: str) -> None:
    with pytest.raises(BitstreamError, match=message):
        parse_packet(packet)


# Byte offsets inside make_header().encode_fields(): width u16, height u16, then three
# varints (fps 30000/1001 and frame_count 3), then flags and the crop geometry.
FLAGS_AT = 2 + 2 + len(encode_varint(30000)) + len(encode_varint(1001)) + len(encode_varint(3))
CROP_SIDE_AT = FLAGS_AT + 1 + 2 + 2 + 4 + 4


def _replace(body: bytes, at: int, new: bytes) -> bytes:
    return body[:at] + new + body[at + len(new) :]


@pytest.mark.parametrize(
    ("body_change", "message"),
    [
        (lambda b: _replace(b, FLAGS_AT, b"\x0f"), r"^header: flags 0x0f sets bits reserved in v1"),
        (
            lambda b: _replace(b, CROP_SIDE_AT, struct.pack("<f", -1.0)),
            r"^header: crop side must be > 0",
        ),
        (
            lambda b: _replace(b, CROP_SIDE_AT, struct.pack("<f", float("nan"))),
            r"^header: crop side must be finite",
        ),
        (lambda b: b[:-9], r"^header: too short for field refresh_threshold$"),
    ],
    ids=["flags", "crop-side", "crop-nan", "short"],
)
def test_header_field_errors_behind_a_valid_crc(body_change, message: str) -> None:
    body = make_header().encode_fields()
    assert body[FLAGS_AT] == 0x03  # cropped + has_background
    with pytest.raises(BitstreamError, match=message):
        StreamHeader.parse(raw_header(body_change(body)))


def test_header_crc_mismatch() -> None:
    data = bytearray(bytes(make_header()))
    data[10] ^= 0x01
    with pytest.raises(BitstreamError, match=r"^CRC mismatch in stream header at byte 0 \("):
        StreamHeader.parse(bytes(data))


def test_oversized_header_length_is_an_error_not_an_allocation() -> None:
    with pytest.raises(BitstreamError, match="declared header_len 4294967296 exceeds"):
        read_stream(b"KFAC\x01" + encode_varint(2**32))


# ----------------------------------------------------------------------------- 6. validation


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 0}, "width must be in 1..65535, got 0"),
        ({"height": 70000}, "height must be in 1..65535"),
        ({"fps_den": 0}, "fps_den must be in 1..2\\*\\*64-1"),
        ({"buffer_size": 6}, "buffer_size must be in 1..5, got 6"),
        ({"refresh_mode": 3}, "refresh_mode must be 0 \\(psnr\\), 1 \\(motion\\) or 2"),
        ({"motion_name": "é"}, "motion_name must be printable ASCII"),
        ({"generator": "x" * 256}, "generator is 256 characters long"),
        ({"refresh_threshold": float("nan")}, "refresh_threshold must be finite"),
        ({"refresh_threshold": 1e39}, "refresh_threshold is out of float32 range"),
        ({"quant_level": 1.5}, "quant_level must be an integer, got float"),
        ({"crop": (1, 2, 3)}, "crop must be a CropGeometry or None"),
        ({"extension": "text"}, "extension must be bytes"),
    ],
)
def test_header_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BitstreamError, match=f"^header: {message}"):
        make_header(**changes)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: KeyframePacket(0, 101, b""), "KEYFRAME packet: quality must be in 0..100"),
        (lambda: KeyframePacket(-1, 50, b""), "frame_index must be in 0..2\\*\\*64-1, got -1"),
        (lambda: KeyframePacket(0, 50, "text"), "data must be bytes"),
        (lambda: MotionPacket(0, 0, False, b""), "MOTION packet: n_frames must be in 1.."),
        (lambda: MotionPacket(2**64 - 1, 2, False, b""), "first_frame \\+ n_frames exceeds"),
        (lambda: MotionPacket(0, 1, 2, b""), "reset must be a bool"),
        (lambda: CropGeometry(0, 480, 1.0, 1.0, 1.0), "header: crop source_width must be in"),
        (lambda: CropGeometry(640, 480, 1.0, 1.0, 0.0), "header: crop side must be > 0"),
        (lambda: UnknownPacket(0x01, b""), "type 0x01 is the known type KEYFRAME"),
        (lambda: UnknownPacket(256, b""), "type must be in 0..255"),
    ],
)
def test_packet_validation(make, message: str) -> None:
    with pytest.raises(BitstreamError, match=message):
        make()


def test_bitstream_error_is_a_value_error_with_an_offset() -> None:
    with pytest.raises(ValueError) as info:
        read_stream(b"RIFF")
    assert isinstance(info.value, BitstreamError)
    assert info.value.offset == 0


def test_write_stream_enforces_stream_rules() -> None:
    with pytest.raises(BitstreamError, match="packet #1 \\(KEYFRAME packet\\) follows the END"):
        write_stream(make_header(), [EndPacket(3), KeyframePacket(3, 90, b"")])
    with pytest.raises(BitstreamError, match="BACKGROUND packet in a stream whose header has"):
        write_stream(make_header(has_background=False), [BackgroundPacket(0, b"")])
    with pytest.raises(BitstreamError, match="END frame_count 4 disagrees with the header's"):
        write_stream(make_header(frame_count=3), [EndPacket(4)])
    with pytest.raises(TypeError, match="packet #0 is a bytes"):
        write_stream(make_header(), [b"\x01"])  # type: ignore[list-item]
    # A live stream's header does not know the frame count; END supplies it.
    assert read_stream(write_stream(make_header(frame_count=0), [EndPacket(99)])).complete


def test_reader_enforces_stream_rules() -> None:
    header = make_header(has_background=False)
    background = read_stream(bytes(header) + bytes(BackgroundPacket(0, b"")))
    assert "has_background = 0" in str(background.error)
    assert background.packets == []

    after_end = read_stream(bytes(header) + bytes(EndPacket(3)) + bytes(EndPacket(3)))
    assert after_end.complete  # the stream itself was whole ...
    assert str(after_end.error).startswith("unexpected data after the END packet at byte")


def test_bitstream_imports_nothing_heavy() -> None:
    """The container must stay importable without torch, numpy or other keyface modules (the
    package's thread policy, pure standard library, is the one keyface module it brings)."""
    code = textwrap.dedent(
        """
        import sys
        import keyface.bitstream
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "numpy")
               or (m.startswith("keyface.")
                   and not m.startswith(("keyface.bitstream", "keyface.threads")))]
        assert not bad, bad
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
