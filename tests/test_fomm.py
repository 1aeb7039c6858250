"""The First Order Motion Model route (keyface.fomm): the networks on tiny configurations, the
one-to-one import of upstream checkpoints, and the ``fomm`` motion representation in the codec.

Every model here is randomly initialised (no weights are downloaded): a tiny configuration
(:meth:`FommConfig.tiny`, 64x64 input, a few thousand parameters) for anything that runs, the
vox-256 configuration for shapes only.
"""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from fomm_utils import randomised_networks

from keyface.bitstream import BitstreamError, DetailPacket, RefreshMode
from keyface.cli.main import main
from keyface.codec.config import CodecConfig
from keyface.codec.decoder import DecoderCore
from keyface.codec.encoder import EncoderCore
from keyface.facemesh import INNER_LIP_GAP, INNER_MOUTH_CORNERS, mouth_opening
from keyface.fomm import MOTION_NAME, FommConfig, forget_model, registered_model, use_model
from keyface.fomm.checkpoint import save_upstream, upstream_layout
from keyface.fomm.layers import AntiAliasInterpolation2d, coordinate_grid
from keyface.fomm.model import FommNetworks, load_model, save_model
from keyface.fomm.motion import VERSION as FOMM_VERSION
from keyface.fomm.motion import split_keypoints
from keyface.fomm.networks import Keypoints
from keyface.io import probe
from keyface.motion import (
    ImageMotionSource,
    MotionRepresentation,
    UnknownRepresentationError,
    get_representation,
)
from keyface.renderers import get_renderer

TINY = FommConfig.tiny()
_randomised = randomised_networks


def _picture(seed: int = 1, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g)


# -- networks -----------------------------------------------------------------------------------
def test_vox256_layout_matches_the_public_checkpoint() -> None:
    layout = upstream_layout(FommConfig.vox256())
    kp, gen = layout["kp_detector"], layout["generator"]
    assert kp["kp.weight"] == (10, 35, 7, 7)
    assert kp["jacobian.weight"] == (40, 35, 7, 7)
    assert kp["down.weight"] == (3, 1, 13, 13)
    assert kp["predictor.encoder.down_blocks.4.conv.weight"] == (1024, 512, 3, 3)
    assert kp["predictor.decoder.up_blocks.4.conv.weight"] == (32, 128, 3, 3)
    dm = "dense_motion_network."
    assert gen[dm + "hourglass.encoder.down_blocks.0.conv.weight"] == (128, 44, 3, 3)
    assert gen[dm + "hourglass.decoder.up_blocks.1.conv.weight"] == (512, 2048, 3, 3)
    assert gen[dm + "mask.weight"] == (11, 108, 7, 7)
    assert gen[dm + "occlusion.weight"] == (1, 108, 7, 7)
    assert gen[dm + "down.weight"] == (3, 1, 13, 13)
    assert gen["first.conv.weight"] == (64, 3, 7, 7)
    assert gen["down_blocks.1.conv.weight"] == (256, 128, 3, 3)
    assert gen["bottleneck.r5.conv2.weight"] == (256, 256, 3, 3)
    assert gen["bottleneck.r5.norm2.running_var"] == (256,)
    assert gen["up_blocks.1.conv.weight"] == (64, 128, 3, 3)
    assert gen["final.weight"] == (3, 64, 7, 7)
    params = sum(int(np.prod(s)) for net in layout.values() for k, s in net.items() if s)
    assert 59e6 < params < 61e6  # the published model has about 59.8 M numbers


def test_detector_shapes_and_identity_jacobians_untrained() -> None:
    nets = FommNetworks(TINY).eval()
    with torch.no_grad():
        kp = nets.kp_detector(torch.cat([_picture(1), _picture(2)]))
    assert kp.value.shape == (2, 10, 2) and kp.jacobian.shape == (2, 10, 2, 2)
    assert bool((kp.value.abs() <= 1).all())
    # Untrained, the Jacobian maps are constant (1, 0, 0, 1): the identity at every keypoint.
    assert torch.allclose(kp.jacobian, torch.eye(2).expand(2, 10, 2, 2), atol=1e-6)


def test_antialias_keeps_a_constant_picture() -> None:
    down = AntiAliasInterpolation2d(3, 0.25)
    out = down(torch.full((1, 3, 64, 64), 0.5))
    assert out.shape == (1, 3, 16, 16)
    assert torch.allclose(out[:, :, 2:-2, 2:-2], torch.tensor(0.5), atol=1e-6)


def test_driving_with_the_source_keypoints_gives_the_identity_flow() -> None:
    nets = _randomised()
    source = _picture()
    with torch.no_grad():
        kp = nets.kp_detector(source)
        out = nets.generator(source, kp, kp)
    motion = out.motion
    h = w = TINY.image_size // 4
    identity = coordinate_grid(h, w, source)[None]
    assert motion.deformation.shape == (1, h, w, 2)
    assert torch.allclose(motion.deformation, identity, atol=1e-5)
    assert torch.allclose(motion.mask.sum(dim=1), torch.ones(1, h, w), atol=1e-5)
    assert motion.occlusion is not None and motion.occlusion.shape == (1, 1, h, w)
    assert out.prediction.shape == (1, 3, 64, 64)
    assert bool(((out.prediction >= 0) & (out.prediction <= 1)).all())


def test_a_shifted_keypoint_set_shifts_the_flow() -> None:
    nets = _randomised()
    source = _picture()
    kp = Keypoints(torch.zeros(1, 10, 2), torch.eye(2).expand(1, 10, 2, 2).clone())
    moved = Keypoints(kp.value + torch.tensor([0.1, 0.0]), kp.jacobian)
    with torch.no_grad():
        motions = nets.generator.dense_motion_network.sparse_motions(16, 16, moved, kp)
    identity = coordinate_grid(16, 16, source)
    # Background first, then every keypoint's motion: driving - 0.1 in x maps to the source.
    assert torch.allclose(motions[0, 0], identity)
    assert torch.allclose(
        motions[0, 1:], (identity - torch.tensor([0.1, 0.0])).expand(10, 16, 16, 2)
    )


def test_generator_split_equals_forward() -> None:
    nets = _randomised()
    source, driving = _picture(1), _picture(2)
    with torch.no_grad():
        kp_s, kp_d = nets.kp_detector(source), nets.kp_detector(driving)
        whole = nets.generator(source, kp_d, kp_s).prediction
        split = nets.generator.animate(nets.generator.encode_source(source), source, kp_d, kp_s)
    assert torch.equal(whole, split.prediction)


def test_config_round_trip_and_checks() -> None:
    assert FommConfig.from_json(TINY.to_json()) == TINY
    with pytest.raises(ValueError, match="multiple of"):
        FommConfig(image_size=96)
    with pytest.raises(ValueError, match="unknown FOMM config"):
        FommConfig.from_json(json.dumps({"num_kps": 10}))


# -- import -------------------------------------------------------------------------------------
def _upstream_checkpoint(tmp_path: Path, nets: FommNetworks, **extra: object) -> Path:
    path = tmp_path / "vox-cpk.pth.tar"
    save_upstream(path, nets, **extra)
    return path


def _tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(TINY.to_json())
    return path


def test_import_fomm_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nets = _randomised()
    extra = {"discriminator": {"w": torch.zeros(2)}, "optimizer_generator": {}, "epoch": 99}
    ckpt = _upstream_checkpoint(tmp_path, nets, **extra)
    out = tmp_path / "model.safetensors"
    code = main(
        ["import-fomm", str(ckpt), "-o", str(out), "--config", str(_tiny_config_file(tmp_path))]
    )
    assert code == 0
    printed = capsys.readouterr().out.split()
    from keyface.generator.weights import sha256_of

    assert printed == [sha256_of(out), str(out)]
    model = load_model(out)
    assert model.metadata["provenance"] == "imported from vox-cpk.pth.tar"
    assert model.metadata["source_sha256"] == sha256_of(ckpt)
    assert model.config == TINY
    source, driving = _picture(1), _picture(2)
    with torch.no_grad():
        for a, b in ((nets, model.networks),):
            kp_s, kp_d = a.kp_detector(source), a.kp_detector(driving)
            kq_s, kq_d = b.kp_detector(source), b.kp_detector(driving)
            assert torch.equal(kp_s.value, kq_s.value) and torch.equal(kp_d.jacobian, kq_d.jacobian)
            expected = a.generator(source, kp_d, kp_s).prediction
            assert torch.equal(expected, b.generator(source, kq_d, kq_s).prediction)


def test_import_reads_old_checkpoints_with_prefix_and_without_batch_counters(
    tmp_path: Path,
) -> None:
    nets = _randomised()
    data = {
        name: {
            f"module.{k}": v
            for k, v in getattr(nets, name).state_dict().items()
            if not k.endswith("num_batches_tracked")
        }
        for name in ("kp_detector", "generator")
    }
    # As PyTorch 1.0 wrote them: the legacy (not zip) format, with an optimiser's state.
    data["optimizer_generator"] = {
        "state": {0: {"step": 3, "exp_avg": torch.zeros(2)}},
        "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "params": [0]}],
    }
    data["epoch"] = 99
    ckpt = tmp_path / "old.pth.tar"
    torch.save(data, ckpt, _use_new_zipfile_serialization=False)
    out = tmp_path / "m.safetensors"
    code = main(
        ["import-fomm", str(ckpt), "-o", str(out), "--config", str(_tiny_config_file(tmp_path))]
    )
    assert code == 0
    with torch.no_grad():
        x = _picture()
        assert torch.equal(nets.kp_detector(x).value, load_model(out).networks.kp_detector(x).value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("drop", "checkpoint lacks generator.final.bias"),
        ("reshape", "generator.final.weight has shape [3, 4, 5, 5]"),
        ("extra", "checkpoint has generator.final.extra"),
        ("no-generator", "no 'generator' state dict"),
    ],
)
def test_import_refuses_another_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    nets = _randomised()
    data: dict[str, object] = {
        "kp_detector": nets.kp_detector.state_dict(),
        "generator": dict(nets.generator.state_dict()),
    }
    gen = data["generator"]
    assert isinstance(gen, dict)
    if damage == "drop":
        del gen["final.bias"]
    elif damage == "reshape":
        gen["final.weight"] = torch.zeros(3, 4, 5, 5)
    elif damage == "extra":
        gen["final.extra"] = torch.zeros(1)
    else:
        del data["generator"]
    ckpt = tmp_path / "other.pth.tar"
    torch.save(data, ckpt)
    out = tmp_path / "m.safetensors"
    code = main(
        ["import-fomm", str(ckpt), "-o", str(out), "--config", str(_tiny_config_file(tmp_path))]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_import_of_the_vox256_layout_refuses_a_tiny_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _upstream_checkpoint(tmp_path, _randomised())
    code = main(["import-fomm", str(ckpt), "-o", str(tmp_path / "m.safetensors")])
    err = capsys.readouterr().err
    assert code == 2
    assert "kp_detector.predictor.encoder.down_blocks.0.conv.weight has shape [8, 3, 3, 3]" in err


def test_import_refuses_arbitrary_pickled_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "evil.pth.tar"
    torch.save({"kp_detector": {}, "generator": Path("x")}, ckpt)
    code = main(["import-fomm", str(ckpt), "-o", str(tmp_path / "m.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "not a FOMM checkpoint of plain tensors" in err


# -- the motion representation -------------------------------------------------------------------
@pytest.fixture
def tiny_model(tmp_path: Path):
    path = tmp_path / "tiny-fomm.safetensors"
    save_model(path, _randomised())
    yield use_model(path)
    forget_model()


def test_representation_protocol_and_keypoint_round_trip(tiny_model) -> None:
    rep = get_representation(MOTION_NAME)
    assert isinstance(rep, MotionRepresentation) and isinstance(rep, ImageMotionSource)
    assert rep.digest == tiny_model.digest and rep.num_params == 60
    rng = np.random.default_rng(0)
    image = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    params = rep.analyze_image(image)
    assert params.shape == (60,)
    kp = rep.keypoints(params, 256)
    assert kp.shape == (30, 2) and kp.dtype == np.float32
    pos, jac = split_keypoints(kp, 256)
    assert np.allclose(pos.reshape(-1), params[:20], atol=1e-3)
    assert np.allclose(jac.reshape(-1), params[20:] + np.tile([1, 0, 0, 1], 10), atol=1e-4)
    assert rep.gate_distance(kp, kp) == pytest.approx(0.0, abs=1e-6)
    # The coarsest level sends positions only: every Jacobian is the identity.
    coarse = rep.for_level(rep.num_levels - 1)
    assert coarse.num_params == 20 and coarse.quant_level(rep.num_levels - 1).steps.shape == (20,)
    _, jac = split_keypoints(coarse.keypoints(params[:20], 128), 128)
    assert np.allclose(jac, np.eye(2), atol=1e-5)


def test_fomm_is_known_once_a_model_is_chosen(tmp_path: Path) -> None:
    forget_model()
    with pytest.raises(UnknownRepresentationError, match="unknown motion representation 'fomm'"):
        get_representation(MOTION_NAME)
    path = tmp_path / "m.safetensors"
    save_model(path, _randomised())
    model = use_model(path)
    try:
        assert use_model(str(path)) is model  # the same file is loaded once
        assert get_representation(MOTION_NAME).digest == model.digest
        assert registered_model() is model and get_renderer(MOTION_NAME).name == "fomm"
    finally:
        forget_model()


# -- the codec -----------------------------------------------------------------------------------
FOMM_CONFIG = CodecConfig(
    intra_codec="hevc",
    keyframe_quality=40,
    motion=MOTION_NAME,
    generator=MOTION_NAME,
    refresh_mode=RefreshMode.FIXED,
    refresh_threshold=0,
    motion_chunk=3,
)


def test_codec_round_trip_reproduces_the_encoders_keypoints(tiny_model, carphone_analysis) -> None:
    frames = [image for (_, image), _ in zip(carphone_analysis.frames(), range(5), strict=False)]
    encoder = EncoderCore(FOMM_CONFIG, Fraction(25))
    rep = encoder.representation
    expected = [
        rep.keypoints(encoder.state.dequantize(encoder.state.quantize(rep.analyze_image(im))), 256)
        for im in frames
    ]
    packets = [p for im in frames for p in encoder.encode(im, None)]
    packets += encoder.flush()
    header = encoder.header
    assert (header.motion_name, header.motion_version, header.motion_digest) == (
        "fomm",
        FOMM_VERSION,
        tiny_model.digest,
    )
    decoder = DecoderCore(header, renderer=get_renderer(MOTION_NAME))
    out = [f for p in packets for f in decoder.receive(p)]
    assert [f.index for f in out] == list(range(5)) and out[0].keyframe
    for frame, kp in zip(out, expected, strict=True):
        assert np.array_equal(frame.keypoints, kp)
        assert frame.image.shape == (256, 256, 3) and frame.image.dtype == np.uint8
    # The motion costs bits, the pictures are rendered by the (random) generator.
    assert encoder.stats.motion_bytes > 0 and not np.array_equal(out[1].image, out[0].image)


def test_decoder_refuses_another_model(tiny_model, tmp_path: Path, carphone_analysis) -> None:
    (_, image), *_ = carphone_analysis.frames()
    encoder = EncoderCore(replace(FOMM_CONFIG, motion_chunk=1), Fraction(25))
    encoder.encode(image, None)
    other = tmp_path / "other.safetensors"
    save_model(other, _randomised(seed=5))
    use_model(other)
    with pytest.raises(BitstreamError, match="motion model fomm"):
        DecoderCore(encoder.header, renderer=get_renderer(MOTION_NAME))


def test_cli_encode_and_decode_with_a_model_file(
    tiny_model, tmp_path: Path, carphone_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_model.path)
    kf, video = tmp_path / "t.kf", tmp_path / "t.y4m"
    args = ["encode", str(carphone_path), "-o", str(kf), "--max-frames", "6", "-q"]
    assert main([*args, "--motion", "fomm", "--model", model, "--quality", "low"]) == 0
    assert main(["decode", str(kf), "-o", str(video), "-q", "--model", model]) == 0
    assert video.stat().st_size > 6 * 256 * 256
    capsys.readouterr()
    # Without the model, with another one, or a model for a face-mesh stream: one line, exit 2.
    assert main(["decode", str(kf), "-o", str(tmp_path / "u.y4m"), "-q"]) == 2
    assert "--model FILE" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    save_model(other, _randomised(seed=5))
    assert (
        main(["decode", str(kf), "-o", str(tmp_path / "v.y4m"), "-q", "--model", str(other)]) == 2
    )
    err = capsys.readouterr().err
    assert f"digest {tiny_model.digest:08x}" in err and len(err.strip().splitlines()) == 1
    w = str(tmp_path / "w.y4m")
    assert main(["decode", str(kf), "-o", w, "--model", model, "--generator", "warp"]) == 2
    assert "drop --generator" in capsys.readouterr().err
    # The full frame: the model's crops pasted into the first source frame (docs/compose.md).
    full, full_video = tmp_path / "f.kf", tmp_path / "f.y4m"
    args_full = [*args[:2], "-o", str(full), *args[4:], "--full-frame"]
    assert main([*args_full, "--motion", "fomm", "--model", model, "--quality", "low"]) == 0
    assert (
        main(["decode", str(full), "-o", str(full_video), "-q", "--model", model, "--full-frame"])
        == 0
    )
    info = probe(full_video)
    assert (info.width, info.height) == (176, 144)
    assert main([*args[:4], "--motion", "fomm", "-y"]) == 2
    assert "needs its model file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change",
    [{"mode": "hybrid"}, {"mode": "bidirectional", "gop": 5}, {"quant_level": 7}],
    ids=["hybrid", "bidirectional", "positions-only"],
)
def test_other_modes_and_levels_code_fomm(tiny_model, change: dict[str, object]) -> None:
    rng = np.random.default_rng(0)
    big = np.kron((rng.random((64, 64, 3)) * 255).astype(np.uint8), np.ones((4, 4, 1), np.uint8))
    frames = [np.roll(big, i, axis=1) for i in range(7)]
    encoder = EncoderCore(replace(FOMM_CONFIG, **change), Fraction(25))
    packets = [p for im in frames for p in encoder.encode(im, None)] + encoder.flush()
    decoder = DecoderCore(encoder.header, renderer=get_renderer(MOTION_NAME))
    out = sorted((f for p in packets for f in decoder.receive(p)), key=lambda f: f.index)
    assert [f.index for f in out] == list(range(7))


def _open_mouth(landmarks: np.ndarray, share: float) -> np.ndarray:
    """``landmarks`` with the inner lips parted by ``share`` of the inner mouth's width."""
    marks = np.array(landmarks, dtype=np.float32)
    width = np.linalg.norm(marks[INNER_MOUTH_CORNERS[0], :2] - marks[INNER_MOUTH_CORNERS[1], :2])
    marks[INNER_LIP_GAP[1], 1] = marks[INNER_LIP_GAP[0], 1] + share * width
    return marks


@pytest.mark.parametrize("on", [True, False], ids=["landmark-content", "gate-only"])
def test_an_opening_mouth_refreshes_a_fomm_stream_by_its_landmarks(
    tiny_model, carphone_analysis, on: bool
) -> None:
    # FOMM keypoints name no mouth: the encoder judges the content rule on the source's
    # face-mesh landmarks. The mouth opens at frame 3, wider than the keyframe's: that frame
    # becomes a keyframe (not a promoted update: a picture the model drew is no reference for
    # it), and the frames after it are drawn from it. With ``landmark_content`` off the motion
    # gate alone decides, and no keyframe follows the first.
    (_, image), *_ = carphone_analysis.frames()
    closed = carphone_analysis.landmarks[0]
    assert closed is not None and mouth_opening(closed) < 0.3
    marks = [closed] * 3 + [_open_mouth(closed, 0.7)] * 3 + [None]  # frame 6: no face found
    config = replace(
        FOMM_CONFIG,
        refresh_mode=RefreshMode.MOTION,
        refresh_threshold=10.0,
        landmark_content=on,
    )
    encoder = EncoderCore(config, Fraction(25))
    packets = [p for m in marks for p in encoder.encode(image, m)] + encoder.flush()
    decisions = {d.index: d for d in encoder.stats.decisions}
    assert not any(isinstance(p, DetailPacket) for p in packets)
    keyframes = [i for i, d in decisions.items() if d.keyframe]
    if not on:
        assert keyframes == [0]
        return
    assert keyframes == [0, 3] and decisions[3].refresh == "mouth"
    decoder = DecoderCore(encoder.header, renderer=get_renderer(MOTION_NAME))
    out = {f.index: f for p in packets for f in decoder.receive(p)}
    assert [out[i].reference_frame for i in (1, 2, 4, 5, 6)] == [0, 0, 3, 3, 3]


def test_renderer_survives_singular_jacobians(tiny_model) -> None:
    rep = get_representation(MOTION_NAME)
    params = rep.neutral()
    params[20:] = -np.tile([1.0, 0.0, 0.0, 1.0], 10)  # every Jacobian zero
    renderer = get_renderer(MOTION_NAME)
    image = np.full((256, 256, 3), 128, np.uint8)
    ref = renderer.prepare(image, rep.keypoints(rep.neutral(), 256))
    out = renderer.render(ref, rep.keypoints(params, 256))
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8


def test_scale_factor_one_has_no_blur_buffer() -> None:
    config = replace(TINY, kp_scale_factor=1.0, kp_num_blocks=3, dm_scale_factor=0.5)
    layout = upstream_layout(config)
    assert "down.weight" not in layout["kp_detector"]
    assert layout["generator"]["dense_motion_network.down.weight"] == (3, 1, 5, 5)
    nets = FommNetworks(config).eval()
    with torch.no_grad():
        kp = nets.kp_detector(_picture())
        assert nets.generator(_picture(), kp, kp).prediction.shape == (1, 3, 64, 64)


def test_bench_codes_with_a_fomm_model(tiny_model, carphone_path: Path, tmp_path: Path) -> None:
    """``keyface bench --motion fomm --model FILE``: keyface's curve is the model's own (codec
    ``keyface-fomm-<digest>``, the animation ladder), its points cached under the model's
    digest, and the command in the report says how to reproduce it."""
    model = tmp_path / "tiny-fomm.safetensors"
    out = tmp_path / "bench"
    args = [
        "bench", "--clips", str(carphone_path), "--frames", "6", "--u", "0,1",
        "--anchors", "none", "--metrics", "psnr", "--motion", "fomm", "--model", str(model),
        "--out", str(out), "--jobs", "1", "-q",
    ]  # fmt: skip
    assert main(args) == 0
    data = json.loads((out / "points.json").read_text())
    codec = f"keyface-fomm-{tiny_model.digest:08x}"
    assert {(p["codec"], p["param"]) for p in data["points"]} == {(codec, 0.0), (codec, 1.0)}
    assert all(p["info"]["mode"] == "animation" and p["bytes"] > 0 for p in data["points"])
    assert f"--motion fomm --model {model.resolve()}" in data["protocol"]["command"]
    cached = json.loads((out / "cache" / "carphone_pristine" / f"{codec}_u0.00.json").read_text())
    assert cached["key"]["fomm_model"] == f"{tiny_model.digest:08x}"
    assert main(args) == 0  # again: every point from the cache
    assert json.loads((out / "points.json").read_text())["run"]["cached"] == 2


def test_bench_needs_the_model_of_fomm(carphone_path: Path, tmp_path: Path, capsys) -> None:
    args = ["bench", "--clips", str(carphone_path), "--motion", "fomm", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "--motion fomm needs its model file" in capsys.readouterr().err


# -- the distilled keypoint encoder in the codec (ZTE's sender) ------------------------------------
def _student_file(path: Path, teacher_digest: int) -> Path:
    from keyface.fomm.student import KeypointStudent, StudentConfig, save_student

    torch.manual_seed(1)
    net = KeypointStudent(StudentConfig(image_size=TINY.image_size, num_kp=TINY.num_kp))
    with torch.no_grad():  # a Jacobian head that is not the identity, as a trained one
        for name, t in net.state_dict().items():
            if name.startswith("jacobian"):
                t.normal_(0, 0.1)
    save_student(path, net.eval(), teacher_digest, steps=0)
    return path


def test_a_student_measures_the_keypoints_and_the_stream_stays_the_models(
    tiny_model, tmp_path: Path, carphone_analysis
) -> None:
    """With ``use_model(model, student)`` the encoder's keypoints are the student's, not the
    detector's; the stream names the model only, and a decoder with the model alone (no
    student) renders exactly the keypoints that were sent."""
    from keyface.fomm import registered_student
    from keyface.fomm.student import read_student

    frames = [image for (_, image), _ in zip(carphone_analysis.frames(), range(4), strict=False)]
    teacher = get_representation(MOTION_NAME).analyze_image(frames[1])
    student_path = _student_file(tmp_path / "student.safetensors", tiny_model.digest)
    use_model(tiny_model.path, student_path)
    assert registered_student() is not None
    rep = get_representation(MOTION_NAME)
    measured = rep.analyze_image(frames[1])
    assert not np.allclose(measured, teacher)
    from keyface.fomm.motion import REFERENCE_SIZE, model_input, to_pixels

    with torch.no_grad():
        kp = read_student(student_path).net(model_input(frames[1], TINY.image_size))
    positions = to_pixels(kp.value[0].double().numpy(), TINY.image_size, REFERENCE_SIZE)
    assert measured.shape == teacher.shape
    assert np.allclose(measured[: 2 * TINY.num_kp], positions.reshape(-1), atol=1e-4)

    encoder = EncoderCore(FOMM_CONFIG, Fraction(25))
    packets = [p for im in frames for p in encoder.encode(im, None)] + encoder.flush()
    assert encoder.header.motion_digest == tiny_model.digest
    sent = [
        encoder.representation.keypoints(
            encoder.state.dequantize(encoder.state.quantize(rep.analyze_image(im))), 256
        )
        for im in frames
    ]
    use_model(tiny_model.path)  # the receiver: the model file, no student
    assert registered_student() is None
    decoder = DecoderCore(encoder.header, renderer=get_renderer(MOTION_NAME))
    out = [f for p in packets for f in decoder.receive(p)]
    for frame, kp_sent in zip(out, sent, strict=True):
        assert np.array_equal(frame.keypoints, kp_sent)


def test_a_student_of_another_model_is_refused(
    tiny_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    student = _student_file(tmp_path / "other.safetensors", tiny_model.digest ^ 1)
    video = tmp_path / "in.y4m"
    video.write_bytes(b"")  # never read: the options are checked first
    code = main(
        ["encode", str(video), "-o", str(tmp_path / "x.kf"), "--motion", "fomm",
         "--model", str(tiny_model.path), "--student", str(student)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "distilled from the model" in err[0], err
    code = main(["encode", str(video), "-o", str(tmp_path / "y.kf"), "--student", str(student)])
    err = capsys.readouterr().err
    assert code == 2 and "--student is a keypoint encoder of --motion fomm" in err
