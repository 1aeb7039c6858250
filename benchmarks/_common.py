"""What the benchmark scripts share: where the development clips are, the default split, the
clip options and their selection (through :mod:`keyface.clips`, as ``keyface bench`` and
``keyface train`` do). Scripts import it as ``from _common import ...`` (they run from this
folder's parent: ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from keyface.clips import select_clips

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "clips"
"""The development clips (``../shared/data/clips`` beside the repository; never committed)."""
MANIFEST = CLIPS / "MANIFEST.tsv"
SPLIT = ROOT / "splits" / "dev_v1.json"
"""The person split every benchmark, the bench and training use."""


def add_clip_options(
    parser: argparse.ArgumentParser, *, limit: int | None = 12, manifest: bool = False
) -> None:
    """``--clips`` (the folder, or with ``manifest`` its MANIFEST.tsv), ``--split``,
    ``--subset`` and ``--limit`` (people)."""
    parser.add_argument("--clips", type=Path, default=MANIFEST if manifest else CLIPS)
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--subset", default="validation", choices=["validation", "train"])
    parser.add_argument("--limit", type=int, default=limit, help="at most this many people")


def pick_clips(clips: Path, split: Path, subset: str, limit: int | None) -> list[Path]:
    """One clip per person of the split's subset (the first by file name), at most ``limit``."""
    return [c.path for c in select_clips(clips, split=split, subset=subset, limit=limit)]
