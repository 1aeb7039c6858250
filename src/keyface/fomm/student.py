"""A MobileNetV2-style keypoint encoder distilled from a FOMM detector (ZTE, issue 15 item 3).

The ZTE conferencing paper replaces FOMM's hourglass keypoint detector by a MobileNetV2-style
encoder of about 15 M multiply-accumulates and 600 kB, distilled from the full detector. This
module is that encoder, for the picture side of a keyface FOMM model (``image_size``):

* a 3x3 stem (stride 2) and inverted residual blocks (Sandler et al. 2018: 1x1 expansion,
  3x3 depthwise, linear 1x1 projection, a residual connection where the shape allows) down to
  1/16 of the picture;
* a small top-down head: the 1/16 features upsampled to 1/4 and joined with the 1/4 ones (a
  1x1 and a depthwise 3x3 convolution), then one 1x1 convolution to ``K`` heatmaps and
  ``4 K`` Jacobian maps. The keypoint is the heatmap's soft-argmax (temperature 0.1, as the
  teacher's) and the Jacobian the heatmap-weighted mean of its four maps, so the output is the
  teacher's :class:`~keyface.fomm.networks.Keypoints` and everything downstream is unchanged.

:func:`count_macs` counts the multiply-accumulates of the convolutions and linear layers (the
soft-argmax and the additions are left out, as papers count); :func:`export_onnx` writes the
network for onnxruntime (opset 17).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from keyface.fomm.layers import coordinate_grid
from keyface.fomm.networks import Keypoints

BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    # expansion t, output channels c, repeats n, first stride s (MobileNetV2's table, cut)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 3, 2),
    (6, 96, 1, 1),
)
"""Stages after the stem (1/2): 1/2, 1/4, 1/8, 1/16, 1/16."""


@dataclass(frozen=True)
class StudentConfig:
    image_size: int = 64
    num_kp: int = 10
    width: float = 1.0
    """Channel multiplier of every stage (MobileNetV2's ``alpha``)."""
    head_channels: int = 64
    temperature: float = 0.1
    prune_last: int = 0
    """Inverted residual blocks left out at the end of the backbone (the ZTE recipe prunes the
    last layers after distillation)."""

    def __post_init__(self) -> None:
        if self.image_size % 16:
            raise ValueError("image_size must be a multiple of 16")
        if not 0 <= self.prune_last < 4:
            raise ValueError("prune_last must be in 0..3")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _ch(c: int, width: float) -> int:
    return max(8, round(c * width / 8) * 8)


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:  # fmt: skip
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBN(cin, hidden))
        layers += [
            ConvBN(hidden, hidden, 3, stride, groups=hidden),
            ConvBN(hidden, cout, act=False),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class KeypointStudent(nn.Module):
    """Picture ``(B, 3, S, S)`` in [0, 1] -> :class:`Keypoints` (see the module docstring)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        c = _ch(16, w)
        self.stem = ConvBN(3, c, 3, 2)
        blocks: list[nn.Module] = []
        self.skip_index = -1
        for t, ch, n, s in BLOCKS:
            out = _ch(ch, w)
            for i in range(n):
                blocks.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
            if ch == 24:
                self.skip_index = len(blocks) - 1
                skip_channels = c
        keep = len(blocks) - config.prune_last
        self.blocks = nn.ModuleList(blocks[:keep])
        deep = c if config.prune_last == 0 else _last_channels(blocks[:keep])
        h = config.head_channels
        self.lateral = ConvBN(deep + skip_channels, h)
        self.refine = ConvBN(h, h, 3, groups=h)
        self.kp = nn.Conv2d(h, config.num_kp, 1)
        self.jacobian = nn.Conv2d(h, 4 * config.num_kp, 1)
        nn.init.zeros_(self.jacobian.weight)
        with torch.no_grad():
            self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(config.num_kp))

    def forward(self, image: torch.Tensor) -> Keypoints:
        x = self.stem(image)
        skip = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.skip_index:
                skip = x
        x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
        features = self.refine(self.lateral(torch.cat([x, skip], dim=1)))
        logits = self.kp(features)
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.reshape(b, k, h * w) / self.config.temperature, dim=2)
        grid = coordinate_grid(h, w, heatmap).reshape(1, 1, h * w, 2)
        value = (heatmap[..., None] * grid).sum(dim=2)
        maps = self.jacobian(features).reshape(b, k, 4, h * w)
        jacobian = (heatmap[:, :, None, :] * maps).sum(dim=-1).reshape(b, k, 2, 2)
        return Keypoints(value, jacobian)


def _last_channels(blocks: list[nn.Module]) -> int:
    last = blocks[-1]
    assert isinstance(last, InvertedResidual)
    conv = last.body[-1][0]
    assert isinstance(conv, nn.Conv2d)
    return conv.out_channels


def count_macs(net: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on a ``image_size`` square picture
    (convolutions and linear layers)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += int(out.numel() // out.shape[0]) * k

    def linear_hook(m: nn.Linear, _inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal total
        total += int(out.numel() // out.shape[0]) * m.in_features

    handles = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, image_size, image_size))
    net.train(was)
    for h in handles:
        h.remove()
    return total


def parameter_bytes(net: nn.Module) -> int:
    """Bytes of the float32 weights (parameters and BatchNorm statistics)."""
    return sum(t.numel() * 4 for t in net.state_dict().values() if t.is_floating_point())


class _Flat(nn.Module):
    """The student with two plain tensor outputs (what ONNX exports)."""

    def __init__(self, net: KeypointStudent) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kp = self.net(image)
        return kp.value, kp.jacobian


def export_onnx(net: KeypointStudent, path: Path) -> None:
    """Write ``net`` (eval mode) as ONNX: input ``image`` ``(B, 3, S, S)``, outputs ``value``
    ``(B, K, 2)`` and ``jacobian`` ``(B, K, 2, 2)``."""
    was = net.training
    net.eval()
    s = net.config.image_size
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        _Flat(net),
        (torch.zeros(1, 3, s, s),),
        str(path),
        input_names=["image"],
        output_names=["value", "jacobian"],
        dynamic_axes={"image": {0: "batch"}, "value": {0: "batch"}, "jacobian": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    net.train(was)


STUDENT_FORMAT = "keyface-fomm-student-v1"
"""The ``format`` of a student file's safetensors metadata (with ``config``, the
``teacher_digest`` of the model it was distilled from, and ``provenance``)."""


@dataclass(frozen=True)
class StudentFile:
    """A distilled keypoint encoder read from its file."""

    net: KeypointStudent
    teacher_digest: int
    """The CRC-32 of the model file whose detector it was distilled from."""
    digest: int
    """The CRC-32 of the student file itself."""
    path: Path


class StudentFileError(ValueError):
    """Not a student file, or a broken one: one line for the user."""


def save_student(path: Path, student: KeypointStudent, teacher_digest: int, steps: int) -> None:
    """Write ``student`` as a keyface student file (safetensors with its config, the teacher's
    digest and how it was made)."""
    import json

    from safetensors.torch import save_file

    meta = {
        "format": STUDENT_FORMAT,
        "config": json.dumps(student.config.to_dict()),
        "teacher_digest": f"{teacher_digest:08x}",
        "provenance": f"distilled by keyface train fit --task fomm-distill, {steps} steps",
    }
    tensors = {k: v.detach().contiguous() for k, v in student.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)


def read_student(path: Path | str) -> StudentFile:
    """The student of a file :func:`save_student` wrote (eval mode); raises
    :class:`StudentFileError` for anything else."""
    import json

    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from keyface.fomm.model import crc32_of

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != STUDENT_FORMAT:
            raise StudentFileError(f"{path}: not a keyface FOMM student file")
        net = KeypointStudent(StudentConfig(**json.loads(meta["config"])))
        net.load_state_dict(load_file(str(path)))
        teacher = int(meta["teacher_digest"], 16)
    except StudentFileError:
        raise
    except (OSError, SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise StudentFileError(f"{path}: not a usable student file ({exc})") from None
    return StudentFile(net.eval(), teacher, crc32_of(path), path)
