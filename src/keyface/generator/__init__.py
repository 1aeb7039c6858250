"""The learned renderer: a keyframe enhancer (once per keyframe) and a per-frame generator that
refines the warp, their training-time networks, weights and onnxruntime inference
(docs/generator.md).

Modules: ``model`` (the per-frame U-Net), ``enhancer`` (the keyframe enhancer), ``features``
(what the networks see), ``catalog`` (shipped weights and named renderers, no torch),
``weights`` (safetensors I/O with checksums), ``renderer`` (:class:`GeneratorRenderer`, the
:class:`keyface.render.Renderer` the codec uses). Importing this package loads no torch; the
renderer registry (:mod:`keyface.renderers`) builds a learned renderer when one is asked for.
"""

from keyface.generator.catalog import RENDERERS, SHIPPED, ShippedRenderer, ShippedWeights

__all__ = ["RENDERERS", "SHIPPED", "ShippedRenderer", "ShippedWeights"]
