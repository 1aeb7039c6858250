"""DETAIL packets: the eyes and the mouth of a keyframe coded again at a higher quality.

Both ends blend the same decoded rectangles into the keyframe, so the decoder's reference is
the encoder's; a reader that skips the packets (a v1 reader without DETAIL) still decodes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from keyface.bitstream import BitstreamError, DetailPacket, read_stream, write_stream
from keyface.codec.config import CodecConfig
from keyface.codec.decoder import DecoderCore
from keyface.codec.detail import blend_detail, detail_boxes
from keyface.codec.encoder import EncoderCore
from keyface.facemesh import LEFT_EYE, OUTER_LIPS, RIGHT_EYE
from keyface.imageops import psnr
from keyface.pipeline import decode_bytes

CONFIG = CodecConfig(
    intra_codec="hevc",
    keyframe_quality=10,
    motion_field=False,
    detail_boost=30,
    content_update="keyframe",  # no promotions: a DETAIL needs its keyframe
)


def test_boxes_cover_the_points_inside_the_picture() -> None:
    eye = np.array([[10.0, 20.0], [40.0, 20.0], [25.0, 12.0], [25.0, 28.0]])
    [(x, y, w, h)] = detail_boxes([eye], 256, 256)
    assert x <= 10 and y <= 12 and x + w >= 40 and y + h >= 28
    assert x % 2 == 0 and y % 2 == 0 and w % 4 == 0 and h % 4 == 0
    corner = np.array([[250.0, 250.0], [255.0, 255.0], [240.0, 245.0]])
    [(x, y, w, h)] = detail_boxes([corner], 256, 256)
    assert x + w <= 256 and y + h <= 256
    # An eye shut in a blink is a line: its rectangle is still one the intra codecs can code.
    shut = np.array([[100.0, 50.0], [130.0, 50.0], [115.0, 50.5]])
    [(x, y, w, h)] = detail_boxes([shut], 256, 256)
    assert w >= 16 and h >= 16 and y <= 50 <= y + h
    assert all(min(b[2:]) >= 16 for b in detail_boxes([shut + np.array([0.0, 200.0])], 256, 256))


def test_blend_is_exact_inside_and_soft_at_the_edge() -> None:
    picture = np.zeros((64, 64, 3), np.uint8)
    patch = np.full((20, 20, 3), 200, np.uint8)
    out = blend_detail(picture, patch, 10, 10)
    assert (out[14:26, 14:26] == 200).all(), "the inside is the patch"
    assert 0 < out[10, 20, 0] < 200, "the edge ramps"
    assert (out[:10] == 0).all() and (out[30:] == 0).all(), "nothing outside"
    at_border = blend_detail(picture, patch, 0, 0)
    assert at_border[0, 0, 0] == 200, "no ramp at the picture's own edge"


def encode(analysis, config: CodecConfig, frames: int = 12):
    encoder = EncoderCore(config, fps=analysis.fps)
    packets = []
    for image, lm in zip(analysis.crops[:frames], analysis.landmarks[:frames], strict=True):
        packets += encoder.encode(image, lm)
    packets += encoder.flush()
    return encoder, packets


def test_detail_sharpens_the_eyes_and_mouth_and_both_ends_agree(carphone_analysis) -> None:
    encoder, packets = encode(carphone_analysis, CONFIG)
    details = [p for p in packets if isinstance(p, DetailPacket)]
    assert len(details) == 3 * encoder.stats.keyframes, "each eye and the mouth of each keyframe"
    assert all(p.quality == CONFIG.keyframe_quality + 30 for p in details)
    data = write_stream(encoder.header, packets)

    decoded = decode_bytes(data)
    assert decoded.error is None and decoded.complete
    # The decoder's reference picture is the encoder's, to the byte.
    decoder_ref = decoded.frames[0].reference
    assert decoder_ref is not None
    assert np.array_equal(
        decoder_ref.image, encoder.buffer[len(encoder.buffer) - 1].reference.image
    )

    # The rectangles are better than the plain keyframe there, at a fraction of its bytes.
    plain_encoder, plain_packets = encode(carphone_analysis, replace(CONFIG, detail_boost=0))
    plain = decode_bytes(write_stream(plain_encoder.header, plain_packets))
    source = carphone_analysis.crops[0]
    lm = carphone_analysis.landmarks[0]
    for group in (RIGHT_EYE, LEFT_EYE, OUTER_LIPS):
        [(x, y, w, h)] = detail_boxes([lm[list(group)]], 256, 256)
        cut = np.s_[y : y + h, x : x + w]
        with_detail = psnr(decoded.frames[0].image[cut], source[cut])
        without = psnr(plain.frames[0].image[cut], source[cut])
        assert with_detail > without + 2.0
    extra = sum(len(bytes(p)) for p in details)
    assert extra < encoder.stats.keyframe_bytes


def test_a_reader_that_skips_detail_still_decodes(carphone_analysis) -> None:
    encoder, packets = encode(carphone_analysis, CONFIG, frames=6)
    without = [p for p in packets if not isinstance(p, DetailPacket)]
    decoded = decode_bytes(write_stream(encoder.header, without))
    assert decoded.error is None and len(decoded.frames) == 6


def test_damaged_detail_is_a_bitstream_error(carphone_analysis) -> None:
    encoder, packets = encode(carphone_analysis, CONFIG, frames=4)
    stream = read_stream(write_stream(encoder.header, packets))
    k = next(i for i, p in enumerate(stream.packets) if isinstance(p, DetailPacket))
    bad = stream.packets[k]
    assert isinstance(bad, DetailPacket)
    cases = {
        "leaves the 256x256 picture": replace(bad, x=250),
        "the packet says": replace(bad, width=bad.width + 4),
        "no pending keyframe": replace(bad, frame_index=3),
    }
    for message, damaged in cases.items():
        decoder = DecoderCore(stream.header)
        for p in stream.packets[:k]:
            decoder.receive(p)
        with pytest.raises(BitstreamError, match=message):
            decoder.receive(damaged)


def test_detail_parts_choose_what_the_boost_codes_again(carphone_analysis) -> None:
    """``detail_parts=("eyes",)``: each keyframe gets its two eye rectangles, no mouth."""
    both = [
        p for p in encode(carphone_analysis, CONFIG, frames=1)[1] if isinstance(p, DetailPacket)
    ]
    eyes_only = replace(CONFIG, detail_parts=("eyes",))
    eyes = [
        p for p in encode(carphone_analysis, eyes_only, frames=1)[1] if isinstance(p, DetailPacket)
    ]
    assert len(both) == 3 and len(eyes) == 2
    assert {(p.x, p.y) for p in eyes} < {(p.x, p.y) for p in both}
    with pytest.raises(ValueError):
        replace(CONFIG, detail_parts=("nose",))
