"""``keyface eval REF DIST``: full-reference quality metrics between two videos."""

from __future__ import annotations

import argparse
import json
import math
import sys

from keyface.cli.main import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from keyface.eval.registry import METRICS

    parser = subparsers.add_parser(
        "eval",
        help="quality metrics of a distorted video against its reference",
        description=(
            "Compare DIST against REF frame by frame (same size and frame count) and print the "
            "mean of each metric. Metrics: " + ", ".join(METRICS) + ". See docs/metrics.md."
        ),
    )
    parser.add_argument("ref", metavar="REF", help="reference video")
    parser.add_argument("dist", metavar="DIST", help="distorted (decoded) video")
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metrics to compute (default: all), e.g. psnr,ssim,lpips_alex",
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
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
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
    from keyface.eval.metrics import MetricsInputError, evaluate_videos, resolve_metrics
    from keyface.eval.weights import WeightsNotFoundError

    try:
        names = resolve_metrics(args.metrics)
        result = evaluate_videos(
            args.ref,
            args.dist,
            names,
            progress=not args.quiet,
            device=args.device,
            precision="bfloat16" if args.bf16 else "float32",
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
