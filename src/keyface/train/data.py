"""Training data: cropped clips, their motion parameters and codec-degraded references.

``prepare_clip`` runs once per clip and writes one folder to the data cache:

* ``frames.npy``   ``(T, S, S, 3)`` uint8: the face crops, exactly as ``keyface crop`` cuts them;
* ``params.npy``   ``(T, D)`` float32: motion parameters of every frame (NaN where no face);
* ``refs.npy``     ``(R, S, S, 3)`` uint8: reference frames after the real keyframe codec at a
  random quality, with ``ref_index.npy`` (which frame) and ``ref_quality.npy``;
* ``meta.json``    clip name, person, fps, crop, codec, the preparation settings.

``prepare_keyframes`` adds, for the keyframe enhancer, more frames of the clip coded by the
keyframe codecs at random qualities: ``kf.npy`` ``(K, S, S, 3)`` uint8 (decoded), with
``kf_index.npy`` (which frame), ``kf_quality.npy`` and ``kf_codec.npy`` (codec names).

Training pairs are drawn later (:mod:`keyface.train.pairs`): a reference from ``refs.npy``, a
target frame of the same clip at any distance, and the target's motion passed through the real
quantiser at a random level. The clips themselves never enter the repository.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from keyface.intra import get_intra_codec
from keyface.motion import get_representation
from keyface.pipeline import analyze, cropped_frames


@dataclass(frozen=True)
class PrepareConfig:
    max_frames: int = 200
    """Frames read from the start of each clip."""
    references: int = 8
    """Reference frames per clip, spread evenly over it."""
    qualities: tuple[int, int] = (10, 45)
    """Range of keyframe qualities (the codec's scale) a reference is coded at."""
    codec: str = "vvc"
    size: int = 256


def prepare_clip(
    path: Path, out: Path, person: str, config: PrepareConfig, seed: int
) -> dict[str, object]:
    """Analyse, crop and degrade one clip into ``out`` (see module doc). Returns its meta."""
    rng = np.random.default_rng(seed)
    analysis = analyze(path, size=config.size, max_frames=config.max_frames)
    frames = np.stack(
        [img for _, img in cropped_frames(path, analysis.crop, analysis.size, config.max_frames)]
    )[: analysis.frame_count]
    rep = get_representation()
    params = np.full((len(frames), rep.num_params), np.nan, dtype=np.float32)
    for i, lm in enumerate(analysis.landmarks[: len(frames)]):
        if lm is not None:
            params[i] = rep.analyze(lm, analysis.size)
    valid = np.flatnonzero(~np.isnan(params[:, 0]))
    if len(valid) < 2:
        raise ValueError(f"{path}: fewer than 2 frames with a face")
    picks = valid[np.linspace(0, len(valid) - 1, config.references).round().astype(int)]
    picks = np.unique(picks)
    codec = get_intra_codec(config.codec)
    lo, hi = config.qualities
    quality = rng.integers(lo, hi + 1, size=len(picks))
    refs = np.stack(
        [codec.decode(codec.encode(frames[i], int(q))) for i, q in zip(picks, quality, strict=True)]
    )
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "frames.npy", frames)
    np.save(out / "params.npy", params)
    np.save(out / "refs.npy", refs)
    np.save(out / "ref_index.npy", picks.astype(np.int32))
    np.save(out / "ref_quality.npy", quality.astype(np.int32))
    meta: dict[str, object] = {
        "clip": path.name,
        "person": person,
        "fps": float(analysis.fps),
        "frames": len(frames),
        "face_frames": len(valid),
        "crop": None if analysis.crop is None else asdict(analysis.crop),
        "codec": config.codec,
        "qualities": list(config.qualities),
        "seed": seed,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


_Job = tuple[Callable[..., object], str, tuple[object, ...]]
"""(function, clip name, arguments): one clip's preparation step, run in a worker process."""


def _guarded(job: _Job) -> tuple[str, str | None]:
    fn, name, args = job
    try:
        fn(*args)
    except Exception as exc:  # one bad clip must not stop the others
        return name, f"{type(exc).__name__}: {exc}"
    return name, None


def _run_jobs(
    jobs: list[_Job], workers: int, progress: Callable[[str, str | None], None] | None
) -> list[str]:
    """Run ``jobs`` on ``workers`` processes; returns the names of the clips that failed."""
    failed = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for name, error in pool.map(_guarded, jobs):
            if error:
                failed.append(name)
            if progress:
                progress(name, error)
    return failed


@dataclass(frozen=True)
class KeyframeConfig:
    count: int = 24
    """Frames per clip coded as keyframes."""
    qualities: tuple[int, int] = (10, 55)
    """Range of keyframe qualities drawn from (uniformly)."""
    codecs: tuple[str, ...] = ("vvc", "vvc", "vvc", "hevc")
    """Codecs drawn from (repeat a name to draw it more often)."""


def prepare_keyframes(folder: Path, config: KeyframeConfig, seed: int) -> int:
    """Code ``config.count`` frames of the prepared clip in ``folder`` with the keyframe codecs
    (see module doc); a folder that has them already is kept. Returns the number of frames."""
    if (folder / "kf.npy").is_file():
        return int(np.load(folder / "kf_index.npy").shape[0])
    rng = np.random.default_rng(seed)
    frames = np.load(folder / "frames.npy", mmap_mode="r")
    params = np.load(folder / "params.npy")
    valid = np.flatnonzero(~np.isnan(params[:, 0]))
    picks = np.sort(rng.choice(valid, size=min(config.count, len(valid)), replace=False))
    lo, hi = config.qualities
    quality = rng.integers(lo, hi + 1, size=len(picks))
    names = [config.codecs[int(i)] for i in rng.integers(len(config.codecs), size=len(picks))]
    coded = []
    for i, q, name in zip(picks, quality, names, strict=True):
        codec = get_intra_codec(name)
        coded.append(codec.decode(codec.encode(np.ascontiguousarray(frames[i]), int(q))))
    np.save(folder / "kf_index.npy", picks.astype(np.int32))
    np.save(folder / "kf_quality.npy", quality.astype(np.int32))
    np.save(folder / "kf_codec.npy", np.array(names))
    tmp = folder / "kf.tmp.npy"
    np.save(tmp, np.stack(coded))
    tmp.replace(folder / "kf.npy")  # last: its presence marks the step done
    return len(picks)


def prepare_all_keyframes(
    root: Path,
    config: KeyframeConfig,
    *,
    seed: int = 0,
    workers: int = 2,
    progress: Callable[[str, str | None], None] | None = None,
) -> list[str]:
    """:func:`prepare_keyframes` for every prepared clip under ``root``; returns the failures."""
    folders = [m.parent for m in sorted(root.glob("*/meta.json"))]
    jobs: list[_Job] = [
        (prepare_keyframes, f.name, (f, config, seed ^ zlib.crc32(f.name.encode()) ^ 0x6B66))
        for f in folders
    ]
    return _run_jobs(jobs, workers, progress)


@dataclass
class ClipData:
    """One prepared clip, memory-mapped."""

    name: str
    person: str
    frames: np.ndarray
    params: np.ndarray
    refs: np.ndarray
    ref_index: np.ndarray
    valid: np.ndarray
    keyframes: np.ndarray | None = None
    """Coded keyframes ``(K, S, S, 3)`` (:func:`prepare_keyframes`), if prepared."""
    keyframe_index: np.ndarray | None = None

    @classmethod
    def load(cls, folder: Path) -> ClipData:
        meta = json.loads((folder / "meta.json").read_text())
        params = np.load(folder / "params.npy")
        return cls(
            name=str(meta["clip"]),
            person=str(meta["person"]),
            frames=np.load(folder / "frames.npy", mmap_mode="r"),
            params=params,
            refs=np.load(folder / "refs.npy"),
            ref_index=np.load(folder / "ref_index.npy"),
            valid=np.flatnonzero(~np.isnan(params[:, 0])),
            keyframes=np.load(folder / "kf.npy") if (folder / "kf.npy").is_file() else None,
            keyframe_index=(
                np.load(folder / "kf_index.npy") if (folder / "kf.npy").is_file() else None
            ),
        )


def load_prepared(root: Path, people: set[str] | None = None) -> list[ClipData]:
    """Every prepared clip under ``root`` (optionally only these people), sorted by name."""
    clips = []
    for meta in sorted(root.glob("*/meta.json")):
        clip = ClipData.load(meta.parent)
        if people is None or clip.person in people:
            clips.append(clip)
    return clips


def prepare_clips(
    clips: Sequence[tuple[Path, str]],
    root: Path,
    config: PrepareConfig,
    *,
    seed: int = 0,
    workers: int = 2,
    progress: Callable[[str, str | None], None] | None = None,
) -> list[str]:
    """Prepare ``(path, person)`` clips into ``root/<stem>/``; clips already there are kept
    (an interrupted run resumes). Returns the names of clips that failed."""
    jobs: list[_Job] = []
    for path, person in clips:
        out = root / path.stem
        if (out / "meta.json").is_file():
            if progress:
                progress(path.name, None)
            continue
        clip_seed = seed ^ zlib.crc32(path.name.encode())
        jobs.append((prepare_clip, path.name, (path, out, person, config, clip_seed)))
    return _run_jobs(jobs, workers, progress)
