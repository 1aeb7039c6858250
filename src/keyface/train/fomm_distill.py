"""Distilling a FOMM keypoint detector into the MobileNetV2-style student (ZTE, issue 15 item 3).

One step, for a batch of frames of the train people (``prepare --task fomm`` cache, resized to
the teacher's picture side; a horizontal flip and one colour jitter per frame, as FOMM's
training):

* a random transform ``T`` (affine + thin-plate spline, FOMM's equivariance transform) warps
  the frames; the frozen teacher detector labels both the frames and the warped frames;
* **keypoint distillation**: ``|kp_student - kp_teacher|`` on both (normalised coordinates,
  weight ``value_weight``) and ``|J_student - J_teacher|`` (weight ``jacobian_weight``);
* **equivariance** of the student itself (FOMM's terms,
  :func:`keyface.train.fomm.equivariance_losses`, weights ``equivariance_value`` and
  ``equivariance_jacobian``).

Adam, lr 1e-3, constant. A run folder holds ``config.json``, ``checkpoint.pt`` (student,
optimiser, step, random states; resumable like ``--task fomm``), ``log.jsonl`` (the terms, and
``val_px`` / ``val_jacobian``: the student's mean keypoint error in pixels at 256x256 and mean
Jacobian error against the teacher on frames of the validation people) and
``student.safetensors`` (the weights, the :class:`~keyface.fomm.student.StudentConfig` and the
teacher's digest in the metadata) and ``student.onnx``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from keyface.fomm.model import FommModel
from keyface.fomm.student import (
    KeypointStudent,
    StudentConfig,
    export_onnx,
    read_student,
    save_student,
)
from keyface.train.fomm import RandomTransform, equivariance_losses, run_steps
from keyface.train.fomm_data import Augment, FommClip, _jitter

CHECKPOINT = "checkpoint.pt"
STUDENT = "student.safetensors"
ONNX = "student.onnx"


@dataclass(frozen=True)
class DistillConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    steps: int = 2000
    batch: int = 16
    lr: float = 1e-3
    value_weight: float = 100.0
    jacobian_weight: float = 10.0
    equivariance_value: float = 10.0
    equivariance_jacobian: float = 1.0
    sigma_affine: float = 0.05
    sigma_tps: float = 0.005
    points_tps: int = 5
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    val_every: int = 200
    val_frames: int = 256

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DistillConfig:
        data = dict(data)
        data["student"] = StudentConfig(**data["student"])
        return cls(**data)


class FrameSampler:
    """Random frames of ``clips`` ``(B, 3, S, S)`` float32 in [0, 1], flipped and jittered."""

    def __init__(self, clips: list[FommClip], seed: int) -> None:
        if not clips:
            raise ValueError("no clips to draw frames from")
        self.clips = clips
        self.rng = np.random.default_rng(seed)
        self.augment = Augment()

    def batch(self, size: int) -> torch.Tensor:
        out = []
        for _ in range(size):
            clip = self.clips[int(self.rng.integers(len(self.clips)))]
            frame = clip.frames[int(self.rng.integers(len(clip.frames)))][None]
            frame = frame.astype(np.float32) / 255
            if self.rng.random() < 0.5:
                frame = frame[:, :, ::-1]
            out.append(_jitter(frame, self.rng, self.augment)[0])
        return torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2)


def fixed_frames(clips: list[FommClip], count: int, seed: int) -> torch.Tensor:
    """``count`` frames of ``clips`` drawn once (validation), unaugmented."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        clip = clips[int(rng.integers(len(clips)))]
        frames.append(clip.frames[int(rng.integers(len(clip.frames)))])
    x = np.stack(frames).astype(np.float32) / 255
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def distill_losses(
    student: KeypointStudent,
    teacher: torch.nn.Module,
    frames: torch.Tensor,
    transform: RandomTransform,
    config: DistillConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    warped = transform.transform_frame(frames)
    with torch.no_grad():
        t_kp = teacher(frames)
        t_warped = teacher(warped)
    s_kp = student(frames)
    s_warped = student(warped)
    value = (s_kp.value - t_kp.value).abs().mean() + (s_warped.value - t_warped.value).abs().mean()
    jac = (s_kp.jacobian - t_kp.jacobian).abs().mean() + (
        s_warped.jacobian - t_warped.jacobian
    ).abs().mean()
    eq_value, eq_jac = equivariance_losses(s_kp, s_warped, transform)
    terms = {
        "value": config.value_weight * value / 2,
        "jacobian": config.jacobian_weight * jac / 2,
        "equivariance_value": config.equivariance_value * eq_value,
        "equivariance_jacobian": config.equivariance_jacobian * eq_jac,
    }
    total = sum(terms.values())
    assert isinstance(total, torch.Tensor)
    return total, {
        **{k: float(v.detach()) for k, v in terms.items()},
        "total": float(total.detach()),
    }


@torch.no_grad()
def student_error(
    student: KeypointStudent, teacher: torch.nn.Module, frames: torch.Tensor
) -> tuple[float, float]:
    """Mean keypoint distance in pixels of a 256x256 crop, and mean Frobenius norm of the
    Jacobian difference, student against teacher."""
    was = student.training
    student.eval()
    px, jac = [], []
    for i in range(0, len(frames), 64):
        s, t = student(frames[i : i + 64]), teacher(frames[i : i + 64])
        px.append(((s.value - t.value) * 128.0).norm(dim=-1).reshape(-1))
        jac.append(
            (s.jacobian - t.jacobian).reshape(*s.jacobian.shape[:2], 4).norm(dim=-1).reshape(-1)
        )
    student.train(was)
    return float(torch.cat(px).mean()), float(torch.cat(jac).mean())


ProgressFn = Callable[[int, dict[str, float]], None]


def distill(
    run_dir: Path,
    teacher_model: FommModel,
    train_clips: list[FommClip],
    val_clips: list[FommClip],
    config: DistillConfig,
    *,
    init: KeypointStudent | None = None,
    progress: ProgressFn | None = None,
    stop: Callable[[], bool] | None = None,
) -> KeypointStudent:
    """Train (or resume) the distillation run in ``run_dir``; returns the student. ``init``:
    weights a new run starts from (those whose names and shapes match: a pruned student from
    its unpruned parent)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / CHECKPOINT
    if ckpt_path.is_file() and cfg_path.is_file():
        saved = DistillConfig.from_json(json.loads(cfg_path.read_text()))
        config = replace(saved, steps=config.steps)
    cfg_path.write_text(json.dumps(config.to_json(), indent=1))
    if teacher_model.config.image_size != config.student.image_size:
        raise ValueError("the student must see the teacher's picture size")
    torch.manual_seed(config.seed)
    teacher = teacher_model.networks.kp_detector.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = KeypointStudent(config.student)
    if init is not None and not ckpt_path.is_file():
        own = student.state_dict()
        own.update(
            {k: v for k, v in init.state_dict().items() if k in own and own[k].shape == v.shape}
        )
        student.load_state_dict(own)
    opt = torch.optim.Adam(student.parameters(), lr=config.lr)
    sampler = FrameSampler(train_clips, config.seed)
    noise = torch.Generator().manual_seed(config.seed + 1)
    step = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        noise.set_state(state["noise_rng"])
        step = int(state["step"])
    val = fixed_frames(val_clips, config.val_frames, config.seed) if val_clips else None

    def checkpoint(step: int) -> dict[str, Any]:
        return {
            "student": student.state_dict(),
            "optimizer": opt.state_dict(),
            "sampler_rng": sampler.rng.bit_generator.state,
            "noise_rng": noise.get_state(),
            "step": step,
        }

    def train_step() -> dict[str, float]:
        frames = sampler.batch(config.batch)
        transform = RandomTransform(
            config.batch, config.sigma_affine, config.sigma_tps, config.points_tps, noise
        )
        total, terms = distill_losses(student, teacher, frames, transform, config)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return terms

    def validate() -> dict[str, float]:
        assert val is not None
        px, jac = student_error(student, teacher, val)
        return {"val_px": px, "val_jacobian": jac}

    student.train()
    step = run_steps(
        run_dir,
        ckpt_path,
        step,
        config,
        train_step,
        validate if val is not None else None,
        checkpoint,
        progress,
        stop,
    )
    student.eval()
    save_student(run_dir / STUDENT, student, teacher_model.digest, step)
    export_onnx(student, run_dir / ONNX)
    return student


def load_student(path: Path) -> KeypointStudent:
    """The student network of a student file (:func:`keyface.fomm.student.read_student`)."""
    return read_student(path).net
