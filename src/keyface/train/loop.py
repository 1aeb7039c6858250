"""The training loop of the learned networks: seeded, resumable, logged.

``task`` picks the network: ``"generator"`` (the per-frame network that refines the warp, pairs
of :class:`~keyface.train.pairs.PairSampler`) or ``"enhancer"`` (the keyframe enhancer, pairs of
:class:`~keyface.train.pairs.KeyframeSampler`). Both use the same losses and bookkeeping.

A run folder holds ``config.json`` (everything that defines the run), ``checkpoint.pt`` (model,
optimiser, step, random states; written every ``checkpoint_every`` steps and at the end, so an
interrupted run resumes where it stopped), ``log.jsonl`` (one line per logged step: losses,
and validation metrics when measured) and ``<task>.safetensors`` (the weights, at the end).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from keyface.generator.enhancer import Enhancer, EnhancerConfig
from keyface.generator.model import Generator, GeneratorConfig
from keyface.generator.weights import GeneratorWeightsError, load_network, save_weights
from keyface.threads import apply_thread_policy, current_policy, set_thread_policy
from keyface.train.adversarial import PatchDiscriminator, d_hinge_loss, g_hinge_loss
from keyface.train.data import ClipData
from keyface.train.losses import VGGLoss
from keyface.train.pairs import (
    KeyframeSampler,
    Pair,
    PairConfig,
    PairSampler,
    fixed_keyframes,
    fixed_pairs,
)

TASKS = ("generator", "enhancer")


@dataclass
class TrainConfig:
    task: str = "generator"
    """``"generator"`` or ``"enhancer"`` (see module doc)."""
    steps: int = 2000
    batch: int = 8
    lr: float = 3e-4
    l1_weight: float = 1.0
    vgg_weight: float = 1.0
    vgg_scales: tuple[float, ...] = (1.0, 0.5)
    vgg_layers: int = 4
    vgg_mode: str = "unit"
    adv_weight: float = 0.0
    """Weight of the adversarial term (:mod:`keyface.train.adversarial`); 0 leaves it out."""
    adv_lr: float = 1e-4
    """Learning rate of the discriminator."""
    resample_share: float = 0.0
    """Enhancer: share of steps whose output is shifted by a random sub-pixel amount the way the
    warp samples (bicubic) and compared with the target shifted exactly (:func:`resample`), so
    the enhancer also learns to pre-compensate the warp's resampling blur."""
    init: str = ""
    """Weights file (``.safetensors`` of the same network kind and shape) a new run starts
    from; empty: random initialisation."""
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    """Mixed precision: bfloat16 autocast (CUDA, or a CPU with bfloat16 instructions)."""
    threads: int = 0
    """Compute threads for this run (0: the process's thread policy, keyface.threads). Set
    before the first step and not changed during the run."""
    log_every: int = 10
    val_every: int = 200
    val_pairs: int = 48
    checkpoint_every: int = 100
    pairs: PairConfig = field(default_factory=PairConfig)
    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    enhancer: EnhancerConfig = field(default_factory=EnhancerConfig)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        data["enhancer"] = self.enhancer.to_dict()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        data["pairs"] = PairConfig(**{k: _tuple(v) for k, v in data["pairs"].items()})
        data["model"] = GeneratorConfig.from_dict(data["model"])
        if "enhancer" in data:
            data["enhancer"] = EnhancerConfig.from_dict(data["enhancer"])
        data["vgg_scales"] = tuple(data["vgg_scales"])
        return cls(**data)


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def resample(
    output: torch.Tensor, target: torch.Tensor, generator: torch.Generator, margin: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift each ``(N, 3, H, W)`` sample by a random fraction of a pixel (within +-0.5 in x
    and y): ``output`` bicubically, as :func:`keyface.render.warp.warp_image` samples the
    keyframe, ``target`` exactly (a phase shift of its spectrum). What the two then differ by
    includes the blur of bicubic resampling, which an enhancer can pre-compensate once per
    keyframe. ``margin`` border pixels are cropped (the spectral shift wraps around)."""
    n, _, h, w = output.shape
    shift = torch.rand(n, 2, generator=generator) - 0.5  # (dx, dy) in pixels
    dx, dy = shift[:, 0].to(output.device), shift[:, 1].to(output.device)
    theta = torch.zeros(n, 2, 3, device=output.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # The output at x is the input at x - d: a translation of the picture by +d.
    theta[:, 0, 2] = -2 * dx / w
    theta[:, 1, 2] = -2 * dy / h
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    moved = F.grid_sample(
        output.float(), grid, mode="bicubic", padding_mode="border", align_corners=False
    )
    fy = torch.fft.fftfreq(h, device=output.device).view(1, h, 1)
    fx = torch.fft.rfftfreq(w, device=output.device).view(1, 1, w // 2 + 1)
    phase = torch.exp(-2j * math.pi * (fx * dx.view(n, 1, 1) + fy * dy.view(n, 1, 1)))
    exact = torch.fft.irfft2(torch.fft.rfft2(target.float()) * phase[:, None], s=(h, w))
    crop = (slice(None), slice(None), slice(margin, h - margin), slice(margin, w - margin))
    return moved[crop], exact[crop]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _to_tensor(a: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


@dataclass
class ValResult:
    l1_warp: float
    l1_generator: float
    lpips_warp: float
    lpips_generator: float

    @property
    def lpips_gain(self) -> float:
        """Relative LPIPS reduction of the generator over the warp (0.2 = 20% lower)."""
        return 1.0 - self.lpips_generator / max(self.lpips_warp, 1e-9)


class Validator:
    """Fixed whole-frame validation pairs of held-out people; LPIPS-Alex is measured here only
    (monitoring, never a loss). The baseline (``*_warp``) is the network's input picture: the
    warp for the generator, the decoded keyframe for the enhancer."""

    def __init__(self, pairs: list[Pair], device: str) -> None:
        from keyface.eval.nets import load_lpips

        self.pairs = pairs
        self.device = device
        self.lpips = load_lpips("alex", device)
        self._warp_lpips: float | None = None
        self._warp_l1: float | None = None

    @torch.no_grad()
    def _score(self, images: list[torch.Tensor]) -> tuple[float, float]:
        l1, lp = [], []
        for img, pair in zip(images, self.pairs, strict=True):
            tgt = _to_tensor(pair.target[None], self.device)
            l1.append(float((img - tgt).abs().mean()))
            lp.append(float(self.lpips((img + 1) / 2, (tgt + 1) / 2).mean()))
        return float(np.mean(l1)), float(np.mean(lp))

    @torch.no_grad()
    def run(self, model: Generator | Enhancer) -> ValResult:
        if self._warp_lpips is None:
            warps = [_to_tensor(p.warped[None], self.device) for p in self.pairs]
            self._warp_l1, self._warp_lpips = self._score(warps)
        was_training = model.training
        model.eval()
        outs = [model(_to_tensor(p.inputs[None], self.device)) for p in self.pairs]
        model.train(was_training)
        l1, lp = self._score(outs)
        assert self._warp_l1 is not None
        return ValResult(self._warp_l1, l1, self._warp_lpips, lp)


ProgressFn = Callable[[int, dict[str, float]], None]


def train(
    run_dir: Path,
    train_clips: list[ClipData],
    val_clips: list[ClipData],
    config: TrainConfig,
    *,
    progress: ProgressFn | None = None,
) -> Generator | Enhancer:
    """Train (or resume) the run in ``run_dir``; returns the trained model."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.is_file() and cfg_path.is_file():
        saved = TrainConfig.from_json(json.loads(cfg_path.read_text()))
        # Only the length and where it runs may change on resume.
        config = replace(saved, steps=config.steps, device=config.device, threads=config.threads)
    cfg_path.write_text(json.dumps(config.to_json(), indent=1))
    if config.threads and config.threads != current_policy().compute:
        set_thread_policy(
            replace(current_policy(), compute=config.threads, source="TrainConfig.threads")
        )
    apply_thread_policy()
    _seed_all(config.seed)
    device = config.device
    model: Generator | Enhancer
    sampler: PairSampler | KeyframeSampler
    if config.task == "enhancer":
        model = Enhancer(config.enhancer).to(device)
        sampler = KeyframeSampler(train_clips, config.pairs.patch, config.seed, config.pairs.flip)
    else:
        model = Generator(config.model).to(device)
        sampler = PairSampler(train_clips, config.pairs, config.seed)
    loss_vgg = VGGLoss(config.vgg_scales, config.vgg_layers, mode=config.vgg_mode).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    disc: PatchDiscriminator | None = None
    opt_d: torch.optim.Optimizer | None = None
    if config.adv_weight > 0:
        disc = PatchDiscriminator().to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=config.adv_lr, betas=(0.5, 0.999))
    step = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if disc is not None and opt_d is not None:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["disc_optimizer"])
        loss_vgg.norm.copy_(state["vgg_norm"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
    elif config.init:
        start = load_network(Path(config.init))
        if type(start) is not type(model):
            raise GeneratorWeightsError(f"{config.init}: not a {config.task} weights file")
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError:
            raise GeneratorWeightsError(
                f"{config.init}: its network shape differs from this run's (--widths, --blocks)"
            ) from None
    validator = None
    if val_clips:
        pick = fixed_keyframes if config.task == "enhancer" else fixed_pairs
        validator = Validator(pick(val_clips, config.val_pairs, config.seed + 1), device)
    log = open(run_dir / "log.jsonl", "a")

    def lr_at(s: int) -> float:
        warm = min(1.0, (s + 1) / 50)
        return config.lr * warm * 0.5 * (1 + math.cos(math.pi * min(s / max(config.steps, 1), 1)))

    def save_checkpoint() -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "vgg_norm": loss_vgg.norm,
            "sampler_rng": sampler.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "step": step,
        }
        if disc is not None and opt_d is not None:
            state["disc"] = disc.state_dict()
            state["disc_optimizer"] = opt_d.state_dict()
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(ckpt_path)

    if step == 0:
        x, y = sampler.batch(config.batch)
        loss_vgg.calibrate(_to_tensor(x[:, :3], device), _to_tensor(y, device))
    amp_device = "cuda" if device.startswith("cuda") else "cpu"
    resample_rng = torch.Generator().manual_seed(config.seed + step)
    model.train()
    t0 = time.perf_counter()
    while step < config.steps:
        x_np, y_np = sampler.batch(config.batch)
        x, y = _to_tensor(x_np, device), _to_tensor(y_np, device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast(amp_device, dtype=torch.bfloat16, enabled=config.amp):
            out = model(x)
            seen, truth = out, y
            if config.resample_share > 0 and float(torch.rand(1)) < config.resample_share:
                seen, truth = resample(out, y, resample_rng)
            l1 = F.l1_loss(seen, truth)
            vgg = loss_vgg(seen, truth)
            loss = config.l1_weight * l1 + config.vgg_weight * vgg
        if disc is not None:
            # The discriminator runs in float32 (spectral normalisation's power iteration).
            adv = g_hinge_loss(disc(out.float()))
            loss = loss + config.adv_weight * adv
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if disc is not None and opt_d is not None:
            opt_d.zero_grad(set_to_none=True)
            d_loss = d_hinge_loss(disc(y), disc(out.detach().float()))
            d_loss.backward()
            opt_d.step()
        step += 1
        record: dict[str, float] = {}
        if step % config.log_every == 0 or step == config.steps:
            record = {"step": step, "loss": loss.item(), "l1": l1.item(), "vgg": vgg.item()}
            if disc is not None:
                record["adv"] = adv.item()
                record["disc"] = d_loss.item()
            record["lr"] = lr_at(step - 1)
            record["seconds"] = time.perf_counter() - t0
        if validator and (step % config.val_every == 0 or step == config.steps):
            v = validator.run(model)
            record.update({"step": step, **{f"val_{k}": val for k, val in asdict(v).items()}})
            record["val_lpips_gain"] = v.lpips_gain
        if record:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if progress:
            progress(step, record)
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint()
    log.close()
    save_weights(
        run_dir / f"{config.task}.safetensors",
        model,
        metadata={"steps": str(step), "train_config": json.dumps(config.to_json())},
    )
    return model
