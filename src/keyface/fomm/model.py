"""A FOMM model: keypoint detector + generator, and its keyface model file.

The model file is a safetensors file whose tensor names are the upstream state-dict keys
prefixed by the network (``kp_detector.predictor.encoder.down_blocks.0.conv.weight``,
``generator.dense_motion_network.mask.bias``, ...), with metadata:

* ``format``: ``keyface-fomm-v1``;
* ``config``: the :class:`~keyface.fomm.config.FommConfig` as JSON;
* ``source_sha256`` and ``provenance`` (``"imported from vox-cpk.pth.tar"``), when imported.

Streams name the model by the CRC-32 of this file (:attr:`FommModel.digest`), which the decoder
checks.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from keyface.fomm.config import FommConfig
from keyface.fomm.networks import KPDetector, OcclusionAwareGenerator

FORMAT = "keyface-fomm-v1"
NETWORKS = ("kp_detector", "generator")
"""The networks of a model, in the order and under the names of the upstream checkpoint."""


class FommModelError(Exception):
    """A FOMM model file or checkpoint is missing, unreadable or of another layout."""


class FommNetworks(nn.Module):
    """The keypoint detector and the generator, under the upstream names."""

    def __init__(self, config: FommConfig) -> None:
        super().__init__()
        self.config = config
        self.kp_detector = KPDetector(config)
        self.generator = OcclusionAwareGenerator(config)


@dataclass
class FommModel:
    """A loaded model file: the networks (eval mode, float32) and what identifies the file."""

    networks: FommNetworks
    digest: int
    """CRC-32 of the model file (what streams store)."""
    metadata: dict[str, str]
    path: Path | None = None

    @property
    def config(self) -> FommConfig:
        return self.networks.config


def crc32_of(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc & 0xFFFFFFFF


def save_model(path: Path, networks: FommNetworks, metadata: dict[str, str] | None = None) -> None:
    """Write ``networks`` (float32: the codec needs the encoder's keypoints bit-exact at the
    decoder, so nothing is rounded on the way) with their config in the metadata."""
    meta = {"format": FORMAT, "config": networks.config.to_json()}
    meta.update(metadata or {})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in networks.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def load_model(path: Path | str) -> FommModel:
    """The model stored in ``path``; raises :class:`FommModelError` with the reason."""
    path = Path(path)
    if not path.is_file():
        raise FommModelError(f"FOMM model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise FommModelError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise FommModelError(f"{path}: not a keyface FOMM model file (keyface import-fomm)")
    try:
        networks = FommNetworks(FommConfig.from_json(meta["config"]))
        networks.load_state_dict({k: v.float() for k, v in tensors.items()})
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise FommModelError(f"{path}: weights do not fit the network ({exc})") from None
    networks.eval()
    for p in networks.parameters():
        p.requires_grad_(False)
    return FommModel(networks, crc32_of(path), meta, path)
