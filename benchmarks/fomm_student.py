"""The distilled FOMM keypoint encoder against its teacher (issue 15, item 3).

    python benchmarks/fomm_student.py --teacher MODEL.safetensors \\
        --student RUN/student.safetensors --data FOMM_CACHE \\
        --json results/fomm/student.json --md results/fomm/student.md

On every frame of the validation people in a ``keyface train prepare --task fomm`` cache
(resized to the teacher's side): the student's keypoint error against the teacher (pixels at
256x256) and its Jacobian error (Frobenius norm), and for scale the teacher's own error under a
1-pixel shift of the picture (how far its keypoints move when the picture does: the
detector's noise floor is below that). Then the size (float32 weights), the MACs at the
model's side, and the time per frame on one thread (``KEYFACE_THREADS=1``) of the teacher
(torch), the student (torch) and the student's ONNX export (onnxruntime), batch 1, median of
``--repeats`` runs after a warm-up, beside the ONNX-vs-torch output difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import SPLIT

from keyface.clips import load_split
from keyface.threads import apply_thread_policy


def _median_ms(fn, repeats: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


class _Pair(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kp = self.net(image)
        return kp.value, kp.jacobian


def _export_teacher(teacher: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """The teacher detector as ONNX too, so that both run on the same runtime."""
    torch.onnx.export(
        _Pair(teacher),
        (example,),
        str(path),
        input_names=["image"],
        output_names=["value", "jacobian"],
        opset_version=17,
        dynamo=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="prepare --task fomm cache")
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    apply_thread_policy()  # keyface.threads: KEYFACE_THREADS or the default

    import onnxruntime as ort

    from keyface.fomm.model import load_model
    from keyface.fomm.student import count_macs, export_onnx, parameter_bytes
    from keyface.threads import onnx_session_options
    from keyface.train.fomm_data import load_fomm_clips
    from keyface.train.fomm_distill import load_student, student_error

    teacher_model = load_model(args.teacher)
    teacher = teacher_model.networks.kp_detector.eval()
    student = load_student(args.student)
    size = teacher_model.config.image_size
    people = set(load_split(args.split).people["validation"])
    clips = load_fomm_clips(args.data, people, size)
    frames = np.concatenate([c.frames for c in clips])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    px, jac = student_error(student, teacher, x)
    shifted = torch.roll(x, 1, dims=3)
    with torch.no_grad():
        a, b = teacher(x[:, :, :, 1:-1]), teacher(shifted[:, :, :, 1:-1])
    # A 1-pixel shift at the model's side is 256 / size pixels at 256x256.
    shift_px = float(((a.value - b.value) * 128.0).norm(dim=-1).mean())
    one = x[:1].contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "student.onnx"
        export_onnx(student, path)
        session = ort.InferenceSession(
            str(path), onnx_session_options(), providers=["CPUExecutionProvider"]
        )
        feed = {"image": one.numpy()}
        with torch.inference_mode():
            ref = student(one)
            t_teacher = _median_ms(lambda: teacher(one), args.repeats)
            t_student = _median_ms(lambda: student(one), args.repeats)
        t_onnx = _median_ms(lambda: session.run(None, feed), args.repeats)
        teacher_path = Path(tmp) / "teacher.onnx"
        _export_teacher(teacher, one, teacher_path)
        teacher_session = ort.InferenceSession(
            str(teacher_path), onnx_session_options(), providers=["CPUExecutionProvider"]
        )
        t_teacher_onnx = _median_ms(lambda: teacher_session.run(None, feed), args.repeats)
        value, jacobian = session.run(None, feed)
        parity = max(
            float(np.abs(value - ref.value.numpy()).max()),
            float(np.abs(jacobian - ref.jacobian.numpy()).max()),
        )
        onnx_bytes = path.stat().st_size
    report = {
        "command": "python benchmarks/fomm_student.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} (shared with other jobs), "
        f"KEYFACE_THREADS={os.environ.get('KEYFACE_THREADS', 'default')}",
        "validation_frames": len(frames),
        "validation_clips": len(clips),
        "student_config": student.config.to_dict(),
        "student_vs_teacher_px": px,
        "student_vs_teacher_jacobian": jac,
        "teacher_one_pixel_shift_px": shift_px,
        "student_mmac": count_macs(student, size) / 1e6,
        "teacher_mmac": count_macs(teacher, size) / 1e6,
        "student_kbytes": parameter_bytes(student) / 1e3,
        "student_onnx_kbytes": onnx_bytes / 1e3,
        "teacher_kbytes": parameter_bytes(teacher) / 1e3,
        "ms_teacher_torch": t_teacher,
        "ms_teacher_onnxruntime": t_teacher_onnx,
        "ms_student_torch": t_student,
        "ms_student_onnxruntime": t_onnx,
        "onnx_max_abs_difference": parity,
    }
    for k, v in report.items():
        print(f"{k}: {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.md:
        r = report
        lines = [
            "# Distilled FOMM keypoint encoder (issue 15, item 3)",
            "",
            f"Command: `{r['command']}`; machine: {r['machine']}.",
            "",
            f"Validation people: {r['validation_frames']} frames of {r['validation_clips']} "
            f"clips at {size}x{size}.",
            "",
            "| network | M MAC | kB (float32) | ms/frame torch | ms/frame onnxruntime | "
            "keypoint error vs teacher (px at 256) | Jacobian error |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| teacher (FOMM hourglass) | {r['teacher_mmac']:.1f} | {r['teacher_kbytes']:.0f} | "
            f"{r['ms_teacher_torch']:.2f} | {r['ms_teacher_onnxruntime']:.2f} | 0 | 0 |",
            f"| student | {r['student_mmac']:.1f} | {r['student_kbytes']:.0f} | "
            f"{r['ms_student_torch']:.2f} | {r['ms_student_onnxruntime']:.2f} | "
            f"{r['student_vs_teacher_px']:.2f} | {r['student_vs_teacher_jacobian']:.4f} |",
            "",
            f"The teacher's keypoints move {r['teacher_one_pixel_shift_px']:.2f} px (at 256) "
            f"when the picture shifts by one pixel at {size}x{size}. ONNX vs torch: max "
            f"|difference| {r['onnx_max_abs_difference']:.1e}.",
        ]
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
