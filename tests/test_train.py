"""The training pipeline: pairs as the decoder sees them, a tiny run that learns, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from keyface.generator.enhancer import EnhancerConfig
from keyface.generator.model import IN_CHANNELS, GeneratorConfig
from keyface.motion import get_representation
from keyface.train.data import (
    ClipData,
    KeyframeConfig,
    PrepareConfig,
    load_prepared,
    prepare_clip,
    prepare_keyframes,
)
from keyface.train.loop import TrainConfig, train
from keyface.train.pairs import KeyframeSampler, PairConfig, PairSampler, fixed_pairs

SMALL = GeneratorConfig(widths=(8, 8, 16, 16), blocks=1)


def _synthetic_clip(n: int = 6, size: int = 64, seed: int = 0) -> ClipData:
    """A face-sized texture that drifts, with motion parameters that move the same way."""
    import cv2

    rng = np.random.default_rng(seed)
    rep = get_representation()
    base = cv2.resize(rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8), (size, size))
    frames, params = [], []
    for i in range(n):
        m = np.float32([[1, 0, i * 0.5], [0, 1, 0]])
        frames.append(cv2.warpAffine(base, m, (size, size), borderMode=cv2.BORDER_REFLECT))
        p = rep.statistics.mean.copy()
        p[3] += i * 0.5 * 256 / size
        params.append(p)
    frames_a = np.stack(frames)
    # "Coded" keyframes: every frame blurred, as a keyframe codec at low quality smooths it.
    coded = np.stack([cv2.GaussianBlur(f, (5, 5), 1.2) for f in frames_a])
    return ClipData(
        name="synthetic",
        person="nobody",
        frames=frames_a,
        params=np.stack(params).astype(np.float32),
        refs=frames_a[[0, n - 1]].copy(),
        ref_index=np.array([0, n - 1], dtype=np.int32),
        valid=np.arange(n),
        keyframes=coded,
        keyframe_index=np.arange(n, dtype=np.int32),
    )


def test_pairs_have_the_network_shapes() -> None:
    sampler = PairSampler([_synthetic_clip()], PairConfig(patch=32), seed=0)
    x, y = sampler.batch(3)
    assert x.shape == (3, IN_CHANNELS, 32, 32) and y.shape == (3, 3, 32, 32)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert np.abs(y).max() <= 1.0


def test_pairs_are_seeded() -> None:
    a = PairSampler([_synthetic_clip()], PairConfig(patch=32), seed=3).batch(2)
    b = PairSampler([_synthetic_clip()], PairConfig(patch=32), seed=3).batch(2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    whole = fixed_pairs([_synthetic_clip()], 2, seed=0)
    assert whole[0].inputs.shape == (IN_CHANNELS, 64, 64)


@pytest.mark.slow
def test_tiny_training_run_lowers_the_loss_and_resumes(tmp_path: Path) -> None:
    clip = _synthetic_clip()
    config = TrainConfig(
        steps=40,
        batch=2,
        lr=2e-3,
        log_every=5,
        val_every=40,
        val_pairs=2,
        checkpoint_every=20,
        pairs=PairConfig(patch=32),
        model=SMALL,
    )
    run = tmp_path / "run"
    train(run, [clip], [clip], config)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert "val_lpips_generator" in log[-1]
    assert (run / "generator.safetensors").is_file()
    # Resume: a longer run continues from the checkpoint (step 40), it does not restart.
    train(run, [clip], [clip], TrainConfig(**{**config.__dict__, "steps": 45}))
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 45 and steps.count(5) == 1


def test_keyframe_pairs_are_coded_and_original_patches() -> None:
    clip = _synthetic_clip()
    x, y = KeyframeSampler([clip], patch=32, seed=0).batch(3)
    assert x.shape == y.shape == (3, 3, 32, 32)
    assert 0 < np.abs(x - y).mean() < 0.2  # same picture, one blurred
    no_keyframes = ClipData(**{**clip.__dict__, "keyframes": None, "keyframe_index": None})
    with pytest.raises(ValueError, match="--keyframes"):
        KeyframeSampler([no_keyframes], patch=32, seed=0)


@pytest.mark.slow
def test_tiny_enhancer_run_learns_to_sharpen(tmp_path: Path) -> None:
    clip = _synthetic_clip()
    config = TrainConfig(
        task="enhancer",
        steps=60,
        batch=4,
        lr=3e-3,
        log_every=5,
        val_every=60,
        val_pairs=3,
        pairs=PairConfig(patch=32),
        enhancer=EnhancerConfig(widths=(8, 16, 16), blocks=1),
    )
    train(tmp_path / "run", [clip], [clip], config)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert log[-1]["val_l1_generator"] < log[-1]["val_l1_warp"]  # closer than the blurred input
    assert (tmp_path / "run" / "enhancer.safetensors").is_file()


def test_patch_discriminator_scores_each_cell_and_hinge_losses_have_their_signs() -> None:
    import torch

    from keyface.train.adversarial import PatchDiscriminator, d_hinge_loss, g_hinge_loss

    scores = PatchDiscriminator(widths=(8, 16, 16))(torch.zeros(2, 3, 32, 40))
    assert scores.shape == (2, 1, 4, 5)  # one score per 8x8 cell
    sure = torch.full((4,), 2.0)
    # A discriminator that scores originals >= 1 and outputs <= -1 has nothing left to learn.
    assert float(d_hinge_loss(sure, -sure)) == 0.0
    assert float(d_hinge_loss(-sure, sure)) == 6.0
    # The network's loss falls as the discriminator's score of its output rises.
    assert float(g_hinge_loss(sure)) < float(g_hinge_loss(-sure))


@pytest.mark.slow
def test_adversarial_run_from_init_weights_logs_and_resumes(tmp_path: Path) -> None:
    from keyface.generator.weights import GeneratorWeightsError, load_network

    clip = _synthetic_clip()
    small = EnhancerConfig(widths=(8, 16, 16), blocks=1)
    base = TrainConfig(
        task="enhancer",
        steps=10,
        batch=2,
        lr=3e-3,
        log_every=5,
        val_every=10,
        val_pairs=2,
        pairs=PairConfig(patch=32),
        enhancer=small,
    )
    train(tmp_path / "base", [clip], [clip], base)
    init = tmp_path / "base" / "enhancer.safetensors"
    # A run with lr 0 that starts from those weights ends with exactly those weights.
    frozen = TrainConfig(**{**base.__dict__, "lr": 0.0, "adv_weight": 0.1, "init": str(init)})
    run = tmp_path / "adv"
    train(run, [clip], [clip], frozen)
    a, b = load_network(init).state_dict(), load_network(run / "enhancer.safetensors").state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all("adv" in r and "disc" in r for r in log if "loss" in r)
    # The discriminator is checkpointed with the network: a longer run resumes both.
    train(run, [clip], [clip], TrainConfig(**{**frozen.__dict__, "steps": 15}))
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 15
    # The starting weights must be of the run's kind and shape.
    wrong = TrainConfig(**{**base.__dict__, "task": "generator", "model": SMALL, "init": str(init)})
    with pytest.raises(GeneratorWeightsError, match="not a generator"):
        train(tmp_path / "wrong", [clip], [clip], wrong)
    other = EnhancerConfig(widths=(8, 8, 16), blocks=1)
    wider = TrainConfig(**{**base.__dict__, "enhancer": other, "init": str(init)})
    with pytest.raises(GeneratorWeightsError, match="shape differs"):
        train(tmp_path / "wider", [clip], [clip], wider)


def test_resample_shifts_the_output_bicubically_and_the_target_exactly() -> None:
    import math

    import torch

    from keyface.train.loop import resample

    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    wave = torch.sin(2 * math.pi * x / 16) * torch.cos(2 * math.pi * y / 8)
    batch = wave[None, None].repeat(2, 3, 1, 1)
    moved, exact = resample(batch, batch, torch.Generator().manual_seed(0), margin=4)
    assert moved.shape == exact.shape == (2, 3, 24, 24)
    # The target moved by the drawn shift d: the picture at x is the input at x - d.
    d = torch.rand(2, 2, generator=torch.Generator().manual_seed(0)) - 0.5
    for i in range(2):
        xs, ys = x - d[i, 0], y - d[i, 1]
        want = torch.sin(2 * math.pi * xs / 16) * torch.cos(2 * math.pi * ys / 8)
        assert torch.allclose(exact[i, 0], want[4:28, 4:28], atol=1e-4)
    # Bicubic resampling follows the same shift, only slightly softer than the exact one.
    assert float((moved - exact).abs().max()) < 0.05


def test_prepare_a_real_clip(tmp_path: Path, carphone_path: Path) -> None:
    meta = prepare_clip(
        carphone_path,
        tmp_path / "carphone",
        "carphone",
        PrepareConfig(max_frames=12, references=2, codec="hevc"),
        seed=0,
    )
    assert meta["frames"] == 12
    (clip,) = load_prepared(tmp_path)
    assert clip.frames.shape == (12, 256, 256, 3)
    assert clip.refs.shape == (2, 256, 256, 3)
    # The references went through the keyframe codec: close to, not equal to, the crops.
    diff = np.abs(clip.refs[0].astype(int) - clip.frames[clip.ref_index[0]].astype(int))
    assert 0 < diff.mean() < 12
    assert load_prepared(tmp_path, {"someone else"}) == []
    # Keyframes for the enhancer: more frames through the codec, added to the same folder.
    assert prepare_keyframes(tmp_path / "carphone", KeyframeConfig(3, (20, 40), ("hevc",)), 0) == 3
    (clip,) = load_prepared(tmp_path)
    assert clip.keyframes is not None and clip.keyframe_index is not None
    assert clip.keyframes.shape == (3, 256, 256, 3)
    original = clip.frames[clip.keyframe_index[0]].astype(int)
    assert 0 < np.abs(clip.keyframes[0].astype(int) - original).mean() < 12


def test_cli_fit_rejects_missing_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from keyface.cli.main import main

    code = main(["train", "fit", "--data", str(tmp_path / "none"), "--run", str(tmp_path / "r")])
    assert code == 2
    assert "keyface train prepare" in capsys.readouterr().err
