"""Fusion network weights: safetensors with the network's format and shape in the metadata,
checked against the catalogue's SHA-256 (:mod:`keyface.fusion.catalog`)."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from keyface.fusion.catalog import SHIPPED
from keyface.fusion.net import FORMAT, FusionNet, FusionNetConfig


class FusionWeightsError(Exception):
    """A fusion weights file is missing, corrupted or does not fit the network."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_fusion(path: Path, net: FusionNet, metadata: dict[str, str] | None = None) -> str:
    """Write ``net`` (float32: it is small) as safetensors; returns the SHA-256."""
    meta = net.metadata() | (metadata or {})
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in net.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return sha256_of(path)


def load_fusion(path: Path, sha256: str | None = None) -> FusionNet:
    """The network stored in ``path`` (eval mode); ``sha256``: refuse any other file."""
    path = Path(path)
    if not path.is_file():
        raise FusionWeightsError(f"fusion weights not found: {path}")
    if sha256 is not None and (actual := sha256_of(path)) != sha256:
        raise FusionWeightsError(
            f"fusion weights {path} are corrupted: SHA-256 {actual[:12]}... expected "
            f"{sha256[:12]}... (reinstall keyface or retrain)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise FusionWeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise FusionWeightsError(f"{path}: not a keyface fusion weights file")
    try:
        net = FusionNet(FusionNetConfig.from_dict(json.loads(meta["config"])))
        net.load_state_dict({k: v.float() for k, v in tensors.items()})
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise FusionWeightsError(f"{path}: weights do not fit the network ({exc})") from None
    return net.eval()


@cache
def load_shipped(name: str) -> FusionNet:
    """The shipped fusion network ``name`` (checksum verified), loaded once per process."""
    spec = SHIPPED[name]
    return load_fusion(spec.path, spec.sha256)
