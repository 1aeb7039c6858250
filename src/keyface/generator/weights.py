"""Network weights: safetensors files with the network kind and shape in their metadata,
loaded and checked against the catalogue of shipped weights (:mod:`keyface.generator.catalog`).

Two kinds of network: the per-frame generator (:class:`~keyface.generator.model.Generator`,
format ``keyface-generator-v1``) and the keyframe enhancer
(:class:`~keyface.generator.enhancer.Enhancer`, format ``keyface-enhancer-v1``)."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from keyface.generator.catalog import (
    RENDERERS,
    SHIPPED,
    WEIGHTS_DIR,
    ShippedRenderer,
    ShippedWeights,
)
from keyface.generator.enhancer import Enhancer, EnhancerConfig
from keyface.generator.model import Generator, GeneratorConfig

__all__ = [
    "RENDERERS",
    "SHIPPED",
    "WEIGHTS_DIR",
    "GeneratorWeightsError",
    "ShippedRenderer",
    "ShippedWeights",
    "load_network",
    "load_shipped",
    "load_weights",
    "save_weights",
    "sha256_of",
]


class GeneratorWeightsError(Exception):
    """A generator's weights file is missing, corrupted or does not fit the network."""


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
