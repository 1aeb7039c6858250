"""The learned generator network: refines the training-free warp where it cannot explain the
target (occlusion map) and inpaints that part.

Inputs (one 256x256 crop, channels first, float):

* the reference warped by the codec's dense piecewise-affine flow (3 channels, in [-1, 1]);
* the log area ratio of that flow (1 channel): how much each output pixel's neighbourhood was
  stretched out of the reference; large where a mouth or an eye opens or a head turn uncovers
  something, i.e. where the warp has to invent content;
* masks of the target's inner mouth and eye openings, drawn from the decoded keypoints
  (2 channels): where teeth, the dark of the mouth or eyelids have to appear.

A small U-Net (stride-2 encoder to 1/8 resolution, residual blocks there, decoder with skip
additions) predicts an occlusion map ``m``, generated content ``g`` and a detail residual
``d``; the output is ``m * (warp + d) + (1 - m) * g``. The last layer starts at zero and the
occlusion map at ~1, so an untrained network returns the warp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

IN_CHANNELS = 6


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of the network (stored with the weights)."""

    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    """Channels at full, 1/2, 1/4 and 1/8 resolution."""
    blocks: int = 3
    """Residual blocks at 1/8 resolution."""

    def to_dict(self) -> dict[str, object]:
        return {"widths": list(self.widths), "blocks": self.blocks}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> GeneratorConfig:
        widths = tuple(int(w) for w in data["widths"])  # type: ignore[union-attr]
        if len(widths) != 4:
            raise ValueError(f"widths must have 4 entries, got {widths}")
        return cls(widths=widths, blocks=int(data["blocks"]))  # type: ignore[call-overload]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2, inplace=True)
    )


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.leaky_relu(self.c1(x), 0.2))


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = _conv(cin, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv(x) + skip


class Generator(nn.Module):
    """``forward(x) -> frame``: ``x`` is ``(N, 6, H, W)`` (H, W multiples of 8); output
    ``(N, 3, H, W)`` in [-1, 1]."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config or GeneratorConfig()
        w0, w1, w2, w3 = self.config.widths
        self.e0 = _conv(IN_CHANNELS, w0)
        self.e1 = _conv(w0, w1, 2)
        self.e2 = _conv(w1, w2, 2)
        self.e3 = _conv(w2, w3, 2)
        self.mid = nn.Sequential(*[_ResBlock(w3) for _ in range(self.config.blocks)])
        self.u2 = _Up(w3, w2)
        self.u1 = _Up(w2, w1)
        self.u0 = _Up(w1, w0)
        self.head = nn.Conv2d(w0, 7, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[6] = 5.0  # occlusion map starts at sigmoid(5) ~ 0.993: the warp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warped = x[:, :3]
        f0 = self.e0(x)
        f1 = self.e1(f0)
        f2 = self.e2(f1)
        f3 = self.mid(self.e3(f2))
        y = self.u0(self.u1(self.u2(f3, f2), f1), f0)
        out = self.head(y)
        generated = torch.tanh(out[:, 0:3])
        detail = out[:, 3:6]
        mask = torch.sigmoid(out[:, 6:7])
        frame = mask * (warped + detail) + (1.0 - mask) * generated
        return frame.clamp(-1.0, 1.0)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["IN_CHANNELS", "Generator", "GeneratorConfig"]
