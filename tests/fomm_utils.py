"""A FOMM model for tests: random networks that behave like trained ones (no weights are
downloaded)."""

from __future__ import annotations

import torch

from keyface.fomm import FommConfig
from keyface.fomm.model import FommNetworks

TINY = FommConfig.tiny()
"""64x64 input, a few thousand parameters."""


def randomised_networks(config: FommConfig = TINY, seed: int = 0) -> FommNetworks:
    """Networks with every parameter and BatchNorm statistic random (as a trained checkpoint
    would have them), in eval mode."""
    torch.manual_seed(seed)
    nets = FommNetworks(config)
    with torch.no_grad():
        for name, t in nets.state_dict().items():
            if name.endswith("down.weight") or name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("jacobian.weight"):
                t.normal_(0, 0.02)  # Jacobians near the identity, as trained ones are
            else:
                t.normal_(0, 0.2)
    return nets.eval()
