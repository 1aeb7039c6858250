"""Renderers: turn a reference frame and driving keypoints into a frame."""

from __future__ import annotations

from pathlib import Path
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


DEFAULT_RENDERER = "kf-enh-v3"
"""Renderer used when none is named (the encoder's prediction of the decoder, the decoder,
``keyface decode``, ``demo``, ``bench``, the server): the keyframe enhancer, then the warp.
It beats the training-free warp at every rung of the rate ladder on the validation people
(docs/generator.md) for 35 ms per keyframe; ``"warp"`` stays available by name."""


class UnknownRendererError(Exception):
    """No renderer of that name is available."""


def available_renderers() -> list[str]:
    """Names :func:`get_renderer` accepts (a path to a ``.safetensors`` file works too)."""
    from keyface.generator.weights import RENDERERS

    return ["warp", *sorted(RENDERERS)]


def get_renderer(name: str = DEFAULT_RENDERER) -> Renderer:
    """The renderer registered as ``name``: ``"warp"`` (training-free), a shipped learned
    renderer (its networks are checked against their SHA-256), or the path of a generator's or
    enhancer's weights (``.safetensors``, e.g. from ``keyface train``)."""
    if name == "warp":
        return WarpRenderer()
    from keyface.generator.weights import RENDERERS

    if name in RENDERERS:
        from keyface.generator.enhancer import Enhancer
        from keyface.generator.model import Generator
        from keyface.generator.renderer import GeneratorRenderer
        from keyface.generator.weights import load_shipped

        spec = RENDERERS[name]
        model = load_shipped(spec.generator) if spec.generator else None
        enhancer = load_shipped(spec.enhancer) if spec.enhancer else None
        assert model is None or isinstance(model, Generator)
        assert enhancer is None or isinstance(enhancer, Enhancer)
        return GeneratorRenderer(model, name, enhancer=enhancer)
    if name.endswith(".safetensors"):
        from keyface.generator.renderer import GeneratorRenderer

        return GeneratorRenderer.from_file(Path(name), Path(name).stem)
    names = ", ".join(
        [
            "warp (training-free)",
            *(f"{n} ({spec.summary})" for n, spec in sorted(RENDERERS.items())),
        ]
    )
    raise UnknownRendererError(
        f"unknown generator {name!r} (available: {names}, or a .safetensors file)"
    )


__all__ = [
    "DEFAULT_RENDERER",
    "Reference",
    "Renderer",
    "UnknownRendererError",
    "WarpRenderer",
    "available_renderers",
    "dense_flow",
    "get_renderer",
    "warp_image",
]
