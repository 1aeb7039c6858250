"""The codec loop: encoder and decoder state machines, refresh decisions, damaged streams.

Uses the carphone clip (cropped to 256x256, landmarks measured once per session).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from keyface.bitstream import (
    BitstreamError,
    KeyframePacket,
    MotionPacket,
    RefreshMode,
    read_stream,
    write_stream,
)
from keyface.codec.config import CodecConfig
from keyface.codec.decoder import DecoderCore
from keyface.codec.encoder import PSNR_CHECK_GAP, EncoderCore
from keyface.codec.ratecontrol import config_at
from keyface.imageops import psnr
from keyface.pipeline import cropped_frames, decode_bytes, encode_analysis, encode_at_kbps

BASE = CodecConfig(intra_codec="hevc", keyframe_quality=50)


def crops(analysis) -> list[np.ndarray]:
    return [
        img for _, img in cropped_frames(analysis.path, analysis.crop, 256, analysis.frame_count)
    ]


@pytest.mark.parametrize(
    ("mode", "threshold"),
    [(RefreshMode.PSNR, 30.0), (RefreshMode.MOTION, 0.05), (RefreshMode.FIXED, 7)],
)
@pytest.mark.slow
def test_decoder_mirrors_encoder_decisions(carphone_analysis, mode, threshold) -> None:
    """The decoder renders every frame from the same reference the encoder chose."""
    config = replace(BASE, refresh_mode=mode, refresh_threshold=threshold, motion_chunk=5)
    result = encode_analysis(carphone_analysis, config)
    decoded = decode_bytes(result.data)
    assert decoded.error is None and decoded.complete
    assert len(decoded.frames) == len(result.stats.decisions) == carphone_analysis.frame_count
    for decision, frame in zip(result.stats.decisions, decoded.frames, strict=True):
        assert frame.index == decision.index
        assert frame.keyframe == decision.keyframe
        assert frame.reference_frame == decision.reference_frame
    keyframes = [d.index for d in result.stats.decisions if d.keyframe]
    assert keyframes[0] == 0 and len(keyframes) > 1, "these thresholds must force refreshes"
    if mode == RefreshMode.FIXED:
        assert keyframes == list(range(0, carphone_analysis.frame_count, 7))


@pytest.mark.slow
def test_frames_carry_the_reference_they_were_rendered_from(carphone_analysis) -> None:
    """Each decoded frame hands out its prepared reference (full-frame composition needs it),
    and a keyframe is shown as the renderer prepared it: enhanced, with a keyframe enhancer."""
    import torch

    from keyface.generator.enhancer import Enhancer, EnhancerConfig
    from keyface.generator.renderer import GeneratorRenderer

    config = replace(BASE, refresh_mode=RefreshMode.FIXED, refresh_threshold=10)
    data = encode_analysis(carphone_analysis, config).data
    plain = decode_bytes(data)
    enhancer = Enhancer(EnhancerConfig(widths=(8, 8, 8), blocks=1))
    with torch.no_grad():
        enhancer.head.bias[:] = 0.1  # a visible "enhancement": brighter
    renderer = GeneratorRenderer(None, "bright", enhancer=enhancer, backend="torch")
    enhanced = decode_bytes(data, renderer=renderer)
    by_index = {f.index: f for f in enhanced.frames}
    for before in plain.frames:
        after = by_index[before.index]
        assert after.reference is not None and before.reference is not None
        assert after.reference_frame == before.reference_frame
        if after.keyframe:
            assert after.image is after.reference.image
            assert after.image.mean() > before.image.mean() + 5
        else:
            assert after.reference is by_index[after.reference_frame].reference


@pytest.mark.slow
def test_psnr_refresh_guarantees_the_threshold(carphone_analysis) -> None:
    """DAC Algorithm 1: every frame the encoder accepts clears tau, as the decoder renders it."""
    tau = 27.0
    config = replace(BASE, refresh_mode=RefreshMode.PSNR, refresh_threshold=tau)
    result = encode_analysis(carphone_analysis, config)
    decoded = decode_bytes(result.data)
    originals = crops(carphone_analysis)
    for decision, frame, original in zip(
        result.stats.decisions, decoded.frames, originals, strict=True
    ):
        if not decision.keyframe:
            assert psnr(frame.image, original) == pytest.approx(decision.score, abs=1e-6)
            assert decision.score >= tau


@pytest.mark.slow
def test_buffer_holds_at_most_five_and_uses_older_entries(carphone_analysis) -> None:
    config = replace(BASE, refresh_mode=RefreshMode.PSNR, refresh_threshold=31.0, buffer_size=5)
    result = encode_analysis(carphone_analysis, config)
    refs = {d.reference for d in result.stats.decisions if not d.keyframe}
    assert refs <= set(range(5))
    single = encode_analysis(carphone_analysis, replace(config, buffer_size=1))
    assert {d.reference for d in single.stats.decisions if not d.keyframe} <= {0}


def test_stream_parts_add_up(carphone_analysis) -> None:
    result = encode_analysis(carphone_analysis, BASE)
    s = result.stats
    assert s.total_bytes == len(result.data)
    parsed = read_stream(result.data)
    assert sum(isinstance(p, KeyframePacket) for p in parsed.packets) == s.keyframes
    frames = sum(p.n_frames for p in parsed.packets if isinstance(p, MotionPacket))
    assert frames == carphone_analysis.frame_count
    assert 8 * s.motion_bytes / s.frames < 120, "motion stream must stay under 120 bits/frame"


@pytest.mark.slow
def test_truncated_stream_keeps_what_came_before(carphone_analysis) -> None:
    data = encode_analysis(carphone_analysis, replace(BASE, motion_chunk=8)).data
    full = decode_bytes(data)
    cut = decode_bytes(data[: int(len(data) * 0.8)])
    assert cut.error is not None and not cut.complete
    assert 0 < len(cut.frames) < len(full.frames)
    for a, b in zip(cut.frames, full.frames, strict=False):
        np.testing.assert_array_equal(a.image, b.image)


def test_corrupted_byte_is_detected(carphone_analysis) -> None:
    data = bytearray(encode_analysis(carphone_analysis, BASE).data)
    data[len(data) // 2] ^= 0x40
    result = decode_bytes(bytes(data))
    assert result.error is not None and "CRC" in str(result.error)


def test_decoder_rejects_a_different_motion_model(carphone_analysis) -> None:
    data = encode_analysis(carphone_analysis, BASE).data
    header = read_stream(data).header
    with pytest.raises(BitstreamError, match="motion model"):
        DecoderCore(replace(header, motion_digest=header.motion_digest ^ 1))


@pytest.mark.parametrize("field", ["motion_name", "intra_codec"])
def test_decoder_rejects_what_this_build_lacks(carphone_analysis, field) -> None:
    """A stream naming an unknown motion model or intra codec is a stream error, not a crash."""
    header = read_stream(encode_analysis(carphone_analysis, BASE).data).header
    with pytest.raises(BitstreamError, match="lacks"):
        DecoderCore(replace(header, **{field: "future-thing"}))


@pytest.mark.slow
def test_missing_face_holds_the_last_motion(carphone_analysis) -> None:
    """Frames where no face is found reuse the previous motion instead of failing."""
    analysis = replace(carphone_analysis, landmarks=list(carphone_analysis.landmarks))
    for i in range(10, 20):
        analysis.landmarks[i] = None
    decoded = decode_bytes(encode_analysis(analysis, BASE).data)
    np.testing.assert_array_equal(decoded.frames[12].keypoints, decoded.frames[9].keypoints)


def test_encoder_rejects_wrong_frame_size() -> None:
    from fractions import Fraction

    encoder = EncoderCore(BASE, Fraction(25))
    with pytest.raises(ValueError, match="256x256"):
        encoder.encode(np.zeros((128, 128, 3), np.uint8), None)


@pytest.mark.slow
def test_rate_control_ladder_is_monotone(carphone_analysis) -> None:
    rates = [encode_analysis(carphone_analysis, config_at(u, BASE)).kbps for u in (0.0, 0.7, 1.4)]
    assert rates == sorted(rates)


def test_the_animation_floor_spends_less_on_everything_below_zero() -> None:
    """Below u 0 (down to ``U_MIN``) the animation's knobs keep moving the same way: coarser
    motion, worse keyframes, a wider gate, and no PSNR check at the very bottom; the aux
    ladders start at 0, and nothing goes below ``U_MIN``."""
    from keyface.codec.ratecontrol import U_MIN

    us = [U_MIN, -0.2, -0.1, -0.05, 0.0, 0.3]
    configs = [config_at(u, CodecConfig(mode="animation")) for u in us]
    qualities = [c.keyframe_quality for c in configs]
    levels = [c.quant_level for c in configs]
    thresholds = [c.refresh_threshold for c in configs]
    assert qualities == sorted(qualities) and qualities[0] == 4
    assert levels == sorted(levels, reverse=True) and levels[0] == 7 and levels[4] == 4
    assert thresholds == sorted(thresholds, reverse=True)
    assert configs[0].psnr_check == 0 and configs[4].psnr_check > 0
    assert config_at(U_MIN - 1, CodecConfig(mode="animation")) == configs[0]
    assert config_at(U_MIN, CodecConfig(mode="auto")) == configs[0]
    hybrid = CodecConfig(mode="hybrid")
    assert config_at(U_MIN, hybrid) == config_at(0.0, hybrid)


def test_rate_search_keeps_the_pinned_settings_at_every_trial() -> None:
    """``--kbps`` with ``--intra vvc --group-content off``: the search walks the one ladder
    (into the groups, whose own choice is vvc-ld keyframes and the content cut) and every
    trial keeps what the user asked for; the keyframe quality is the search's to choose."""
    from keyface.codec.ratecontrol import fit_bitrate

    @dataclass
    class Rate:
        kbps: float

    tried: list[CodecConfig] = []

    def encode(config: CodecConfig) -> Rate:
        tried.append(config)
        return Rate(float(config.keyframe_quality) + 40.0 * (config.mode != "animation"))

    base = CodecConfig(mode="auto")
    pinned = {"intra_codec": "vvc", "group_cut": None}
    fit_bitrate(encode, base, 60.0, pinned=pinned)
    assert any(c.mode == "bidirectional" for c in tried)
    assert all(c.intra_codec == "vvc" and c.group_cut is None for c in tried)
    with pytest.raises(ValueError, match="keyframe quality"):
        fit_bitrate(encode, base, 60.0, pinned={"keyframe_quality": 30})


@pytest.mark.slow
def test_rate_control_hits_the_target(carphone_analysis) -> None:
    low = encode_analysis(carphone_analysis, config_at(0.0, BASE)).kbps
    high = encode_analysis(carphone_analysis, config_at(1.5, BASE)).kbps
    target = (low + high) / 2
    result = encode_at_kbps(carphone_analysis, BASE, target)
    assert abs(result.kbps - target) / target < 0.15


@pytest.mark.slow
def test_an_encode_reads_the_video_twice_and_a_rate_search_no_more(
    carphone_path, monkeypatch
) -> None:
    """One pass plans the crop, one measures the landmarks and keeps the crops; coding and
    every trial of a rate search reuse them (the bytes are those of a re-read)."""
    import keyface.pipeline as pipeline
    from keyface.pipeline import analyze

    reads: list[str] = []
    real = pipeline.read_frames

    def counting(path, max_frames=None):
        reads.append(str(path))
        return real(path, max_frames)

    monkeypatch.setattr(pipeline, "read_frames", counting)
    analysis = analyze(carphone_path, size=256, max_frames=20)
    assert len(reads) == 2 and analysis.crops is not None and len(analysis.crops) == 20
    config = replace(BASE, refresh_mode=RefreshMode.FIXED, refresh_threshold=8)
    kept = encode_analysis(analysis, config)
    encode_at_kbps(analysis, BASE, 30.0)
    assert len(reads) == 2
    reread = encode_analysis(replace(analysis, crops=None), config)
    assert len(reads) == 3 and reread.data == kept.data


def test_the_motion_rule_does_not_flip_between_alike_references(carphone_analysis, monkeypatch):
    """Issue 18 ("no rippling backgrounds"): a head that rests between two keyframes' poses
    was rendered from one, then the other, every frame, and each flip swapped the picture for
    the other keyframe's coding noise and background. The rule now keeps the previous frame's
    reference while it is within ``REFERENCE_HOLD`` of the nearest; without that it flips."""
    import keyface.codec.encoder as encoder_module

    image = carphone_analysis.crops[0]
    lm = carphone_analysis.landmarks[0].astype(np.float64)

    def shifted(dx: float) -> np.ndarray:
        out = lm.copy()
        out[:, 0] += dx
        return out

    # Keyframes at -8 and +8 px (motion distance 0.13 > 0.1), then a head that rests in the
    # middle with half a pixel of jitter (distances 0.06-0.07 to both).
    sequence = [shifted(-8)] * 2 + [shifted(8)] * 2 + [shifted(s) for s in (-0.6, 0.6) * 4]
    config = replace(
        BASE,
        refresh_mode=RefreshMode.MOTION,
        refresh_threshold=0.1,
        content_refresh=False,
        motion_field=False,
        generator="warp",
    )

    def code() -> tuple[list[int], int, list[int]]:
        encoder = EncoderCore(config, fps=25)
        packets = [p for lm_t in sequence for p in encoder.encode(image, lm_t)]
        packets += encoder.flush()
        decisions = encoder.stats.decisions
        decoded = decode_bytes(write_stream(encoder.header, packets))
        assert [f.reference_frame for f in decoded.frames] == [d.reference_frame for d in decisions]
        keys = [d.index for d in decisions if d.keyframe]
        return keys, encoder.stats.motion_bytes, [d.reference_frame for d in decisions[4:]]

    keys, held_bytes, held = code()
    assert keys == [0, 2]
    assert held == [2] * 8, "the rested head stays on the newest keyframe"
    monkeypatch.setattr(encoder_module, "REFERENCE_HOLD", 1.0)
    keys, flip_bytes, flipping = code()
    assert keys == [0, 2] and flipping == [0, 2] * 4, "without the hold it flips every frame"
    assert held_bytes <= flip_bytes


def test_psnr_check_refreshes_what_the_motion_gate_cannot_see(carphone_analysis) -> None:
    """The lights dim while the face stays still: the keypoints do not move, so the motion gate
    keeps the first keyframe; ``psnr_check`` renders every 4th frame as the decoder will (once
    the newest keyframe is a second old), finds it far below the floor and codes a keyframe
    (reason ``psnr``)."""
    first = crops(carphone_analysis)[0]
    marks = carphone_analysis.landmarks[0]
    frames = [first] * 6 + [(first * 0.45).astype(np.uint8)] * 30

    def run(config: CodecConfig) -> list:
        encoder = EncoderCore(config, carphone_analysis.fps)
        packets = [p for frame in frames for p in encoder.encode(frame, marks)]
        decoded = decode_bytes(write_stream(encoder.header, [*packets, *encoder.flush()]))
        assert [f.keyframe for f in decoded.frames] == [d.keyframe for d in encoder.stats.decisions]
        return encoder.stats.decisions

    gate_only = replace(BASE, motion_field=False)
    assert [d.index for d in run(gate_only) if d.keyframe] == [0]
    checked = run(replace(gate_only, psnr_check=4, psnr_floor=20.0))
    refreshes = [d for d in checked if d.keyframe and d.index > 0]
    assert refreshes and all(d.refresh == "psnr" for d in refreshes)
    gap = max(12, round(PSNR_CHECK_GAP * carphone_analysis.fps))
    assert refreshes[0].index == -(-gap // 4) * 4, "the first checked frame a second after 0"
    assert len(refreshes) == 1, "the dimmed keyframe holds the rest: no more refreshes"
