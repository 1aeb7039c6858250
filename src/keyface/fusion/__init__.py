"""Fusion of the animated frame with the auxiliary stream's picture (hybrid modes).

Interim: the band fusion only; the fusion work of issue 13 replaces this module.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

DEFAULT_FUSION = "band"


class UnknownFusionError(Exception):
    """No fusion of that name is available."""


class Fusion(Protocol):
    name: str

    def fuse(self, animated: np.ndarray, aux: np.ndarray) -> np.ndarray: ...


def upsample_aux(aux: np.ndarray, size: int) -> np.ndarray:
    """The aux picture enlarged to ``size`` x ``size`` (bicubic)."""
    return cv2.resize(aux, (size, size), interpolation=cv2.INTER_CUBIC)


class BandFusion:
    name = "band"

    def fuse(self, animated: np.ndarray, aux: np.ndarray) -> np.ndarray:
        size, small = animated.shape[0], aux.shape[0]
        a = animated.astype(np.float32)
        low = cv2.resize(
            cv2.resize(a, (small, small), interpolation=cv2.INTER_AREA),
            (size, size),
            interpolation=cv2.INTER_CUBIC,
        )
        up = cv2.resize(aux.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        return np.clip(up + a - low + 0.5, 0, 255).astype(np.uint8)


def available_fusions() -> list[str]:
    return ["band"]


def get_fusion(name: str | None = None) -> Fusion:
    if name in (None, "band"):
        return BandFusion()
    raise UnknownFusionError(f"unknown fusion {name!r} (available: band)")
