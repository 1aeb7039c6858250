"""Generator weights: safetensors files with the network shape in their metadata, and the
registry of shipped weights (name -> file, SHA-256, how they were trained)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

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
}
"""Generators that ship with keyface (opt-in with --generator NAME; see docs/generator.md
for why the warp stays the default)."""


@cache
def load_shipped(name: str) -> Generator:
    """The shipped generator ``name`` (checksum verified), loaded once per process: every
    renderer made from it (one per sender on a server) shares the network."""
    shipped = SHIPPED[name]
    return load_weights(shipped.path, shipped.sha256)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(path: Path, model: Generator, metadata: dict[str, str] | None = None) -> str:
    """Write ``model`` as float16 safetensors (its shape in the metadata); returns the SHA-256."""
    meta = {"format": "keyface-generator-v1", "config": json.dumps(model.config.to_dict())}
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
    if meta.get("format") != "keyface-generator-v1" or "config" not in meta:
        raise GeneratorWeightsError(f"{path}: not a keyface generator weights file")
    try:
        config = GeneratorConfig.from_dict(json.loads(meta["config"]))
        model = Generator(config)
        model.load_state_dict({k: v.float() for k, v in tensors.items()})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise GeneratorWeightsError(f"{path}: weights do not fit the network ({exc})") from None
    return model.eval()
