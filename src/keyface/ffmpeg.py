"""The ffmpeg executable and one way to run it.

keyface runs the static ffmpeg that ``imageio-ffmpeg`` ships (it has libvvenc and libvmaf) for
VVC keyframes, the VVC anchor and VMAF; everything else goes through PyAV in-process. This
module finds the executable once and runs it with a timeout, turning every failure into one
:class:`FfmpegError` line that names what was being done. Callers wrap it in their own error
type (``IntraCodecError``, ``AnchorError``...)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path


class FfmpegError(Exception):
    """ffmpeg is missing, timed out or failed; the message is one line."""


class FfmpegFailed(FfmpegError):
    """ffmpeg ran and exited with an error (the input, not the set-up, is likely at fault)."""


@functools.cache
def ffmpeg_exe() -> str | None:
    """Path of imageio-ffmpeg's executable, else an ``ffmpeg`` on the PATH, else ``None``."""
    try:
        import imageio_ffmpeg

        exe: str | None = str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # missing package, or no binary for this platform
        exe = shutil.which("ffmpeg")
    return exe if exe and Path(exe).exists() else None


def require_ffmpeg(what: str) -> str:
    """:func:`ffmpeg_exe`, or :class:`FfmpegError` saying that ``what`` needs it."""
    exe = ffmpeg_exe()
    if exe is None:
        raise FfmpegError(f"{what} needs the ffmpeg of imageio-ffmpeg, and there is none")
    return exe


def run_ffmpeg(
    args: list[str],
    *,
    what: str,
    timeout: float,
    stdin: bytes | None = None,
    cwd: str | Path | None = None,
    quiet: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``ffmpeg ARGS`` (``-hide_banner -nostdin`` and, when ``quiet``, ``-loglevel error``
    are added); returns the finished process (stdout and stderr captured). Raises
    :class:`FfmpegError` naming ``what`` on a timeout or an OS error, :class:`FfmpegFailed` with
    the last lines of ffmpeg's log on a non-zero exit."""
    cmd = [require_ffmpeg(what), "-hide_banner"]
    cmd += ["-nostats", "-loglevel", "error"] if quiet else []
    cmd += ([] if stdin is not None else ["-nostdin"]) + list(args)
    try:
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, timeout=timeout, cwd=cwd, check=False
        )
    except subprocess.TimeoutExpired:
        raise FfmpegError(f"{what}: ffmpeg did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise FfmpegError(f"{what}: cannot run ffmpeg ({str(exc).splitlines()[0]})") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        tail = " | ".join(lines) if lines else "no message"
        raise FfmpegFailed(f"{what}: ffmpeg failed (exit {proc.returncode}): {tail}")
    return proc
