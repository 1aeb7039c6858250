"""Import an upstream FOMM checkpoint (``vox-cpk.pth.tar``) into a keyface model file.

The upstream file is a pickled dict: ``kp_detector`` and ``generator`` (state dicts), usually
with ``discriminator``, ``optimizer_*`` and ``epoch``, which are ignored. It is read with
``torch.load(weights_only=True)``: plain containers and tensors only, never arbitrary objects.

Every key and shape is checked against :class:`~keyface.fomm.model.FommNetworks` of the given
config: a checkpoint of another layout is refused with the first key that differs. Tensor names
map one to one (``generator.first.conv.weight`` -> ``generator.first.conv.weight``); the only
liberties are a ``module.`` prefix (a checkpoint saved from ``DataParallel``), which is removed,
and BatchNorm ``num_batches_tracked`` counters, which older PyTorch did not write and inference
does not read (missing ones are set to 0).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from keyface.fomm.config import FommConfig
from keyface.fomm.model import NETWORKS, FommModelError, FommNetworks, crc32_of, save_model
from keyface.generator.weights import sha256_of

OPTIONAL_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class ImportResult:
    sha256: str
    """SHA-256 of the written model file."""
    digest: int
    """CRC-32 of the written model file (what streams store)."""
    source_sha256: str
    tensors: int


def upstream_layout(config: FommConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    """``network -> {upstream key: shape}`` of a checkpoint of ``config``."""
    networks = FommNetworks(config)
    return {
        name: {k: tuple(v.shape) for k, v in getattr(networks, name).state_dict().items()}
        for name in NETWORKS
    }


def read_checkpoint(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts of the networks in an upstream checkpoint (not yet checked)."""
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FommModelError(
            f"{path}: not a FOMM checkpoint of plain tensors (torch.load: {first})"
        ) from None
    if not isinstance(data, dict):
        raise FommModelError(f"{path}: not a FOMM checkpoint (a {type(data).__name__}, not a dict)")
    out = {}
    for name in NETWORKS:
        state = data.get(name)
        if not isinstance(state, dict):
            keys = ", ".join(sorted(map(str, data))[:6])
            raise FommModelError(f"{path}: no {name!r} state dict in the checkpoint (keys: {keys})")
        out[name] = {str(k).removeprefix("module."): v for k, v in state.items()}
    return out


def check_layout(
    checkpoint: dict[str, dict[str, torch.Tensor]], config: FommConfig
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under keyface's names (``network.key``), float32; raises
    :class:`FommModelError` naming the first key that is missing, unexpected or of another
    shape."""
    layout = upstream_layout(config)
    tensors: dict[str, torch.Tensor] = {}
    for name in NETWORKS:
        expected, state = layout[name], checkpoint[name]
        for key, shape in expected.items():
            value = state.get(key)
            if value is None and key.endswith(OPTIONAL_SUFFIX):
                value = torch.zeros((), dtype=torch.long)
            if value is None:
                raise FommModelError(f"checkpoint lacks {name}.{key} (shape {list(shape)})")
            if not isinstance(value, torch.Tensor):
                raise FommModelError(f"{name}.{key} is a {type(value).__name__}, not a tensor")
            if tuple(value.shape) != shape:
                raise FommModelError(
                    f"{name}.{key} has shape {list(value.shape)}, the model expects "
                    f"{list(shape)}: a checkpoint of another configuration"
                )
            if value.is_floating_point():
                value = value.float()
            tensors[f"{name}.{key}"] = value
        extra = sorted(set(state) - set(expected))
        if extra:
            raise FommModelError(
                f"checkpoint has {name}.{extra[0]}, which the model does not "
                f"({len(extra)} unexpected keys): a checkpoint of another layout"
            )
    return tensors


def import_checkpoint(source: Path, output: Path, config: FommConfig | None = None) -> ImportResult:
    """Convert the upstream checkpoint ``source`` into the keyface model file ``output``."""
    config = config or FommConfig.vox256()
    source = Path(source)
    tensors = check_layout(read_checkpoint(source), config)
    networks = FommNetworks(config)
    networks.load_state_dict(tensors)
    source_sha = sha256_of(source)
    save_model(
        Path(output),
        networks,
        {"source_sha256": source_sha, "provenance": f"imported from {source.name}"},
    )
    return ImportResult(sha256_of(Path(output)), crc32_of(Path(output)), source_sha, len(tensors))


def save_upstream(path: Path, networks: FommNetworks, **extra: object) -> None:
    """Write ``networks`` in the upstream checkpoint layout (tests, and round trips)."""
    data: dict[str, object] = {name: getattr(networks, name).state_dict() for name in NETWORKS}
    data.update(extra)
    torch.save(data, str(path))
