"""The First Order Motion Model (Siarohin et al. 2019) as keyface's second motion route.

``config`` (the vox-256 shape and reduced ones) -> ``layers`` (hourglass blocks) -> ``networks``
(keypoint detector, dense motion, occlusion-aware generator) -> ``model`` (the keyface model
file) and ``checkpoint`` (import of the public checkpoints) -> ``motion`` (the ``fomm`` motion
representation) and ``renderer`` (the generator as a renderer). docs/motion.md, "fomm".

A ``fomm`` stream needs its model file at both ends, so the package is a plug-in:
:func:`use_model` registers the representation and the renderer of one model file under the
name ``fomm`` (``keyface encode --motion fomm --model FILE``, ``keyface decode --model FILE``).
Until then the registries do not know ``fomm``; a decoder refuses a stream whose model digest
differs from the registered model's. One FOMM model per process: a later call replaces it.

Importing this package costs no torch import (the CLI reads :data:`MOTION_NAME`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from keyface.fomm.config import FommConfig

if TYPE_CHECKING:
    from keyface.fomm.model import FommModel
    from keyface.fomm.student import StudentFile

MOTION_NAME = "fomm"
"""The name streams store and both registries use."""

_lock = threading.Lock()


def use_model(model: FommModel | Path | str, student: Path | str | None = None) -> FommModel:
    """Register ``model`` (or the model file at that path) as ``fomm`` in the registries of
    motion representations and renderers; returns it. ``student``: a student file distilled
    from that model (``keyface train fit --task fomm-distill``), whose keypoint encoder then
    measures the motion instead of the model's detector (the encoder side only). Raises
    :class:`~keyface.fomm.model.FommModelError` for a bad model file, and
    :class:`~keyface.fomm.student.StudentFileError` for a bad student file or one distilled
    from another model."""
    from keyface.fomm.motion import FommMotion
    from keyface.fomm.renderer import FommRenderer
    from keyface.motion import REPRESENTATIONS
    from keyface.renderers import RENDERERS

    with _lock:
        current = registered_model()
        if isinstance(model, (str, Path)):
            if current is not None and current.path is not None and _same(current.path, model):
                model = current  # the CLI checks its options before the work: load once
            else:
                from keyface.fomm.model import load_model

                model = load_model(model)
        loaded = model
        known = registered_student()
        if current is loaded and (
            known is None if student is None else known is not None and _same(known.path, student)
        ):
            return loaded  # already registered so: a bench worker calls this for every point
        distilled = _student(student, loaded)
        summary = f"FOMM keypoints + Jacobians, model {loaded.digest:08x} (docs/motion.md)"
        net = distilled.net if distilled is not None else None
        if distilled is not None:
            summary += f", keypoints by the student {distilled.digest:08x}"
        REPRESENTATIONS.unregister(MOTION_NAME)
        REPRESENTATIONS.register(
            MOTION_NAME,
            summary=summary,
            model=loaded,
            student=distilled,
            renderer=MOTION_NAME,  # its streams are drawn by the model's generator only
        )(lambda: FommMotion(loaded, student=net))
        RENDERERS.unregister(MOTION_NAME)
        RENDERERS.register(MOTION_NAME, summary=summary, cached=False, model=loaded)(
            lambda: FommRenderer(loaded)
        )
    return loaded


def registered_model() -> FommModel | None:
    """The model :func:`use_model` registered, if any."""
    from keyface.motion import REPRESENTATIONS

    if MOTION_NAME not in REPRESENTATIONS:
        return None
    model = REPRESENTATIONS.entry(MOTION_NAME).extra.get("model")
    return model  # type: ignore[return-value]


def registered_student() -> StudentFile | None:
    """The student file :func:`use_model` registered with the model, if any."""
    from keyface.motion import REPRESENTATIONS

    if MOTION_NAME not in REPRESENTATIONS:
        return None
    return REPRESENTATIONS.entry(MOTION_NAME).extra.get("student")  # type: ignore[return-value]


def _student(path: Path | str | None, model: FommModel) -> StudentFile | None:
    if path is None:
        return None
    from keyface.fomm.student import StudentFileError, read_student

    student = read_student(path)
    if student.teacher_digest != model.digest:
        raise StudentFileError(
            f"{path}: distilled from the model {student.teacher_digest:08x}, not from "
            f"{model.digest:08x}: give the model it was distilled from"
        )
    if student.net.config.image_size != model.config.image_size:
        raise StudentFileError(
            f"{path}: sees {student.net.config.image_size}x{student.net.config.image_size} "
            f"pictures, the model {model.config.image_size}x{model.config.image_size}"
        )
    return student


def forget_model() -> None:
    """Take ``fomm`` out of the registries again."""
    from keyface.motion import REPRESENTATIONS
    from keyface.renderers import RENDERERS

    with _lock:
        REPRESENTATIONS.unregister(MOTION_NAME)
        RENDERERS.unregister(MOTION_NAME)


def _same(a: Path, b: Path | str) -> bool:
    try:
        sa, sb = Path(a).stat(), Path(b).stat()
    except OSError:
        return False
    key_a = (sa.st_dev, sa.st_ino, sa.st_size, sa.st_mtime_ns)
    return key_a == (sb.st_dev, sb.st_ino, sb.st_size, sb.st_mtime_ns)


__all__ = [
    "MOTION_NAME",
    "FommConfig",
    "forget_model",
    "registered_model",
    "registered_student",
    "use_model",
]
