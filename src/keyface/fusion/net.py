"""The learned fusion network (torch): a residual on the training-free fusion, at a quarter of
the resolution.

Inputs (full resolution, RGB in [-1, 1]): the training-free fusion ``T`` (``"aligned"``), the
upsampled auxiliary frame ``U`` and the aligned animation ``A``. They are folded 4x4 into
channels (pixel unshuffle: 9 -> 144 channels on a 64x64 grid for a 256x256 frame), mixed by a
1x1 convolution, refined by a few 3x3 convolutions at that grid and unfolded back into a
full-resolution residual added to ``T``. The last layer starts at zero, so an untrained network
is the training-free fusion exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

FORMAT = "keyface-fusion-v1"


@dataclass(frozen=True)
class FusionNetConfig:
    channels: int = 32
    """Feature channels at the reduced grid."""
    layers: int = 3
    """3x3 convolutions at the reduced grid."""
    fold: int = 4
    """Pixel-unshuffle factor (the reduced grid is 1/fold of the frame)."""

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FusionNetConfig:
        return cls(**{k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__})


class FusionNet(nn.Module):
    def __init__(self, config: FusionNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FusionNetConfig()
        f, c = config.fold, config.channels
        self.inp = nn.Conv2d(9 * f * f, c, 1)
        self.body = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(config.layers))
        self.out = nn.Conv2d(c, 3 * f * f, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, fused: torch.Tensor, aux_up: torch.Tensor, aligned: torch.Tensor):
        """``(B, 3, H, W)`` each in [-1, 1] (H, W multiples of ``fold``) -> the refined frame."""
        f = self.config.fold
        x = F.pixel_unshuffle(torch.cat([fused, aux_up, aligned], dim=1), f)
        return fused + F.pixel_shuffle(self.residual(x), f)

    def residual(self, folded: torch.Tensor) -> torch.Tensor:
        """The residual, folded: ``(B, 9 fold^2, H/fold, W/fold)`` -> ``(B, 3 fold^2, ...)``."""
        h = F.relu(self.inp(folded))
        for i, conv in enumerate(self.body):
            h = h + F.relu(conv(h)) if i else F.relu(conv(h))
        return self.out(h)

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "config": json.dumps(self.config.to_dict())}
