"""The browser decoder (``src/keyface/server/static/decoder``, docs/browser.md) against the
Python reference, run by node.

Every check feeds the same bytes to both and compares the results exactly: parsed headers,
packets and datagrams of every type and the error (message and offset) of truncated and
corrupt input (the container's and the datagrams' bounds checks); the decoded motion symbols
(quantised parameters and reference indices: bit-exact range decoding) and the keypoints
(float tolerance) and body-field grids of golden carphone streams (``tests/data/fuzz``: HEVC,
VVC, hybrid and bidirectional, live datagram sequences) and of synthetic streams at every
quantiser level, whole and damaged. The Python side is ``keyface.bitstream``,
``keyface.server.datagram``, ``keyface.entropy.decode_frames`` and ``keyface.codec.DecoderCore``
(with a renderer stub that records the body field it is handed).

The JS side is ``tests/js/decoder_harness.mjs``. Without node (``KEYFACE_NODE`` or ``node`` on
``PATH``) the node tests skip, saying so; ``.ci/run`` installs node (scripts/install_node.sh).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keyface import bitstream as bs
from keyface.bitstream import (
    AuxInfo,
    AuxPacket,
    BackgroundPacket,
    BitstreamError,
    CropGeometry,
    DetailPacket,
    EndPacket,
    KeyframePacket,
    MotionPacket,
    RefreshMode,
    RefreshRequestPacket,
    StreamHeader,
    StreamMode,
    StreamReader,
    UnknownPacket,
    encode_varint,
    parse_packet,
    read_stream,
    write_stream,
)
from keyface.codec import DecoderCore
from keyface.entropy import (
    CodedFrame,
    MotionCoderState,
    MotionCodingError,
    decode_frames,
    encode_frames,
)
from keyface.fuzzing import RawStream, mutate_datagrams, mutate_stream, split_datagrams
from keyface.motion import get_representation
from keyface.motion.web_export import web_model_dir, web_model_files
from keyface.render.warp import Reference
from keyface.server.datagram import (
    Ack,
    DatagramError,
    ParsedDatagram,
    RedundantMotion,
    encode_ack_datagram,
    encode_aux_refresh_datagram,
    encode_feedback_datagram,
    encode_frame_datagram,
    encode_header_datagram,
    parse_datagram,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "fuzz"
HARNESS = ROOT / "tests" / "js" / "decoder_harness.mjs"
STREAMS = (
    "carphone12_hevc.kf",
    "carphone12_vvc.kf",
    "carphone12_hybrid.kf",
    "carphone12_bidirectional.kf",
)
LIVE = ("live12.dgrams", "live12_acked.dgrams")
KEYPOINT_TOL = 2e-3
"""Pixels: both sides round to float32 (about 3e-5 px at 256), the sums differ in order."""


def find_node() -> str | None:
    env = os.environ.get("KEYFACE_NODE")
    if env:
        return env if os.path.exists(env) else None
    return shutil.which("node") or shutil.which("nodejs")


NODE = find_node()
needs_node = pytest.mark.skipif(
    NODE is None,
    reason="node not found (apt-get install nodejs, or set KEYFACE_NODE): the JS decoder "
    "tests run the browser decoder's modules in node",
)


def run_js(tasks: list[dict[str, Any]]) -> list[Any]:
    job = {"models_dir": str(web_model_dir()), "tasks": tasks}
    assert NODE is not None
    proc = subprocess.run(
        [NODE, str(HARNESS)],
        input=json.dumps(job).encode(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    out = json.loads(proc.stdout)
    return out["results"]


# ----------------------------------------------------------------------------- canonical form


def canon(value: Any) -> Any:
    """The form the harness writes: snake_case fields, bytes as hex, big ints as strings."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 - 1 else str(value)
    if isinstance(value, float):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, StreamHeader):
        out = {f.name: canon(getattr(value, f.name)) for f in dataclasses.fields(value)}
        out["version"] = value.version
        out["mode"] = value.mode.name.lower()
        return out
    if isinstance(value, (bs.KeyframePacket, *bs.PACKET_TYPES.values(), UnknownPacket)):
        out = {"type": value.packet_type}
        out.update({f.name: canon(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return out
    if dataclasses.is_dataclass(value):
        return {f.name: canon(getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise TypeError(type(value))


def error_canon(exc: BitstreamError) -> dict[str, Any]:
    return {"error": str(exc), "offset": exc.offset}


def py_stream(data: bytes) -> Any:
    try:
        s = read_stream(data)
    except BitstreamError as exc:
        return error_canon(exc)
    return {
        "header": canon(s.header),
        "packets": canon(s.packets),
        "error": None if s.error is None else error_canon(s.error),
        "valid_bytes": s.valid_bytes,
        "complete": s.complete,
    }


def py_reader(data: bytes, chunks: list[int]) -> Any:
    reader = StreamReader()
    events: list[Any] = []
    pos = 0
    try:
        for size in [*chunks, len(data)]:
            reader.feed(data[pos : pos + size])
            pos = min(len(data), pos + size)
            for event in reader.events():
                events.append(
                    {"header": canon(event)} if isinstance(event, StreamHeader) else canon(event)
                )
            if pos >= len(data):
                break
        reader.close()
    except BitstreamError as exc:
        return {"events": events, "error": error_canon(exc)}
    return {"events": events, "error": None}


def py_packet(data: bytes, offset: int) -> Any:
    try:
        packet, after = parse_packet(data, offset)
    except BitstreamError as exc:
        return error_canon(exc)
    return {"packet": canon(packet), "next": after}


def datagram_canon(d: ParsedDatagram) -> Any:
    out = {f.name: canon(getattr(d, f.name)) for f in dataclasses.fields(d)}
    out["copies"] = [datagram_canon(c) for c in d.copies]
    return out


def py_datagram(data: bytes) -> Any:
    try:
        return datagram_canon(parse_datagram(data))
    except DatagramError as exc:
        return {"error": str(exc), "offset": None}


class RecordingRenderer:
    """A renderer stub: keeps the reference picture, records the field of each render."""

    name = "stub"

    def __init__(self) -> None:
        self.fields: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def prepare(self, image: np.ndarray, keypoints: np.ndarray) -> Reference:
        return Reference(image=image, keypoints=keypoints)

    def render(
        self, reference: Reference, keypoints: np.ndarray, field: np.ndarray | None = None
    ) -> np.ndarray:
        self.fields[id(keypoints)] = (keypoints, field)
        return reference.image


def _symbols(header: StreamHeader, packets: list[bs.Packet]) -> dict[int, CodedFrame]:
    """Each frame's decoded symbols, by ``keyface.entropy.decode_frames`` alone (a keyframe is
    a frame whose KEYFRAME packet came before its MOTION packet), up to the first MOTION
    packet that does not continue the frames."""
    rep = get_representation(header.motion_name).for_level(header.quant_level)
    state = MotionCoderState(rep.quant_level(header.quant_level), rep.statistics)
    keys: set[int] = set()
    out: dict[int, CodedFrame] = {}
    for p in packets:
        if isinstance(p, KeyframePacket):
            keys.add(p.frame_index)
        elif isinstance(p, MotionPacket):
            if p.first_frame != len(out) or p.n_frames > 64:
                break  # where DecoderCore stops too
            if p.reset:
                state.reset()
            try:
                coded = decode_frames(state, p.data, [i in keys for i in p.frames])
            except MotionCodingError:
                break
            out.update(zip(p.frames, coded, strict=True))
    return out


def _frame(
    frame: Any, symbols: dict[int, CodedFrame], renderer: RecordingRenderer
) -> dict[str, Any]:
    sym = symbols[frame.index]
    field = None
    if not frame.keyframe:
        field = renderer.fields[id(frame.keypoints)][1]
    return {
        "index": frame.index,
        "keyframe": frame.keyframe,
        "reference": sym.reference,
        "reference_frame": frame.reference_frame,
        "q": sym.q.tolist(),
        "keypoints": np.asarray(frame.keypoints, np.float64).reshape(-1).tolist(),
        "field": None if field is None else np.asarray(field).reshape(-1).tolist(),
    }


def py_decode(data: bytes) -> dict[str, Any]:
    """Frames and the first error, as a file decoder sees them (read_stream, DecoderCore)."""
    try:
        parsed = read_stream(data)
    except BitstreamError as exc:
        return {"frames": [], "error": str(exc)}
    renderer = RecordingRenderer()
    frames: list[dict[str, Any]] = []
    try:
        symbols = _symbols(parsed.header, parsed.packets)
    except Exception:
        symbols = {}
    try:
        decoder = DecoderCore(parsed.header, renderer=renderer)  # type: ignore[arg-type]
        for packet in parsed.packets:
            for frame in decoder.receive(packet):
                frames.append(_frame(frame, symbols, renderer))
    except BitstreamError as exc:
        return {"frames": frames, "error": str(exc)}
    return {"frames": frames, "error": None if parsed.error is None else str(parsed.error)}


def py_live(datagrams: list[tuple[str, bytes]]) -> dict[str, Any]:
    """A lossless, in-order live sequence decoded as keyface.server.receiver does it."""
    renderer = RecordingRenderer()
    frames: list[dict[str, Any]] = []
    decoder = None
    symbols: dict[int, CodedFrame] = {}
    try:
        for _, payload in datagrams:
            d = parse_datagram(payload)
            if d.header is not None:
                if decoder is None:
                    decoder = DecoderCore(d.header, renderer=renderer, keep_states=32)  # type: ignore[arg-type]
                continue
            if d.motion is None:
                continue
            assert decoder is not None
            if d.idr:
                decoder.resync(d.frame_index, clear_buffer=True)
            elif d.base is not None:
                decoder.continue_from(d.base, d.frame_index)
            if d.keyframe is not None:
                decoder.receive(d.keyframe)
            if d.aux is not None:
                decoder.receive(d.aux)
            # the symbols: decode_frames on a copy of the decoder's coder state
            state = copy.deepcopy(decoder.state)
            if d.motion.reset:
                state.reset()
            is_key = [d.keyframe is not None]
            coded = decode_frames(state, d.motion.data, is_key)
            symbols[d.frame_index] = coded[0]
            for frame in decoder.receive(d.motion):
                frames.append(_frame(frame, symbols, renderer))
    except (BitstreamError, DatagramError) as exc:
        return {"frames": frames, "error": str(exc)}
    return {"frames": frames, "error": None}


# ----------------------------------------------------------------------------- inputs


def _stream_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _header(**changes: Any) -> StreamHeader:
    fields: dict[str, Any] = dict(
        width=256, height=256, fps_num=30000, fps_den=1001, frame_count=0,
        crop=CropGeometry(source_width=640, source_height=480, cx=320.5, cy=-7.25, side=300.0),
        has_background=True, motion_name="facemesh-pca-field", motion_version=1,
        motion_digest=0xDEADBEEF, quant_level=4, intra_codec="hevc",
        refresh_mode=RefreshMode.MOTION, buffer_size=3, refresh_threshold=30.5,
        generator="warp",
    )  # fmt: skip
    fields.update(changes)
    return StreamHeader(**fields)


def synthetic_streams() -> list[bytes]:
    """Streams with every packet type, both versions, crop, extension, big varints."""
    every = [
        BackgroundPacket(frame_index=0, data=b"BG"),
        KeyframePacket(frame_index=0, quality=90, data=b"\xff\xd8KEY\xff\xd9"),
        DetailPacket(frame_index=0, x=10, y=20, width=30, height=40, quality=95, data=b"D"),
        MotionPacket(first_frame=0, n_frames=2, reset=True, data=b"\x12\x34\x56\x78"),
        RefreshRequestPacket(frame_index=2),
        UnknownPacket(type=0x42, payload=b"future"),
        UnknownPacket(type=0x00, payload=b""),
        MotionPacket(first_frame=2**64 - 2, n_frames=2, reset=False, data=b""),
        KeyframePacket(frame_index=2**53 + 1, quality=0, data=b""),
        EndPacket(frame_count=2),
    ]
    v2 = _header(
        crop=None, has_background=False, frame_count=2, promotes=True,
        aux=AuxInfo(mode=StreamMode.HYBRID, codec="x265", scale=4, qp=30, fusion="blend"),
    )  # fmt: skip
    bidir = _header(
        frame_count=2,
        aux=AuxInfo(mode=StreamMode.BIDIRECTIONAL, codec="none", scale=0, qp=0, fusion="x", gop=7),
        extension=b"\x00future\xff",
    )
    aux_packets = [
        AuxPacket(first_frame=0, pictures=(b"\x01\x02", b"", b"abc")),
        MotionPacket(first_frame=0, n_frames=2, reset=True, data=b""),
        EndPacket(frame_count=2),
    ]
    return [
        write_stream(_header(frame_count=2), every),
        write_stream(_header(frame_count=0, crop=None, has_background=False), every[1:4]),
        write_stream(v2, aux_packets),
        write_stream(bidir, aux_packets),
        bytes(_header()),
    ]


def raw_packet(packet_type: int, payload: bytes) -> bytes:
    from keyface.fuzzing import packet_record

    return packet_record(packet_type, payload)


def raw_header(body: bytes, version: int = 1) -> bytes:
    from keyface.fuzzing import header_record

    return header_record(body, version)


def crafted_damage() -> list[bytes]:
    """Inputs aimed at each check (valid CRCs around bad fields, bad framing)."""
    good = _header(frame_count=2)
    body = good.encode_fields()
    prefix = bytes(good)
    out = [
        b"", b"K", b"KFA", b"KFAC", b"KFAC\x01", b"RIFF\x00\x00", b"KFAC\x07\x00", b"\x00'\"\\\n",
        b"KFAC\x01\x80", b"KFAC\x01\x80\x00", b"KFAC\x01" + b"\xff" * 11,
        b"KFAC\x01\x80\x80\x80\x01",
        raw_header(body[:10]), raw_header(body, version=2), raw_header(b""),
        raw_header(body[:4] + b"\x00" + body[5:]),  # fps_num 0
        prefix + b"\x01\x80\x80\x80\x80\x10",  # payload_len 2**32
        prefix + b"\x02\x80\x00", prefix + b"\x02" + b"\xff" * 10 + b"\x02",
        prefix + raw_packet(1, b"\x00\x65"),  # quality 101
        prefix + raw_packet(1, b"\x80"),  # truncated varint
        prefix + raw_packet(2, b"\x00\x00\x00"),  # n_frames 0
        prefix + raw_packet(2, b"\x00\x01\x02"),  # reserved flag
        prefix + raw_packet(2, encode_varint(2**64 - 1) + b"\x02\x00"),  # sum > 2**64
        prefix + raw_packet(4, b"\x01\x02"),  # trailing byte
        prefix + raw_packet(5, b"\x00" + b"\x00" * 4 + b"\x00\x00\x01\x00\x05"),  # width 0
        prefix + raw_packet(5, b"\x00\x01"),
        prefix + raw_packet(6, b"\x00\x00"),  # AUX n = 0
        prefix + raw_packet(6, b"\x00\x05\x01\x00"),  # n larger than payload
        prefix + raw_packet(6, b"\x00\x01\x05ab"),  # picture too short
        prefix + raw_packet(6, b"\x00\x01\x00\x00"),  # trailing
        prefix + raw_packet(0x7F, b"\x03"),  # END disagrees with frame_count
        prefix + raw_packet(0x7F, b"\x02") + b"\x00",  # data after END
        prefix + raw_packet(0x7F, b""),
        bytes(_header(has_background=False)) + raw_packet(3, b"\x00bg"),
    ]  # fmt: skip
    # header field checks behind a valid CRC
    crop_at = 2 + 2 + len(encode_varint(30000)) + len(encode_varint(1001)) + 1 + 1
    for change in (
        lambda b: b[:4] + b"\x00" + b[5:],
        lambda b: b[: crop_at - 1] + b"\xff" + b[crop_at:],  # reserved flags
        lambda b: b[:crop_at] + b"\x00\x00" + b[crop_at + 2 :],  # source width 0
        lambda b: b[: crop_at + 12] + b"\x00\x00\x80\xbf" + b[crop_at + 16 :],  # side -1
        lambda b: b[: crop_at + 4] + b"\x00\x00\xc0\x7f" + b[crop_at + 8 :],  # cx nan
        lambda b: b[: crop_at + 8] + b"\x00\x00\x80\xff" + b[crop_at + 12 :],  # cy -inf
        lambda b: b[: crop_at + 16] + b"\x04fo\x01m" + b[crop_at + 21 :],  # not printable
        lambda b: b[:-11] + b"\x07" + b[-10:],  # refresh mode 7
        lambda b: b[:-10] + b"\x00" + b[-9:],  # buffer size 0
        lambda b: b[:-9] + b"\x00\x00\x80\x7f" + b[-5:],  # threshold inf
        lambda b: b[:-1],
    ):
        out.append(raw_header(change(body)))
    v2 = _header(aux=AuxInfo(mode=StreamMode.HYBRID, codec="x265", scale=4, qp=30, fusion="f"))
    vb = v2.encode_fields()
    aux_at = len(vb) - len(v2.aux.encode())  # type: ignore[union-attr]
    for aux in (b"\x03\x00", b"\x01\x05", b"\x02\x02", b"\x02\x1f"):
        out.append(raw_header(vb[:aux_at] + aux + vb[aux_at + 2 :], version=2))
    for tail in (b"\x04none\x04", b"\x04x265\x03", b"\x04x265\x04\x34"):
        out.append(raw_header(vb[: aux_at + 2] + tail + vb[aux_at + 2 + len(tail) :], version=2))
    out.append(raw_header(body[:7] + b"\x0b" + body[8:], version=1))
    out.append(raw_header(body, version=2))
    return out


def datagram_inputs() -> list[bytes]:
    header = _header(frame_count=0, has_background=False)
    motion = MotionPacket(first_frame=5, n_frames=1, reset=False, data=b"\x01\x02\x03\x04")
    reset = MotionPacket(first_frame=5, n_frames=1, reset=True, data=b"")
    key = KeyframePacket(frame_index=5, quality=50, data=b"kf")
    aux = AuxPacket(first_frame=5, pictures=(b"ax",))
    prev = [MotionPacket(first_frame=i, n_frames=1, reset=False, data=b"\x00" * 4) for i in (3, 4)]
    good = [
        encode_header_datagram(header),
        encode_frame_datagram(5, 2, False, [motion]),
        encode_frame_datagram(5, 0, True, [key, reset]),
        encode_frame_datagram(5, 0, False, [key, aux, motion]),
        encode_frame_datagram(5, 1, False, [aux, motion], base_back=3, keys=2),
        encode_frame_datagram(5, 1, False, [reset], base_back=0),
        encode_frame_datagram(
            5,
            1,
            False,
            [motion],
            base_back=1,
            keys=3,
            copies=tuple(RedundantMotion(1, 1, 3, m) for m in prev),
        ),
        encode_feedback_datagram(RefreshRequestPacket(frame_index=7)),
        encode_ack_datagram(Ack(newest=9, held=0x80000001)),
        encode_aux_refresh_datagram(11),
    ]
    bad = [
        b"", b"\x00", b"\xc2", b"\x4f", b"\x49", b"\x62\x05\x00", b"\x41" + bytes(header)[:-1],
        b"\x41" + bytes(header) + b"\x00", b"\x43", b"\x43" + bytes(motion),
        b"\x44\x09\x00\x00\x00", b"\x44\x80", b"\x45\x01\x00", b"\x42\x05\x00",
        encode_frame_datagram(5, 0, False, [aux]),
        encode_frame_datagram(5, 0, False, [key, key, motion]),
        encode_frame_datagram(6, 0, False, [motion]), encode_frame_datagram(5, 6, False, [motion]),
        encode_frame_datagram(5, 1, False, [key, motion]),
        encode_frame_datagram(5, 1, True, [motion]),
        encode_frame_datagram(5, 1, False, [motion], base_back=0),
        encode_frame_datagram(5, 1, False, [motion], base_back=6),
        encode_frame_datagram(5, 1, False, [AuxPacket(first_frame=5, pictures=(b"", b"")), motion]),
        encode_frame_datagram(5, 1, False, [MotionPacket(5, 2, False, b"")]),
        b"\x72\x05\x01\x01\x01\x03" + bytes(motion),  # 3 copies
        b"\x72\x05\x01\x01\x01\x01\x01\x01\x01" + bytes(motion) + bytes(motion),  # copy of frame 5
    ]  # fmt: skip
    blob = [payload for _, payload in split_datagrams((DATA / LIVE[1]).read_bytes())]
    return good + bad + blob


def motion_mutations(rng: random.Random, data: bytes, n: int) -> list[bytes]:
    """Damage that leaves the intra pictures alone (the JS decoder does not decode them):
    motion words, MOTION index varints and flags, packets dropped, duplicated, moved."""
    out = []
    for _ in range(n):
        raw = RawStream.split(data)
        assert raw is not None
        motions = [i for i, (t, _) in enumerate(raw.packets) if t == MotionPacket.TYPE]
        i = rng.choice(motions)
        t, payload = raw.packets[i]
        packet = MotionPacket.parse_payload(payload)
        head = len(payload) - len(packet.data)
        words = bytearray(packet.data)
        choice = rng.randrange(7)
        if choice <= 2 and words:  # flip bytes or set a word
            for _ in range(rng.randint(1, 3)):
                k = rng.randrange(len(words))
                words[k] = rng.randrange(256) if choice else words[k] ^ (1 << rng.randrange(8))
            payload = payload[:head] + bytes(words)
        elif choice == 3:  # cut or extend the words
            cut = rng.randrange(len(words) + 1)
            extra = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 4, 8))))
            payload = payload[:head] + bytes(words[:cut]) + extra
        elif choice == 4:  # toggle the reset flag
            payload = payload[: head - 1] + bytes([payload[head - 1] ^ 1]) + payload[head:]
        elif choice == 5:  # first_frame / n_frames
            from keyface.fuzzing import INTERESTING_INTS, _replace_varint

            value = rng.choice([*INTERESTING_INTS, 0, 1, 2, 3, 12])
            payload = _replace_varint(payload, rng.randrange(2), value)
        else:  # drop, duplicate or move a packet
            pk = raw.packets
            j = rng.randrange(len(pk) - 1)
            what = rng.randrange(3)
            if what == 0:
                del pk[j]
            elif what == 1:
                pk.insert(rng.randrange(len(pk)), pk[j])
            else:
                pk.insert(rng.randrange(len(pk) - 1), pk.pop(j))
            out.append(raw.join())
            continue
        raw.packets[i] = (t, payload)
        out.append(raw.join())
    return out


def synthetic_motion_stream(rng: np.random.Generator, name: str, level: int, n: int) -> bytes:
    """A stream of real 256x256 HEVC keyframes (from the carphone stream) and random motion
    at quantiser ``level``: small and large residuals, reference indices, resets."""
    carphone = read_stream(_stream_bytes(STREAMS[0]))
    keyframe_data = next(p.data for p in carphone.packets if isinstance(p, KeyframePacket))
    rep = get_representation(name).for_level(level)
    header = dataclasses.replace(
        carphone.header, motion_name=name, quant_level=level, frame_count=n, buffer_size=3
    )
    state = MotionCoderState(rep.quant_level(level), rep.statistics)
    neutral = state.quantize(rep.neutral())
    packets: list[bs.Packet] = []
    held = 0
    q = neutral.copy()
    first = 0
    while first < n:
        count = int(rng.integers(1, min(16, n - first) + 1))
        reset = first == 0 or rng.random() < 0.3
        if reset:
            state.reset()
        frames = []
        for i in range(first, first + count):
            key = i == 0 or rng.random() < 0.15
            spread = rng.choice([0.3, 1.5, 6.0])
            q = np.clip(
                neutral + np.round(rng.laplace(0, spread, len(q))).astype(np.int64),
                state.q_min, state.q_max,
            )  # fmt: skip
            if rng.random() < 0.01:
                q[rng.integers(len(q))] = rng.choice([state.q_min.min(), state.q_max.max()])
                q = np.clip(q, state.q_min, state.q_max)
            if key:
                packets.append(KeyframePacket(frame_index=i, quality=80, data=keyframe_data))
                held = min(held + 1, 3)
                frames.append(CodedFrame(q=q.copy(), reference=None))
            else:
                frames.append(CodedFrame(q=q.copy(), reference=int(rng.integers(0, held))))
        packets.append(MotionPacket(first, count, reset, encode_frames(state, frames)))
        first += count
    packets.append(EndPacket(frame_count=n))
    return write_stream(header, packets)


def crafted_motion_streams() -> list[bytes]:
    """Motion aimed at each decoder check: data the range coder refuses, a reference the
    buffer does not hold, a face pushed out of the picture or shrunk to a point."""
    carphone = read_stream(_stream_bytes(STREAMS[0]))
    keyframe = next(p for p in carphone.packets if isinstance(p, KeyframePacket))
    header = dataclasses.replace(carphone.header, frame_count=3, buffer_size=2)
    rep = get_representation(header.motion_name).for_level(header.quant_level)
    level = rep.quant_level(header.quant_level)

    def stream(change: Any, reference: int = 0, data: bytes | None = None) -> bytes:
        state = MotionCoderState(level, rep.statistics)
        q = state.quantize(rep.neutral())
        moved = q.copy()
        change(moved, state)
        frames = [CodedFrame(q=q, reference=None), CodedFrame(q=moved, reference=reference),
                  CodedFrame(q=q, reference=0)]  # fmt: skip
        payload = encode_frames(state, frames) if data is None else data
        packets = [keyframe, MotionPacket(0, 3, True, payload), EndPacket(frame_count=3)]
        return write_stream(header, packets)

    def nothing(q: np.ndarray, state: MotionCoderState) -> None:
        pass

    def far(q: np.ndarray, state: MotionCoderState) -> None:
        q[3] = state.q_max[3]

    def tiny(q: np.ndarray, state: MotionCoderState) -> None:
        q[5] = state.q_min[5]

    return [
        stream(nothing),
        stream(nothing, reference=1),
        stream(far),
        stream(tiny),
        stream(nothing, data=b"\xff" * 8),
        stream(nothing, data=b"\xff\xff\xff\xff\x00\x00\x00\x01"),
        stream(nothing, data=b""),
    ]


# ----------------------------------------------------------------------------- tests


def test_web_model_is_up_to_date() -> None:
    """The shipped browser model equals what keyface.motion.web_export writes today
    (``python -m keyface.motion.web_export`` regenerates it)."""
    for name, data in web_model_files().items():
        shipped = (web_model_dir() / name).read_bytes()
        assert shipped == data, f"{name} is stale: run python -m keyface.motion.web_export"


def test_stretch_power_is_a_square_root_for_every_distance_a_stream_can_name() -> None:
    """The JS coder widens scales by Math.sqrt(distance) where Python computes
    ``float(distance) ** 0.5``: the same double for every base_back (1..32)."""
    assert all(float(k) ** 0.5 == math.sqrt(k) for k in range(1, 65))


@needs_node
def test_streams_parse_like_the_reference() -> None:
    inputs = [_stream_bytes(n) for n in STREAMS] + synthetic_streams() + crafted_damage()
    got = run_js([{"op": "stream", "data": d.hex()} for d in inputs])
    for data, result in zip(inputs, got, strict=True):
        assert result == py_stream(data), data[:64].hex()


@needs_node
def test_truncated_flipped_and_mutated_streams_fail_like_the_reference() -> None:
    rng = random.Random(16)
    small = synthetic_streams()[0]
    donors = [_stream_bytes(n) for n in STREAMS]
    inputs = [small[:k] for k in range(len(small) + 1)]
    inputs += [
        small[:k] + bytes([small[k] ^ (1 << rng.randrange(8))]) + small[k + 1 :]
        for k in range(len(small))
    ]
    for _ in range(400):
        inputs.append(mutate_stream(rng, rng.choice([*donors, small]), donors))
    inputs += [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(50)]
    got = run_js([{"op": "stream", "data": d.hex()} for d in inputs])
    for data, result in zip(inputs, got, strict=True):
        assert result == py_stream(data), data.hex()


@needs_node
def test_incremental_reader_and_parse_packet_agree_with_the_reference() -> None:
    rng = random.Random(7)
    tasks, expected = [], []
    for data in [_stream_bytes(STREAMS[3]), *synthetic_streams()[:3], *crafted_damage()[16:34]]:
        for chunking in ([1] * len(data), [rng.randrange(1, 40) for _ in range(len(data))], []):
            tasks.append({"op": "reader", "data": data.hex(), "chunks": chunking})
            expected.append(py_reader(data, chunking))
        for offset in sorted(
            {
                0,
                5,
                len(data) - 1,
                len(data),
                len(data) + 1,
                *[rng.randrange(len(data) + 1) for _ in range(8)],
            }
        ):
            tasks.append({"op": "packet", "data": data.hex(), "offset": offset})
            expected.append(py_packet(data, offset))
    got = run_js(tasks)
    for task, result, want in zip(tasks, got, expected, strict=True):
        assert result == want, task


@needs_node
def test_datagrams_parse_like_the_reference() -> None:
    rng = random.Random(3)
    inputs = datagram_inputs()
    for name in LIVE:
        blob = (DATA / name).read_bytes()
        inputs += [p for _, p in split_datagrams(blob)]
        for _ in range(150):
            inputs += [p for _, p in split_datagrams(mutate_datagrams(rng, blob))]
    inputs += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30))) for _ in range(100)]
    got = run_js([{"op": "datagram", "data": d.hex()} for d in inputs])
    kinds = set()
    for data, result in zip(inputs, got, strict=True):
        assert result == py_datagram(data), data.hex()
        kinds.add(result.get("kind"))
    assert {1, 2, 3, 4, 5} <= kinds


@needs_node
def test_golden_streams_decode_bit_exact_motion() -> None:
    """Symbols equal, keypoints and body fields within float tolerance, on the committed
    carphone streams (both representations' field part, hybrid and bidirectional order)."""
    inputs = [_stream_bytes(n) for n in STREAMS]
    rng = np.random.default_rng(16)
    for level in range(8):
        for name in ("facemesh-pca", "facemesh-pca-field"):
            inputs.append(synthetic_motion_stream(rng, name, level, 40))
    got = run_js([{"op": "decode", "data": d.hex()} for d in inputs])
    decoded = 0
    for data, result in zip(inputs, got, strict=True):
        assert_same_decode(result, py_decode(data))
        decoded += len(result["frames"])
    assert decoded >= 300


@needs_node
def test_damaged_motion_decodes_and_fails_like_the_reference() -> None:
    rng = random.Random(14)
    nrng = np.random.default_rng(14)
    bases = [_stream_bytes(n) for n in STREAMS[:2]]
    bases.append(synthetic_motion_stream(nrng, "facemesh-pca-field", 2, 40))
    inputs = []
    for base in bases:
        inputs += motion_mutations(rng, base, 60)
    inputs += crafted_motion_streams()
    got = run_js([{"op": "decode", "data": d.hex()} for d in inputs])
    errors = 0
    for data, result in zip(inputs, got, strict=True):
        want = py_decode(data)
        assert_same_decode(result, want)
        errors += want["error"] is not None
    assert errors > len(inputs) // 4  # the damage reaches the motion decoder's checks


@needs_node
def test_live_datagram_sequences_decode_bit_exact_motion() -> None:
    tasks, expected = [], []
    for name in LIVE:
        dgrams = split_datagrams((DATA / name).read_bytes())
        tasks.append({"op": "live", "datagrams": [[c, p.hex()] for c, p in dgrams]})
        expected.append(py_live(dgrams))
    got = run_js(tasks)
    for result, want in zip(got, expected, strict=True):
        assert len(want["frames"]) >= 12
        assert_same_decode(result, want)


def assert_same_decode(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["error"] == want["error"]
    assert [f["index"] for f in got["frames"]] == [f["index"] for f in want["frames"]]
    for g, w in zip(got["frames"], want["frames"], strict=True):
        for key in ("keyframe", "reference", "reference_frame", "q"):
            assert g[key] == w[key], (key, g["index"])
        np.testing.assert_allclose(g["keypoints"], w["keypoints"], atol=KEYPOINT_TOL, rtol=0)
        if w["field"] is None:
            assert g["field"] is None
        else:
            np.testing.assert_allclose(g["field"], w["field"], atol=1e-9, rtol=0)


def test_the_server_serves_the_decoder_modules_and_the_model() -> None:
    """``keyface serve`` hands the page the decoder's modules (as JavaScript) and the model
    files byte for byte, and nothing outside the decoder's folder."""
    import asyncio

    import aiohttp

    from keyface.server.conference import ServerConfig
    from keyface.server.http import start_server

    async def main() -> None:
        server = await start_server(ServerConfig(secret=b"s" * 32), port=0)
        try:
            async with aiohttp.ClientSession() as session:
                base = f"{server.url}/static/decoder/"
                async with session.get(base + "decoder.js") as r:
                    assert r.status == 200
                    assert "javascript" in r.content_type
                for name, data in web_model_files().items():
                    async with session.get(base + "models/" + name) as r:
                        assert r.status == 200 and await r.read() == data
                for bad in ("../http.py", "..%2Fhttp.py", "nothing.js"):
                    async with session.get(base + bad) as r:
                        assert r.status in (403, 404), bad
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 60))


@needs_node
def test_reader_fed_a_byte_at_a_time_keeps_up_on_a_long_stream() -> None:
    """The incremental reader drops consumed bytes (the stream is longer than its 64 KiB
    compaction threshold): one-byte feeds give the events and offsets of the reference."""
    data = synthetic_motion_stream(np.random.default_rng(5), "facemesh-pca-field", 2, 1000)
    assert len(data) > 65536
    chunks = [1] * len(data)
    (got,) = run_js([{"op": "reader", "data": data.hex(), "chunks": chunks}])
    assert got == py_reader(data, chunks)


@needs_node
def test_pictures_are_checked_before_the_browser_decodes_them() -> None:
    """AVIF keyframes: the boxes and the size the file declares (its ``ispe``) are checked
    against the decoder's limit before any decoding, with DecoderCore's messages."""
    from keyface.codec import limits
    from keyface.intra import IntraCodecError
    from keyface.intra.avif import AvifIntraCodec

    avif = AvifIntraCodec(speed=8)
    good = avif.encode(np.full((64, 48, 3), 90, np.uint8), 50)
    at = good.index(b"ispe") + 8
    huge = good[:at] + (65535).to_bytes(4, "big") * 2 + good[at + 8 :]
    inputs = [good, huge, good[:-1], good + b"\x00", good[:15], b"\x00" * 32, good[: at - 20]]
    tasks = [
        {"op": "picture", "data": d.hex(), "codec": "avif", "width": 48, "height": 64}
        for d in inputs
    ]
    tasks.append({"op": "picture", "data": good.hex(), "codec": "avif", "width": 8, "height": 8})
    got = run_js(tasks)
    for task, result in zip(tasks, got, strict=True):
        data = bytes.fromhex(task["data"])
        max_pixels = limits.intra_max_pixels((task["width"], task["height"]))
        try:
            avif.decode(data, max_pixels=max_pixels)
            want = None
        except IntraCodecError as exc:
            want = {"error": f"undecodable keyframe picture ({exc})", "offset": None}
        if want is None or "exceeds" in want["error"] or "corrupt avif data (t" in want["error"]:
            assert result == want, (task, result, want)
        else:  # Pillow's words for other damage are its own; the JS check refuses it too
            assert result is not None and result["error"].startswith("undecodable keyframe")
    refused = "avif picture of 65535x65535 exceeds the 28672-pixel limit)"
    assert got[1]["error"].endswith(refused), got[1]
