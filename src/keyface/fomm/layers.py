"""Building blocks of the First Order Motion Model.

Attribute names (``conv``, ``norm``, ``down_blocks``, ``up_blocks``, ``encoder``, ``decoder``,
``weight``) are those of the public checkpoints, so that a state dict maps one to one. Images
and coordinates follow the upstream conventions: channels first, values in [0, 1], positions
normalised to [-1, 1] with ``-1`` the centre of the first pixel and ``+1`` that of the last
(``grid_sample`` with ``align_corners=True``, the behaviour of the PyTorch 1.0 the public
checkpoints were trained with).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def coordinate_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``(height, width, 2)`` grid of normalised ``(x, y)`` pixel centres."""
    x = torch.linspace(-1.0, 1.0, width, dtype=like.dtype, device=like.device)
    y = torch.linspace(-1.0, 1.0, height, dtype=like.dtype, device=like.device)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def gaussian_heatmaps(
    points: torch.Tensor, height: int, width: int, variance: float
) -> torch.Tensor:
    """``(B, K, height, width)`` unnormalised Gaussians around ``points`` ``(B, K, 2)``."""
    grid = coordinate_grid(height, width, points)
    diff = grid[None, None] - points[:, :, None, None, :]
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


def sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear backward warp of ``image`` ``(B, C, H, W)`` at ``grid`` ``(B, h, w, 2)``."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class ResBlock2d(nn.Module):
    """Pre-activation residual block (norm, ReLU, conv, twice), same channels in and out."""

    def __init__(self, features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(features, affine=True)
        self.norm2 = nn.BatchNorm2d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class SameBlock2d(nn.Module):
    """Conv, norm, ReLU at the same resolution."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(SameBlock2d):
    """Conv, norm, ReLU, then 2x2 average pooling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class UpBlock2d(SameBlock2d):
    """2x nearest upsampling, then conv, norm, ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _width(expansion: int, level: int, limit: int) -> int:
    return min(limit, expansion * 2**level)


class Encoder(nn.Module):
    """``num_blocks`` down blocks; returns the input and every block's output."""

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int, max_features: int
    ) -> None:
        super().__init__()
        widths = [in_features] + [
            _width(block_expansion, i + 1, max_features) for i in range(num_blocks)
        ]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """``num_blocks`` up blocks, each followed by concatenation with the matching skip."""

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int, max_features: int
    ) -> None:
        super().__init__()
        blocks = []
        for level in reversed(range(num_blocks)):
            skip = 1 if level == num_blocks - 1 else 2  # below the deepest, input has a skip
            cin = skip * _width(block_expansion, level + 1, max_features)
            blocks.append(UpBlock2d(cin, _width(block_expansion, level, max_features)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net without a bottleneck: ``out_filters = block_expansion + in_features`` channels
    at the input resolution."""

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int, max_features: int
    ) -> None:
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then ``1/scale`` subsampling (``scale`` = 1/N). The blur kernel is a
    buffer (``weight``, ``(channels, 1, k, k)``), stored in checkpoints."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.pad_before = size // 2
        self.pad_after = self.pad_before - 1 if size % 2 == 0 else self.pad_before
        centre = (size - 1) / 2
        axis = torch.exp(
            -((torch.arange(size, dtype=torch.float32) - centre) ** 2) / (2 * sigma**2)
        )
        kernel = axis[:, None] * axis[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, size, size).clone())
        self.groups = channels
        self.step = round(1 / scale)
        if not math.isclose(self.step * scale, 1.0):
            raise ValueError(f"scale must be 1/N, got {scale}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = self.pad_before, self.pad_after
        out = F.conv2d(F.pad(x, (p, q, p, q)), self.weight, groups=self.groups)
        return out[:, :, :: self.step, :: self.step]
