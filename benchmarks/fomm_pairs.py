"""Look at what FOMM models draw (issue 15): fixed pairs of the validation people, each row
source | driving frame | each model's drawing of the driving frame from the source, the same
pairs ``keyface train eval-fomm`` scores. For comparing a model with the one it was made from
(the half-width generator with its parent, docs/motion.md):

    python benchmarks/fomm_pairs.py --models PARENT.safetensors,HALF.safetensors \\
        --data /tmp/fomm_cache --split splits/dev_v1.json --out results/fomm/half/pairs.jpg

Set ``KEYFACE_THREADS`` as for any benchmark.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated FOMM model files")
    parser.add_argument("--data", type=Path, required=True, help="`prepare --task fomm` cache")
    parser.add_argument("--split", type=Path, required=True, help="its validation people")
    parser.add_argument("--pairs", type=int, default=64, help="as eval-fomm draws them")
    parser.add_argument("--every", type=int, default=8, help="show every N-th pair")
    parser.add_argument("--scale", type=int, default=2, help="enlarge the rows this much")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="a .jpg or .png")
    args = parser.parse_args()

    from keyface.fomm.model import load_model
    from keyface.threads import apply_thread_policy
    from keyface.train.fomm import reconstruct
    from keyface.train.fomm_data import fixed_pairs, load_fomm_clips

    apply_thread_policy()
    models = [load_model(p) for p in args.models.split(",")]
    size = models[0].config.image_size
    if any(m.config.image_size != size for m in models):
        raise SystemExit("the models must see the same picture size")
    people = json.loads(args.split.read_text())["validation_people"]
    source, driving = fixed_pairs(load_fomm_clips(args.data, people, size), args.pairs, args.seed)
    s, d = torch.from_numpy(source), torch.from_numpy(driving)
    drawn = [reconstruct(m.networks, s, d).numpy() for m in models]

    def picture(x: np.ndarray) -> np.ndarray:
        return np.clip(x.transpose(1, 2, 0) * 255, 0, 255).astype(np.uint8)

    rows = [
        np.concatenate([picture(x[i]) for x in (source, driving, *drawn)], axis=1)
        for i in range(0, args.pairs, args.every)
    ]
    image = np.concatenate(rows, axis=0)
    image = cv2.resize(image, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    columns = " | ".join(["source", "driving", *args.models.split(",")])
    print(f"{args.out}: {len(rows)} pairs, {columns}")


if __name__ == "__main__":
    main()
