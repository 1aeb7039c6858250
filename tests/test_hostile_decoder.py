"""Hostile streams behind valid CRCs (issue 14, item 1): every decoder input is bounded before
it is used; damage is a one-line BitstreamError and the frames before it are kept.

One test per defect found by probing main as an attacker would (the stream is carphone coded
with HEVC keyframes; `tests/hostile.py` rewrites its packets with valid CRCs).
"""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hostile import crafted_motion, join, neutral_q, split

from keyface.bitstream import BitstreamError, CropGeometry, KeyframePacket, MotionPacket
from keyface.cli.main import main
from keyface.codec import limits
from keyface.codec.config import CodecConfig
from keyface.codec.decoder import DecoderCore
from keyface.intra import IntraCodecError, get_intra_codec
from keyface.pipeline import decode_bytes, encode_analysis
from keyface.render.warp import similarity_fit

BASE = CodecConfig(intra_codec="hevc", keyframe_quality=50, motion_chunk=8)

VVC_4096_HEX = (
    "101afbc608737b30c8ed4c0c0a8c0c83d0f5cc8c0c020c0d500f00000039c40103bca1ec1fde6043a1a27311"
    "b83fc00000030000030000030000030000030000030000030000030000030000030000030000030000030000"
    "0300000300000300000300000300000300000300000300000300000300000300000300000300000300000300"
    "0003000003000003000003000003000003000003000003000003000003000003000003000003000003000003"
    "0000030000030000030000030000030000030000030000030000030000030000030000030000030000030000"
    "0300000300000300000300000300000300000300000300000300000300000300000300000300000300000300"
    "0003000003000003027e"
)
"""A 4096x4096 grey VVC keyframe, 274 bytes, decoded to 1.4 GB by main: made with
`get_intra_codec("vvc").encode(np.zeros((4096, 4096, 3), np.uint8), 30)`."""


@pytest.fixture(scope="module")
def stream(carphone_analysis) -> bytes:
    return encode_analysis(carphone_analysis, BASE).data


def first_motion(packets: list) -> int:
    return next(i for i, p in enumerate(packets) if isinstance(p, MotionPacket))


def second_motion(packets: list) -> int:
    return [i for i, p in enumerate(packets) if isinstance(p, MotionPacket)][1]


def test_huge_n_frames_is_refused_without_allocating(stream: bytes) -> None:
    """The 911-byte file of the issue: a MOTION packet claiming 2**40 frames made main build a
    per-frame list before reading any data (4 GB in 22 s)."""
    header, packets = split(stream)
    k = first_motion(packets)
    bad = replace(packets[k], n_frames=1 << 40)
    data = join(replace(header, frame_count=0), [*packets[:k], bad])
    tracemalloc.start()
    result = decode_bytes(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.error is not None and "at most 64" in str(result.error)
    assert peak < 64 << 20, peak


def test_motion_past_the_header_frame_count_is_refused(stream: bytes) -> None:
    header, packets = split(stream)
    k = first_motion(packets)
    with pytest.raises(BitstreamError, match="the stream has 4 frames"):
        decoder = DecoderCore(replace(header, frame_count=4))
        for p in packets[: k + 1]:
            decoder.receive(p)


def test_oversized_keyframe_is_refused_before_it_is_decoded(stream: bytes) -> None:
    """A 274-byte VVC keyframe of 4096x4096 in a 256x256 stream (1.4 GB on main): the intra
    decoder is given the header's size and refuses before allocating."""
    header, _ = split(stream)
    decoder = DecoderCore(replace(header, intra_codec="vvc"))
    packet = KeyframePacket(frame_index=0, quality=30, data=bytes.fromhex(VVC_4096_HEX))
    with pytest.raises(BitstreamError, match="pixel limit"):
        decoder.receive(packet)


@pytest.mark.parametrize("name", ["hevc", "heif"])
def test_intra_decoders_refuse_pictures_above_max_pixels(name: str) -> None:
    codec = get_intra_codec(name)
    data = codec.encode(np.full((64, 96, 3), 128, np.uint8), 50)
    allowed = limits.intra_max_pixels((96, 64))
    assert codec.decode(data, max_pixels=allowed).shape == (64, 96, 3)
    with pytest.raises(IntraCodecError, match="pixel limit"):
        codec.decode(data, max_pixels=32 * 32)


def test_keyframe_of_another_size_is_refused(stream: bytes) -> None:
    header, _ = split(stream)
    small = get_intra_codec("hevc").encode(np.full((128, 128, 3), 90, np.uint8), 50)
    decoder = DecoderCore(header)
    with pytest.raises(BitstreamError, match="128x128, the stream header says 256x256"):
        decoder.receive(KeyframePacket(frame_index=0, quality=50, data=small))


def test_far_future_keyframes_are_refused(stream: bytes) -> None:
    """40 keyframes at far-future indices held 600 MB on main."""
    header, packets = split(stream)
    keyframe = next(p for p in packets if isinstance(p, KeyframePacket))
    decoder = DecoderCore(replace(header, frame_count=0))
    with pytest.raises(BitstreamError, match="more than 64 frames ahead"):
        decoder.receive(replace(keyframe, frame_index=10**9))
    decoder = DecoderCore(replace(header, frame_count=0))
    for i in range(limits.MAX_KEYFRAME_LEAD):  # one packet ahead is what encoders do
        decoder.receive(replace(keyframe, frame_index=i))
    with pytest.raises(BitstreamError, match="ahead"):
        decoder.receive(replace(keyframe, frame_index=limits.MAX_KEYFRAME_LEAD))
    with pytest.raises(BitstreamError, match="the stream has 40 frames"):
        DecoderCore(header).receive(replace(keyframe, frame_index=40))


def test_pictures_beyond_the_decoder_limits_are_refused(stream: bytes) -> None:
    header, _ = split(stream)
    with pytest.raises(BitstreamError, match="decoder's limits"):
        DecoderCore(replace(header, width=4096, height=4096))
    crop = CropGeometry(65535, 65535, 100.0, 100.0, 200.0)
    with pytest.raises(BitstreamError, match="background"):
        DecoderCore(replace(header, crop=crop, has_background=True))
    assert limits.memory_bound(header).total < 32 << 20


def test_encoder_cannot_write_packets_the_decoder_refuses() -> None:
    with pytest.raises(ValueError, match="motion_chunk"):
        CodecConfig(motion_chunk=limits.MAX_FRAMES_PER_PACKET + 1)


def _with_second_packet(stream: bytes, q_change) -> tuple[bytes, int]:
    """The stream with its second MOTION packet replaced by one frame whose parameters are
    q_change(neutral q); returns the bytes and the frames before it."""
    header, packets = split(stream)
    k = second_motion(packets)
    first = packets[k].first_frame
    q = q_change(neutral_q(header).copy())
    bad = crafted_motion(header, first, [q], [0])
    return join(header, [*packets[:k], bad]), first


CORRUPT_MOTION = {  # parameter index, value (parameter units), expected error
    "log scale far above the range (exp overflow on main)": (5, 1e4, "outside"),
    "log scale far below (zero division in the similarity fit)": (5, -1e4, "outside"),
    "expression coefficient out of range (NaN keypoints)": (6, 1e6, "outside"),
    "face moved 3000 px away (in range, but not a picture)": (3, 3000.0, "far outside"),
}


@pytest.mark.parametrize("what", list(CORRUPT_MOTION))
def test_corrupt_motion_behind_a_valid_crc_keeps_the_frames_before(
    stream: bytes, what: str
) -> None:
    d, value, message = CORRUPT_MOTION[what]
    steps = DecoderCore(split(stream)[0]).state.steps
    data, before = _with_second_packet(stream, lambda q: _set(q, d, round(value / steps[d])))
    full = decode_bytes(stream)
    result = decode_bytes(data)
    assert result.error is not None and message in str(result.error), (what, result.error)
    assert len(result.frames) == before > 0
    for a, b in zip(result.frames, full.frames, strict=False):
        np.testing.assert_array_equal(a.image, b.image)


def _set(q: np.ndarray, d: int, value: int) -> np.ndarray:
    q[d] = value
    return q


def test_decode_command_reports_corrupt_motion_in_one_line(
    stream: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On main: a traceback, exit 1 and no frames written."""
    data, before = _with_second_packet(stream, lambda q: _set(q, 5, 10**7))
    bad = tmp_path / "bad.kf"
    bad.write_bytes(data)
    out = tmp_path / "out.y4m"
    assert main(["decode", str(bad), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"kept the {before} frames" in err[0], err
    assert out.read_bytes().count(b"FRAME") == before


def test_keypoint_checks_and_degenerate_similarity() -> None:
    pts = np.zeros((478, 2), np.float32) + 100
    with pytest.raises(BitstreamError, match="below"):
        limits.check_keypoints(pts, 256, 256, 3)
    pts[0, 0] = np.nan
    with pytest.raises(BitstreamError, match="non-finite"):
        limits.check_keypoints(pts, 256, 256, 3)
    src = np.ones((10, 2))
    m = similarity_fit(src, src + 5)
    assert np.all(np.isfinite(m)) and np.allclose(m[:, 2], 5)


def test_tiny_faces_render_and_vanishing_ones_are_refused(stream: bytes) -> None:
    """The log scale at the bottom of its range shrinks the face below a pixel (the zero
    division in the similarity fit on main): refused; a face of a few pixels still renders."""
    header, packets = split(stream)
    k = second_motion(packets)
    first = packets[k].first_frame

    def decode_with(log_scale_q: int):
        decoder = DecoderCore(header)
        for p in packets[:k]:
            decoder.receive(p)
        q = neutral_q(header)
        q[5] = log_scale_q
        return decoder.receive(crafted_motion(header, first, [q], [0]))

    state = DecoderCore(header).state
    with pytest.raises(BitstreamError, match=r"below 1\.0 px"):
        decode_with(int(state.q_min[5]))
    small = round((header_log_scale(state) - 3.0) / state.steps[5])  # 1/20 of the size
    frames = decode_with(small)
    assert len(frames) == 1 and frames[0].image.shape == (256, 256, 3)
    assert np.all(np.isfinite(frames[0].keypoints))


def header_log_scale(state) -> float:
    """The neutral log scale (the middle of the allowed range) in parameter units."""
    return float((state.q_min[5] + state.q_max[5]) / 2 * state.steps[5])
