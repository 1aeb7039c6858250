"""The catalogue of trained networks that ship with keyface, and of the named learned
renderers built from them: names, files, SHA-256 and how each was trained.

Plain data, no torch: the renderer registry (:mod:`keyface.renderers`) lists these names
without loading a network; :mod:`keyface.generator.weights` loads and checks the files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ShippedWeights:
    """A trained generator that ships with keyface."""

    name: str
    filename: str
    sha256: str
    command: str
    """The command that trained it."""
    split: str
    """The data split it was trained on (people)."""

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename


SHIPPED: dict[str, ShippedWeights] = {
    "kf-gen-v1": ShippedWeights(
        name="kf-gen-v1",
        filename="kf-gen-v1.safetensors",
        sha256="e2bf7dbcd4348d5f71e2692dd384809e42013b36fc36e65727f9289dd4c293a2",
        command=(
            "keyface train fit --data cache/train --split splits/dev_v1.json --run runs/gen_v3 "
            "--steps 1100 --amp --threads 1 --near 6 --near-share 0.85 --vgg-mode unit "
            "--vgg-layers 4"
        ),
        split="splits/dev_v1.json (train_people; validated on validation_people)",
    ),
    "kf-enh-v1": ShippedWeights(
        name="kf-enh-v1",
        filename="kf-enh-v1.safetensors",
        sha256="0cd1506437c2e8b3254f4eb714d7a91d1ce1bd596355fdd1a17a6624c075002c",
        command=(
            "keyface train fit --task enhancer --data cache/train --split splits/dev_v1.json "
            "--run runs/enh_v1 --steps 4000 --batch 8 --patch 96 --lr 4e-4 --amp --threads 2 "
            "--val-every 500"
        ),
        split="splits/dev_v1.json (train_people; validated on validation_people)",
    ),
    "kf-enh-v2": ShippedWeights(
        name="kf-enh-v2",
        filename="kf-enh-v2.safetensors",
        sha256="2bcff2e18619176918b29bdd53b3d2791443692803324398ea9b544afed89175",
        command=(
            "keyface train fit --task enhancer --data cache/train --split splits/dev_v1.json "
            "--run runs/enh_v2 --steps 7000 --batch 8 --patch 96 --lr 4e-4 --amp --threads 2 "
            "--val-every 500  (resumed from a copy of runs/enh_v1 at step 4000)"
        ),
        split="splits/dev_v1.json (train_people; validated on validation_people)",
    ),
    "kf-enh-v3": ShippedWeights(
        name="kf-enh-v3",
        filename="kf-enh-v3.safetensors",
        sha256="fe07bd2042b64145d6c58d7a402700ae470244770ae4e06d85fa9190ed01f9c0",
        command=(
            "keyface train fit --task enhancer --data cache/train --split splits/dev_v1.json "
            "--run runs/enh_v3 --steps 2500 --lr 2e-4 --resample-share 0.8 "
            "--init runs/enh_v2/enhancer.safetensors --amp --threads 2 --val-every 500"
        ),
        split="splits/dev_v1.json (train_people; validated on validation_people)",
    ),
}
"""Trained networks that ship with keyface (see docs/generator.md for how each was trained)."""


@dataclass(frozen=True)
class ShippedRenderer:
    """A named learned renderer: which shipped networks it runs (see
    :class:`~keyface.generator.renderer.GeneratorRenderer`)."""

    name: str
    enhancer: str | None
    """Shipped keyframe enhancer (``None``: the keyframe as decoded)."""
    generator: str | None
    """Shipped per-frame generator (``None``: the warp of the enhanced keyframe)."""
    summary: str


RENDERERS: dict[str, ShippedRenderer] = {
    "kf-gen-v1": ShippedRenderer(
        "kf-gen-v1", None, "kf-gen-v1", "per-frame generator v1 on the decoded keyframe"
    ),
    "kf-enh-v1": ShippedRenderer(
        "kf-enh-v1", "kf-enh-v1", None, "keyframe enhancer v1, then the warp"
    ),
    "kf-enh-v2": ShippedRenderer(
        "kf-enh-v2", "kf-enh-v2", None, "keyframe enhancer v2 (longer run), then the warp"
    ),
    "kf-enh-v3": ShippedRenderer(
        "kf-enh-v3",
        "kf-enh-v3",
        None,
        "keyframe enhancer v3 (v2 fine-tuned also through sub-pixel shifts), then the warp",
    ),
}
"""Learned renderers that ship with keyface (``--generator NAME``)."""
