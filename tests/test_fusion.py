"""Decoder-side fusion (keyface.fusion): API, registry, what the training-free fusion must do,
the shipped learned fusion's weights and a tiny training run."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from keyface.fusion import (
    DEFAULT_FUSION,
    UnknownFusionError,
    available_fusions,
    get_fusion,
    upsample_aux,
)
from keyface.fusion.catalog import SHIPPED


def _smooth(seed: int, size: int = 128) -> np.ndarray:
    """A smooth synthetic picture: coloured blobs on a gradient."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([80 + 60 * x, 90 + 50 * y, 120 - 40 * x * y], axis=2)
    for _ in range(6):
        cy, cx = rng.uniform(0.2, 0.8, 2)
        r = rng.uniform(0.05, 0.15)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img + blob * rng.uniform(-90, 90, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _down(img: np.ndarray, k: int) -> np.ndarray:
    s = img.shape[0] // k
    return cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def test_registry_names_and_errors() -> None:
    names = available_fusions()
    assert "band" in names and "aligned" in names
    assert DEFAULT_FUSION in names
    assert get_fusion().name == DEFAULT_FUSION
    with pytest.raises(UnknownFusionError) as err:
        get_fusion("nope")
    message = str(err.value)
    assert "\n" not in message and "nope" in message and "aligned" in message


def test_training_free_fusions_do_not_import_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from keyface.fusion import get_fusion\n"
        "for n in ('none', 'band', 'aligned'):\n"
        "    get_fusion(n).fuse(np.zeros((64, 64, 3), np.uint8), np.zeros((16, 16, 3), np.uint8))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["none", "band", "aligned"])
@pytest.mark.parametrize("k", [2, 4, 8])
def test_shapes_dtypes_and_determinism(name: str, k: int) -> None:
    src = _smooth(k)
    fusion = get_fusion(name)
    out = fusion.fuse(src, _down(src, k))
    assert out.shape == src.shape and out.dtype == np.uint8
    again = get_fusion(name).fuse(src, _down(src, k))
    assert np.array_equal(out, again)


def test_none_is_the_animation_alone() -> None:
    """``--fusion none``: the animated frame untouched, whatever the aux picture says."""
    src = _smooth(4)
    out = get_fusion("none").fuse(src, np.zeros((32, 32, 3), np.uint8))
    assert np.array_equal(out, src)


def test_bad_inputs_are_refused() -> None:
    fusion = get_fusion("aligned")
    img = _smooth(0)
    with pytest.raises(ValueError, match="1/2, 1/4 or 1/8"):
        fusion.fuse(img, _down(img, 3)[:42, :42])
    with pytest.raises(ValueError, match="uint8"):
        fusion.fuse(img.astype(np.float32), _down(img, 4))
    with pytest.raises(ValueError, match=r"\(S, S, 3\)"):
        fusion.fuse(img[:, :100], _down(img, 4))


def test_upsample_aux_is_bicubic_uint8() -> None:
    aux = _down(_smooth(1), 4)
    up = upsample_aux(aux, 128)
    assert up.shape == (128, 128, 3) and up.dtype == np.uint8
    assert np.array_equal(up, cv2.resize(aux, (128, 128), interpolation=cv2.INTER_CUBIC))


def test_consistent_inputs_pass_through() -> None:
    """An animation that agrees with the aux frame comes out (nearly) unchanged."""
    src = _smooth(2)
    aux = _down(src, 4)
    anim = upsample_aux(aux, 128)
    out = get_fusion("aligned").fuse(anim, aux)
    assert np.abs(out.astype(int) - anim.astype(int)).max() <= 3


def test_displaced_animation_is_pulled_to_the_aux_geometry() -> None:
    src = _smooth(3)
    anim = np.roll(src, (3, -2), axis=(0, 1))
    out = get_fusion("aligned").fuse(anim, _down(src, 4))
    band = get_fusion("band").fuse(anim, _down(src, 4))
    assert _psnr(out, src) > _psnr(anim, src) + 6
    assert _psnr(out, src) > _psnr(band, src) + 2


@pytest.mark.parametrize("garbage", ["noise", "other picture", "black"])
def test_garbage_animation_is_never_much_worse_than_aux_only(garbage: str) -> None:
    y, x = np.mgrid[0:128, 0:128]
    texture = 12 * np.sin(x * 1.3) * np.cos(y * 0.9)  # detail the aux frame cannot carry
    src = np.clip(_smooth(4) + texture[..., None], 0, 255).astype(np.uint8)
    aux = _down(src, 4)
    anim = {
        "noise": np.random.default_rng(0).integers(0, 256, src.shape, dtype=np.uint8),
        "other picture": _smooth(99)[::-1].copy(),
        "black": np.zeros_like(src),
    }[garbage]
    out = get_fusion("aligned").fuse(anim, aux)
    assert _psnr(out, src) >= _psnr(upsample_aux(aux, 128), src) - 0.5


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_learned_fusion_loads_and_matches_its_checksum(name: str, tmp_path) -> None:
    from keyface.fusion.weights import FusionWeightsError, load_fusion, sha256_of

    spec = SHIPPED[name]
    assert sha256_of(spec.path) == spec.sha256
    fusion = get_fusion(name)
    src = _smooth(5, 256)
    out = fusion.fuse(src, _down(src, 4))
    assert out.shape == src.shape and out.dtype == np.uint8
    bad = tmp_path / "bad.safetensors"
    data = bytearray(spec.path.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(FusionWeightsError, match="corrupted"):
        load_fusion(bad, spec.sha256)


def test_untrained_network_is_the_training_free_fusion() -> None:
    from keyface.fusion.learned import LearnedFusion
    from keyface.fusion.net import FusionNet

    src = _smooth(6)
    anim = np.roll(src, 2, axis=1)
    aux = _down(src, 4)
    learned = LearnedFusion(FusionNet(), "untrained").fuse(anim, aux)
    base = get_fusion("aligned").fuse(anim, aux)
    assert np.abs(learned.astype(int) - base.astype(int)).max() <= 1


def test_tiny_training_run_resumes(tmp_path) -> None:
    from keyface.fusion.learned import LearnedFusion
    from keyface.train.fusion import main

    rng = np.random.default_rng(0)
    for c in range(3):
        clip = tmp_path / "data" / f"clip{c}"
        clip.mkdir(parents=True)
        frames = np.stack([_smooth(10 * c + t, 64) for t in range(3)])
        np.save(clip / "frames.npy", frames)
        np.save(clip / "anim_0.30.npy", np.roll(frames, 1, axis=2))
        low = np.stack([_down(f, 4) for f in frames])
        np.save(clip / "aux_s4_q40.npy", np.clip(low + rng.normal(0, 4, low.shape), 0, 255))
        np.save(clip / "aux_s4_q40.npy", np.load(clip / "aux_s4_q40.npy").astype(np.uint8))
        (clip / "fusion.json").write_text(json.dumps({"clip": f"clip{c}"}))
    argv = ["--data", str(tmp_path / "data"), "--run", str(tmp_path / "run"), "--patch", "32"]
    argv += ["--batch", "2", "--vgg-layers", "1", "--val-batch", "2", "--monitor", "1", "-q"]
    argv += ["--log-every", "2", "--val-every", "2", "--channels", "8", "--layers", "1"]
    assert main([*argv, "--steps", "2"]) == 0
    assert main([*argv, "--steps", "4"]) == 0  # resumes from step 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    fusion = LearnedFusion.from_file(tmp_path / "run" / "fusion.safetensors")
    src = _smooth(7, 64)
    assert fusion.fuse(src, _down(src, 4)).shape == (64, 64, 3)


def test_numpy_folding_matches_the_network_in_torch() -> None:
    import torch

    from keyface.fusion.learned import LearnedFusion
    from keyface.fusion.net import FusionNet, FusionNetConfig

    torch.manual_seed(0)
    net = FusionNet(FusionNetConfig(channels=8, layers=2))
    torch.nn.init.normal_(net.out.weight, std=0.05)
    src = _smooth(8)
    anim, aux = np.roll(src, 1, axis=0), _down(src, 4)
    parts = get_fusion("aligned").parts(anim, aux)  # type: ignore[attr-defined]

    def t(im: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(im).permute(2, 0, 1)[None].float() / 127.5 - 1

    with torch.no_grad():
        ref = net(t(parts["fused"]), t(parts["aux_up"]), t(parts["aligned"]))
    ref = ((ref[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).numpy()
    out = LearnedFusion(net, "x").fuse(anim, aux)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_a_weights_file_is_a_learned_fusion(tmp_path) -> None:
    from keyface.fusion.net import FusionNet
    from keyface.fusion.weights import save_fusion

    path = tmp_path / "mine.safetensors"
    save_fusion(path, FusionNet())
    assert get_fusion(str(path)).name == "mine"
    with pytest.raises(UnknownFusionError, match="not found"):
        get_fusion(str(tmp_path / "missing.safetensors"))


def test_weights_are_checked_against_their_checksum(tmp_path) -> None:
    from keyface.fusion.net import FusionNet, FusionNetConfig
    from keyface.fusion.weights import FusionWeightsError, load_fusion, save_fusion

    path = tmp_path / "w.safetensors"
    sha = save_fusion(path, FusionNet(FusionNetConfig(channels=8, layers=1)))
    assert load_fusion(path, sha).config == FusionNetConfig(channels=8, layers=1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(FusionWeightsError, match="corrupted"):
        load_fusion(path, sha)
    path.write_bytes(b"not safetensors")
    with pytest.raises(FusionWeightsError, match="not a readable"):
        load_fusion(path)
