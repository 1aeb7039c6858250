"""Fit the face-mesh motion model (mean shape, expression basis, coder priors, quantiser levels).

    python scripts/extract_landmarks.py            # cache landmarks of the clips first
    python scripts/fit_motion_model.py --split splits/dev_v1.json \
        -o src/keyface/motion/models/facemesh_pca_v1.npz

Only the *train* people of the split are used. Steps:
1. generalised Procrustes alignment (3-D similarity) of all training frames to a mean shape,
   twice: the second pass weights the points by how rigid the first pass found them;
2. PCA of the aligned residuals -> an orthonormal basis of ``--max-coeffs`` shape modes;
3. priors for the entropy coder: mean / spread / frame-to-frame change of each parameter;
4. the quantiser level table (coefficient count and steps per level, see ``LEVELS``).

Positions are normalised so that a face spans the width a default ``keyface crop`` gives it in a
256x256 crop (crop side = ``CROP_SCALE`` x the face-mesh width).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from keyface.motion.facemesh_pca import NUM_POSE, umeyama, vector_from_rotation

CROP_SCALE = 1.75
REFERENCE_SIZE = 256.0

# Quantiser levels: (number of expression coefficients, pose step multiplier, coefficient step
# multiplier). Level 0 is the finest. Base steps: rotation 0.004 rad, translation 0.35 px,
# log-scale 0.004, coefficients 0.05 (basis units). The sweep of benchmarks/motion_rd.py showed
# that the landmark error is dominated by the number of coefficients, not by their step, so the
# levels keep many coarsely quantised coefficients (see docs/motion.md).
BASE_STEPS = (0.004, 0.35, 0.004, 0.05)
LEVELS: tuple[tuple[int, float, float], ...] = (
    (48, 1.0, 1.5),
    (40, 1.0, 2.0),
    (32, 1.0, 2.5),
    (24, 1.5, 3.0),
    (16, 2.0, 3.0),
    (12, 2.0, 4.0),
    (8, 2.5, 5.0),
    (4, 3.0, 6.0),
)


def load_clip(path: Path) -> np.ndarray:
    """Landmarks of one clip in 256-crop units, NaN frames dropped: (T, 478, 3)."""
    with np.load(path) as z:
        lm = z["landmarks"].astype(np.float64)
    ok = ~np.isnan(lm).any(axis=(1, 2))
    lm = lm[ok]
    if len(lm) == 0:
        return lm
    width = np.median(lm[:, :, 0].max(axis=1) - lm[:, :, 0].min(axis=1))
    return lm * (REFERENCE_SIZE / (CROP_SCALE * width))


def normalise(shape: np.ndarray) -> np.ndarray:
    c = shape - shape.mean(axis=0)
    return c / np.sqrt((c**2).sum(axis=1).mean())


def align_all(
    clips: list[np.ndarray], mean: np.ndarray, weights: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Canonical residual shapes and pose parameters of every frame."""
    from keyface.motion.facemesh_pca import FaceMeshPCA

    fm = object.__new__(FaceMeshPCA)
    fm.mean = mean
    fm.rigid_weights = weights
    fm._wmean = mean * weights[:, None]
    canon_all, pose_all = [], []
    for lm in clips:
        canon = np.empty_like(lm)
        pose = np.empty((len(lm), NUM_POSE))
        for i, x in enumerate(lm):
            s, r, t = fm._pose(x)
            canon[i] = (x - t) @ r / s
            pose[i, :3] = vector_from_rotation(r)
            pose[i, 3:5] = t[:2]
            pose[i, 5] = np.log(s)
        canon_all.append(canon)
        pose_all.append(pose)
    return canon_all, pose_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="splits/dev_v1.json")
    parser.add_argument("--landmarks", default="cache/landmarks")
    parser.add_argument("--max-coeffs", type=int, default=48)
    parser.add_argument("-o", "--output", default="src/keyface/motion/models/facemesh_pca_v1.npz")
    args = parser.parse_args()

    split = json.loads(Path(args.split).read_text())
    clips = []
    for name in split["train_clips"]:
        path = Path(args.landmarks) / (Path(name).stem + ".npz")
        if not path.exists():
            sys.exit(f"missing {path}: run scripts/extract_landmarks.py first")
        lm = load_clip(path)
        if len(lm) > 10:
            clips.append(lm)
    frames = np.concatenate(clips)
    print(f"{len(clips)} training clips, {len(frames)} frames")

    # 1. generalised Procrustes, uniform weights, then rigidity weights
    mean = normalise(frames[0])
    sub = frames[:: max(1, len(frames) // 4000)]
    for _ in range(4):
        aligned = []
        for x in sub:
            s, r, t = umeyama(mean, x)
            aligned.append((x - t) @ r / s)
        mean = normalise(np.mean(aligned, axis=0))
    resid_std = np.sqrt(((np.asarray(aligned) - mean) ** 2).sum(axis=2).mean(axis=0))
    weights = np.where(resid_std <= np.percentile(resid_std, 40), 1.0, 0.05)
    canon, pose = align_all(clips, mean, weights)
    mean = normalise(np.concatenate(canon).mean(axis=0))
    canon, pose = align_all(clips, mean, weights)

    # 2. PCA of the residuals
    resid = np.concatenate(canon) - mean
    flat = resid.reshape(len(resid), -1)
    _, sing, vt = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)
    basis = vt[: args.max_coeffs]
    var = sing**2 / (sing**2).sum()
    print("explained variance, first 8:", np.round(var[:8], 3), "cum@48:", var[:48].sum().round(4))

    # 3. priors
    params = []
    for c, p in zip(canon, pose, strict=True):
        coeffs = (c - mean).reshape(len(c), -1) @ basis.T
        params.append(np.concatenate([p, coeffs], axis=1))
    allp = np.concatenate(params)
    pmean = allp.mean(axis=0)
    spread = np.abs(allp - pmean).mean(axis=0)
    delta = np.concatenate([np.abs(np.diff(p, axis=0)) for p in params]).mean(axis=0)

    # 4. quantiser levels
    k_max = args.max_coeffs
    rot, trans, logs, coef = BASE_STEPS
    steps = np.array(
        [
            [rot * pm] * 3 + [trans * pm] * 2 + [logs * pm] + [coef * cm] * k_max
            for _, pm, cm in LEVELS
        ],
        dtype=np.float64,
    )
    level_k = np.array([k for k, _, _ in LEVELS])

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        mean=mean.astype(np.float32),
        basis=basis.reshape(-1, *mean.shape).astype(np.float32),
        param_mean=pmean.astype(np.float32),
        param_spread=spread.astype(np.float32),
        param_delta_spread=delta.astype(np.float32),
        level_num_coeffs=level_k.astype(np.int16),
        level_steps=steps.astype(np.float32),
        rigid_weights=weights.astype(np.float32),
    )
    print(f"wrote {args.output} ({Path(args.output).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
