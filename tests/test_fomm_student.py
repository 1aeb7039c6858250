"""The distilled FOMM keypoint encoder (issue 15, item 3): its budget, ONNX parity, and a tiny
distillation run that lowers its loss (random pictures, a randomly initialised tiny teacher).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from keyface.fomm import FommConfig
from keyface.fomm.model import FommNetworks, load_model, save_model
from keyface.fomm.student import (
    KeypointStudent,
    StudentConfig,
    count_macs,
    export_onnx,
    parameter_bytes,
)
from keyface.train.fomm_data import FommClip


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fomm") / "tiny.safetensors"
    save_model(path, FommNetworks(FommConfig.tiny()).eval())
    return path


def test_student_budget_at_64() -> None:
    """The shape the CPU run distils: about 15 M MAC and at most 1 MB of float32 weights
    once its last block is pruned."""
    full = KeypointStudent(StudentConfig(image_size=64))
    pruned = KeypointStudent(StudentConfig(image_size=64, prune_last=1))
    assert 12e6 < count_macs(full, 64) < 16e6
    assert count_macs(pruned, 64) < count_macs(full, 64)
    assert parameter_bytes(pruned) <= 1_000_000 < parameter_bytes(full)
    kp = pruned(torch.rand(2, 3, 64, 64))
    assert kp.value.shape == (2, 10, 2) and kp.jacobian.shape == (2, 10, 2, 2)
    assert torch.allclose(kp.jacobian, torch.eye(2).expand(2, 10, 2, 2))  # untrained: identity


def test_student_onnx_parity(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = KeypointStudent(StudentConfig(image_size=64, prune_last=1)).eval()
    with torch.no_grad():  # trained-looking Jacobian head and BatchNorm statistics
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("running_mean") or name.startswith("jacobian"):
                t.normal_(0, 0.1)
    path = tmp_path / "student.onnx"
    export_onnx(net, path)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        kp = net(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    value, jacobian = session.run(None, {"image": x.numpy()})
    assert np.abs(value - kp.value.numpy()).max() < 1e-4
    assert np.abs(jacobian - kp.jacobian.numpy()).max() < 1e-4


def test_a_tiny_distillation_run_lowers_its_loss(tiny_file: Path, tmp_path: Path) -> None:
    from keyface.train.fomm_distill import STUDENT, DistillConfig, distill, load_student

    teacher = load_model(tiny_file)
    with torch.no_grad():  # a teacher whose keypoints depend on the picture
        for name, t in teacher.networks.kp_detector.state_dict().items():
            if name.endswith("weight") and t.ndim == 4:
                t.normal_(0, 0.2)
    rng = np.random.default_rng(0)
    clips = [
        FommClip(f"c{i}", f"p{i}", (rng.random((6, 64, 64, 3)) * 255).astype(np.uint8))
        for i in range(3)
    ]
    config = DistillConfig(
        student=StudentConfig(image_size=64, width=0.5, head_channels=16),
        steps=30,
        batch=4,
        lr=3e-3,
        log_every=5,
        val_every=30,
        val_frames=8,
    )
    run = tmp_path / "run"
    student = distill(run, teacher, clips[:2], clips[2:], config)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["total"] for r in log if "total" in r]
    assert losses[-1] < losses[0]
    assert "val_px" in log[-1]
    again = load_student(run / STUDENT)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x).value, student.eval()(x).value)
    assert (run / "student.onnx").is_file()


def test_cli_distill_needs_a_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from keyface.cli.main import main

    args = ["train", "fit", "--task", "fomm-distill", "--data", str(tmp_path)]
    assert main([*args, "--run", str(tmp_path / "run")]) == 2
    assert "--teacher" in capsys.readouterr().err
