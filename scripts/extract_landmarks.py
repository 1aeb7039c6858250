"""Cache face-mesh landmarks of the development clips (input to the motion-model fit).

    python scripts/extract_landmarks.py --clips ../shared/data/clips --max-frames 300

Writes one ``<clip>.npz`` per clip: ``landmarks`` (T, 478, 3) float32 in pixels (NaN where no
face was found), ``width``, ``height``, ``fps``. Existing files are kept (resumable).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from keyface.face.landmarks import NUM_LANDMARKS, LandmarkTracker
from keyface.io import probe, read_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="../shared/data/clips")
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("-o", "--output", default="cache/landmarks")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    clips = sorted(Path(args.clips).glob("*.mp4"))
    for clip in tqdm(clips, desc="clips"):
        target = out / (clip.stem + ".npz")
        if target.exists():
            continue
        info = probe(clip)
        rows = []
        with LandmarkTracker(video=True) as tracker:
            for frame in read_frames(clip, args.max_frames):
                pts = tracker.process(frame.image)
                rows.append(pts if pts is not None else np.full((NUM_LANDMARKS, 3), np.nan, "f4"))
        np.savez_compressed(
            target,
            landmarks=np.stack(rows).astype(np.float32),
            width=info.width,
            height=info.height,
            fps=float(info.fps),
        )


if __name__ == "__main__":
    main()
