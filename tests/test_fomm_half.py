"""ZTE's fourth step (keyface.train.fomm_half): a FOMM model's generator at half the channels,
started from the full model's weights and fine-tuned against the driving frames and the full
model's predictions; the model file it writes, its resume and its CLI
(``keyface train fit --task fomm-half --teacher MODEL``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from keyface.cli.main import main
from keyface.fomm import FommConfig
from keyface.fomm.model import FommNetworks, load_model, save_model
from keyface.train.fomm import MODEL, _keypoints, model_config
from keyface.train.fomm_data import synthetic_clips
from keyface.train.fomm_half import HalfConfig, fine_tune_half, half_config, halve

SIZE = 32
PARENT = FommConfig.tiny(image_size=SIZE)


def _log(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture()
def parent_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "parent.safetensors"
    save_model(path, FommNetworks(PARENT).eval(), {"provenance": "random, for a test"})
    return path


def test_halving_keeps_the_detector_and_starts_from_the_parents_leading_channels() -> None:
    torch.manual_seed(0)
    parent = FommNetworks(PARENT).eval()
    child = halve(parent).eval()
    assert child.config == half_config(PARENT)
    assert child.config.gen_block_expansion * 2 == PARENT.gen_block_expansion
    assert child.config.dm_block_expansion * 2 == PARENT.dm_block_expansion
    theirs, own = parent.state_dict(), child.state_dict()
    assert all(torch.equal(theirs[k], v) for k, v in own.items() if k.startswith("kp_detector."))
    # The first layer sees the 3 colours in both: the leading half of its filters, unscaled.
    first = "generator.first.conv.weight"
    assert torch.equal(own[first], theirs[first][: own[first].shape[0]])
    # A layer with half the inputs: the leading slice, scaled by 2 to keep its output's scale.
    down = "generator.down_blocks.1.conv.weight"
    n_out, n_in = own[down].shape[:2]
    assert n_in * 2 == theirs[down].shape[1]
    assert torch.allclose(own[down], 2 * theirs[down][:n_out, :n_in])
    # About a quarter of the weights at the CPU model's shape (in the tiny one the dense
    # motion network's input, 4 channels per keypoint heatmap, weighs more).
    small = FommNetworks(model_config("small", 64))
    weights = [
        sum(v.numel() for k, v in n.state_dict().items() if k.startswith("generator."))
        for n in (small, halve(small))
    ]
    assert 0.2 < weights[1] / weights[0] < 0.35, weights
    # It draws a picture, from the parent's keypoints.
    x = torch.rand(2, 3, SIZE, SIZE)
    kp = _keypoints(parent, x)
    out = child.generator(x, kp, kp).prediction
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


def test_a_generator_too_narrow_to_halve_is_refused() -> None:
    with pytest.raises(ValueError, match="too narrow"):
        half_config(
            FommConfig.tiny(image_size=SIZE).__class__(
                image_size=SIZE,
                gen_block_expansion=1,
                gen_max_features=4,
                kp_num_blocks=3,
                dm_num_blocks=3,
            )
        )


def test_a_tiny_fine_tune_lowers_its_loss_and_writes_a_model_that_names_its_parent(
    tmp_path: Path, parent_file: Path
) -> None:
    parent = load_model(parent_file)
    clips = synthetic_clips(count=2, frames=8, size=SIZE)
    run = tmp_path / "run"
    config = HalfConfig(
        steps=30, batch=4, lr=1e-3, log_every=1, val_every=30, val_pairs=4, augment=False
    )
    fine_tune_half(run, parent, clips[:1], clips[1:], config)
    log = _log(run)
    assert "parent_lpips" in log[0], "the parent is scored on the same pairs first"
    steps = [r for r in log if "total" in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    first = np.mean([r["total"] for r in steps[:5]])
    last = np.mean([r["total"] for r in steps[-5:]])
    assert last < 0.85 * first, (first, last)
    assert any("val_lpips" in r for r in log)
    model = load_model(run / MODEL)
    assert model.config == half_config(PARENT)
    assert model.metadata["parent_digest"] == f"{parent.digest:08x}"
    assert "30 steps" in model.metadata["provenance"]
    # The detector is the parent's, untouched by the fine-tuning.
    same = parent.networks.kp_detector.state_dict()
    assert all(torch.equal(same[k], v) for k, v in model.networks.kp_detector.state_dict().items())
    # A run resumes only from the parent it started from.
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_model(other, FommNetworks(PARENT).eval())
    with pytest.raises(ValueError, match="was started from"):
        fine_tune_half(run, load_model(other), clips[:1], clips[1:], config)


def test_cli_fit_fomm_half(
    tmp_path: Path, parent_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, run = tmp_path / "cache", tmp_path / "run"
    data.mkdir()
    for c in synthetic_clips(count=3, size=SIZE):
        np.savez(data / f"{c.name}.npz", frames=c.frames, person=c.person, clip=c.name, stride=1)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train_people": ["p0", "p1"], "validation_people": ["p2"]}))
    args = ["train", "fit", "--task", "fomm-half", "--data", str(data), "--run", str(run)]
    args += ["--split", str(split), "--batch", "2", "--steps", "2", "-q"]
    assert main(args) == 2, "without --teacher"
    assert "needs --teacher" in capsys.readouterr().err
    assert main([*args, "--teacher", str(parent_file)]) == 0
    out = capsys.readouterr()
    assert "validation L1" in out.err and str(run / MODEL) in out.out
    assert load_model(run / MODEL).config == half_config(PARENT)
