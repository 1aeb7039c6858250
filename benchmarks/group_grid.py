"""The bidirectional groups with keyframes that predict each other (``--intra``: the groups'
default, ``vvc-ld``, or ``hevc-ld``) over a grid of group length, keyframe QP and content cut
(issues 13 and 18): where on the rate axis each setting lands, how it looks, and which settings
make the front that the one ladder's group segment should follow.

    python benchmarks/group_grid.py --bench results/bench \\
        --configs 30:36,30:40,15:38,15:42,15:42:cut --out results/hybrid/group_grid

Each ``--configs`` entry is ``GOP:QP`` or ``GOP:QP:CUT``: bidirectional groups of GOP frames
without an aux stream (``keyface.codec.ratecontrol.groups_config_at``'s settings otherwise:
motion quantiser level 2, the eye check on), keyframes one ``--intra`` sequence at QP, and with
``CUT`` the content rule in the groups: ``cut`` (``group_cut=("eyes", "mouth")``: a frame is
animated from the keyframe that holds its mouth and eyes, and a group is cut short with a
keyframe where neither does), ``mouth`` or ``eyes`` (the cut on that part only). With
such a sequence a cut's keyframe is a P picture, so it costs far less than the intra keyframe it
cost when the cut was measured (docs/hybrid.md). ``--low-delay``: no groups, the animation
mode with a keyframe at least every GOP frames (past keyframes only: ``keyface send --ladder
call``'s structure); with ``cut`` the content rule, the motion gate and the PSNR check send
keyframes between those too and each frame is drawn from the buffered keyframe that suits it
(``CodecConfig.max_interval``, the call ladder), without it no other keyframe is sent and
every frame is drawn from the newest (the fixed-interval refresh, the first call ladder).

For the clips a ``keyface bench`` run prepared (its ``cache/CLIP/crop.y4m`` and
``analysis.npz``), every config is coded, decoded with the default renderer and measured like
the bench (DISTS on every 25th frame). Writes ``points.json`` (a stopped run resumes) and
``report.md``: each config's clip-averaged rate and metrics beside VVC at the same rate (the
bench's anchors), and the configs on the LPIPS front. Set ``KEYFACE_THREADS`` as for any
benchmark; ``--jobs`` workers.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import beside_vvc, cached_clip, command_line, resume_points

from keyface.codec.ratecontrol import GROUPS_INTRA

METRICS = [
    "psnr",
    "lpips_alex",
    "dists",
    "lpips_mouth_open",
    "lpips_eyes",
    "eye_state",
    "mouth_open",
]
SLOW_EVERY = 25


CUTS: dict[str, tuple[str, ...] | None] = {
    "": None,
    "cut": ("eyes", "mouth"),
    "mouth": ("mouth",),
    "eyes": ("eyes",),
}
"""A config's cut name -> ``CodecConfig.group_cut``."""


def parse_config(text: str) -> tuple[int, int, str]:
    """``GOP:QP`` or ``GOP:QP:CUT`` -> (gop, qp, cut name)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in CUTS):
        raise SystemExit(f"a config is GOP:QP or GOP:QP:CUT (cut, mouth, eyes), got {text!r}")
    return int(parts[0]), int(parts[1]), parts[2] if len(parts) == 3 else ""


def cut_name(point: dict[str, Any]) -> str:
    """A point's cut name (points of the first runs stored ``True`` for ``cut``)."""
    cut = point["cut"]
    return "cut" if cut is True else "" if cut is False else str(cut)


def label(gop: int, qp: int, cut: str) -> str:
    return f"{gop}:{qp}" + (f":{cut}" if cut else "")


def group_config(gop: int, qp: int, cut: str, intra: str, low_delay: bool = False) -> Any:
    """The groups' settings of one grid entry, keyframes coded with ``intra``. ``low_delay``:
    no groups but the animation mode with a keyframe every ``gop`` frames (past keyframes
    only, no added delay, what a call can use): with ``cut`` (any) its rules send keyframes
    between those too, without it no other keyframe is sent (the fixed-interval refresh)."""
    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import groups_config_at, low_delay_config
    from keyface.intra._base import qp_to_quality

    if low_delay:  # keyface send --ladder call's structure (its points: CALL_LADDER)
        return low_delay_config(gop, qp, intra=intra, fixed=not cut)
    quality = qp_to_quality(qp)
    base = groups_config_at(0.0, CodecConfig(mode="bidirectional"))
    return replace(
        base,
        gop=gop,
        keyframe_quality=quality,
        max_keyframe_quality=max(base.max_keyframe_quality, quality),
        group_cut=CUTS[cut],
        intra_codec=intra,
    )


def code_point(task: tuple[str, int, int, str, str, bool, str]) -> dict[str, Any]:
    """Code, decode and measure one (clip, GOP, QP, cut, keyframe codec, low delay, decoder's
    renderer) point."""
    from keyface.eval.metrics import compute_metrics
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.renderers import get_renderer
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    clip_dir, (gop, qp, cut, intra, low_delay, renderer) = Path(task[0]), task[1:]
    _, analysis, ref = cached_clip(clip_dir)
    t0 = time.perf_counter()
    coded = encode_analysis(analysis, group_config(gop, qp, cut, intra, low_delay))
    decoded = decode_bytes(
        coded.data, renderer=None if renderer == "default" else get_renderer(renderer)
    )
    frames = [f.image for f in decoded.frames]
    seconds = time.perf_counter() - t0
    m = compute_metrics(ref, frames, METRICS, progress=False, slow_every=SLOW_EVERY)
    return {
        "clip": clip_dir.name,
        "gop": gop,
        "qp": qp,
        "cut": cut,
        "intra": intra,
        "low_delay": low_delay,
        "renderer": renderer,
        "kbps": coded.kbps,
        "keyframes": coded.stats.keyframes,
        "coding_seconds": seconds,
        "mean": m.mean,
    }


def front(rows: list[tuple[str, float, float]]) -> set[str]:
    """Labels of the rows ``(label, rate, lpips)`` that no other row beats on both."""
    return {
        name
        for name, rate, value in rows
        if not any(r <= rate and v < value and n != name for n, r, v in rows)
    }


def report(
    points: list[dict],
    anchors: list[dict],
    out: Path,
    command: str,
    intra: str,
    low_delay: bool = False,
) -> str:
    clips = sorted({p["clip"] for p in points})
    configs = sorted({(p["gop"], p["qp"], cut_name(p)) for p in points})
    rows = []
    for gop, qp, cut in configs:
        sel = [p for p in points if (p["gop"], p["qp"], cut_name(p)) == (gop, qp, cut)]
        if {p["clip"] for p in sel} != set(clips):
            continue
        rate = float(np.mean([p["kbps"] for p in sel]))
        keyframes = float(np.mean([p["keyframes"] for p in sel]))
        values = {m: float(np.nanmean([p["mean"][m] for p in sel])) for m in METRICS}
        rows.append((label(gop, qp, cut), rate, keyframes, values))
    rows.sort(key=lambda r: r[1])
    best = front([(n, r, v["lpips_alex"]) for n, r, _, v in rows])
    lines = [
        (
            f"# Low delay: a {intra} keyframe every GOP frames x keyframe QP x content rule"
            if low_delay
            else f"# The bidirectional groups with {intra} keyframes: group length x keyframe QP "
            "x cut"
        ),
        "",
        f"Command: `{command}`",
        "",
        f"{len(clips)} clips, the bench's frames and crops. `GOP:QP[:cut]`: groups of GOP "
        f"frames without aux, keyframes one {intra} sequence at QP, `cut`: the content rule in "
        "the groups (eyes and mouth; `mouth`, `eyes`: that part only). Means over clips "
        "(eye_state: share of frames whose eye state differs from the source); DISTS on "
        f"every {SLOW_EVERY}th frame. In brackets: "
        "the bench's VVC curve at the row's rate (log-rate interpolation; n/a outside it). "
        "**Bold**: on the LPIPS front of these rows.",
        "",
        "| config | kbit/s | keyframes | " + " | ".join(f"{m} (VVC)" for m in METRICS) + " |",
        "|---|---:|---:|" + "---|" * len(METRICS),
    ]
    for name, rate, keyframes, values in rows:
        cells = [beside_vvc(values[m], anchors, clips, rate, m) for m in METRICS]
        shown = f"**{name}**" if name in best else name
        lines.append(f"| {shown} | {rate:.2f} | {keyframes:.1f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("results/bench"))
    parser.add_argument("--configs", required=True, help="GOP:QP[:CUT],... (see above)")
    parser.add_argument("--out", type=Path, default=Path("results/hybrid/group_grid"))
    parser.add_argument(
        "--intra",
        default=GROUPS_INTRA,
        help=f"the keyframe sequence's codec (default {GROUPS_INTRA}; points saved before "
        "this option were hevc-ld)",
    )
    parser.add_argument(
        "--low-delay",
        action="store_true",
        help="the animation mode with a keyframe every GOP frames instead of groups",
    )
    parser.add_argument(
        "--renderer",
        default="default",
        help="decode with this renderer (keyface decode --generator; default: the default)",
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument("--clips", default=None, help="only clips whose name has one of these")
    parser.add_argument(
        "--report-only", action="store_true", help="report the saved points, code nothing"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    anchors = json.loads((args.bench / "points.json").read_text())["points"]
    clips = sorted({p["clip"] for p in anchors})[: args.limit]
    if args.clips:
        clips = [c for c in clips if any(k in c for k in args.clips.split(","))]
    configs = [parse_config(c) for c in args.configs.split(",")]
    t0 = time.perf_counter()
    points, computed = resume_points(
        code_point,
        {
            (c, gop, qp, cut, args.intra, args.low_delay, args.renderer): (
                str(args.bench / "cache" / c),
                gop,
                qp,
                cut,
                args.intra,
                args.low_delay,
                args.renderer,
            )
            for gop, qp, cut in configs
            for c in clips
        },
        lambda p: (
            p["clip"],
            p["gop"],
            p["qp"],
            cut_name(p),
            p.get("intra", "hevc-ld"),
            p.get("low_delay", False),
            p.get("renderer", "default"),
        ),
        args.jobs,
        args.out / "points.json",
        lambda p: (
            f"{p['clip']} {label(p['gop'], p['qp'], cut_name(p))} {p['kbps']:.2f} kbit/s "
            f"LPIPS {p['mean']['lpips_alex']:.4f}"
        ),
        compute=not args.report_only,
    )
    command = command_line("group_grid.py", args, skip=("report_only",))
    print(report(points, anchors, args.out, command, args.intra, args.low_delay))
    print(f"{computed} points in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
