"""A learned fusion: the training-free fusion refined by a small network
(:mod:`keyface.fusion.net`) on one CPU thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from keyface.fusion.classic import AlignedFusion, check_pair
from keyface.fusion.net import FusionNet


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1


class LearnedFusion:
    def __init__(self, net: FusionNet, name: str) -> None:
        self.net = net.eval()
        self.name = name
        self.base = AlignedFusion()

    @classmethod
    def from_file(cls, path: Path) -> LearnedFusion:
        from keyface.fusion.weights import load_fusion

        return cls(load_fusion(Path(path)), Path(path).stem)

    def fuse(self, animated: np.ndarray, aux: np.ndarray) -> np.ndarray:
        check_pair(animated, aux)
        if animated.shape[0] % self.net.config.fold:
            return self.base.fuse(animated, aux)
        parts = self.base.parts(animated, aux)
        with torch.inference_mode():
            out = self.net(
                _tensor(parts["fused"]), _tensor(parts["aux_up"]), _tensor(parts["aligned"])
            )
        out = ((out[0].permute(1, 2, 0) + 1.0) * 127.5).round().clamp(0, 255)
        return out.to(torch.uint8).numpy()
