"""Loss on a live link with acknowledgements: the sender codes each frame from a frame the
server acknowledged, so a lost motion datagram costs only its own frame, and after losses a
frame carries a copy of the previous frame's motion, so a single loss costs nothing.

Each test runs the sans-I/O sender and a room on the carphone crops frame by frame, feeding the
server's feedback back to the sender; a second room receives everything and gives the lossless
pictures of the same datagrams to compare with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from keyface.bitstream import BitstreamError, MotionPacket, RefreshMode
from keyface.codec.config import CodecConfig
from keyface.entropy import MotionCoderState
from keyface.pipeline import cropped_frames
from keyface.server.datagram import (
    FLAG_BASED,
    FLAG_REDUNDANT,
    KIND_ACK,
    Ack,
    DatagramError,
    RedundantMotion,
    encode_ack_datagram,
    encode_frame_datagram,
    parse_datagram,
)
from keyface.server.lossmodel import GilbertElliott, Outage, RandomLoss, loss_model
from keyface.server.receiver import ParticipantDecoder, RenderedFrame
from keyface.server.session import Datagram, RoomSession, SenderSession, live_codec_config

FPS = 25.0


@pytest.fixture(scope="module")
def crops(carphone_analysis) -> list[np.ndarray]:
    a = carphone_analysis
    return [img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count)]


@dataclass
class Call:
    sender: SenderSession
    shown: list[RenderedFrame]
    lossless: dict[int, np.ndarray]
    datagrams: list[list[Datagram]] = field(default_factory=list)

    @property
    def stats(self):
        return self.room.participants["alice"].decoder.stats

    room: RoomSession = field(default_factory=lambda: RoomSession("lossy"))


def _call(
    analysis,
    crops: list[np.ndarray],
    drop: Callable[[int], bool],
    *,
    feedback: bool = True,
    redundancy: bool = True,
    drop_ack: Callable[[int], bool] = lambda i: False,
    drop_reliable: Callable[[int], bool] = lambda i: False,
    keyframes_at: tuple[int, ...] = (),
    config: CodecConfig | None = None,
) -> Call:
    """Frame ``i`` at ``i / FPS``; ``drop(i)``: its unreliable datagram is lost;
    ``drop_ack(i)``: the acknowledgement sent after it is lost; ``drop_reliable(i)``: its
    reliable FRAME datagram is lost; ``keyframes_at``: frames forced to be (non-IDR)
    keyframes."""
    sender = SenderSession(
        config or CodecConfig(size=analysis.size),
        analysis.fps,
        crop=analysis.crop,
        feedback=feedback,
        redundancy=redundancy,
    )
    call = Call(sender, [], {})
    call.room.join("alice", "send", now=0.0)
    clean = RoomSession("lossless")
    clean.join("alice", "send", now=0.0)
    landmarks_ = analysis.landmarks[: len(crops)]
    for i, (image, landmarks) in enumerate(zip(crops, landmarks_, strict=True)):
        now = i / FPS
        if i in keyframes_at:
            sender.encoder.force_keyframe()
        datagrams = sender.push_frame(image, landmarks, now)
        call.datagrams.append(datagrams)
        for d in datagrams:
            for f in clean.receive_datagram("alice", d.channel, d.payload, now):
                call.lossless[f.index] = f.image
            lost = drop(i) if d.channel == "unreliable" else drop_reliable(i)
            if lost and d is datagrams[-1]:
                continue
            call.shown += call.room.receive_datagram("alice", d.channel, d.payload, now)
        for _, fb in call.room.datagrams_to_send():
            if not (fb.channel == "unreliable" and drop_ack(i)):
                sender.receive_feedback(fb.payload, now)
        clean.datagrams_to_send()
    end = len(crops) / FPS + 1.0
    call.shown += call.room.tick(end)
    clean.tick(end)
    return call


def _check_pictures(call: Call) -> None:
    assert [f.index for f in call.shown] == list(range(len(call.datagrams)))
    for f in call.shown:
        if not f.concealed:  # every fresh picture is exactly the lossless one
            assert np.array_equal(f.image, call.lossless[f.index])


def _frame(datagrams: list[Datagram]):
    return parse_datagram(datagrams[-1].payload)


def _unreliable(call: Call, i: int) -> bool:
    return call.datagrams[i][-1].channel == "unreliable"


# ---------------------------------------------------------------------------- the sessions
def test_acknowledged_frames_make_a_loss_cost_only_its_frame(carphone_analysis, crops) -> None:
    dropped = {12, 20, 21, 30}
    call = _call(carphone_analysis, crops, lambda i: i in dropped, redundancy=False)
    assert all(_unreliable(call, i) for i in dropped)
    _check_pictures(call)
    assert {f.index for f in call.shown if f.concealed} == dropped
    assert call.stats.lost == len(dropped) and call.stats.refresh_requests == 0
    s = call.sender.stats
    assert s.acks > len(crops) // 2  # one per decoding step (frames behind a loss: one)
    # From the first acknowledgement on, frames continue from acknowledged ones, not resets.
    assert s.based >= len(crops) - 2 - s.keyframes and s.resets == s.keyframes
    assert s.losses_seen == len(dropped) and s.redundant == 0
    first = parse_datagram(call.datagrams[1][-1].payload)
    assert first.base_back == 1 and first.base == 0


def test_after_a_loss_the_next_datagram_carries_the_previous_motion(
    carphone_analysis, crops
) -> None:
    dropped = {12, 20, 21, 27}
    call = _call(carphone_analysis, crops, lambda i: i in dropped)
    assert all(_unreliable(call, i) for i in dropped | {28})
    _check_pictures(call)
    # 12: no loss seen yet, no copy. 20 and 21: the copy of 20 went down with 21; 22 carries
    # both again (21 continued from 20). 27: recovered from the copy in 28.
    assert {f.index for f in call.shown if f.concealed} == {12}
    assert call.stats.recovered == 3 and call.stats.lost == 1
    assert [c.frame_index for c in _frame(call.datagrams[22]).copies] == [20, 21]
    carried = _frame(call.datagrams[28])
    original = _frame(call.datagrams[27])
    assert len(carried.copies) == 1 and carried.base == 27
    assert carried.copies[0].motion == original.motion  # the packet as first sent
    assert carried.copies[0].base_back == original.base_back
    # Copies go only where the previous frame was not acknowledged in time: after the lost
    # ones, and while frames wait behind a loss in the receiver's reorder buffer (22 after 21).
    with_copy = [i for i, ds in enumerate(call.datagrams) if _frame(ds).copies]
    assert with_copy == [21, 22, 28]


def test_lost_acknowledgements_cost_bits_not_pictures(carphone_analysis, crops) -> None:
    call = _call(
        carphone_analysis,
        crops,
        lambda i: i in {5, 26},
        drop_ack=lambda i: i % 3 == 0,
    )
    assert _unreliable(call, 26) and _unreliable(call, 27)
    _check_pictures(call)
    assert {f.index for f in call.shown if f.concealed} == {5}  # 26 came back as a copy
    assert call.sender.stats.redundant > 1  # also after frames whose acknowledgement was lost


def test_without_acknowledgements_the_sender_writes_version_1_frames(
    carphone_analysis, crops
) -> None:
    call = _call(carphone_analysis, crops[:20], lambda i: i == 7, feedback=False)
    for ds in call.datagrams:
        assert ds[-1].payload[0] & (FLAG_BASED | FLAG_REDUNDANT) == 0
    assert call.sender.stats.acks > 0 and call.sender.stats.based == 0
    _check_pictures(call)
    # A loss is held until the next reset (every 10 frames): frames 7, 8, 9.
    assert [f.index for f in call.shown if f.concealed] == [7, 8, 9]


def test_a_keyframe_lost_with_every_frame_naming_it_is_noticed(carphone_analysis, crops) -> None:
    """Keyframe 10 and frames 11-13 are lost; keyframe 14 arrives. Its ``key_back`` is 0, so
    only the keyframe count shows that the sender's buffer holds a picture this receiver
    never had: it asks for an IDR instead of rendering later frames from the wrong one."""
    call = _call(
        carphone_analysis,
        crops[:26],
        lambda i: i in (11, 12, 13),
        drop_reliable=lambda i: i == 10,
        keyframes_at=(10, 14),
    )
    assert _frame(call.datagrams[14]).keys == 3 and not _frame(call.datagrams[14]).idr
    assert call.stats.lost_keyframes == 1 and call.stats.undecodable == 0
    assert call.stats.refresh_requests == 1 and call.sender.stats.idr_keyframes == 2
    idr = call.sender.encoder.last_idr
    held = [f.index for f in call.shown if f.concealed]
    assert held == list(range(10, idr))  # held until the IDR, nothing rendered from a wrong one
    _check_pictures(call)


# ------------------------------------------------------------------------------- datagrams
def _motion(frame: int, reset: bool = False) -> MotionPacket:
    return MotionPacket(first_frame=frame, n_frames=1, reset=reset, data=b"\x01\x02\x03\x04")


def test_frame_datagram_flags_round_trip() -> None:
    copy = RedundantMotion(key_back=4, base_back=2, keys=3, motion=_motion(9))
    d = parse_datagram(encode_frame_datagram(10, 5, False, [_motion(10)], 1, (copy,), keys=3))
    assert d.base_back == 1 and d.base == 9 and d.key_index == 5 and d.keys == 3
    [c] = d.copies
    assert c.frame_index == 9 and c.base == 7 and c.key_back == 4 and c.keys == 3
    older = RedundantMotion(key_back=3, base_back=1, keys=3, motion=_motion(8))
    two = parse_datagram(encode_frame_datagram(10, 5, False, [_motion(10)], 1, (older, copy)))
    assert [c.frame_index for c in two.copies] == [8, 9] and two.copies[0].base == 7
    plain = parse_datagram(encode_frame_datagram(10, 5, False, [_motion(10)]))
    assert plain.base_back is None and plain.base is None and plain.copies == ()
    assert plain.keys is None
    reset = parse_datagram(encode_frame_datagram(10, 5, False, [_motion(10, reset=True)], 0))
    assert reset.base_back == 0 and reset.base is None


@pytest.mark.parametrize(
    "payload",
    [
        encode_frame_datagram(10, 5, False, [_motion(10)], 0),  # base 0 without a reset
        encode_frame_datagram(10, 5, False, [_motion(10, reset=True)], 1),  # reset with a base
        encode_frame_datagram(10, 5, False, [_motion(10)], 11),  # before frame 0
        encode_frame_datagram(40, 5, False, [_motion(40)], 33),  # beyond MAX_BASE_BACK
        bytes([0x40 | FLAG_REDUNDANT | 2]) + b"\x0a\x05" + bytes(_motion(10)),  # copy, no base
        bytes([0x40 | FLAG_BASED | 4]) + b"\x01" + bytes(4),  # frame flags on an ACK
        bytes([0x40 | FLAG_BASED | FLAG_REDUNDANT | 2])
        + b"\x0a\x05\x01\x01\x00"
        + bytes(_motion(10)),  # zero copies
        encode_ack_datagram(Ack(3, 1))[:-1],  # short ACK
    ],
)
def test_malformed_based_datagrams_are_refused(payload: bytes) -> None:
    with pytest.raises(DatagramError):
        parse_datagram(payload)


def test_redundant_copy_must_be_the_previous_frame() -> None:
    with pytest.raises(ValueError):
        copy = RedundantMotion(0, 1, 1, _motion(8))
        encode_frame_datagram(10, 5, False, [_motion(10)], 1, (copy,))
    with pytest.raises(ValueError):
        copy = RedundantMotion(0, 1, 1, _motion(9))
        encode_frame_datagram(10, 5, False, [_motion(10)], None, (copy,))
    with pytest.raises(ValueError):
        three = tuple(RedundantMotion(0, 1, 1, _motion(f)) for f in (7, 8, 9))
        encode_frame_datagram(10, 5, False, [_motion(10)], 1, three)


def test_ack_lists_the_held_frames() -> None:
    d = parse_datagram(encode_ack_datagram(Ack(40, 0b101)))
    assert d.kind == KIND_ACK and d.ack is not None
    assert d.ack.frames() == [40, 39, 37]
    assert Ack(1, 0xFFFFFFFF).frames() == [1, 0]


def test_sender_refuses_acks_for_frames_never_sent(carphone_analysis, crops) -> None:
    a = carphone_analysis
    sender = SenderSession(CodecConfig(size=a.size), a.fps, crop=a.crop)
    sender.push_frame(crops[0], a.landmarks[0], 0.0)
    sender.receive_feedback(encode_ack_datagram(Ack(5)), 0.01)
    assert sender.stats.bad_feedback == 1 and not sender.acknowledged
    sender.receive_feedback(encode_ack_datagram(Ack(0)), 0.01)
    assert sender.acknowledged and sender.stats.acks == 1


# ------------------------------------------------------------------------ decoder and coder
def test_motion_state_snapshot_restores_the_coder(carphone_analysis) -> None:
    from keyface.entropy import CodedFrame, decode_frames, encode_frames
    from keyface.motion import get_representation

    rep = get_representation().for_level(2)
    state = MotionCoderState(rep.quant_level(2), rep.statistics)
    q = [state.quantize(rep.neutral() + 0.01 * k) for k in range(3)]
    encode_frames(state, [CodedFrame(q[0], None)])
    after_first = state.snapshot()
    second = encode_frames(state, [CodedFrame(q[1], 0)])
    state.restore(after_first)
    assert encode_frames(state, [CodedFrame(q[1], 0)]) == second  # same state, same bytes
    decoder = MotionCoderState(rep.quant_level(2), rep.statistics)
    decoder.restore(after_first)
    assert np.array_equal(decode_frames(decoder, second, [False])[0].q, q[1])


def test_decoder_continues_only_from_held_states(carphone_analysis, crops) -> None:
    from keyface.codec.decoder import DecoderCore

    call = _call(carphone_analysis, crops[:6], lambda i: False)
    core = DecoderCore(call.sender.header, keep_states=2)
    for ds in call.datagrams[:4]:
        d = parse_datagram(ds[-1].payload)
        if d.keyframe is not None:
            core.receive(d.keyframe)
        core.receive(d.motion)
    assert [core.holds_state(f) for f in range(4)] == [False, False, True, True]
    with pytest.raises(BitstreamError):
        core.continue_from(1, 5)  # no longer held
    with pytest.raises(BitstreamError):
        core.continue_from(3, 3)  # not after its base
    core.continue_from(2, 5)
    assert core.frames_decoded == 5
    with pytest.raises(ValueError):
        DecoderCore(call.sender.header, keep_states=100)


def test_refresh_requests_back_off_to_a_bounded_rate() -> None:
    decoder = ParticipantDecoder("alice")
    decoder.receive(encode_frame_datagram(3, 0, False, [_motion(3)]), 0.0)  # no header, no IDR
    times = []
    for k in range(200):
        now = 0.05 * k
        decoder.tick(now)
        if decoder.datagrams_to_send():
            times.append(round(now, 2))
    assert times == [0.15, 0.65, 1.65, 3.65, 7.65]  # 0.5, 1, 2, 4 s apart, then 4 s (max)
    assert decoder.stats.refresh_requests == len(times)


# ------------------------------------------------------------------------------ loss models
def test_loss_models_are_seeded_and_have_their_rates() -> None:
    n = 20000
    drops = [RandomLoss(0.2, seed=3).drop(0.0) for _ in range(1)]
    assert drops == [RandomLoss(0.2, seed=3).drop(0.0)]
    model = RandomLoss(0.2, seed=3)
    assert abs(sum(model.drop(0.0) for _ in range(n)) / n - 0.2) < 0.01
    ge = GilbertElliott(0.2, 5.0, seed=3)
    seq = [ge.drop(0.0) for _ in range(n)]
    assert abs(sum(seq) / n - 0.2) < 0.02
    bursts = [len(b) for b in "".join("x" if x else "." for x in seq).split(".") if b]
    assert abs(np.mean(bursts) - 5.0) < 0.5
    outage = Outage(1.0, 0.5)
    assert [outage.drop(t) for t in (0.9, 1.0, 1.49, 1.5)] == [False, True, True, False]
    assert isinstance(loss_model(0.1, 1.0, 0), RandomLoss)
    assert isinstance(loss_model(0.1, 3.0, 0, (1.0, 2.0)), Outage)
    with pytest.raises(ValueError):
        GilbertElliott(0.9, 1.0)


def test_hybrid_call_falls_back_to_animation_after_a_lost_aux_picture(
    carphone_analysis, crops
) -> None:
    """A hybrid sender's datagrams carry the frame's aux picture; when one is lost the server
    shows the next frames as animation only (no frame frozen or dropped), asks for a
    random-access aux picture, and fuses again from it."""
    config = CodecConfig(size=carphone_analysis.size, mode="hybrid", aux_qp=36)
    dropped = {12, 25}
    call = _call(carphone_analysis, crops, lambda i: i in dropped, config=config)
    assert all(_frame(call.datagrams[i]).aux is not None for i in range(len(crops)))
    assert [f.index for f in call.shown] == list(range(len(crops)))
    stats, sender = call.stats, call.sender.stats
    assert stats.aux_refresh_requests >= 1 and sender.aux_refreshes == stats.aux_refresh_requests
    assert sender.aux_bits > 0
    # The frames fused are exactly the lossless ones; the rest differ (animation only) and
    # are few: from a loss to the refresh one round trip later.
    fused = [
        f for f in call.shown if not f.concealed and np.array_equal(f.image, call.lossless[f.index])
    ]
    assert len(fused) >= len(crops) - 3 * len(dropped) - 2
    assert stats.fused >= len(crops) - 3 * len(dropped) - 2 - sender.keyframes


# ------------------------------------------------------------------------- the call ladder
def test_keyface_send_ladder_call_puts_the_presets_on_measured_points() -> None:
    """``keyface send --ladder call``: the presets fall on the call ladder's measured points
    (a keyframe at least every 15 / 15 / 10 / 8 frames, each a P picture of one HEVC
    sequence); the default ladder keeps the motion gate's keyframes, intra HEVC."""
    from keyface.cli._common import UserError
    from keyface.cli.main import build_parser
    from keyface.cli.send import _config
    from keyface.codec.ratecontrol import CALL_INTRA
    from keyface.intra._base import quality_to_qp

    def config(*extra: str) -> CodecConfig:
        argv = ["send", "--input", "x.mp4", "--server", "http://h:1", "--room", "r", *extra]
        return _config(build_parser().parse_args(argv))

    steps = []
    for quality in ("low", "medium", "high", "best"):
        c = config("--ladder", "call", "--quality", quality)
        # regular keyframes on top of the rules (content rule, gate, PSNR check)
        assert c.mode == "animation" and c.refresh_mode == RefreshMode.MOTION
        assert c.content_refresh and c.psnr_check > 0
        assert c.intra_codec == CALL_INTRA and c.content_update == "keyframe"
        steps.append((c.max_interval, quality_to_qp(c.keyframe_quality)))
    assert steps == [(15, 40), (15, 37), (10, 35), (8, 32)]
    gate = config()
    assert gate.refresh_mode == RefreshMode.MOTION and gate.intra_codec == "hevc"
    assert gate.max_interval == 0
    # the sender predicts its frames with the warp alone: the server draws with its own
    # renderer, and the keyframe enhancer would only stall the sender (docs/server.md)
    assert live_codec_config(gate, None).generator == live_codec_config(c, None).generator
    assert live_codec_config(c, None).generator == "warp"
    assert config("--ladder", "call", "--intra", "hevc").intra_codec == "hevc"
    with pytest.raises(UserError, match="--ladder call is for the animation mode"):
        config("--ladder", "call", "--mode", "hybrid")


def test_a_call_ladder_keyframe_lost_is_replaced_by_an_idr_one(carphone_analysis, crops) -> None:
    """On the call ladder every keyframe after the first is predicted from the one before, so
    a receiver that lost one cannot decode the next: it holds its picture, asks for a refresh,
    and the sender's IDR keyframe starts the sequence again. Nothing is drawn from a wrong
    picture, and every picture shown fresh is the lossless one."""
    from keyface.codec.ratecontrol import QUALITY_PRESETS, call_config_at

    config = call_config_at(QUALITY_PRESETS["high"], CodecConfig(size=carphone_analysis.size))
    interval = config.max_interval
    lost = interval  # the second keyframe, the first P picture of the sequence
    call = _call(
        carphone_analysis,
        crops[: 3 * interval + 5],
        lambda i: False,
        drop_reliable=lambda i: i == lost,
        config=config,
    )
    frames = [_frame(ds) for ds in call.datagrams]
    keys = [i for i, f in enumerate(frames) if f.keyframe is not None]
    assert keys[:2] == [0, lost] and frames[0].idr and not frames[lost].idr
    assert call.stats.lost_keyframes == 1 and call.stats.undecodable == 0
    assert call.stats.refresh_requests >= 1 and call.sender.stats.idr_keyframes == 2
    idr = call.sender.encoder.last_idr
    assert lost < idr < lost + interval
    held = [f.index for f in call.shown if f.concealed]
    assert held == list(range(lost, idr))
    _check_pictures(call)
