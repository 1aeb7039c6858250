"""The learned fusions that ship with keyface: names, weight files, SHA-256 and how each was
trained. Plain data, no torch (the fusion registry lists these names without loading one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ShippedFusion:
    name: str
    filename: str
    sha256: str
    command: str
    """The command that trained it."""
    split: str
    """The people it was trained on."""
    summary: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename


SHIPPED: dict[str, ShippedFusion] = {}
"""Learned fusions that ship (docs/fusion.md says why each does)."""
