"""Renderers: turn a reference frame and driving keypoints into a frame."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from keyface.render.warp import Reference, WarpRenderer, dense_flow, warp_image


class Renderer(Protocol):
    """What the decoder needs from a renderer (training-free warp or learned generator)."""

    name: str

    def prepare(self, image: np.ndarray, keypoints: np.ndarray) -> Reference:
        """Precompute what depends on the reference only (called once per keyframe)."""
        ...

    def render(self, reference: Reference, keypoints: np.ndarray) -> np.ndarray:
        """The frame whose motion is ``keypoints``, rendered from ``reference``."""
        ...


class UnknownRendererError(Exception):
    """No renderer of that name is available."""


def get_renderer(name: str = "warp") -> Renderer:
    if name == "warp":
        return WarpRenderer()
    raise UnknownRendererError(f"unknown generator {name!r} (available: warp)")


__all__ = [
    "Reference",
    "Renderer",
    "UnknownRendererError",
    "WarpRenderer",
    "dense_flow",
    "get_renderer",
    "warp_image",
]
