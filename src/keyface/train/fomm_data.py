"""Training data of the First Order Motion Model: face crops of whole clips, and frame pairs.

``prepare_fomm_clip`` runs once per clip and writes ``<cache>/<clip stem>.npz`` with

* ``frames`` ``(T, S, S, 3)`` uint8: every ``stride``-th face crop of the clip's first
  ``max_frames`` frames, cut by the one crop decision of ``keyface crop`` (:func:`plan_crop`,
  at 256x256) and resized to ``S`` (area interpolation);
* ``person``, ``clip``, ``stride``: where they come from.

FOMM is self-supervised: a pair is a *source* and a *driving* frame of the same clip, and the
network learns to draw the driving frame from the source and the two keypoint sets. No face
mesh runs here (the crop plan's detector only). :class:`FommPairs` draws pairs with the paper's
augmentation (a horizontal flip of both frames, one colour jitter for both).
The clips themselves never enter the repository; the cache is written outside it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CROP_SIDE = 256
"""The codec's crop side; training crops are this crop resized (as the codec resizes it for
the model: :mod:`keyface.fomm.motion`)."""


@dataclass(frozen=True)
class FommPrepareConfig:
    size: int = 128
    max_frames: int = 300
    """Frames read from the start of each clip."""
    stride: int = 3
    """Keep every ``stride``-th of them (neighbouring frames add little)."""


def prepare_fomm_clip(path: Path, out_dir: Path, person: str, config: FommPrepareConfig) -> Path:
    """Crop one clip into ``out_dir/<stem>.npz`` (see module doc); an existing file is kept."""
    from keyface.face._native_log import native_stderr_silenced
    from keyface.face.crop import plan_crop
    from keyface.io import read_frames
    from keyface.pipeline import cropped_frames

    out = out_dir / f"{path.stem}.npz"
    if out.is_file():
        return out
    with native_stderr_silenced():
        box = plan_crop(read_frames(path, config.max_frames))
    frames = []
    for i, (_, image) in enumerate(cropped_frames(path, box, CROP_SIDE, config.max_frames)):
        if i % config.stride == 0:
            frames.append(resize(image, config.size))
    if len(frames) < 2:
        raise ValueError(f"{path}: fewer than 2 frames")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        frames=np.stack(frames),
        person=np.array(person),
        clip=np.array(path.name),
        stride=np.array(config.stride),
    )
    tmp.replace(out)  # last: its presence marks the clip done
    return out


def prepare_fomm_clips(
    clips: Sequence[tuple[Path, str]],
    out_dir: Path,
    config: FommPrepareConfig,
    *,
    workers: int = 1,
    progress: Callable[[str, str | None], None] | None = None,
) -> list[str]:
    """:func:`prepare_fomm_clip` for ``(path, person)`` clips on ``workers`` processes (clips
    already in ``out_dir`` are kept); returns the names of the clips that failed."""
    failed = []
    jobs = [(path, out_dir, person, config) for path, person in clips]
    if workers <= 1:
        results = map(_guarded, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_guarded, jobs)
    for (path, *_), error in zip(jobs, results, strict=True):
        if error:
            failed.append(path.name)
        if progress:
            progress(path.name, error)
    if workers > 1:
        pool.shutdown()
    return failed


def _guarded(job: tuple[Path, Path, str, FommPrepareConfig]) -> str | None:
    try:
        prepare_fomm_clip(*job)
    except Exception as exc:  # one bad clip must not stop the others
        return f"{type(exc).__name__}: {exc}"
    return None


def resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


@dataclass
class FommClip:
    name: str
    person: str
    frames: np.ndarray
    """``(T, S, S, 3)`` uint8."""


def load_fomm_clips(
    root: Path, people: set[str] | None = None, size: int | None = None
) -> list[FommClip]:
    """Every prepared clip under ``root`` (optionally only these people), sorted by name;
    ``size``: resized to that side if cached at another (one 128x128 cache serves 64x64)."""
    clips = []
    for f in sorted(root.glob("*.npz")):
        if f.name.endswith(".tmp.npz"):
            continue
        with np.load(f) as z:
            person = str(z["person"])
            if people is not None and person not in people:
                continue
            frames = z["frames"]
            if size is not None and frames.shape[1] != size:
                frames = np.stack([resize(f, size) for f in frames])
            clips.append(FommClip(str(z["clip"]), person, frames))
    return clips


@dataclass(frozen=True)
class Augment:
    """The paper's augmentation (``augmentation_params`` of vox-256.yaml, less time flip)."""

    flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.1


def _jitter(images: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """One colour jitter (brightness, contrast, saturation, hue) for all ``images``
    ``(N, S, S, 3)`` float32 in [0, 1]."""
    b = 1 + rng.uniform(-aug.brightness, aug.brightness)
    c = 1 + rng.uniform(-aug.contrast, aug.contrast)
    s = 1 + rng.uniform(-aug.saturation, aug.saturation)
    h = rng.uniform(-aug.hue, aug.hue)
    x = images * b
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = (x - grey.mean(axis=(1, 2, 3), keepdims=True)) * c + grey.mean(
        axis=(1, 2, 3), keepdims=True
    )
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = (x - grey) * s + grey
    if h:
        # A hue shift is a rotation about the grey axis of RGB space.
        angle = 2 * np.pi * h
        cos, sin = np.cos(angle), np.sin(angle)
        k = 1 / np.sqrt(3)
        rot = cos * np.eye(3) + sin * np.array([[0, -k, k], [k, 0, -k], [-k, k, 0]])
        rot += (1 - cos) * np.full((3, 3), 1 / 3)
        x = x @ rot.T.astype(np.float32)
    return np.clip(x, 0, 1).astype(np.float32)


class FommPairs:
    """Random (source, driving) pairs of one clip each, ``(B, 3, S, S)`` float32 in [0, 1].
    Its whole randomness is :attr:`rng` (a checkpoint stores its state)."""

    def __init__(self, clips: Sequence[FommClip], seed: int, augment: Augment | None = None):
        if not clips:
            raise ValueError("no clips to draw pairs from")
        self.clips = list(clips)
        self.rng = np.random.default_rng(seed)
        self.augment = augment

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        src, drv = [], []
        for _ in range(size):
            clip = self.clips[int(self.rng.integers(len(self.clips)))]
            i, j = self.rng.choice(len(clip.frames), size=2, replace=False)
            pair = np.stack([clip.frames[i], clip.frames[j]]).astype(np.float32) / 255
            if self.augment is not None:
                if self.augment.flip and self.rng.random() < 0.5:
                    pair = pair[:, :, ::-1]
                pair = _jitter(pair, self.rng, self.augment)
            src.append(pair[0])
            drv.append(pair[1])
        return _chw(np.stack(src)), _chw(np.stack(drv))


def fixed_pairs(clips: Sequence[FommClip], count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` pairs spread over ``clips`` (round robin, no augmentation), the same for the
    same arguments: the validation set."""
    rng = np.random.default_rng(seed ^ zlib.crc32(b"fomm-val"))
    src, drv = [], []
    for n in range(count):
        clip = clips[n % len(clips)]
        i, j = rng.choice(len(clip.frames), size=2, replace=False)
        src.append(clip.frames[i])
        drv.append(clip.frames[j])
    to = np.float32(1 / 255)
    return _chw(np.stack(src) * to), _chw(np.stack(drv) * to)


def _chw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def synthetic_clips(
    count: int = 2, frames: int = 8, size: int = 32, seed: int = 0
) -> list[FommClip]:
    """Clips of a bright disc moving on a textured background (tests)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    clips = []
    for c in range(count):
        bg = rng.uniform(0.2, 0.5, size=(size, size, 3)).astype(np.float32)
        colour = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
        out = []
        for t in range(frames):
            cx = size * (0.3 + 0.4 * t / max(frames - 1, 1))
            cy = size * (0.5 + 0.15 * np.sin(t + c))
            disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < (size / 5) ** 2)[..., None]
            out.append(np.where(disc, colour, bg))
        clips.append(FommClip(f"synthetic{c}", f"p{c}", (np.stack(out) * 255).astype(np.uint8)))
    return clips
