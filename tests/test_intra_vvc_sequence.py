"""``vvc-ld``: a stream's keyframes as one low-delay VVC sequence (keyface.intra.vvc_sequence).

VVenC through FFmpeg cannot hand back one picture at a time, so the codec codes each keyframe
by running VVenC again over the sequence since its IDR picture and keeps the new access unit.
That is only sound if VVenC repeats the earlier access units byte for byte; these tests show
that it does with the codec's settings and what the codec does if it ever did not. (What both
sequence codecs share, the codec loop included, is tested once in tests/test_intra_sequence.py.)
"""

from __future__ import annotations

import numpy as np
from test_intra_sequence import scene

from keyface.intra import get_intra_codec
from keyface.intra.vvc import _PACKER
from keyface.intra.vvc_sequence import VvcSequenceCodec, is_random_access


def idr(data: bytes) -> bool:
    return is_random_access(_PACKER.unpack(data)[0])


def test_every_run_repeats_the_access_units_sent_before() -> None:
    """Five keyframes of a moving scene: VVenC, run again over the sequence each time, wrote
    the earlier access units as they were sent, so no keyframe had to restart the sequence
    (prediction and decoding in order: tests/test_intra_sequence.py, for both codecs)."""
    encoder = VvcSequenceCodec()
    assert [idr(encoder.encode_keyframe(scene(t), 40)) for t in range(5)] == [
        True, False, False, False, False,
    ]  # fmt: skip
    assert encoder.restarts == 0


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
