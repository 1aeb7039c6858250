"""What runs in the pool's processes: preparing a clip (crop, analysis) and computing one point
(code, decode, measure). Module-level functions, so that a spawned worker can import them."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import signal
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from keyface.eval.bench.cache import _fps_text, _num, _read_json, _write_json
from keyface.eval.bench.config import SLOW_METRICS
from keyface.eval.bench.records import PointRecord, PointTask, PrepareTask

# worker side (module-level functions: they run in pool processes)


def _worker_init(pids: Any = None) -> None:
    """One compute thread per worker (the parent's environment says so, keyface.threads);
    Ctrl-C is handled by the parent, which stops the workers (``pids``: a queue the worker
    puts its pid in, so that the parent can)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if pids is not None:
        pids.put(os.getpid())
    from keyface.threads import apply_thread_policy

    apply_thread_policy()


def _source_stamp(path: Path) -> dict[str, Any]:
    """What identifies a clip's source: its path, size and content digest. Not its mtime: a
    copied or re-synced data folder must not throw the cached crops and points away."""
    st = path.stat()
    return {
        "source": str(path.resolve()),
        "source_bytes": st.st_size,
        "source_sha256": _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns),
    }


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's content, read once per process while its size and mtime hold (the
    run checks each clip's stamp more than once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_clip(task: PrepareTask) -> dict[str, Any]:
    """Crop ``frames`` frames of a clip to ``crop.y4m`` and analyse it (face mesh) once.

    Returns the clip's ``meta`` (frames, fps, crop box, timings), cached in ``meta.json``.
    A cached crop is reused when it was made from the same source with the same frame count
    and size; otherwise the clip's cache folder (points included) is cleared first.
    """
    from keyface.io.video import probe
    from keyface.pipeline import analyze, crop_video

    clip_dir = Path(task.dir)
    source = Path(task.path)
    want = {"frames_asked": task.frames, "size": task.size, **_source_stamp(source)}
    meta_path = clip_dir / "meta.json"
    meta = None if task.force else _read_json(meta_path)
    if meta and all(meta.get(k) == v for k, v in want.items()) and _settled(meta):
        if (clip_dir / "crop.y4m").is_file() and (clip_dir / "analysis.npz").is_file():
            meta["cached"] = True
            return meta
    if clip_dir.exists():
        shutil.rmtree(clip_dir)
    clip_dir.mkdir(parents=True)
    crop_path = clip_dir / "crop.y4m"
    t0 = time.perf_counter()
    box = crop_video(source, crop_path, size=task.size, max_frames=task.frames)
    crop_seconds = time.perf_counter() - t0
    analysis = analyze(crop_path, crop=False, max_frames=task.frames)
    source_info = probe(source)
    marks = analysis.landmarks
    shape = next(lm.shape for lm in marks if lm is not None)
    array = np.full((len(marks), *shape), np.nan, dtype=np.float32)
    for i, lm in enumerate(marks):
        if lm is not None:
            array[i] = lm
    np.savez_compressed(
        clip_dir / "analysis.npz",
        landmarks=array,
        found=np.array([lm is not None for lm in marks]),
    )
    meta = {
        **want,
        "clip": task.clip,
        "frames": analysis.frame_count,
        "fps": _fps_text(analysis.fps),
        "size": analysis.size,
        "source_size": [source_info.width, source_info.height],
        "crop_box": dataclasses.asdict(box),
        "face_frames": analysis.face_frames,
        "seconds": {"crop": round(crop_seconds, 3), "analyze": round(analysis.seconds, 3)},
    }
    _write_json(meta_path, meta)
    meta["cached"] = False
    return meta


def load_analysis(clip_dir: Path, meta: dict[str, Any]) -> Any:
    """The cached :class:`keyface.pipeline.Analysis` of a prepared clip (of ``crop.y4m``)."""
    from keyface.pipeline import Analysis

    data = np.load(clip_dir / "analysis.npz")
    marks = [lm if ok else None for lm, ok in zip(data["landmarks"], data["found"], strict=True)]
    return Analysis(
        path=clip_dir / "crop.y4m",
        fps=Fraction(meta["fps"]),
        size=int(meta["size"]),
        crop=None,
        landmarks=marks,
        source_size=(int(meta["size"]), int(meta["size"])),
    )


def _code_keyface(task: PointTask, clip_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import replace

    from keyface.codec.config import CodecConfig
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.config import keyface_mode
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.renderers import get_renderer

    analysis = load_analysis(clip_dir, meta)
    base = CodecConfig(mode=keyface_mode(task.codec))
    config = replace(config_at(float(task.param), base), generator=task.generator)
    if task.fomm_model is not None:
        from keyface.fomm import MOTION_NAME, use_model

        use_model(task.fomm_model, task.fomm_student)  # registers `fomm` in this process
        config = replace(config, motion=MOTION_NAME, generator=MOTION_NAME)
    t0 = time.perf_counter()
    result = encode_analysis(analysis, config)
    encode_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = decode_bytes(result.data, renderer=get_renderer(config.generator))
    decode_seconds = time.perf_counter() - t0
    if decoded.error is not None or len(decoded.frames) != analysis.frame_count:
        raise RuntimeError(
            f"decoded {len(decoded.frames)} of {analysis.frame_count} frames ({decoded.error})"
        )
    return {
        "bytes": len(result.data),
        "frames_out": [f.image for f in decoded.frames],
        "seconds": {"encode": encode_seconds, "decode": decode_seconds},
        "info": {
            "keyframes": result.stats.keyframes,
            "keyframe_bytes": result.stats.keyframe_bytes,
            "motion_bytes": result.stats.motion_bytes,
            "mode": config.mode,
            **({"aux_bytes": result.stats.aux_bytes} if result.stats.aux_bytes else {}),
        },
    }


def _code_anchor(task: PointTask, ref: list[np.ndarray], fps: Fraction) -> dict[str, Any]:
    from keyface.eval.anchors import encode_anchor

    r = encode_anchor(ref, fps, task.codec, int(task.param), preset=task.preset)
    return {
        "bytes": r.bytes,
        "frames_out": r.frames,
        "seconds": {"encode": r.encode_seconds, "decode": r.decode_seconds},
        "info": {"intra_frames": r.intra_frames, "in_order": r.in_order},
    }


def run_point(task: PointTask) -> dict[str, Any]:
    """Code, decode and measure one (clip, codec, parameter) point; cache and return it.

    Never raises: a failure comes back as ``{"error": ...}`` (and is not cached, so the next
    run tries again).
    """
    from keyface.eval.metrics import compute_metrics
    from keyface.io.video import read_frames

    t_start = time.perf_counter()
    clip_dir = Path(task.dir)
    meta = task.meta
    try:
        fps = Fraction(meta["fps"])
        ref = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
        if task.is_keyface:
            coded = _code_keyface(task, clip_dir, meta)
        else:
            coded = _code_anchor(task, ref, fps)
        t0 = time.perf_counter()
        previous = task.previous or {}
        todo = [m for m in task.metrics if m not in previous.get("metrics", {})]
        every = int(task.slow_every)
        dense = [m for m in todo if m not in SLOW_METRICS or every == 1]
        sparse = [m for m in todo if m not in dense]
        out_frames = coded["frames_out"]
        mean: dict[str, Any] = dict(previous.get("metrics", {}))
        notes: dict[str, Any] = dict(previous.get("notes", {}))
        per_metric: dict[str, float] = dict(previous.get("seconds", {}).get("per_metric", {}))
        sampled: dict[str, int] = dict(previous.get("sampled", {}))
        for names, step in ((dense, 1), (sparse, every)):
            if not names:
                continue
            measured = compute_metrics(ref[::step], out_frames[::step], names, device=task.device)
            mean.update({k: _num(v) for k, v in measured.mean.items()})
            notes.update(measured.notes)
            per_metric.update({k: round(v, 4) for k, v in measured.seconds.items()})
            if step > 1:
                sampled.update({k: step for k in names})
        metric_seconds = time.perf_counter() - t0
    except Exception as exc:
        return {
            "clip": task.clip,
            "codec": task.codec,
            "param": task.param,
            "error": f"{type(exc).__name__}: {exc}",
        }
    n = len(ref)
    duration = float(n / fps)
    record = PointRecord(
        key=task.key,
        clip=task.clip,
        person=task.person,
        codec=task.codec,
        param=task.param,
        bytes=int(coded["bytes"]),
        kbps=round(8 * coded["bytes"] / duration / 1000, 6),
        frames=n,
        metrics=mean,
        notes=notes,
        info=coded["info"],
        seconds={
            "encode": round(coded["seconds"]["encode"], 4),
            "decode": round(coded["seconds"]["decode"], 4),
            "metrics": round(metric_seconds, 4),
            "per_metric": per_metric,
            "total": round(time.perf_counter() - t_start, 4),
        },
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        sampled=sampled,
    ).to_json()
    _write_json(Path(task.path), record)
    return record


def _settled(meta: dict[str, Any]) -> bool:
    """Whether a prepared clip's crop is the one the current crop decision makes: a cache from
    before ``keyface.face.crop.settle_crop`` (issue 17) padded a square clip that already was
    a face crop instead of taking it whole; such a clip is prepared again (and its points,
    which live in the same folder, computed again), every other clip is kept."""
    from keyface.face import settle_crop
    from keyface.types import CropBox

    try:
        box = CropBox(**meta["crop_box"])
    except (KeyError, TypeError, ValueError):
        return False
    return settle_crop(box) == box


def _prep_is_cached(task: PrepareTask) -> bool:
    clip_dir = Path(task.dir)
    meta = _read_json(clip_dir / "meta.json")
    if not meta:
        return False
    try:
        want = {
            "frames_asked": task.frames,
            "size": task.size,
            **_source_stamp(Path(task.path)),
        }
    except OSError:
        return False
    return (
        all(meta.get(k) == v for k, v in want.items())
        and _settled(meta)
        and (clip_dir / "crop.y4m").is_file()
        and (clip_dir / "analysis.npz").is_file()
    )


def _safe_prepare(task: PrepareTask) -> dict[str, Any]:
    """:func:`prepare_clip` that reports a failure (e.g. no face) instead of raising."""
    try:
        return prepare_clip(task)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
