"""The optional adversarial term: a small patch discriminator and hinge losses.

The discriminator sees patches in [-1, 1] (the network's output or the original) and scores
every 8x8 cell of its input: three stride-2 4x4 convolutions (64, 128, 256 channels, leaky
ReLU), then a 3x3 convolution to one score per cell. Spectral normalisation on every layer
keeps it Lipschitz, which is what lets a small CPU run train it next to the network without
a gradient penalty. Used only when ``TrainConfig.adv_weight`` > 0, and kept only where it
measurably lowers the validation metrics (docs/generator.md says which runs did).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Real/fake scores per 8x8 cell of a ``(N, 3, H, W)`` batch in [-1, 1]."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for w in widths:
            layers += [spectral_norm(nn.Conv2d(c_in, w, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = w
        layers.append(spectral_norm(nn.Conv2d(c_in, 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def d_hinge_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss on scores of originals (``real``) and outputs (``fake``)."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_hinge_loss(fake: torch.Tensor) -> torch.Tensor:
    """The network's adversarial loss: raise the discriminator's score of its output."""
    return -fake.mean()
