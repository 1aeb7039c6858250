"""A learned fusion: the training-free fusion refined by a small network
(:mod:`keyface.fusion.net`) on one CPU thread."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from keyface.fusion.classic import AlignedFusion, check_pair
from keyface.fusion.net import FusionNet


def fold(image: np.ndarray, f: int) -> np.ndarray:
    """``(H, W, C)`` -> ``(C f f, H/f, W/f)``, the channel order of ``pixel_unshuffle``."""
    h, w, c = image.shape
    return (
        image.reshape(h // f, f, w // f, f, c).transpose(4, 1, 3, 0, 2).reshape(-1, h // f, w // f)
    )


def unfold(folded: np.ndarray, f: int) -> np.ndarray:
    """The inverse of :func:`fold`: ``(C f f, h, w)`` -> ``(h f, w f, C)``."""
    cff, h, w = folded.shape
    c = cff // (f * f)
    return folded.reshape(c, f, f, h, w).transpose(3, 1, 4, 2, 0).reshape(h * f, w * f, c)


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
        f = self.net.config.fold
        # Folded in numpy on uint8 (a quarter of the float work of pixel_unshuffle in torch).
        stack = np.concatenate([parts["fused"], parts["aux_up"], parts["aligned"]], axis=2)
        x = torch.from_numpy(fold(stack, f)).float()[None].mul_(1 / 127.5).sub_(1.0)
        with torch.inference_mode():
            res = self.net.residual(x)[0].mul_(127.5).numpy()
        return cv2.add(parts["fused"], unfold(res, f), dtype=cv2.CV_8U)
