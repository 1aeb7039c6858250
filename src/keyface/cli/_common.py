"""Helpers shared by the sub-commands: progress bars, paths, number formatting."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from keyface.cli.main import UserError
from keyface.pipeline import ProgressFn


@contextmanager
def progress_bar(total: int | None, desc: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """A tqdm bar on stderr (silent when ``enabled`` is false or stderr is not a terminal)."""
    bar = tqdm(
        total=total,
        desc=desc,
        unit="frame",
        disable=not enabled or not sys.stderr.isatty(),
        leave=False,
        dynamic_ncols=True,
    )
    try:
        yield bar.update
    finally:
        bar.close()


def existing_file(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a file")
    return p


def human_bytes(n: int) -> str:
    return f"{n} B" if n < 10_000 else f"{n / 1000:.1f} kB"
