"""``vvc-ld``: a stream's keyframes as one low-delay VVC sequence (keyface.intra.vvc_sequence).

VVenC through FFmpeg cannot hand back one picture at a time, so the codec codes each keyframe
by running VVenC again over the sequence since its IDR picture and keeps the new access unit.
That is only sound if VVenC repeats the earlier access units byte for byte; these tests show
that it does with the codec's settings, what the codec does if it ever did not, and that the
codec loop stays in step with it. (A decoder that missed the start: tests/test_intra_sequence.py,
for both sequence codecs.)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_intra_sequence import keyframe_bytes, scene

from keyface.codec.config import CodecConfig
from keyface.intra import SequenceIntraCodec, get_intra_codec
from keyface.intra.vvc import _PACKER
from keyface.intra.vvc_sequence import VvcSequenceCodec, is_random_access
from keyface.pipeline import decode_bytes, encode_analysis


def idr(data: bytes) -> bool:
    return is_random_access(_PACKER.unpack(data)[0])


def test_keyframes_after_the_first_are_predicted_and_decode_in_order() -> None:
    """On a still background the P keyframes cost a fraction of the IDR one; a second decoder
    fed the same data in order gets the encoder's own pictures, bit for bit; and every run of
    VVenC repeated the access units sent before (no restart)."""
    encoder, decoder = get_intra_codec("vvc-ld"), get_intra_codec("vvc-ld")
    assert encoder is not decoder
    assert isinstance(encoder, VvcSequenceCodec) and isinstance(decoder, SequenceIntraCodec)
    sizes = []
    for t in range(5):
        data = encoder.encode_keyframe(scene(t), 40)
        sizes.append(len(data))
        assert idr(data) == (t == 0)
        mirror = encoder.decode_keyframe(data)
        picture = decoder.decode_keyframe(data)
        assert np.array_equal(mirror, picture)
        assert 10 * np.log10(255**2 / np.mean((picture - scene(t).astype(float)) ** 2)) > 28
    assert encoder.restarts == 0
    assert max(sizes[1:]) < 0.5 * sizes[0], sizes


def test_a_sequence_starts_again_after_max_run_keyframes() -> None:
    """The encoder's work per keyframe grows with the run; ``max_run`` bounds it with an IDR."""
    encoder = VvcSequenceCodec(max_run=3)
    assert [idr(encoder.encode_keyframe(scene(t), 40)) for t in range(7)] == [
        True, False, False, True, False, False, True,
    ]  # fmt: skip


def test_an_encoder_run_that_disagrees_with_what_was_sent_restarts_with_an_idr() -> None:
    """Should VVenC ever code an earlier picture differently, the keyframe becomes an IDR one
    (which a decoder takes whatever it missed) instead of a P picture that would drift."""
    encoder, decoder = VvcSequenceCodec(), VvcSequenceCodec()
    first = encoder.encode_keyframe(scene(0), 40)
    decoder.decode_keyframe(first)
    real, doctored = encoder._code, []

    def once_wrong(run, raw):  # the first run's earlier access unit comes out different
        units = real(run, raw)
        if not doctored:
            doctored.append(units[0])
            units[0] = b"\x00\x00\x01" + b"\x00" * 8
        return units

    encoder._code = once_wrong
    second = encoder.encode_keyframe(scene(1), 40)
    assert encoder.restarts == 1 and idr(second)
    assert np.array_equal(encoder.decode_keyframe(second), decoder.decode_keyframe(second))
    assert not idr(encoder.encode_keyframe(scene(2), 40))  # and the new run goes on


def test_stand_alone_pictures_are_vvc_intra_pictures() -> None:
    codec, vvc = get_intra_codec("vvc-ld"), get_intra_codec("vvc")
    patch = np.ascontiguousarray(scene(0)[:48, :64])
    data = codec.encode(patch, 50)
    assert data == vvc.encode(patch, 50)
    assert np.array_equal(get_intra_codec("vvc-ld").decode(data), vvc.decode(data))


@pytest.mark.slow
def test_the_codec_loop_stays_in_step_with_the_sequence(carphone_analysis) -> None:
    """Carphone in bidirectional groups with ``vvc-ld`` keyframes decodes to the frames the
    encoder predicted; the P keyframes cost far less than stand-alone VVC intra pictures."""
    config = CodecConfig(
        intra_codec="vvc-ld", keyframe_quality=40, mode="bidirectional", gop=10, generator="warp"
    )
    result = encode_analysis(carphone_analysis, config)
    decoded = decode_bytes(result.data)
    assert decoded.error is None and decoded.complete
    keyframes = [d for d in result.stats.decisions if d.keyframe]
    assert len(keyframes) > 2
    for decision, frame in zip(result.stats.decisions, decoded.frames, strict=True):
        assert frame.reference_frame == decision.reference_frame
    vvc = encode_analysis(carphone_analysis, replace(config, intra_codec="vvc"))
    ours, theirs = keyframe_bytes(result.data), keyframe_bytes(vvc.data)
    assert sum(ours[1:]) < 0.7 * sum(theirs[1:]), (ours, theirs)
