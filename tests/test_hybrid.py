"""The hybrid and bidirectional modes: the auxiliary stream, its packets and header section,
the group structure, the keyframe choice, and the fallback when aux pictures are lost.

Uses synthetic pictures for the aux codec and the carphone clip (40 frames) for the codec.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest

from keyface.auxstream import AuxDecoder, AuxEncoder, AuxError, pack_frame, unpack_frame
from keyface.bitstream import (
    AuxInfo,
    AuxPacket,
    BitstreamError,
    DetailPacket,
    KeyframePacket,
    MotionPacket,
    StreamHeader,
    StreamMode,
    parse_packet,
    read_stream,
)
from keyface.codec.config import CodecConfig
from keyface.codec.decoder import DecoderCore
from keyface.codec.encoder import EncoderCore, choose_keyframe
from keyface.fusion import DEFAULT_FUSION
from keyface.pipeline import decode_bytes, encode_analysis

BASE = CodecConfig(intra_codec="hevc", keyframe_quality=40, motion_chunk=8)


def moving_pictures(n: int = 12, size: int = 64) -> list[np.ndarray]:
    """A smooth picture drifting to the right: something a P-frame codec predicts well."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for k in range(n):
        r = 128 + 80 * np.sin((x - 2 * k) / 9.0) * np.cos(y / 13.0)
        g = 128 + 60 * np.cos((x + y - 2 * k) / 17.0)
        b = 128 + 40 * np.sin(y / 7.0)
        out.append(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))
    return out


# -- the aux codec ----------------------------------------------------------------------------
def test_aux_codec_round_trips_one_small_picture_per_frame() -> None:
    frames = moving_pictures(size=128)
    enc, dec = AuxEncoder(128, scale=4, qp=30), AuxDecoder(128, scale=4)
    coded = [enc.encode(f) for f in frames]
    assert all(coded), "low delay: every frame gives its picture at once"
    assert len(coded[0]) > 3 * max(len(c) for c in coded[1:]), "only the first is intra"
    for frame, data in zip(frames, coded, strict=True):
        small = dec.decode(data)
        assert small.shape == (32, 32, 3)
        reference = frame.reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
        assert np.abs(small.astype(float) - reference).mean() < 6


def test_packed_pictures_leave_out_the_p_slice_header_and_refuse_damage() -> None:
    annexb = b"\x00\x00\x00\x01\x02\x01\xaa\xbb" + b"\x00\x00\x01\x4e\x01\x05"  # P slice + SEI
    packed = pack_frame(annexb)
    assert packed == bytes([2 << 1 | 1]) + b"\xaa\xbb", "SEI dropped, slice header implied"
    assert unpack_frame(packed) == (b"\x00\x00\x00\x01\x02\x01\xaa\xbb", False)
    for bad in (b"", b"\x09\xaa", bytes([2 << 1]) + b"\x80\x01"):
        with pytest.raises(AuxError):
            unpack_frame(bad)


def test_a_decoder_that_lost_pictures_waits_for_a_refresh() -> None:
    frames = moving_pictures(size=64)
    enc = AuxEncoder(64, scale=2, qp=30)
    coded = [enc.encode(f) for f in frames[:6]]
    enc.refresh()
    coded += [enc.encode(f) for f in frames[6:]]
    assert unpack_frame(coded[6])[1], "a refresh is a random-access picture"
    dec = AuxDecoder(64, scale=2)
    assert not dec.synced
    dec.decode(coded[0])
    dec.reset()  # the caller saw a gap
    with pytest.raises(AuxError, match="waiting for a refresh"):
        dec.decode(coded[3])
    assert dec.decode(coded[6]).shape == (32, 32, 3) and dec.synced
    with pytest.raises(AuxError, match="32x32"):
        AuxDecoder(128, scale=2).decode(coded[6])  # another size than the stream's


# -- packets and header -----------------------------------------------------------------------
def test_aux_packet_round_trips_and_refuses_impossible_counts() -> None:
    packet = AuxPacket(first_frame=7, pictures=(b"abc", b"", b"\x00" * 300))
    parsed, end = parse_packet(bytes(packet))
    assert parsed == packet and end == len(bytes(packet)) and parsed.frames == range(7, 10)
    with pytest.raises(BitstreamError):
        AuxPacket.parse_payload(b"\x00\xff\xff\xff\x0f")  # 4 billion pictures in 5 bytes
    with pytest.raises(BitstreamError):
        AuxPacket.parse_payload(b"\x00\x02\x03ab")  # a picture cut short
    with pytest.raises(BitstreamError):
        AuxPacket(first_frame=0, pictures=())


def header(**fields) -> StreamHeader:
    base = dict(
        width=256,
        height=256,
        fps_num=30,
        fps_den=1,
        frame_count=10,
        crop=None,
        has_background=False,
        motion_name="m",
        motion_version=1,
        motion_digest=0,
        quant_level=2,
        intra_codec="hevc",
        refresh_mode=1,
        buffer_size=5,
        refresh_threshold=0.3,
        generator="warp",
    )
    return StreamHeader(**(base | fields))


def test_aux_section_makes_a_version_2_header_and_animation_stays_version_1() -> None:
    plain = header()
    assert bytes(plain)[4] == 1 and plain.mode == StreamMode.ANIMATION
    aux = AuxInfo(StreamMode.BIDIRECTIONAL, "x265", 4, 40, "band", gop=15)
    hybrid = header(aux=aux)
    data = bytes(hybrid)
    assert data[4] == 2
    parsed, _ = StreamHeader.parse(data)
    assert parsed == hybrid and parsed.delay_frames == 14
    # A v1 header may not set the aux flag: an old-format stream cannot smuggle one in.
    body = bytearray(hybrid.encode_fields())
    from keyface.bitstream._wire import crc32, encode_varint, u32

    v1 = b"KFAC\x01" + encode_varint(len(body)) + bytes(body) + u32(crc32(bytes(body)))
    with pytest.raises(BitstreamError, match="reserved in v1"):
        StreamHeader.parse(v1)
    with pytest.raises(BitstreamError, match="gop"):
        AuxInfo(StreamMode.BIDIRECTIONAL, "x265", 4, 40, "band", gop=3)
    with pytest.raises(BitstreamError, match="aux_scale"):
        AuxInfo(StreamMode.HYBRID, "x265", 3, 40, "band")


# -- the modes on a real clip -----------------------------------------------------------------
@pytest.fixture(scope="module")
def carphone_crops(carphone_analysis) -> list[np.ndarray]:
    return [image for _, image in carphone_analysis.frames()]


@pytest.fixture(scope="module")
def hybrid_stream(carphone_analysis):
    config = replace(BASE, mode="hybrid", aux_qp=36, detail_boost=20)  # DETAIL packets too
    return encode_analysis(carphone_analysis, config)


def test_hybrid_stream_carries_one_aux_picture_per_frame_before_its_motion(
    hybrid_stream, carphone_analysis
) -> None:
    parsed = read_stream(hybrid_stream.data)
    assert parsed.header.version == 2 and parsed.header.mode == StreamMode.HYBRID
    covered: list[int] = []
    for k, packet in enumerate(parsed.packets):
        if isinstance(packet, MotionPacket):
            previous = parsed.packets[k - 1]
            assert isinstance(previous, AuxPacket) and previous.frames == packet.frames
            covered += list(packet.frames)
    assert covered == list(range(carphone_analysis.frame_count))
    assert hybrid_stream.stats.aux_bytes > 0


def test_hybrid_decode_fuses_and_aux_only_shows_the_aux_stream(hybrid_stream) -> None:
    fused = decode_bytes(hybrid_stream.data)
    plain = decode_bytes(hybrid_stream.data, fusion=DEFAULT_FUSION)  # the header names it
    assert fused.error is None and fused.complete
    predicted = [f for f in fused.frames if not f.keyframe]
    assert predicted and all(f.aux is not None and f.aux.shape == (64, 64, 3) for f in predicted)
    assert all(
        np.array_equal(a.image, b.image) for a, b in zip(fused.frames, plain.frames, strict=True)
    )
    aux_only = decode_bytes(hybrid_stream.data, aux_only=True)
    assert aux_only.complete and len(aux_only.frames) == len(fused.frames)
    parsed = read_stream(hybrid_stream.data)
    assert any(isinstance(p, DetailPacket) for p in parsed.packets), "DETAIL packets too"
    decoder = DecoderCore(parsed.header, aux_only=True)
    decoder.intra = None  # --aux-only decodes no keyframe, DETAIL or background picture
    shown = [f for p in parsed.packets for f in decoder.receive(p)]
    assert len(shown) == len(fused.frames) and decoder.finished
    assert aux_only.frames[5].image.shape == (256, 256, 3)
    with pytest.raises(BitstreamError, match="unknown fusion"):
        decode_bytes(hybrid_stream.data, fusion="nope")


def test_truncated_hybrid_streams_keep_the_frames_before_the_damage(hybrid_stream) -> None:
    data = hybrid_stream.data
    full = decode_bytes(data)
    for cut in range(len(data) // 3, len(data), len(data) // 7):
        partial = decode_bytes(data[:cut])
        assert partial.error is not None and not partial.complete
        for a, b in zip(partial.frames, full.frames, strict=False):
            assert np.array_equal(a.image, b.image)


def test_bidirectional_groups_share_keyframes_and_agree_on_the_choice(carphone_analysis) -> None:
    gop = 8
    config = replace(BASE, mode="bidirectional", gop=gop, aux_qp=36)
    result = encode_analysis(carphone_analysis, config)
    parsed = read_stream(result.data)
    n = carphone_analysis.frame_count
    sent = [p.frame_index for p in parsed.packets if isinstance(p, KeyframePacket)]
    expected = list(range(0, n, gop - 1))
    if expected[-1] != n - 1:
        expected.append(n - 1)  # the last, shorter group ends with a keyframe too
    assert sent == expected, "group ends are keyframes, each sent once"
    assert parsed.header.delay_frames == gop - 1
    decisions = result.stats.decisions
    assert [d.index for d in decisions if d.keyframe] == expected
    # Every predicted frame comes from its own group's past or future keyframe ...
    for d in decisions:
        if not d.keyframe:
            past = max(k for k in expected if k < d.index)
            future = min(k for k in expected if k > d.index)
            assert d.reference_frame in (past, future)
    assert {d.reference for d in decisions if not d.keyframe} == {0, 1}, "both are used"
    # ... and the decoder, choosing by its own aux pictures, names the same one.
    decoded = decode_bytes(result.data)
    assert decoded.complete and [f.index for f in decoded.frames] == list(range(n))
    pictures = {f.index: f.image for f in decoded.frames if f.keyframe}
    for d, frame in zip(decisions, decoded.frames, strict=True):
        assert frame.reference_frame == d.reference_frame
        if not d.keyframe:
            future = min(k for k in expected if k > d.index)
            past = max(k for k in expected if k < d.index)
            choice = choose_keyframe([pictures[future], pictures[past]], frame.aux)
            assert [future, past][choice] == d.reference_frame


def test_a_lost_aux_packet_falls_back_to_animation_until_a_refresh(
    carphone_analysis, carphone_crops
) -> None:
    config = replace(BASE, mode="hybrid", aux_qp=36, motion_chunk=1)
    encoder = EncoderCore(config, carphone_analysis.fps, frame_count=len(carphone_crops))
    packets = []
    for k, (image, landmarks) in enumerate(
        zip(carphone_crops, carphone_analysis.landmarks, strict=True)
    ):
        if k == 20:
            encoder.refresh_aux()  # what a live sender does when the receiver asks
        packets += encoder.encode(image, landmarks)
    packets += encoder.flush()
    lost = next(p for p in packets if isinstance(p, AuxPacket) and p.first_frame == 10)
    decoder = DecoderCore(encoder.header, keep_states=4)  # a live receiver
    frames = []
    for packet in packets:
        if packet is not lost:
            frames += decoder.receive(packet)
            if 11 < len(frames) < 20:  # the gap shows at the next AUX packet
                assert not decoder.aux_synced
    assert len(frames) == len(carphone_crops), "no frame is lost or frozen"
    assert all(f.aux is None for f in frames[10:20]), "animation only while aux is lost"
    assert all(f.aux is not None for f in frames[20:]), "fused again after the refresh"
    # A file decoder refuses the gap instead.
    file_decoder = DecoderCore(encoder.header)
    with pytest.raises(BitstreamError, match="AUX packet starts at frame 11"):
        for packet in packets:
            if packet is not lost:
                file_decoder.receive(packet)


def test_bidirectional_groups_without_an_aux_stream(carphone_analysis) -> None:
    """``aux_scale=0``: the groups and the keyframe reuse as with one, each frame's keyframe
    chosen against the source and signalled; no AUX packet, nothing to fuse."""
    config = replace(BASE, mode="bidirectional", gop=8, aux_scale=0)
    result = encode_analysis(carphone_analysis, config)
    parsed = read_stream(result.data)
    assert parsed.header.version == 2 and not parsed.header.has_aux_stream
    assert not any(isinstance(p, AuxPacket) for p in parsed.packets)
    assert result.stats.aux_bytes == 0
    decoded = decode_bytes(result.data)
    assert decoded.complete
    for d, frame in zip(result.stats.decisions, decoded.frames, strict=True):
        assert frame.reference_frame == d.reference_frame and frame.aux is None
    with pytest.raises(BitstreamError, match="no auxiliary stream"):
        decode_bytes(result.data, aux_only=True)
    with pytest.raises(ValueError, match="hybrid mode needs an aux stream"):
        replace(BASE, mode="hybrid", aux_scale=0)


def test_a_switch_cost_keeps_a_group_from_flipping_between_its_keyframes() -> None:
    """``plan_references`` (``group_switch``): the frames of a group are assigned together,
    each change of keyframe costing the switch (the past keyframe before the group and the
    future one after it count). A lone frame that prefers the other keyframe by less than two
    switches stays; a long run that prefers it pays for the change once; a frame only one
    keyframe holds (the content rule) takes it whatever it costs; without a cost each frame
    takes its better keyframe."""
    from keyface.codec.encoder import plan_references

    past, future = 1, 0
    # scores[k] = [PSNR of the future keyframe, PSNR of the past one]
    lone = [[20, 21], [22, 21], [20, 23], [24, 20], [24, 20]]
    free: list[list[int]] = [[] for _ in lone]
    assert plan_references(lone, free, 0.0) == [past, future, past, future, future]
    assert plan_references(lone, free, 2.0) == [past, past, past, future, future]
    once = plan_references(lone, free, 100.0)
    assert once == [past, past, past, future, future], "one switch, at the best place"
    run = [[22, 21]] * 6 + [[21, 22]]
    plan = plan_references(run, [[] for _ in run], 2.0)
    assert plan == [future] * 7, "six frames pay for moving early; one does not pay to go back"
    forced = [[] for _ in lone]
    forced[1] = [future]
    assert plan_references(lone, forced, 100.0)[1] == future
    assert plan_references([], [], 3.0) == []


def test_the_encoder_follows_the_switch_cost_and_the_decoder_follows_the_stream(
    carphone_analysis,
) -> None:
    """A clip that jumps back and forth between two poses (carphone's frames 1 and 38) inside
    a group whose keyframes show one each: without a switch cost its frames flip between the
    keyframes; with an endless one they change once, from the past keyframe to the future one
    (that change is paid once wherever it falls), never back. The decoder draws each frame
    from the keyframe the stream names either way."""
    a = carphone_analysis
    assert a.crops is not None
    order = [0, 1, 38, 1, 38, 1, 38, 38, 1, 38, 1, 38, 1, 38, 38]
    jumpy = replace(a, landmarks=[a.landmarks[i] for i in order], crops=[a.crops[i] for i in order])

    def flips(cost: float) -> int:
        config = replace(BASE, mode="bidirectional", gop=8, aux_scale=0, group_switch=cost)
        result = encode_analysis(jumpy, config)
        ds = result.stats.decisions
        decoded = decode_bytes(result.data)
        assert [f.reference_frame for f in decoded.frames] == [d.reference_frame for d in ds]
        keys = [d.index for d in ds if d.keyframe]
        extra = 0
        for past, future in pairwise(keys):
            refs = [d.reference_frame for d in ds[past + 1 : future]]
            assert set(refs) <= {past, future}
            changes = sum(x != y for x, y in pairwise(refs))
            extra += max(0, changes - (refs[0] == past and refs[-1] == future))
        return extra

    assert flips(0.0) > 0
    assert flips(1000.0) == 0
    with pytest.raises(ValueError, match="group_switch"):
        replace(BASE, group_switch=-1.0)


def test_the_one_ladder_hands_over_from_the_animation_to_cut_groups() -> None:
    """``mode="auto"``: the animation ladder at the bottom, then bidirectional groups without
    an aux stream whose keyframes are one ``vvc-ld`` sequence and whose groups are cut where
    neither keyframe holds a frame's eyes or mouth, and whose frames change keyframe at a
    cost; along the groups the group length never grows and, at a fixed length, the keyframe
    QP never rises."""
    from keyface.codec.ratecontrol import (
        GROUP_LADDER,
        GROUPS_CUT,
        GROUPS_SWITCH,
        LADDER,
        U_MAX,
        config_at,
        groups_config_at,
    )
    from keyface.intra._base import quality_to_qp

    switch = LADDER[1][0]
    assert config_at(switch - 0.01, CodecConfig(mode="auto")).mode == "animation"
    previous: tuple[int, int] | None = None
    for u in np.linspace(switch, U_MAX, 45):
        config = config_at(float(u), CodecConfig(mode="auto"))
        assert config.mode == "bidirectional" and config.aux_scale == 0
        assert config.intra_codec == "vvc-ld" and config.group_cut == GROUPS_CUT
        assert config.group_switch == GROUPS_SWITCH > 0
        step = (config.gop, quality_to_qp(config.keyframe_quality))
        if previous is not None:
            assert step[0] <= previous[0]
            assert step[0] < previous[0] or step[1] <= previous[1]
        previous = step
    assert previous == (GROUP_LADDER[-1][1], round(GROUP_LADDER[-1][3]))
    first = groups_config_at(0.0, CodecConfig(mode="bidirectional"))
    assert (first.gop, quality_to_qp(first.keyframe_quality)) == GROUP_LADDER[0][1:3]


@pytest.mark.slow
def test_the_one_ladder_codes_more_bits_further_up(carphone_analysis) -> None:
    """Rate control bisects the one ladder, so its rate must grow along the groups' segment,
    across its changes of group length. At the switch from the animation it may dip a little
    on a clip whose motion makes the animation's keyframes come often (carphone: 11.8 ->
    11.3 kbit/s): the search keeps the best trial, so a small dip costs it nothing."""
    from keyface.codec.ratecontrol import GROUP_LADDER, LADDER, config_at

    switch = LADDER[1][0]
    knots = [switch + s[0] for s in GROUP_LADDER[1:]]
    us = sorted([switch, *(k - 0.01 for k in knots), *knots, 2.5])

    def rate(u: float) -> float:
        return encode_analysis(carphone_analysis, config_at(u, CodecConfig(mode="auto"))).kbps

    rates = [rate(u) for u in us]
    assert rates == sorted(rates), list(zip(us, rates, strict=True))
    assert rates[0] > 0.9 * rate(switch - 0.01)
