"""Renderers: turn a reference frame and driving keypoints into a frame.

This package holds the protocol and the training-free warp (numpy and OpenCV only). Renderers
are looked up by name in :mod:`keyface.renderers`, which sits above this package and the
learned networks of :mod:`keyface.generator`."""

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

    def render(
        self, reference: Reference, keypoints: np.ndarray, field: np.ndarray | None = None
    ) -> np.ndarray:
        """The frame whose motion is ``keypoints`` (and the body-motion ``field``, a
        ``(G, G, 2)`` grid of 256-crop pixels, when the stream has one), rendered from
        ``reference``."""
        ...


__all__ = [
    "Reference",
    "Renderer",
    "WarpRenderer",
    "dense_flow",
    "warp_image",
]
