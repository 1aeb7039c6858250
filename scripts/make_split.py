"""Split the development clips into train / validation **by person** (reproducible).

    python scripts/make_split.py --manifest ../shared/data/clips/MANIFEST.tsv -o splits/dev_v1.json

People are ordered by the SHA-1 of their id and taken into validation until at least
``--val-people`` people are there; ``mead_unknown`` (an id that may cover several people) always
stays in train. Nothing about a clip's content is looked at.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="../shared/data/clips/MANIFEST.tsv")
    parser.add_argument("-o", "--output", default="splits/dev_v1.json")
    parser.add_argument("--val-people", type=int, default=16)
    args = parser.parse_args()

    with open(args.manifest, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    people = sorted({r["person"] for r in rows}, key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    val: list[str] = []
    for person in people:
        if len(val) >= args.val_people:
            break
        if person != "mead_unknown":
            val.append(person)
    split = {
        "version": 1,
        "rule": "sha1(person) order, first people into validation; mead_unknown kept in train",
        "validation_people": sorted(val),
        "train_people": sorted(p for p in people if p not in val),
        "validation_clips": sorted(r["file"] for r in rows if r["person"] in val),
        "train_clips": sorted(r["file"] for r in rows if r["person"] not in val),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(split, indent=1) + "\n")
    print(
        f"{len(split['train_people'])} train people ({len(split['train_clips'])} clips), "
        f"{len(val)} validation people ({len(split['validation_clips'])} clips) -> {args.output}"
    )


if __name__ == "__main__":
    main()
