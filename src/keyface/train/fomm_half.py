"""ZTE's fourth step: a FOMM model's generator at half the channels, fine-tuned from the full
model (issue 15 item 3).

The ZTE paper distils FOMM for phones in four steps: the full model, a small keypoint encoder
distilled from its detector (:mod:`keyface.train.fomm_distill`), that encoder pruned, and last a
generator with half the channels fine-tuned. This module is the last step. The half-width model
keeps the parent's keypoint detector as it is (frozen: streams coded with the parent's keypoints,
or a student's, drive it unchanged) and halves the upstream ``generator`` module, the dense
motion network included (:func:`half_config`; the same shapes as ``--config vox256-half`` of
``--task fomm`` at vox-256 size).

* **Start** (:func:`halve`): each generator tensor is the leading slice of the parent's (the
  first half of its output channels and of its input channels, a structured pruning by
  position), the input slice scaled by the parent's input width over the child's so that a
  layer's output keeps its scale.
* **Fine-tuning**, for a batch of (source, driving) frame pairs of one clip of the train people
  (``prepare --task fomm`` cache, flip and colour jitter as ``--task fomm``): keypoints of both
  from the frozen detector, the half generator's prediction of the driving frame scored by
  FOMM's multi-scale perceptual loss against the driving frame (weight ``perceptual_weight``
  per VGG layer and scale) plus the L1 distance to the frozen parent's prediction (weight
  ``teacher_weight``). Adam, betas (0.5, 0.999), constant learning rate.

A run folder holds ``config.json`` (with the parent's digest: a run resumes only with the same
parent), ``checkpoint.pt`` (resumable like ``--task fomm``), ``log.jsonl`` (the terms; every
``val_every`` steps ``val_l1`` / ``val_lpips`` on fixed pairs of the validation people, and once
``parent_l1`` / ``parent_lpips``: the parent on the same pairs) and ``model.safetensors``: a
keyface FOMM model file like any other (``keyface encode --motion fomm --model FILE``), its
provenance naming the parent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from keyface.fomm.config import FommConfig
from keyface.fomm.model import FommModel, FommNetworks, save_model
from keyface.train.fomm import (
    CHECKPOINT,
    MODEL,
    PerceptualPyramid,
    ProgressFn,
    Validator,
    _keypoints,
    resumed_config,
    run_steps,
)
from keyface.train.fomm_data import Augment, FommClip, FommPairs, fixed_pairs


def half_config(config: FommConfig) -> FommConfig:
    """``config`` with the generator and its dense motion network at half the channels."""
    if min(config.gen_block_expansion, config.dm_block_expansion) < 2:
        raise ValueError("the generator is too narrow to halve (block expansion below 2)")
    return replace(
        config,
        gen_block_expansion=config.gen_block_expansion // 2,
        gen_max_features=config.gen_max_features // 2,
        dm_block_expansion=config.dm_block_expansion // 2,
        dm_max_features=config.dm_max_features // 2,
    )


@torch.no_grad()
def halve(parent: FommNetworks) -> FommNetworks:
    """The half-width networks started from ``parent`` (see the module docstring): the
    detector copied, each generator tensor the leading slice of the parent's."""
    child = FommNetworks(half_config(parent.config))
    source = parent.state_dict()
    state: dict[str, torch.Tensor] = {}
    for name, own in child.state_dict().items():
        theirs = source[name]
        if name.startswith("kp_detector.") or theirs.dim() == 0:
            state[name] = theirs.clone()
            continue
        part = theirs[tuple(slice(0, n) for n in own.shape)].clone()
        if part.dim() >= 2 and own.shape[1] < theirs.shape[1]:  # fewer inputs: keep the scale
            part *= theirs.shape[1] / own.shape[1]
        state[name] = part
    child.load_state_dict(state)
    return child


@dataclass(frozen=True)
class HalfConfig:
    parent_digest: int = 0
    """CRC-32 of the parent's model file (set by :func:`fine_tune_half`)."""
    steps: int = 2000
    batch: int = 8
    lr: float = 2e-4
    perceptual_weight: float = 10.0
    teacher_weight: float = 10.0
    vgg_layers: int = 5
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    log_every: int = 10
    checkpoint_every: int = 100
    val_every: int = 200
    val_pairs: int = 32
    pretrained_vgg: bool = True
    """False only in tests that do not need meaningful features."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HalfConfig:
        return cls(**data)


def half_losses(
    child: FommNetworks,
    parent: FommNetworks,
    vgg: PerceptualPyramid,
    source: torch.Tensor,
    driving: torch.Tensor,
    config: HalfConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The fine-tuning loss of one batch and its terms (see the module docstring)."""
    with torch.no_grad():
        kp_source = _keypoints(parent, source)
        kp_driving = _keypoints(parent, driving)
        target = parent.generator(source, kp_driving, kp_source).prediction
    prediction = child.generator(source, kp_driving, kp_source).prediction
    perceptual = config.perceptual_weight * vgg(prediction, driving)
    teacher = config.teacher_weight * (prediction - target).abs().mean()
    total = perceptual + teacher
    terms = {
        "perceptual": float(perceptual.detach()),
        "teacher": float(teacher.detach()),
        "total": float(total.detach()),
    }
    return total, terms


def fine_tune_half(
    run_dir: Path,
    parent_model: FommModel,
    train_clips: list[FommClip],
    val_clips: list[FommClip],
    config: HalfConfig,
    *,
    progress: ProgressFn | None = None,
    stop: Callable[[], bool] | None = None,
) -> FommNetworks:
    """Start (or resume) the half-width run in ``run_dir`` from ``parent_model``; returns the
    half-width networks and writes ``run_dir/model.safetensors``. A run resumes with its saved
    settings (only ``steps``, ``device`` and the intervals may change) and only from the
    parent it started from."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / CHECKPOINT
    config = replace(config, parent_digest=parent_model.digest)
    if ckpt_path.is_file() and cfg_path.is_file():
        saved = HalfConfig.from_json(json.loads(cfg_path.read_text()))
        if saved.parent_digest != parent_model.digest:
            raise ValueError(
                f"{run_dir} was started from the model {saved.parent_digest:08x}, "
                f"not {parent_model.digest:08x}"
            )
        config = resumed_config(saved, config, "device")
    cfg_path.write_text(json.dumps(config.to_json(), indent=1))
    device = config.device
    torch.manual_seed(config.seed)
    parent = parent_model.networks.to(device).eval()
    child = halve(parent).to(device)
    for p in child.kp_detector.parameters():
        p.requires_grad_(False)
    vgg = PerceptualPyramid(config.vgg_layers, config.pretrained_vgg).to(device)
    opt = torch.optim.Adam(child.generator.parameters(), lr=config.lr, betas=(0.5, 0.999))
    pairs = FommPairs(train_clips, config.seed, Augment() if config.augment else None)
    step = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        child.generator.load_state_dict(state["generator"])
        opt.load_state_dict(state["optimizer"])
        pairs.rng.bit_generator.state = state["pairs_rng"]
        step = int(state["step"])
    validator = None
    if val_clips:
        validator = Validator(*fixed_pairs(val_clips, config.val_pairs, config.seed), device)
        if step == 0:
            first = validator.run(parent)
            with open(run_dir / "log.jsonl", "a") as log:
                log.write(json.dumps({"parent_l1": first.l1, "parent_lpips": first.lpips}) + "\n")

    def checkpoint(at: int) -> dict[str, Any]:
        return {
            "generator": child.generator.state_dict(),
            "optimizer": opt.state_dict(),
            "pairs_rng": pairs.rng.bit_generator.state,
            "step": at,
        }

    def train_step() -> dict[str, float]:
        s_np, d_np = pairs.batch(config.batch)
        source = torch.from_numpy(s_np).to(device)
        driving = torch.from_numpy(d_np).to(device)
        total, terms = half_losses(child, parent, vgg, source, driving, config)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return terms

    def validate() -> dict[str, float]:
        assert validator is not None
        figures = {f"val_{k}": x for k, x in asdict(validator.run(child)).items()}
        child.kp_detector.eval()  # the validator leaves every network in training mode
        return figures

    child.train()
    child.kp_detector.eval()
    step = run_steps(
        run_dir,
        ckpt_path,
        step,
        config,
        train_step,
        validate if validator else None,
        checkpoint,
        progress,
        stop,
    )
    child.eval()
    name = parent_model.path.name if parent_model.path else "a model"
    save_model(
        run_dir / MODEL,
        child.to("cpu"),
        {
            "provenance": (
                f"generator halved from {name} (digest {parent_model.digest:08x}) and "
                f"fine-tuned {step} steps by keyface train fit --task fomm-half"
            ),
            "parent_digest": f"{parent_model.digest:08x}",
        },
    )
    return child
