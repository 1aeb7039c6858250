"""Draw training pairs the way the decoder meets them.

Generator pairs (:class:`PairSampler`):

A pair is a codec-degraded reference frame and a target frame of the same clip. Both motions
go through the real quantiser (:class:`~keyface.entropy.motion_coder` steps of a random
level) and are turned back into keypoints, the reference is warped to the target keypoints
with the codec's own dense flow, and the generator input is built by the same function the
decoder uses (:func:`keyface.generator.features.generator_input`).

Enhancer pairs (:class:`KeyframeSampler`): a frame as the keyframe codec decoded it (at a random
quality, :func:`keyface.train.data.prepare_keyframes`) and the same frame before coding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keyface.generator.features import generator_input
from keyface.motion import get_representation
from keyface.render.warp import WarpRenderer, warp_image
from keyface.train.data import ClipData


@dataclass(frozen=True)
class PairConfig:
    levels: tuple[int, ...] = (1, 2, 3, 4)
    """Motion quantiser levels drawn from (the rate-control ladder uses 1-4)."""
    near: int = 6
    """Half-width, in frames, of the "near" target window around the reference."""
    near_share: float = 0.85
    """Share of targets drawn near the reference; the rest anywhere in the clip."""
    patch: int = 96
    """Side of the training patch (0: the whole frame)."""
    face_share: float = 0.8
    """Share of patches centred on a face keypoint (the rest anywhere)."""
    flip: bool = True


@dataclass
class Pair:
    inputs: np.ndarray  # (6, P, P) float32
    target: np.ndarray  # (3, P, P) float32 in [-1, 1]
    warped: np.ndarray  # (3, P, P) float32 in [-1, 1] (the training-free baseline)


class PairSampler:
    """Random pairs from prepared clips (seeded, so a run can be repeated)."""

    def __init__(self, clips: list[ClipData], config: PairConfig, seed: int) -> None:
        if not clips:
            raise ValueError("no prepared clips to draw pairs from")
        self.clips = clips
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.renderer = WarpRenderer()
        self._reps = {lvl: get_representation().for_level(lvl) for lvl in config.levels}
        self._steps = {lvl: get_representation().quant_level(lvl).steps for lvl in config.levels}

    def keypoints(self, params: np.ndarray, level: int, size: int) -> np.ndarray:
        """Keypoints after the codec's quantiser at ``level``."""
        steps = self._steps[level]
        q = np.round(params[: len(steps)] / steps) * steps
        return self._reps[level].keypoints(q, size)

    def draw(self, clip_index: int | None = None) -> Pair:
        rng, cfg = self.rng, self.config
        clip = (
            self.clips[int(rng.integers(len(self.clips)))]
            if clip_index is None
            else (self.clips[clip_index])
        )
        r = int(rng.integers(len(clip.ref_index)))
        ref_frame = int(clip.ref_index[r])
        if rng.random() < cfg.near_share:
            near = clip.valid[np.abs(clip.valid - ref_frame) <= cfg.near]
            t = int(rng.choice(near))
        else:
            t = int(rng.choice(clip.valid))
        level = int(rng.choice(cfg.levels))
        size = clip.frames.shape[1]
        ref_kp = self.keypoints(clip.params[ref_frame], level, size)
        tgt_kp = self.keypoints(clip.params[t], level, size)
        reference = self.renderer.prepare(np.ascontiguousarray(clip.refs[r]), ref_kp)
        flow = self.renderer.flow(reference, tgt_kp)
        warped = warp_image(reference.image, flow)
        inputs = generator_input(warped, flow, tgt_kp)
        target = np.asarray(clip.frames[t], dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        if cfg.patch and cfg.patch < size:
            p = cfg.patch
            if rng.random() < cfg.face_share:
                cx, cy = tgt_kp[int(rng.integers(len(tgt_kp)))]
                cx += rng.normal(0, p / 8)
                cy += rng.normal(0, p / 8)
            else:
                cx, cy = rng.uniform(0, size, 2)
            x0 = int(np.clip(round(cx - p / 2), 0, size - p))
            y0 = int(np.clip(round(cy - p / 2), 0, size - p))
            inputs = inputs[:, y0 : y0 + p, x0 : x0 + p]
            target = target[:, y0 : y0 + p, x0 : x0 + p]
        if cfg.flip and rng.random() < 0.5:
            inputs = inputs[:, :, ::-1]
            target = target[:, :, ::-1]
        inputs = np.ascontiguousarray(inputs)
        return Pair(inputs=inputs, target=np.ascontiguousarray(target), warped=inputs[:3].copy())

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.draw() for _ in range(n)]
        return np.stack([p.inputs for p in pairs]), np.stack([p.target for p in pairs])


def fixed_pairs(
    clips: list[ClipData], n: int, seed: int, levels: tuple[int, ...] = (2,)
) -> list[Pair]:
    """``n`` whole-frame pairs spread over ``clips`` (validation): same seed, same pairs. Half
    the targets are within 25 frames of the reference, half anywhere (roughly how far the
    decoder's frames are from their keyframe)."""
    config = PairConfig(levels=levels, near=25, near_share=0.5, patch=0, flip=False)
    sampler = PairSampler(clips, config, seed)
    return [sampler.draw(i % len(clips)) for i in range(n)]


class KeyframeSampler:
    """Random (decoded keyframe, original frame) patches for the keyframe enhancer (seeded)."""

    def __init__(self, clips: list[ClipData], patch: int, seed: int, flip: bool = True) -> None:
        self.clips = [c for c in clips if c.keyframes is not None]
        if not self.clips:
            raise ValueError(
                "no prepared keyframes to draw from (run `keyface train prepare --keyframes N`)"
            )
        self.patch = patch
        self.flip = flip
        self.rng = np.random.default_rng(seed)

    def draw(self, clip_index: int | None = None, k: int | None = None) -> Pair:
        rng = self.rng
        clip = self.clips[int(rng.integers(len(self.clips))) if clip_index is None else clip_index]
        assert clip.keyframes is not None and clip.keyframe_index is not None
        if k is None:
            k = int(rng.integers(len(clip.keyframes)))
        coded = clip.keyframes[k].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
        frame = np.asarray(clip.frames[int(clip.keyframe_index[k])])
        target = frame.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
        size = coded.shape[1]
        if self.patch and self.patch < size:
            p = self.patch
            y0, x0 = (int(v) for v in rng.integers(0, size - p + 1, 2))
            coded = coded[:, y0 : y0 + p, x0 : x0 + p]
            target = target[:, y0 : y0 + p, x0 : x0 + p]
        if self.flip and rng.random() < 0.5:
            coded, target = coded[:, :, ::-1], target[:, :, ::-1]
        coded = np.ascontiguousarray(coded)
        return Pair(inputs=coded, target=np.ascontiguousarray(target), warped=coded)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.draw() for _ in range(n)]
        return np.stack([p.inputs for p in pairs]), np.stack([p.target for p in pairs])


def fixed_keyframes(clips: list[ClipData], n: int, seed: int) -> list[Pair]:
    """``n`` whole-frame enhancer pairs spread over ``clips`` (validation), seeded."""
    sampler = KeyframeSampler(clips, patch=0, seed=seed, flip=False)
    return [sampler.draw(i % len(sampler.clips)) for i in range(n)]
