"""Output files that are safe to write: checked before any work, never an input, never a
half-written file under the final name.

:func:`check_output` is called by every command that writes a file, before it reads or
computes anything, so that a wrong ``-o`` fails in a second, not after minutes of analysis.
:func:`atomic_output` then writes to a hidden temporary file in the same folder and renames it
to the final name only when the writing finished (``os.replace``: atomic on one file system).
An interrupted or failed write leaves the old file, or nothing, behind (issue 14, item 4).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


class OutputError(Exception):
    """An output path that cannot or must not be written (printed as one line, exit 2)."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    path: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
    suffixes: Iterable[str] | None = None,
    what: str = "output",
) -> Path:
    """Check that ``path`` may be written, before any work; return it as a :class:`Path`.

    Refused with :class:`OutputError`: a suffix not in ``suffixes`` (lower case, with the
    dot), a folder, a path whose folder does not exist (no folder is ever created) or is not
    a folder, a folder this process cannot create files in, any of ``inputs`` (also through
    another name: hard or symbolic links), and an existing file unless ``force``.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a folder; name the {what} file")
    for source in inputs:
        if _same_file(p, Path(source)) or p.resolve() == Path(source).resolve():
            raise OutputError(f"{p}: is an input of this command; choose another {what}")
    if suffixes is not None:
        allowed = tuple(suffixes)
        if p.suffix.lower() not in allowed:
            raise OutputError(
                f"{p}: the {what} must end in {_or_list(allowed)} (got {p.suffix or 'no suffix'})"
            )
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"{p}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"{p}: {parent} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise OutputError(f"{p}: cannot write in {parent} ({exc.strerror or exc})") from None
    if p.exists() and not force:
        raise OutputError(f"{p}: exists; pass --force (-y) to overwrite it")
    return p


def _or_list(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so writers pick the same
    format); on a normal exit it is renamed to ``path`` if anything was written to it, on an
    exception (``KeyboardInterrupt`` included) it is removed and ``path`` is left untouched.

    Raises :class:`OutputError` naming ``path`` when the temporary file cannot be created.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=f".part{p.suffix}")
    except OSError as exc:
        raise OutputError(f"{p}: cannot write in {parent} ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the mode a plain open() would have.
    os.chmod(tmp, _file_mode(p))
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if tmp.exists() and tmp.stat().st_size > 0:
        try:
            os.replace(tmp, p)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{p}: cannot write ({exc.strerror or exc})") from None
    else:
        tmp.unlink(missing_ok=True)


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, else 0666 less the process's umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
