"""The renderer registry: every renderer the decoder (and the encoder, which predicts it) can
use, by the name streams and the CLI store (``--generator NAME``).

It sits above both kinds of renderer: the training-free warp (:mod:`keyface.render`, numpy and
OpenCV only) and the learned ones (:mod:`keyface.generator`, torch and onnxruntime). Looking a
name up builds only what that name needs, so a codec that renders with ``"warp"`` never
imports torch. Each :func:`get_renderer` call returns a new renderer (a server runs one per
sender); learned networks are loaded once per process and shared.
"""

from __future__ import annotations

from pathlib import Path

from keyface.generator.catalog import RENDERERS as SHIPPED_RENDERERS
from keyface.generator.catalog import ShippedRenderer
from keyface.registry import Registry
from keyface.render import Renderer, WarpRenderer

DEFAULT_RENDERER = "kf-enh-v3"
"""Renderer used when none is named (the encoder's prediction of the decoder, the decoder,
``keyface decode``, ``demo``, ``bench``, the server): the keyframe enhancer, then the warp.
It beats the training-free warp at every rung of the rate ladder on the validation people
(docs/generator.md) for 35 ms per keyframe; ``"warp"`` stays available by name."""


class UnknownRendererError(Exception):
    """No renderer of that name is available."""


RENDERERS: Registry[Renderer] = Registry("generator", error=UnknownRendererError)
"""``name -> renderer``: ``warp`` and every shipped learned renderer."""

RENDERERS.register("warp", summary="training-free", cached=False)(WarpRenderer)


def _shipped(spec: ShippedRenderer) -> Renderer:
    from keyface.generator.enhancer import Enhancer
    from keyface.generator.model import Generator
    from keyface.generator.renderer import GeneratorRenderer
    from keyface.generator.weights import load_shipped

    model = load_shipped(spec.generator) if spec.generator else None
    enhancer = load_shipped(spec.enhancer) if spec.enhancer else None
    assert model is None or isinstance(model, Generator)
    assert enhancer is None or isinstance(enhancer, Enhancer)
    return GeneratorRenderer(model, spec.name, enhancer=enhancer)


for _name, _spec in sorted(SHIPPED_RENDERERS.items()):
    RENDERERS.register(
        _name,
        summary=_spec.summary,
        cached=False,
        weights=tuple(w for w in (_spec.enhancer, _spec.generator) if w),
    )(lambda spec=_spec: _shipped(spec))


def available_renderers() -> list[str]:
    """Names :func:`get_renderer` accepts (a path to a ``.safetensors`` file works too)."""
    return RENDERERS.names()


def get_renderer(name: str = DEFAULT_RENDERER) -> Renderer:
    """The renderer registered as ``name``: ``"warp"`` (training-free), a shipped learned
    renderer (its networks are checked against their SHA-256), or the path of a generator's or
    enhancer's weights (``.safetensors``, e.g. from ``keyface train``)."""
    if name in RENDERERS:
        return RENDERERS.get(name)
    if name.endswith(".safetensors"):
        from keyface.generator.renderer import GeneratorRenderer

        return GeneratorRenderer.from_file(Path(name), Path(name).stem)
    names = ", ".join(f"{e.name} ({e.summary})" for e in RENDERERS.entries())
    raise UnknownRendererError(
        f"unknown generator {name!r} (available: {names}, or a .safetensors file)"
    )


__all__ = [
    "DEFAULT_RENDERER",
    "RENDERERS",
    "UnknownRendererError",
    "available_renderers",
    "get_renderer",
]
