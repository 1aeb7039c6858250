"""Motion representation and motion entropy coding."""

from __future__ import annotations

import numpy as np
import pytest

from keyface.entropy import (
    CodedFrame,
    MotionCoderState,
    MotionCodingError,
    decode_frames,
    encode_frames,
)
from keyface.motion import face_regions, get_representation, motion_distance
from keyface.motion.facemesh_pca import NUM_POSE


def random_params(rep, rng: np.random.Generator, n: int) -> np.ndarray:
    """Plausible parameter tracks: the fitted mean plus a slow random walk."""
    stats = rep.statistics
    steps = rng.normal(size=(n, rep.num_params)) * stats.delta_spread
    return stats.mean + np.cumsum(steps, axis=0)


def test_model_is_shipped_and_identified() -> None:
    rep = get_representation()
    assert rep.name == "facemesh-pca"
    assert rep.num_keypoints == 478
    assert rep.digest != 0
    assert rep.num_levels >= 4


@pytest.mark.parametrize("size", [256, 384, 512])
def test_analysis_inverts_synthesis(size: int) -> None:
    """analyze(keypoints-in-3D(params)) gives the params back: the model is self-consistent."""
    rep = get_representation().for_level(2)
    rng = np.random.default_rng(0)
    for params in random_params(rep, rng, 5):
        shape = rep.shape3d(params) * (size / 256)
        back = rep.analyze(shape, size)
        np.testing.assert_allclose(back[:NUM_POSE], params[:NUM_POSE], atol=1e-6)
        np.testing.assert_allclose(back[NUM_POSE:], params[NUM_POSE:], atol=1e-6)


def test_keypoints_scale_with_crop_size() -> None:
    rep = get_representation()
    params = rep.statistics.mean.copy()
    np.testing.assert_allclose(rep.keypoints(params, 512), 2 * rep.keypoints(params, 256), 1e-4)


def test_coder_round_trip_with_references() -> None:
    rep = get_representation().for_level(2)
    level = rep.quant_level(2)
    rng = np.random.default_rng(1)
    enc = MotionCoderState(level, rep.statistics)
    dec = MotionCoderState(level, rep.statistics)
    frames = []
    for i, p in enumerate(random_params(rep, rng, 40)):
        ref = None if i % 13 == 0 else int(rng.integers(0, 3))
        frames.append(CodedFrame(q=enc.quantize(p), reference=ref))
    # Two packets: the adaptive state carries over from the first to the second.
    data1, data2 = encode_frames(enc, frames[:16]), encode_frames(enc, frames[16:])
    out = decode_frames(dec, data1, [f.reference is None for f in frames[:16]])
    out += decode_frames(dec, data2, [f.reference is None for f in frames[16:]])
    for a, b in zip(frames, out, strict=True):
        assert a.reference == b.reference
        np.testing.assert_array_equal(a.q, b.q)


def test_quantisation_error_is_bounded_by_half_a_step() -> None:
    rep = get_representation().for_level(2)
    state = MotionCoderState(rep.quant_level(2), rep.statistics)
    p = random_params(rep, np.random.default_rng(2), 1)[0]
    err = np.abs(state.dequantize(state.quantize(p)) - p)
    assert np.all(err <= state.steps / 2 + 1e-12)


def test_still_face_costs_few_bits() -> None:
    """A face that does not move codes to a handful of bits per frame (prediction works)."""
    rep = get_representation().for_level(2)
    state = MotionCoderState(rep.quant_level(2), rep.statistics)
    q = state.quantize(rep.statistics.mean)
    data = encode_frames(state, [CodedFrame(q=q, reference=0) for _ in range(200)])
    assert 8 * len(data) / 200 < 12


def test_corrupt_payload_raises_clean_error() -> None:
    rep = get_representation().for_level(2)
    level = rep.quant_level(2)
    with pytest.raises(MotionCodingError):
        decode_frames(MotionCoderState(level, rep.statistics), b"\x01\x02\x03", [True])


def test_motion_distance_grows_with_motion() -> None:
    rep = get_representation()
    regions = face_regions(rep.mean)
    assert len(regions) == 10 and sum(len(r) for r in regions) == rep.num_keypoints
    base = rep.statistics.mean.copy()
    kp0 = rep.keypoints(base, 256)
    assert motion_distance(kp0, kp0, regions).value == pytest.approx(0.0, abs=1e-9)
    values = []
    for yaw in (0.05, 0.15, 0.3):
        p = base.copy()
        p[1] += yaw
        values.append(motion_distance(kp0, rep.keypoints(p, 256), regions).value)
    assert values == sorted(values) and values[0] > 0
