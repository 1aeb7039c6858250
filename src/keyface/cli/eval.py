"""``keyface eval REF DIST``: full-reference quality metrics between two videos."""

from __future__ import annotations

import argparse
import json
import math
import sys

from keyface.cli._common import existing_file, interactive, positive_int
from keyface.cli.main import UserError


def _metric_table() -> str:
    """Every metric with its time per frame (docs/metrics.md), default ones marked."""
    from keyface.eval.registry import (
        DEFAULT_EVAL_METRICS,
        EVAL_SLOW_EVERY,
        METRIC_REGISTRY,
        SECONDS_PER_FRAME,
    )

    lines = [
        "metrics, with the time each takes per 256x256 frame (one thread, a shared 2-core",
        "CPU; benchmarks/eval_speed.py). * = in the default set; s = slow: measured on 1",
        f"frame in --slow-every (default {EVAL_SLOW_EVERY}):",
    ]
    for name in METRIC_REGISTRY.names():
        entry = METRIC_REGISTRY.entry(name)
        mark = ("*" if name in DEFAULT_EVAL_METRICS else " ") + (
            "s" if entry.speed == "slow" else " "
        )
        ms = SECONDS_PER_FRAME.get(name)
        time = f"{1000 * ms:7.0f} ms" if ms is not None else "        ?"
        lines.append(f"  {mark} {name:<12}{time}  {entry.summary}")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from keyface.eval.registry import DEFAULT_EVAL_METRICS, EVAL_SLOW_EVERY

    parser = subparsers.add_parser(
        "eval",
        help="quality metrics of a distorted video against its reference",
        description=(
            "Compare DIST against REF frame by frame (same size and frame count) and print the "
            "mean of each metric. See docs/metrics.md."
        ),
        epilog=_metric_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ref", metavar="REF", help="reference video")
    parser.add_argument("dist", metavar="DIST", help="distorted (decoded) video")
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metrics: names, 'default' ("
        + ",".join(DEFAULT_EVAL_METRICS)
        + "), 'regions' or 'all'; e.g. default,akd (default: default)",
    )
    parser.add_argument(
        "--slow-every",
        type=positive_int,
        default=EVAL_SLOW_EVERY,
        metavar="N",
        help="measure the slow metrics (s below) on 1 frame in N; 1 = every frame "
        f"(default: {EVAL_SLOW_EVERY})",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--per-frame", action="store_true", help="also print every frame's values")
    parser.add_argument(
        "--device", default="cpu", help="torch device for LPIPS/DISTS (default: cpu)"
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="run LPIPS/DISTS in bfloat16 (about 2x faster, within ~0.003; not for reports)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars (none off a terminal)"
    )
    return parser


def _fmt(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.2f}"
    return f"{value:.4f}"


def _table(result: object, per_frame: bool) -> str:
    from keyface.eval.registry import METRICS

    lines = [f"{result.frames} frames"]  # type: ignore[attr-defined]
    lines.append(f"{'metric':<11} {'value':>10}  {'better':<7} unit")
    for name, value in result.mean.items():  # type: ignore[attr-defined]
        spec = METRICS[name]
        lines.append(f"{name:<11} {_fmt(value):>10}  {spec.direction:<7} {spec.unit}".rstrip())
    lines.append("")
    lines.append("worst frames (frame: value), worst first")
    for name in result.mean:  # type: ignore[attr-defined]
        worst = result.worst(name)  # type: ignore[attr-defined]
        shown = ", ".join(f"{i}: {_fmt(v)}" for i, v in worst) or "n/a"
        lines.append(f"{name:<11} {shown}")
    notes = result.notes  # type: ignore[attr-defined]
    if notes:
        lines.append("")
        lines.extend(f"{name}: {note}" for name, note in notes.items())
    if per_frame:
        names = list(result.per_frame)  # type: ignore[attr-defined]
        lines.append("")
        lines.append("frame " + " ".join(f"{n:>11}" for n in names))
        for i in range(result.frames):  # type: ignore[attr-defined]
            row = " ".join(f"{_fmt(result.per_frame[n][i]):>11}" for n in names)  # type: ignore[attr-defined]
            lines.append(f"{i:>5} {row}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from keyface.eval.metrics import MetricsInputError, evaluate_videos
    from keyface.eval.registry import resolve_eval_metrics
    from keyface.eval.weights import WeightsNotFoundError

    ref, dist = existing_file(args.ref), existing_file(args.dist)
    try:
        names = resolve_eval_metrics(args.metrics)
        result = evaluate_videos(
            ref,
            dist,
            names,
            progress=not args.quiet and interactive(),
            device=args.device,
            precision="bfloat16" if args.bf16 else "float32",
            slow_every=args.slow_every,
        )
    except (MetricsInputError, WeightsNotFoundError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        data = result.to_json()
        if not args.per_frame:
            data.pop("per_frame")
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_table(result, args.per_frame))
    return 0
