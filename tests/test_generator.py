"""The learned renderer: network shapes, input planes, the renderer, weights files, ONNX.

These tests teach the contract: an untrained generator returns the warp and an untrained
keyframe enhancer returns its input (so training starts from the training-free baseline), the
renderer takes any frame size, a weights file is checked before use, and the ONNX export
computes what torch computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from keyface.generator.enhancer import Enhancer, EnhancerConfig
from keyface.generator.features import generator_input, log_area_ratio, part_masks, to_uint8
from keyface.generator.model import IN_CHANNELS, Generator, GeneratorConfig
from keyface.generator.renderer import GeneratorRenderer, export_onnx
from keyface.generator.weights import (
    RENDERERS,
    SHIPPED,
    GeneratorWeightsError,
    load_network,
    load_weights,
    save_weights,
    sha256_of,
)
from keyface.motion import get_representation
from keyface.renderers import DEFAULT_RENDERER, UnknownRendererError, get_renderer

SMALL = GeneratorConfig(widths=(8, 8, 16, 16), blocks=1)
SMALL_ENHANCER = EnhancerConfig(widths=(8, 8, 16), blocks=1)


def _keypoints(size: int = 256) -> np.ndarray:
    rep = get_representation()
    return rep.keypoints(rep.statistics.mean, size)


def _image(h: int = 256, w: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_forward_shapes_dtype_and_range() -> None:
    model = Generator(SMALL)
    x = torch.rand(2, IN_CHANNELS, 64, 96) * 2 - 1
    y = model(x)
    assert y.shape == (2, 3, 64, 96) and y.dtype == torch.float32
    assert float(y.min()) >= -1 and float(y.max()) <= 1


def test_untrained_network_returns_the_warp() -> None:
    model = Generator(SMALL)
    x = torch.rand(1, IN_CHANNELS, 32, 32) * 1.6 - 0.8
    y = model(x)
    assert torch.allclose(y, x[:, :3], atol=0.01)


def test_untrained_enhancer_returns_its_input() -> None:
    model = Enhancer(SMALL_ENHANCER)
    x = torch.rand(2, 3, 48, 64) * 2 - 1
    y = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.equal(y, x)


def test_renderer_enhances_the_keyframe_once() -> None:
    enhancer = Enhancer(SMALL_ENHANCER)
    with torch.no_grad():  # a trained enhancer changes the picture: here, a brightness shift
        enhancer.head.bias[:] = 0.1
    renderer = GeneratorRenderer(None, "fast", enhancer=enhancer, backend="torch")
    img = _image(144, 176)
    kp = _keypoints(256) * np.array([176 / 256, 144 / 256], dtype=np.float32)
    ref = renderer.prepare(img, kp)
    assert ref.image.shape == img.shape and ref.image.dtype == np.uint8
    assert 8 < float(ref.image.astype(int).mean() - img.astype(int).mean()) < 18
    # Without a generator, a frame is the plain warp of the enhanced keyframe.
    assert np.array_equal(renderer.render(ref, kp + 1.5), renderer.warp.render(ref, kp + 1.5))
    with pytest.raises(ValueError, match="generator, an enhancer or both"):
        GeneratorRenderer(None)


def test_input_planes() -> None:
    kp = _keypoints()
    h = w = 256
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    identity = np.stack([xs, ys], axis=-1)
    planes = generator_input(_image(), identity, kp)
    assert planes.shape == (IN_CHANNELS, h, w) and planes.dtype == np.float32
    assert np.abs(planes[:3]).max() <= 1.0
    assert np.allclose(planes[3], 0.0, atol=1e-5)  # identity flow: no stretch
    masks = part_masks(kp, h, w)
    assert masks.min() >= 0 and masks.max() <= 1
    assert masks[1].sum() > 20  # the mean face has open eyes
    # A flow that samples a 2x smaller area everywhere (a zoom in) reads log(1/4).
    assert np.allclose(log_area_ratio(identity * 0.5)[5:-5, 5:-5], np.log(0.25), atol=1e-4)


def test_to_uint8_round_trip() -> None:
    img = _image(16, 16)
    x = img.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
    assert np.array_equal(to_uint8(x), img)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("shape", [(256, 256), (144, 176)])
def test_renderer_renders_any_size(backend: str, shape: tuple[int, int]) -> None:
    h, w = shape
    renderer = GeneratorRenderer(Generator(SMALL), backend=backend)
    kp = _keypoints(256) * np.array([w / 256, h / 256], dtype=np.float32)
    ref = renderer.prepare(_image(h, w), kp)
    out = renderer.render(ref, kp + 1.5)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_onnx_export_matches_torch() -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = Generator(GeneratorConfig(widths=(8, 16, 16, 32), blocks=2))
    for p in model.head.parameters():  # make the head non-trivial
        torch.nn.init.normal_(p, std=0.05)
    model.eval()
    session = ort.InferenceSession(export_onnx(model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(-1, 1, (1, IN_CHANNELS, 64, 80)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    actual = session.run(None, {"inputs": x})[0]
    assert np.abs(actual - expected).max() < 1e-4


def test_enhancer_onnx_export_matches_torch() -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = Enhancer(SMALL_ENHANCER)
    torch.nn.init.normal_(model.head.weight, std=0.05)
    model.eval()
    session = ort.InferenceSession(export_onnx(model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 64, 80)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    actual = session.run(None, {"inputs": x})[0]
    assert np.abs(actual - expected).max() < 1e-4


def test_enhancer_weights_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "enh.safetensors"
    digest = save_weights(path, Enhancer(SMALL_ENHANCER))
    loaded = load_network(path, digest)
    assert isinstance(loaded, Enhancer) and loaded.config == SMALL_ENHANCER
    with pytest.raises(GeneratorWeightsError, match="not a generator"):
        load_weights(path)  # the per-frame generator's loader refuses an enhancer
    renderer = get_renderer(str(path))
    assert isinstance(renderer, GeneratorRenderer) and renderer.name == "enh"


def test_weights_round_trip(tmp_path: Path) -> None:
    model = Generator(SMALL).eval()
    path = tmp_path / "g.safetensors"
    digest = save_weights(path, model)
    loaded = load_weights(path, digest)
    assert loaded.config == SMALL
    x = torch.rand(1, IN_CHANNELS, 32, 32)
    with torch.no_grad():  # stored as float16: equal to half precision
        assert torch.allclose(loaded(x), model(x), atol=2e-3)


def test_weights_errors(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    digest = save_weights(path, Generator(SMALL))
    with pytest.raises(GeneratorWeightsError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GeneratorWeightsError, match="corrupted"):
        load_weights(path, digest)
    path.write_bytes(b"not a weights file at all")
    with pytest.raises(GeneratorWeightsError, match="safetensors"):
        load_weights(path)


def test_unknown_generator_name() -> None:
    with pytest.raises(UnknownRendererError, match="available: warp"):
        get_renderer("no-such-generator")


def test_weights_path_is_a_generator(tmp_path: Path) -> None:
    path = tmp_path / "mine.safetensors"
    save_weights(path, Generator(SMALL))
    renderer = get_renderer(str(path))
    assert isinstance(renderer, GeneratorRenderer) and renderer.name == "mine"


def test_shipped_weights_are_registered_and_intact() -> None:
    assert DEFAULT_RENDERER == "warp" or DEFAULT_RENDERER in RENDERERS
    total = 0
    for shipped in SHIPPED.values():
        assert shipped.path.is_file(), shipped.path
        total += shipped.path.stat().st_size
        assert sha256_of(shipped.path) == shipped.sha256
        assert shipped.command.startswith("keyface train fit")
        model = load_network(shipped.path, shipped.sha256)
        assert model.parameter_count() > 0
    assert total <= 10 * 1024 * 1024
    for spec in RENDERERS.values():  # every renderer names shipped networks of the right kind
        assert spec.enhancer or spec.generator
        if spec.enhancer:
            assert isinstance(load_network(SHIPPED[spec.enhancer].path), Enhancer)
        if spec.generator:
            assert isinstance(load_network(SHIPPED[spec.generator].path), Generator)


def test_decode_with_a_corrupted_generator_is_a_clear_cli_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keyface.cli.main import main

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 64)
    stream = tmp_path / "x.kf"
    stream.write_bytes(b"")
    code = main(["decode", str(stream), "-o", str(tmp_path / "o.mp4"), "--generator", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "Traceback" not in err
