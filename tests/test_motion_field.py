"""The body-motion field: what the landmarks miss (a sway, a shrug, the camera) is measured by
the encoder, sent as a few DCT coefficients per frame, and added to the decoder's warp."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import cv2
import numpy as np
import pytest

from keyface.bitstream import RefreshMode, read_stream
from keyface.codec.config import CodecConfig
from keyface.codec.decoder import DecoderCore
from keyface.codec.encoder import EncoderCore
from keyface.imageops import psnr
from keyface.motion import (
    FIELD_REPRESENTATION,
    FaceMeshField,
    estimate_field,
    get_representation,
    upsample_field,
)
from keyface.motion.field import FIELD_BANDS, FIELD_HOLD, _dct_matrix
from keyface.render import WarpRenderer

CONFIG = CodecConfig(
    intra_codec="hevc",
    keyframe_quality=60,
    refresh_mode=RefreshMode.FIXED,
    refresh_threshold=0,
    motion_chunk=4,
)


def texture(size: int = 256, seed: int = 0) -> np.ndarray:
    """Smooth random colour texture: optical flow can lock on to it everywhere."""
    noise = np.random.default_rng(seed).random((size // 8, size // 8, 3)).astype(np.float32)
    big = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(big * 255, 0, 255).astype(np.uint8)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved by ``(dx, dy)`` pixels (the content moves right/down)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def field_rep() -> FaceMeshField:
    rep = get_representation(FIELD_REPRESENTATION).for_level(2)
    assert isinstance(rep, FaceMeshField)
    return rep


def test_coefficients_round_trip_a_smooth_grid_and_drop_fine_detail() -> None:
    rep = field_rep()
    assert rep.field_params == 12  # 6 DCT coefficients (u + v <= 2) per axis
    n = rep.num_params - rep.field_params
    # A uniform shift lives in the DC coefficient alone: kept exactly.
    shift = np.broadcast_to(np.array([1.5, -2.0]), (4, 4, 2))
    params = rep.with_field(np.zeros(rep.num_params), shift)
    np.testing.assert_allclose(rep.field(params), shift, atol=1e-12)
    # Any grid made of the coded coefficients comes back as the same coefficients.
    coded = np.zeros(rep.num_params)
    coded[n:] = np.random.default_rng(0).normal(size=rep.field_params)
    smooth = rep.field(coded)
    np.testing.assert_allclose(rep.with_field(np.zeros(rep.num_params), smooth), coded, atol=1e-12)
    # The finest pattern (DCT band u + v = 6) is not sent: the grid carries smooth motion only.
    d = _dct_matrix(4)
    finest = np.outer(d[3], d[3])[..., None].repeat(2, axis=-1)
    assert FIELD_BANDS < 6
    np.testing.assert_allclose(rep.field(rep.with_field(params, finest)), 0, atol=1e-12)
    # The face part of the parameters is left alone.
    assert rep.keypoints(params, 256).shape == (478, 2)


def test_upsampled_field_is_in_picture_pixels() -> None:
    grid = np.zeros((4, 4, 2))
    grid[..., 0], grid[..., 1] = 4.0, -2.0  # 256-crop pixels
    dense = upsample_field(grid, 128, 128)
    assert dense.shape == (128, 128, 2) and dense.dtype == np.float32
    np.testing.assert_allclose(dense[..., 0], 2.0)
    np.testing.assert_allclose(dense[..., 1], -1.0)


def test_estimate_field_finds_a_global_shift() -> None:
    """Warp = identity, real frame = the reference moved by (3, -2): the field is the shift's
    backward displacement, (-3, +2), in every cell; where the weight is 0, the cell is 0."""
    reference = texture()
    target = shifted(reference, 3.0, -2.0)
    size = reference.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    identity = np.stack([xs, ys], axis=-1)
    grid = estimate_field(target, reference, identity)
    assert grid.shape == (4, 4, 2)
    np.testing.assert_allclose(grid[1:3, 1:3, 0], -3.0, atol=0.3)
    np.testing.assert_allclose(grid[1:3, 1:3, 1], 2.0, atol=0.3)
    weight = np.ones((size, size), np.float32)
    weight[:64, :64] = 0.0  # the top-left cell: "face", not measured
    masked = estimate_field(target, reference, identity, weight=weight)
    np.testing.assert_array_equal(masked[0, 0], 0.0)
    np.testing.assert_allclose(masked[1:3, 1:3], grid[1:3, 1:3], atol=1e-6)


def test_quantiser_holds_a_coefficient_while_the_measurement_jitters() -> None:
    rep = field_rep()
    steps = rep.quant_level(2).steps
    n = rep.num_params - rep.field_params
    previous = np.zeros(rep.num_params, dtype=np.int64)
    previous[n] = 3
    params = np.zeros(rep.num_params)
    params[n] = (3 + 0.5 + 0.9 * FIELD_HOLD) * steps[n]  # rounds to 4, but within the hold
    params[n + 1] = (0.5 + 1.1 * FIELD_HOLD) * steps[n + 1]  # beyond the hold: moves
    q = rep.quantize_field(params, steps, previous)
    assert q[n] == 3 and q[n + 1] == 1
    assert rep.quantize_field(params, steps, None)[n] == 4  # no previous frame: plain rounding


def encode(frames: list[np.ndarray], config: CodecConfig) -> tuple[bytes, EncoderCore]:
    from keyface.bitstream import write_stream

    encoder = EncoderCore(config, Fraction(25), frame_count=len(frames))
    packets = []
    for image in frames:
        packets += encoder.encode(image, None)
    packets += encoder.flush()
    return write_stream(encoder.header, packets), encoder


def decode(data: bytes) -> list[np.ndarray]:
    stream = read_stream(data)
    decoder = DecoderCore(stream.header)
    out = []
    for packet in stream.packets:
        out += [f.image for f in decoder.receive(packet)]
    assert decoder.finished
    return out


@pytest.mark.parametrize("mode", [RefreshMode.FIXED, RefreshMode.PSNR])
def test_a_swaying_body_is_followed_with_the_field_and_held_still_without(mode) -> None:
    """No face at all (the landmarks say nothing moves) while the whole picture drifts: with the
    field the decoder follows the drift; without it, it can only repeat the keyframe."""
    base = texture(seed=1)
    frames = [shifted(base, 0.5 * t, 0.25 * t) for t in range(12)]
    config = CONFIG if mode == RefreshMode.FIXED else replace(CONFIG, refresh_mode=mode,
                                                              refresh_threshold=10.0)  # fmt: skip
    with_field, encoder = encode(frames, config)
    without, _ = encode(frames, replace(config, motion_field=False))
    assert read_stream(with_field).header.motion_name == "facemesh-pca-field"
    assert read_stream(without).header.motion_name == "facemesh-pca"
    assert encoder.stats.keyframes == 1

    def corners(image: np.ndarray) -> np.ndarray:  # away from the face, where the field acts
        return np.concatenate(
            [image[:48, :48], image[:48, -48:], image[-48:, :48], image[-48:, -48:]]
        )

    followed = [
        psnr(corners(a), corners(b)) for a, b in zip(decode(with_field), frames, strict=True)
    ]
    held = [psnr(corners(a), corners(b)) for a, b in zip(decode(without), frames, strict=True)]
    assert np.mean(followed[-4:]) > np.mean(held[-4:]) + 6.0
    # It costs a few bytes per frame, not a picture.
    assert len(with_field) - len(without) < 12 * 16


def test_a_zero_field_renders_like_no_field() -> None:
    renderer = WarpRenderer()
    rep = get_representation().for_level(2)
    keypoints = rep.keypoints(rep.statistics.mean, 256)
    reference = renderer.prepare(texture(), keypoints)
    moved = keypoints + np.float32([2.0, 1.0])
    np.testing.assert_array_equal(
        renderer.render(reference, moved, np.zeros((4, 4, 2))), renderer.render(reference, moved)
    )


def test_upsampling_follows_the_written_definition() -> None:
    """docs/bitstream.md §9.3: grid value g[i, j] sits at ((j + 0.5) W / 4 - 0.5,
    (i + 0.5) H / 4 - 0.5); bilinear in between, constant beyond the outer positions."""
    grid = np.random.default_rng(3).normal(size=(4, 4, 2)) * 5
    width, height = 96, 64
    dense = upsample_field(grid, width, height)

    def reference(x: int, y: int) -> np.ndarray:
        sx = float(np.clip((x + 0.5) * 4 / width - 0.5, 0, 3))
        sy = float(np.clip((y + 0.5) * 4 / height - 0.5, 0, 3))
        j0, i0 = min(int(sx), 2), min(int(sy), 2)
        fx, fy = sx - j0, sy - i0
        top = (1 - fx) * grid[i0, j0] + fx * grid[i0, j0 + 1]
        bottom = (1 - fx) * grid[i0 + 1, j0] + fx * grid[i0 + 1, j0 + 1]
        value = (1 - fy) * top + fy * bottom
        return value * np.array([width / 256, height / 256])

    for x, y in [(0, 0), (5, 7), (47, 31), (60, 2), (95, 63), (12, 50)]:
        np.testing.assert_allclose(dense[y, x], reference(x, y), rtol=1e-4, atol=1e-4)


def test_the_field_moves_the_body_not_the_face() -> None:
    """The landmarks drive the face: inside the face oval the field has no effect, far from it
    the full displacement applies."""
    renderer = WarpRenderer()
    rep = get_representation().for_level(2)
    keypoints = rep.keypoints(rep.statistics.mean, 256)
    reference = renderer.prepare(texture(), keypoints)
    field = np.zeros((4, 4, 2))
    field[..., 0] = 6.0
    plain = renderer.flow(reference, keypoints)
    moved = renderer.flow(reference, keypoints, field)
    nose = np.round(keypoints[1]).astype(int)
    np.testing.assert_allclose(moved[nose[1], nose[0]], plain[nose[1], nose[0]], atol=1e-3)
    np.testing.assert_allclose(moved[2, 2] - plain[2, 2], [6.0, 0.0], atol=1e-3)


def test_coefficient_order_is_the_written_one() -> None:
    """docs/bitstream.md §9.3: coefficients (0,0), (0,1), (1,0), (0,2), (1,1), (2,0), with u
    along y; for each, x then y."""
    rep = field_rep()
    n = rep.num_params - rep.field_params
    d = _dct_matrix(4)
    for k, (u, v) in enumerate([(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0)]):
        for c in (0, 1):
            grid = np.zeros((4, 4, 2))
            grid[..., c] = np.outer(d[u], d[v])  # basis (u, v): rows i follow d[u]
            coded = rep.with_field(np.zeros(rep.num_params), grid)[n:]
            expected = np.zeros(rep.field_params)
            expected[2 * k + c] = 1.0
            np.testing.assert_allclose(coded, expected, atol=1e-12)


def test_a_group_holds_its_frames_grid_from_one_frame_to_the_next(monkeypatch) -> None:
    """Bidirectional groups: the picture between two still keyframes sits 0.75 px off (about
    1.7 quantiser steps of the grid's mean) and jitters by +-0.2 px (+-0.4 steps). Each
    frame's grid is held at the previous frame's within the hysteresis, so the coded grid
    stays put across the group instead of flipping between 1 and 2 steps with the jitter (a
    background that jumps by half a pixel from frame to frame)."""
    base = texture(seed=2)
    jitter = [0.0, 0.2, -0.2, 0.2, -0.2, 0.2, -0.2, 0.0]
    frames = [base] + [shifted(base, 0.75 + j, 0.0) for j in jitter[1:-1]] + [base]
    coded: list[np.ndarray] = []
    quantize = FaceMeshField.quantize_field

    def recording(self, params, steps, previous):  # type: ignore[no-untyped-def]
        q = quantize(self, params, steps, previous)
        coded.append(q[self.base.num_params :])
        return q

    monkeypatch.setattr(FaceMeshField, "quantize_field", recording)
    config = replace(CONFIG, mode="bidirectional", gop=8, aux_scale=0)
    data, encoder = encode(frames, config)
    assert encoder.stats.keyframes == 2
    assert len(coded) == 6  # the frames between the keyframes
    dc_x = [int(q[0]) for q in coded]
    assert all(abs(v) >= 1 for v in dc_x), "the shift is measured"
    assert len(set(dc_x)) == 1, f"the grid flips from frame to frame: {dc_x}"
    assert len(decode(data)) == len(frames)
