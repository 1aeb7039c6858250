"""The keyframe enhancer: undo what the keyframe codec did to the reference, once per keyframe.

At the rates keyface runs at, a keyframe is coded at quality ~15-35 (VVC QP ~33-43): flat skin,
smeared hair and beard, ringing at edges. Every rendered frame is a warp of that picture, so
its blur is in every frame, and it is a large part of the distance to the source (LPIPS of the
warp from the decoded keyframe is about a quarter higher than from the original one, measured
in docs/generator.md). The enhancer is a residual network trained on (decoded keyframe, original
frame) pairs of the real keyframe codecs, with pixel and VGG feature losses; it runs once when a
keyframe arrives, so it can afford more computation than a per-frame network.

Shape: the picture is folded into 2x2 blocks (pixel unshuffle, 12 channels at half resolution),
a small U-Net (half, quarter and eighth resolution, residual blocks at each) predicts a
correction, which is unfolded back and added to the input. The last layer starts at zero, so an
untrained enhancer returns its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from keyface.generator.model import _conv, _ResBlock

MULTIPLE = 8
"""Height and width must be multiples of this (the renderer pads)."""


@dataclass(frozen=True)
class EnhancerConfig:
    """Shape of the enhancer (stored with the weights)."""

    widths: tuple[int, int, int] = (48, 64, 96)
    """Channels at 1/2, 1/4 and 1/8 resolution."""
    blocks: int = 3
    """Residual blocks at 1/8 resolution (one at each of the other levels)."""

    def to_dict(self) -> dict[str, object]:
        return {"widths": list(self.widths), "blocks": self.blocks}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> EnhancerConfig:
        widths = tuple(int(w) for w in data["widths"])  # type: ignore[union-attr]
        if len(widths) != 3:
            raise ValueError(f"enhancer widths must have 3 entries, got {widths}")
        return cls(widths=widths, blocks=int(data["blocks"]))  # type: ignore[call-overload, arg-type]


class Enhancer(nn.Module):
    """``forward(x) -> x'``: ``(N, 3, H, W)`` in [-1, 1] (H, W multiples of 8) to the same."""

    def __init__(self, config: EnhancerConfig | None = None) -> None:
        super().__init__()
        self.config = config or EnhancerConfig()
        w1, w2, w3 = self.config.widths
        self.e1 = nn.Sequential(_conv(12, w1), _ResBlock(w1))
        self.e2 = nn.Sequential(_conv(w1, w2, 2), _ResBlock(w2))
        self.e3 = nn.Sequential(
            _conv(w2, w3, 2), *[_ResBlock(w3) for _ in range(self.config.blocks)]
        )
        self.u2 = _conv(w3, w2)
        self.d2 = _ResBlock(w2)
        self.u1 = _conv(w2, w1)
        self.d1 = _ResBlock(w1)
        self.head = nn.Conv2d(w1, 12, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.e1(F.pixel_unshuffle(x, 2))
        f2 = self.e2(f1)
        f3 = self.e3(f2)
        y = self.d2(self.u2(F.interpolate(f3, scale_factor=2.0, mode="nearest")) + f2)
        y = self.d1(self.u1(F.interpolate(y, scale_factor=2.0, mode="nearest")) + f1)
        return (x + F.pixel_shuffle(self.head(y), 2)).clamp(-1.0, 1.0)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["MULTIPLE", "Enhancer", "EnhancerConfig"]
