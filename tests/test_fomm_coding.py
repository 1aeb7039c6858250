"""FOMM keypoint coding (issue 15, item 4): every quantiser level round trips, levels get
coarser and cheaper, version-1 streams are refused.

Synthetic only: a randomly initialised tiny FOMM model supplies the representation (its levels
and priors do not depend on the weights); keypoint tracks are random walks with the measured
statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from keyface.bitstream import BitstreamError
from keyface.codec.decoder import DecoderCore
from keyface.entropy import CodedFrame, MotionCoderState, decode_frames, encode_frames
from keyface.fomm import FommConfig, forget_model, use_model
from keyface.fomm.model import FommNetworks, load_model, save_model
from keyface.fomm.motion import LEVELS, PRIOR_JACOBIAN, PRIOR_POSITION, VERSION, FommMotion
from keyface.renderers import get_renderer

TINY = FommConfig.tiny()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fomm") / "tiny.safetensors"
    save_model(path, FommNetworks(TINY).eval())
    return path


def _track(frames: int, seed: int = 0) -> np.ndarray:
    """``(frames, 60)`` parameters: positions and Jacobians wandering with the measured
    frame-to-frame spreads around the measured means."""
    rng = np.random.default_rng(seed)
    start = np.concatenate(
        [
            rng.normal(PRIOR_POSITION[0], PRIOR_POSITION[1], 20),
            rng.normal(PRIOR_JACOBIAN[0], PRIOR_JACOBIAN[1], 40),
        ]
    )
    scale = np.array([PRIOR_POSITION[2]] * 20 + [PRIOR_JACOBIAN[2]] * 40)
    return start + np.cumsum(rng.laplace(0, scale, (frames, 60)), axis=0)


@pytest.mark.parametrize("level", range(len(LEVELS)))
def test_keypoint_coding_round_trip_at_every_level(tiny_file: Path, level: int) -> None:
    rep = FommMotion(load_model(tiny_file)).for_level(level)
    ql = rep.quant_level(level)
    params = _track(40, seed=level)[:, : rep.num_params]
    enc = MotionCoderState(ql, rep.statistics)
    coded = [CodedFrame(enc.quantize(p), None if i == 0 else 0) for i, p in enumerate(params)]
    payloads = [encode_frames(enc, coded[i : i + 16]) for i in range(0, 40, 16)]
    assert sum(map(len, payloads)) * 8 / 40 < 16 * 60  # far below 60 fp16 values a frame
    dec = MotionCoderState(ql, rep.statistics)
    out = []
    for i, data in zip(range(0, 40, 16), payloads, strict=True):
        out += decode_frames(dec, data, [c.reference is None for c in coded[i : i + 16]])
    assert [c.q.tolist() for c in out] == [c.q.tolist() for c in coded]
    deq = np.stack([dec.dequantize(c.q) for c in out])
    # Uniform quantisation: every parameter within half a step.
    assert np.all(np.abs(deq - params) <= ql.steps / 2 + 1e-9)
    kp = rep.keypoints(deq[0], 256)
    assert kp.shape == (30, 2) and np.all(np.isfinite(kp))


def test_levels_get_coarser_and_cheaper(tiny_file: Path) -> None:
    rep = FommMotion(load_model(tiny_file))
    params = _track(60, seed=3)
    bits = []
    for level in range(rep.num_levels):
        r = rep.for_level(level)
        state = MotionCoderState(r.quant_level(level), r.statistics)
        qs = [CodedFrame(state.quantize(p), None) for p in params[:, : r.num_params]]
        bits.append(len(encode_frames(state, qs)))
    assert bits == sorted(bits, reverse=True) and bits[0] > bits[-1]
    steps = [pos for pos, _ in LEVELS]
    assert steps == sorted(steps)


def test_a_version_1_stream_is_refused(tiny_file: Path, carphone_analysis) -> None:
    from dataclasses import replace
    from fractions import Fraction

    from keyface.bitstream import RefreshMode
    from keyface.codec.config import CodecConfig
    from keyface.codec.encoder import EncoderCore

    assert VERSION == 2
    use_model(tiny_file)
    try:
        config = CodecConfig(
            intra_codec="hevc",
            motion="fomm",
            generator="fomm",
            refresh_mode=RefreshMode.FIXED,
            refresh_threshold=0,
            motion_chunk=1,
        )
        (_, image), *_ = carphone_analysis.frames()
        encoder = EncoderCore(config, Fraction(25))
        encoder.encode(image, None)
        assert encoder.header.motion_version == VERSION
        old = replace(encoder.header, motion_version=1)
        with pytest.raises(BitstreamError, match="fomm v1"):
            DecoderCore(old, renderer=get_renderer("fomm"))
    finally:
        forget_model()
