"""``hevc-ld`` and ``vvc-ld``: a stream's keyframes as one low-delay HEVC or VVC sequence
(keyface.intra.sequence, keyface.intra.vvc_sequence; what is ``vvc-ld``'s own:
tests/test_intra_vvc_sequence.py).

The codec keeps state: each keyframe after the first may be predicted from the ones before, so
an encoder and a decoder hold their own instance and decode in order. These tests show what
that buys on a still scene, what a decoder that missed a keyframe does, and that the codec
loop (encoder mirror, decoder, PSNR refresh) stays in step with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from keyface.bitstream import BitstreamError, KeyframePacket, RefreshMode, read_stream, write_stream
from keyface.codec.config import CodecConfig
from keyface.intra import IntraCodecError, SequenceIntraCodec, get_intra_codec, vvc, vvc_sequence
from keyface.intra._nal import NalPacker
from keyface.intra.hevc import _PACKER
from keyface.intra.sequence import is_random_access
from keyface.pipeline import decode_bytes, encode_analysis

SEQUENCES: dict[str, tuple[NalPacker, Callable[[bytes], bool], str]] = {
    "hevc-ld": (_PACKER, is_random_access, "hevc"),
    "vvc-ld": (vvc._PACKER, vvc_sequence.is_random_access, "vvc"),
}
"""Each sequence codec -> (its NAL packer, its IDR test, the stand-alone intra codec whose
pictures it writes outside the sequence). What holds for both is tested here once."""


def scene(t: int, size: int = 128) -> np.ndarray:
    """A textured still background with a bright disc that moves a little with ``t``."""
    rng = np.random.default_rng(7)
    background = rng.integers(40, 200, (size // 8, size // 8, 3), dtype=np.uint8)
    image = np.kron(background, np.ones((8, 8, 1), dtype=np.uint8))
    yy, xx = np.mgrid[:size, :size]
    cx, cy = size / 2 + 3 * np.sin(t / 2), size / 2 + 2 * np.cos(t / 3)
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (size / 5) ** 2
    image[disc] = (230, 180, 150)
    return image


def keyframe_bytes(data: bytes) -> list[int]:
    return [len(p.data) for p in read_stream(data).packets if isinstance(p, KeyframePacket)]


def units(data: bytes, packer: NalPacker = _PACKER) -> bytes:
    return packer.unpack(data)[0]


def test_each_encoder_and_decoder_holds_its_own_sequence() -> None:
    a, b = get_intra_codec("hevc-ld"), get_intra_codec("hevc-ld")
    assert a is not b
    assert isinstance(a, SequenceIntraCodec)
    assert not isinstance(get_intra_codec("hevc"), SequenceIntraCodec)


@pytest.mark.parametrize("name", SEQUENCES)
def test_keyframes_after_the_first_are_predicted_and_decode_in_order(name: str) -> None:
    """On a still background the P keyframes cost a fraction of the IDR one; a second decoder
    fed the same data in order gets the encoder's own pictures, bit for bit."""
    packer, is_idr, _ = SEQUENCES[name]
    encoder, decoder = get_intra_codec(name), get_intra_codec(name)
    assert isinstance(encoder, SequenceIntraCodec) and isinstance(decoder, SequenceIntraCodec)
    sizes = []
    for t in range(5):
        data = encoder.encode_keyframe(scene(t), 40)
        sizes.append(len(data))
        assert is_idr(units(data, packer)) == (t == 0)
        mirror = encoder.decode_keyframe(data)
        picture = decoder.decode_keyframe(data)
        assert np.array_equal(mirror, picture)
        assert 10 * np.log10(255**2 / np.mean((picture - scene(t).astype(float)) ** 2)) > 28
    assert max(sizes[1:]) < 0.5 * sizes[0], sizes


@pytest.mark.parametrize("name", SEQUENCES)
def test_a_decoder_that_missed_the_start_waits_for_an_idr_keyframe(name: str) -> None:
    packer, is_idr, _ = SEQUENCES[name]
    encoder, late = get_intra_codec(name), get_intra_codec(name)
    assert isinstance(encoder, SequenceIntraCodec) and isinstance(late, SequenceIntraCodec)
    encoder.encode_keyframe(scene(0), 40)
    predicted = encoder.encode_keyframe(scene(1), 40)
    with pytest.raises(IntraCodecError, match="earlier keyframes that were not decoded"):
        late.decode_keyframe(predicted)
    fresh = encoder.encode_keyframe(scene(2), 40, idr=True)
    assert is_idr(units(fresh, packer))
    assert late.decode_keyframe(fresh).shape == (128, 128, 3)
    # a change of quality or of picture size starts the sequence again as well
    assert is_idr(units(encoder.encode_keyframe(scene(3), 60), packer))
    assert is_idr(units(encoder.encode_keyframe(scene(4, size=96), 60), packer))


def test_stand_alone_pictures_are_hevc_intra_pictures() -> None:
    """DETAIL rectangles and backgrounds do not enter the sequence: the bytes the ``hevc``
    codec writes at the sequence's preset, decodable by any instance (and by ``hevc``) at any
    time."""
    from keyface.intra.hevc import HevcIntraCodec
    from keyface.intra.sequence import PRESET

    codec, hevc = get_intra_codec("hevc-ld"), get_intra_codec("hevc")
    patch = np.ascontiguousarray(scene(0)[:48, :64])
    data = codec.encode(patch, 50)
    assert data == HevcIntraCodec(PRESET).encode(patch, 50)
    assert np.array_equal(get_intra_codec("hevc-ld").decode(data), hevc.decode(data))


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        CodecConfig(intra_codec="hevc-ld", keyframe_quality=40),
        CodecConfig(intra_codec="hevc-ld", keyframe_quality=40, mode="bidirectional", gop=10),
        CodecConfig(
            intra_codec="hevc-ld",
            keyframe_quality=30,
            refresh_mode=RefreshMode.PSNR,
            refresh_threshold=40.0,
        ),
        CodecConfig(intra_codec="vvc-ld", keyframe_quality=40, mode="bidirectional", gop=10),
    ],
    ids=["animation", "bidirectional", "psnr-refresh", "vvc-ld-bidirectional"],
)
def test_the_codec_loop_stays_in_step_with_the_sequence(carphone_analysis, config) -> None:
    """Carphone coded with sequence keyframes decodes to the frames the encoder predicted
    (same references); the PSNR rule's retries restart the sequence (an IDR keyframe), since
    the decoder never sees the attempt before."""
    config = replace(config, generator="warp")
    result = encode_analysis(carphone_analysis, config)
    decoded = decode_bytes(result.data)
    assert decoded.error is None and decoded.complete
    keyframes = [d for d in result.stats.decisions if d.keyframe]
    assert len(keyframes) > 1
    for decision, frame in zip(result.stats.decisions, decoded.frames, strict=True):
        assert frame.reference_frame == decision.reference_frame
    if config.refresh_mode != RefreshMode.PSNR:
        # after the first (IDR) keyframe, P pictures of the sequence: far fewer bytes than the
        # same keyframes coded as stand-alone intra pictures (``hevc-ld``: 0.60 of them on
        # carphone, though the sequence keeps psycho-visual texture, psy-rd=1, which they do not)
        alone = SEQUENCES[config.intra_codec][2]
        intra = encode_analysis(carphone_analysis, replace(config, intra_codec=alone))
        ours, theirs = keyframe_bytes(result.data), keyframe_bytes(intra.data)
        assert sum(ours[1:]) < 0.7 * sum(theirs[1:]), (ours, theirs)


@pytest.mark.slow
def test_a_stream_missing_a_keyframe_is_refused_clearly(carphone_analysis) -> None:
    """A predicted keyframe whose predecessor was dropped is not decoded into a wrong picture:
    the stream stops there with a message that says why."""
    config = CodecConfig(
        intra_codec="hevc-ld",
        keyframe_quality=40,
        generator="warp",
        refresh_mode=RefreshMode.FIXED,
        refresh_threshold=7,
    )
    stream = read_stream(encode_analysis(carphone_analysis, config).data)
    keyframes = [i for i, p in enumerate(stream.packets) if isinstance(p, KeyframePacket)]
    assert len(keyframes) > 2
    kept = [p for i, p in enumerate(stream.packets) if i != keyframes[1]]
    decoded = decode_bytes(write_stream(stream.header, kept))
    assert isinstance(decoded.error, BitstreamError)
    assert "earlier keyframes that were not decoded" in str(decoded.error)
