"""Two ``keyface bench`` runs of keyface, before and after a change, at equal rate: for each
metric, the BD-rate and BD-quality of the after curve against the before curve, and each
before point's value beside the after curve interpolated at its rate (issue 18 asks for
mouths and eyes "before and after at equal rate").

    python benchmarks/bench_diff.py --before results/hybrid/group_grid/bench_2135.json \\
        --after results/bench/points.json --out results/hybrid/group_grid/bench_diff.md

Both files are ``points.json`` of ``keyface bench``; only the keyface points of clips that
both runs coded are used, averaged over clips at each ladder position (the bench's
clip-averaged curves). Interpolation at equal rate is linear in log-rate on the after curve
(n/a outside it). Prints the report as Markdown and, with ``--out``, writes it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from _common import at_rate, command_line

METRICS = [
    "lpips_alex",
    "dists",
    "psnr",
    "lpips_mouth_open",
    "lpips_eyes",
    "eye_state",
    "mouth_open",
    "flicker",
]


def keyface_curve(points: list[dict], clips: list[str]) -> tuple[np.ndarray, dict[str, list]]:
    """Clip-averaged rates and metrics of the keyface points, sorted by rate."""
    ours = [p for p in points if p["codec"].startswith("keyface") and p["clip"] in clips]
    rows = []
    for u in sorted({p["param"] for p in ours}):
        sel = [p for p in ours if p["param"] == u]
        if len(sel) != len(clips):
            continue
        values = {m: float(np.nanmean([p["metrics"].get(m, np.nan) for p in sel])) for m in METRICS}
        rows.append((float(np.mean([p["kbps"] for p in sel])), u, values))
    rows.sort(key=lambda r: r[0])
    return np.array([r[0] for r in rows]), {
        "u": [r[1] for r in rows],
        **{m: [r[2][m] for r in rows] for m in METRICS},
    }


def report(before: list[dict], after: list[dict], command: str) -> str:
    from keyface.eval.bdrate import bd_quality, bd_rate

    clips = sorted({p["clip"] for p in before} & {p["clip"] for p in after})
    br, bm = keyface_curve(before, clips)
    ar, am = keyface_curve(after, clips)
    lines = [
        "# keyface before and after, at equal rate",
        "",
        f"Command: `{command}`",
        "",
        f"{len(clips)} clips; clip-averaged curves of the keyface points of both runs.",
        "",
        "| metric | BD-rate after vs before | BD-quality (positive: after better) |",
        "|---|---:|---:|",
    ]
    for m in METRICS:
        rate = bd_rate(br, bm[m], ar, am[m], m).to_json().get("value")
        quality = bd_quality(br, bm[m], ar, am[m], m).to_json().get("value")
        lines.append(
            f"| {m} | {'n/a' if rate is None else f'{rate:+.1f} %'} | "
            f"{'n/a' if quality is None else f'{quality:+.4f}'} |"
        )
    lines += [
        "",
        "Each before point, and the after curve at its rate (in brackets):",
        "",
        "| before u | kbit/s | " + " | ".join(METRICS) + " |",
        "|---:|---:|" + "---:|" * len(METRICS),
    ]
    for k, rate in enumerate(br):
        cells = []
        for m in METRICS:
            other = at_rate(ar, am[m], float(rate))
            shown = "n/a" if math.isnan(other) else f"{other:.4f}"
            cells.append(f"{bm[m][k]:.4f} ({shown})")
        lines.append(f"| {bm['u'][k]:g} | {rate:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The after points: "
        + ", ".join(f"u {u:g}: {r:.2f} kbit/s" for u, r in zip(am["u"], ar, strict=True))
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a bench points.json")
    parser.add_argument("--after", type=Path, required=True, help="a bench points.json")
    parser.add_argument("--out", type=Path, default=None, help="write the report here too")
    args = parser.parse_args()
    before = json.loads(args.before.read_text())["points"]
    after = json.loads(args.after.read_text())["points"]
    text = report(before, after, command_line("bench_diff.py", args))
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
