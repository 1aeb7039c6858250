"""Helpers shared by the sub-commands: progress bars, argument types, paths, number formatting.

Progress: a bar with its total, rate and time left when stderr is a terminal; nothing when it
is a file or a pipe (each command prints its one summary line at the end), so logs stay small.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tqdm import tqdm

from keyface.cli.main import UserError
from keyface.io import check_output, probe
from keyface.pipeline import ProgressFn


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is a terminal, where progress bars belong."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """One stage's progress bar on stderr: total, rate and time left on a terminal; silent
    otherwise (or when not ``enabled``). ``restart`` begins another pass of the same stage
    (each trial of the rate search)."""

    def __init__(self, total: int | None, desc: str, enabled: bool = True) -> None:
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit="frame",
            disable=not (enabled and interactive()),
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def restart(self, desc: str, note: str = "") -> None:
        self.bar.reset()
        self.bar.set_description(desc, refresh=False)
        self.bar.set_postfix_str(note, refresh=True)

    def close(self) -> None:
        self.bar.close()


@contextmanager
def progress_bar(total: int | None, desc: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """A :class:`Progress` for a ``with`` block; yields its ``update``."""
    bar = Progress(total, desc, enabled)
    try:
        yield bar.update
    finally:
        bar.close()


@contextmanager
def stage_bars(
    total: int | None, first: str, second: str, enabled: bool = True
) -> Iterator[tuple[ProgressFn, ProgressFn]]:
    """One bar for two passes over the same frames (``find face``, then ``analyse``): yields
    the two passes' ``update``; the first count of the second pass restarts the bar."""
    bar = Progress(total, first, enabled)
    second_started = False

    def tick_second(n: int) -> None:
        nonlocal second_started
        if not second_started:
            second_started = True
            bar.restart(second)
        bar.update(n)

    try:
        yield bar.update, tick_second
    finally:
        bar.close()


def expected_frames(path: Path, max_frames: int | None = None) -> int | None:
    """How many frames reading ``path`` will give (the container's count or its duration
    times its rate), capped by ``max_frames``; ``None`` if the container does not say."""
    try:
        info = probe(path)
    except Exception:
        return max_frames
    count = info.frame_count
    if count is None:
        count = _frames_from_duration(path, info.fps)
    if count is None:
        return max_frames
    return count if max_frames is None else min(count, max_frames)


def _frames_from_duration(path: Path, fps: object) -> int | None:
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration is None:
                return None
            return round(container.duration / av.time_base * float(fps))  # type: ignore[arg-type]
    except (av.FFmpegError, OSError, ValueError):
        return None


def existing_file(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a file")
    if not os.access(p, os.R_OK):
        raise UserError(f"{p}: cannot be read (permission denied)")
    return p


def output_file(
    path: str,
    *,
    inputs: Iterable[str | Path] = (),
    force: bool = False,
    suffixes: Iterable[str] | None = None,
) -> Path:
    """``-o`` checked before any work (:func:`keyface.io.check_output`)."""
    return check_output(path, inputs=inputs, force=force, suffixes=suffixes)


def add_force_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-y",
        "--force",
        action="store_true",
        help="overwrite an existing output file (never an input)",
    )


def _whole_number(text: str, minimum: int, wording: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _whole_number(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _whole_number(text, 0, "0 or more")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def human_bytes(n: int) -> str:
    return f"{n} B" if n < 10_000 else f"{n / 1000:.1f} kB"


def add_motion_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--motion facemesh|fomm``, ``--model FILE`` and ``--student FILE`` (encode, bench)."""
    p.add_argument(
        "--motion",
        choices=("facemesh", "fomm"),
        default="facemesh",
        help="motion representation: the face mesh (default) or the learned keypoints and "
        "Jacobians of a First Order Motion Model (needs --model; docs/motion.md)",
    )
    p.add_argument(
        "--model",
        metavar="FILE",
        help="--motion fomm: the keyface model file (.safetensors, from keyface import-fomm); "
        "its generator renders the frames",
    )
    p.add_argument(
        "--student",
        metavar="FILE",
        help="--motion fomm: a keypoint encoder distilled from that model (keyface train fit "
        "--task fomm-distill) measures the motion instead of its detector; same stream",
    )


def use_fomm_arguments(args: argparse.Namespace) -> tuple[Path, Path | None] | None:
    r"""The ``(model, student)`` files of ``--motion fomm --model FILE [--student FILE]``,
    loaded and registered as ``fomm`` (:func:`keyface.fomm.use_model`); ``None`` for the face
    mesh. Misused options and bad files are :class:`UserError`\ s."""
    model = getattr(args, "model", None)
    student = getattr(args, "student", None)
    if getattr(args, "motion", "facemesh") != "fomm":
        if model is not None:
            raise UserError("--model is the model file of --motion fomm")
        if student is not None:
            raise UserError("--student is a keypoint encoder of --motion fomm")
        return None
    if model is None:
        raise UserError("--motion fomm needs its model file: --model FILE (keyface import-fomm)")
    from keyface.fomm import use_model
    from keyface.fomm.model import FommModelError
    from keyface.fomm.student import StudentFileError

    files = existing_file(model), existing_file(student) if student else None
    try:
        use_model(*files)
    except (FommModelError, StudentFileError) as exc:
        raise UserError(str(exc)) from None
    return files
