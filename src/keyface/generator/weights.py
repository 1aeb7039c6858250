"""Network weights: safetensors files with the network kind and shape in their metadata, and
the registry of shipped weights (name -> file, SHA-256, how they were trained).

Two kinds of network: the per-frame generator (:class:`~keyface.generator.model.Generator`,
format ``keyface-generator-v1``) and the keyframe enhancer
(:class:`~keyface.generator.enhancer.Enhancer`, format ``keyface-enhancer-v1``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from keyface.generator.enhancer import Enhancer, EnhancerConfig
from keyface.generator.model import Generator, GeneratorConfig

WEIGHTS_DIR = Path(__file__).parent / "weights"


class GeneratorWeightsError(Exception):
    """A generator's weights file is missing, corrupted or does not fit the network."""


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


@cache
def load_shipped(name: str) -> Generator | Enhancer:
    """The shipped network ``name`` (checksum verified), loaded once per process: every
    renderer made from it (one per sender on a server) shares the network."""
    shipped = SHIPPED[name]
    return load_network(shipped.path, shipped.sha256)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_FORMATS = {Generator: "keyface-generator-v1", Enhancer: "keyface-enhancer-v1"}


def save_weights(
    path: Path, model: Generator | Enhancer, metadata: dict[str, str] | None = None
) -> str:
    """Write ``model`` as float16 safetensors (its kind and shape in the metadata); returns the
    SHA-256."""
    meta = {"format": _FORMATS[type(model)], "config": json.dumps(model.config.to_dict())}
    meta.update(metadata or {})
    tensors = {
        k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return sha256_of(path)


def load_weights(path: Path, sha256: str | None = None) -> Generator:
    """The generator stored in ``path`` (float32, eval mode). ``sha256``: refuse a file whose
    checksum differs. Raises :class:`GeneratorWeightsError` with the reason."""
    model = load_network(path, sha256)
    if not isinstance(model, Generator):
        raise GeneratorWeightsError(f"{path}: a keyframe enhancer, not a generator")
    return model


def load_network(path: Path, sha256: str | None = None) -> Generator | Enhancer:
    """The network (generator or enhancer) stored in ``path`` (float32, eval mode), as
    :func:`load_weights`."""
    path = Path(path)
    if not path.is_file():
        raise GeneratorWeightsError(f"generator weights not found: {path}")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise GeneratorWeightsError(
                f"generator weights {path} are corrupted: SHA-256 {actual[:12]}... "
                f"expected {sha256[:12]}... (reinstall keyface or retrain)"
            )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise GeneratorWeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    fmt = meta.get("format")
    if fmt not in _FORMATS.values() or "config" not in meta:
        raise GeneratorWeightsError(f"{path}: not a keyface generator weights file")
    try:
        config = json.loads(meta["config"])
        model: Generator | Enhancer = (
            Enhancer(EnhancerConfig.from_dict(config))
            if fmt == _FORMATS[Enhancer]
            else Generator(GeneratorConfig.from_dict(config))
        )
        model.load_state_dict({k: v.float() for k, v in tensors.items()})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise GeneratorWeightsError(f"{path}: weights do not fit the network ({exc})") from None
    return model.eval()
