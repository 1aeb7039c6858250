"""Keep the log lines that mediapipe's native code (TFLite, absl) writes straight to the
process's stderr out of keyface's output. Set ``KEYFACE_NATIVE_LOGS=1`` to see them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_active = 0


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at the null device for the duration, while Python's own
    ``sys.stderr`` (progress bars, messages, tracebacks) keeps writing to the real stderr.
    Nested uses are no-ops; everything is restored afterwards."""
    global _active
    if _active or os.environ.get("KEYFACE_NATIVE_LOGS"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    python_stderr = sys.stderr
    _active += 1
    try:
        os.dup2(devnull, 2)
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
        yield
    finally:
        try:
            sys.stderr.flush()
            sys.stderr.close()
        finally:
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
            _active -= 1
