"""Decoder-side fusion of the animated frame with the decoded low-resolution auxiliary frame
(issue 13, docs/fusion.md).

The animated frame (the keyframe warped by the decoded motion) is sharp but can be displaced;
the auxiliary frame (the source downsampled 2, 4 or 8 times and coded by a conventional codec)
is in the right place but blurry and blocky. A :class:`Fusion` makes one frame of both:

    fusion = get_fusion()                 # DEFAULT_FUSION
    frame = fusion.fuse(animated, aux)    # (S, S, 3) uint8, (S/k, S/k, 3) uint8 -> (S, S, 3)

Names (``available_fusions()``): ``"none"`` (the animation alone), ``"band"`` (the naive
band split, the ablation baseline), ``"aligned"`` (training-free: the animation aligned to the
auxiliary frame, its low band corrected where they disagree, the auxiliary frame where the
animation cannot be placed) and each shipped learned fusion (:mod:`keyface.fusion.catalog`;
torch is imported only when one is looked up). Fusions keep no state between frames: frames
may be skipped or reordered.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from keyface.fusion.catalog import SHIPPED, ShippedFusion
from keyface.fusion.classic import AlignedFusion, BandFusion, NoFusion, upsample_aux
from keyface.registry import Registry


class Fusion(Protocol):
    name: str

    def fuse(self, animated: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """``animated``: (S, S, 3) uint8; ``aux``: (S/k, S/k, 3) uint8, k in 2, 4, 8, not
        upsampled. Returns (S, S, 3) uint8, the same for the same inputs."""
        ...


class UnknownFusionError(Exception):
    """No fusion of that name."""


DEFAULT_FUSION = "aligned"
"""The fusion used when none is named: the training-free one. On the 12 validation people
(docs/fusion.md, ``results/fusion``) it beats the band fusion at every aux scale and QP measured
(LPIPS -0.02 to -0.10, +0.9 to +1.4 dB) and the learned ``kf-fuse-v1``, which therefore does not
ship."""

FUSIONS: Registry[Fusion] = Registry("fusion", error=UnknownFusionError)
FUSIONS.register("none", summary="the animation alone (aux decoded, not used)", cached=False)(
    NoFusion
)
FUSIONS.register("band", summary="aux low band + animation high band (baseline)", cached=False)(
    BandFusion
)
FUSIONS.register(
    "aligned",
    summary="training-free: animation aligned to the aux frame, low band corrected, fallback",
    cached=False,
)(AlignedFusion)


def _learned(spec: ShippedFusion) -> Fusion:
    from keyface.fusion.learned import LearnedFusion
    from keyface.fusion.weights import load_shipped

    return LearnedFusion(load_shipped(spec.name), spec.name)


for _name, _spec in sorted(SHIPPED.items()):
    FUSIONS.register(_name, summary=_spec.summary, cached=False, weights=(_name,))(
        lambda spec=_spec: _learned(spec)
    )


def get_fusion(name: str | None = None) -> Fusion:
    """The fusion registered as ``name`` (``None``: :data:`DEFAULT_FUSION``), or a learned
    fusion's weights file (``.safetensors``, from ``keyface train fit --task fusion``); a new
    object per call (a server runs one per stream); :class:`UnknownFusionError` otherwise."""
    name = DEFAULT_FUSION if name is None else name
    if name not in FUSIONS and name.endswith(".safetensors"):
        from pathlib import Path

        from keyface.fusion.learned import LearnedFusion
        from keyface.fusion.weights import FusionWeightsError

        try:
            return LearnedFusion.from_file(Path(name))
        except FusionWeightsError as exc:
            raise UnknownFusionError(str(exc)) from None
    return FUSIONS.get(name)


def available_fusions() -> list[str]:
    return FUSIONS.names()


__all__ = [
    "DEFAULT_FUSION",
    "FUSIONS",
    "AlignedFusion",
    "BandFusion",
    "Fusion",
    "NoFusion",
    "UnknownFusionError",
    "available_fusions",
    "get_fusion",
    "upsample_aux",
]
