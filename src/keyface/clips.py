"""The development clips and their splits: the one module that reads ``MANIFEST.tsv`` files
and ``splits/*.json``, shared by ``keyface bench``, ``keyface train prepare`` and the scripts in
``benchmarks/``.

A manifest is a tab-separated file with at least ``file`` and ``person`` columns (``frames``
optional); a split names the clips and the people of each subset (``train_clips``,
``validation_clips``, ``train_people``, ``validation_people``), always split by person.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".y4m")


class ClipSelectionError(Exception):
    """A manifest, split or selection that cannot be used: one line for the user."""


@dataclass(frozen=True)
class Split:
    """A ``splits/*.json`` file: clips and people of each subset."""

    clips: dict[str, tuple[str, ...]]
    """subset -> clip file names."""
    people: dict[str, tuple[str, ...]]
    """subset -> people."""


def load_split(path: str | Path) -> Split:
    """Read a split file (``ClipSelectionError`` when it cannot be read or is not one)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ClipSelectionError(f"{path}: cannot read split ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ClipSelectionError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ClipSelectionError(f"{path}: not a split file")
    clips = {k[: -len("_clips")]: tuple(v) for k, v in data.items() if k.endswith("_clips")}
    people = {k[: -len("_people")]: tuple(v) for k, v in data.items() if k.endswith("_people")}
    return Split(clips, people)


@dataclass(frozen=True)
class Clip:
    """A source video of the benchmark; ``name`` (file stem) names its cache folder."""

    name: str
    path: Path
    person: str
    frames: int | None = None  # as the manifest says; None when unknown


def _read_manifest(path: Path) -> list[Clip]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as exc:
        raise ClipSelectionError(f"{path}: cannot read manifest ({exc.strerror})") from None
    if rows and ("file" not in rows[0] or "person" not in rows[0]):
        raise ClipSelectionError(f"{path}: manifest needs 'file' and 'person' columns")
    clips = []
    for r in rows:
        frames = r.get("frames") or ""
        clips.append(
            Clip(
                name=Path(r["file"]).stem,
                path=path.parent / r["file"],
                person=r["person"] or Path(r["file"]).stem,
                frames=int(frames) if frames.isdigit() else None,
            )
        )
    return clips


def list_clips(source: str | Path) -> list[Clip]:
    """Clips of a manifest (``.tsv`` with ``file``, ``person``, ``frames`` columns), of a folder
    (its ``MANIFEST.tsv`` if it has one, else every video file in it) or a single video."""
    p = Path(source)
    if not p.exists():
        raise ClipSelectionError(f"{p}: no such file or folder")
    if p.is_dir():
        manifest = p / "MANIFEST.tsv"
        if manifest.is_file():
            return _read_manifest(manifest)
        videos = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise ClipSelectionError(f"{p}: no MANIFEST.tsv and no video files")
        return [Clip(v.stem, v, v.stem) for v in videos]
    if p.suffix.lower() == ".tsv":
        return _read_manifest(p)
    return [Clip(p.stem, p, p.stem)]


def select_clips(
    source: str | Path,
    *,
    split: str | Path | None = None,
    subset: str = "validation",
    persons: Sequence[str] | None = None,
    one_per_person: bool = True,
    limit: int | None = None,
    frames: int | None = None,
    skip_short: bool = False,
) -> list[Clip]:
    """The benchmark's clips, sorted by file name.

    ``split`` (a ``splits/*.json`` file) keeps the clips of its ``<subset>_clips`` list;
    ``persons`` keeps those people; ``one_per_person`` keeps one clip per person: the first (by
    file name) that has at least ``frames`` frames, else the first; ``skip_short`` drops clips
    the manifest says are shorter than ``frames``; ``limit`` keeps the first N.
    """
    clips = sorted(list_clips(source), key=lambda c: c.path.name)
    if split is not None:
        subsets = load_split(split).clips
        if subset not in subsets:
            have = ", ".join(sorted(subsets)) or "none"
            raise ClipSelectionError(f"{split}: no subset {subset!r} (has: {have})")
        wanted = set(subsets[subset])
        clips = [c for c in clips if c.path.name in wanted]
    if persons:
        known = {c.person for c in clips}
        missing = [p for p in persons if p not in known]
        if missing:
            raise ClipSelectionError(f"no clip of person(s) {', '.join(missing)} in the selection")
        clips = [c for c in clips if c.person in set(persons)]
    if one_per_person:
        by_person: dict[str, list[Clip]] = {}
        for c in clips:
            by_person.setdefault(c.person, []).append(c)
        chosen = []
        for group in by_person.values():
            long_enough = [c for c in group if frames is None or (c.frames or 0) >= frames]
            chosen.append(long_enough[0] if long_enough else group[0])
        clips = sorted(chosen, key=lambda c: c.path.name)
    if skip_short and frames is not None:
        clips = [c for c in clips if c.frames is None or c.frames >= frames]
    if limit is not None:
        if limit < 1:
            raise ClipSelectionError("--limit must be at least 1")
        clips = clips[:limit]
    if not clips:
        raise ClipSelectionError(f"{source}: no clip left after the selection")
    names = [c.name for c in clips]
    if len(set(names)) != len(names):
        raise ClipSelectionError("two selected clips have the same file name (stem)")
    for c in clips:
        if not c.path.is_file():
            raise ClipSelectionError(f"{c.path}: listed in the manifest but missing")
    return clips
