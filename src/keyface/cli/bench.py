"""``keyface bench``: rate-distortion benchmark of keyface against conventional codecs."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from keyface.cli._common import add_motion_arguments, use_fomm_arguments
from keyface.cli.main import UserError
from keyface.clips import ClipSelectionError, select_clips
from keyface.renderers import DEFAULT_RENDERER

DEFAULT_CLIPS = "../shared/data/clips"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="rate-distortion benchmark against x264/x265/AV1/VVC",
        description=(
            "Code face crops of development clips with keyface at several ladder positions and "
            "with every anchor codec at its QPs; measure quality; write points.json, RD plots, "
            "BD-rates and report.md. Finished points are cached, so an interrupted run "
            "resumes. See docs/bench.md."
        ),
    )
    g = p.add_argument_group("clips")
    g.add_argument(
        "--clips",
        default=DEFAULT_CLIPS,
        help=f"folder of videos (its MANIFEST.tsv if any), a MANIFEST.tsv, or one video "
        f"(default: {DEFAULT_CLIPS})",
    )
    g.add_argument("--split", help="split JSON (e.g. splits/dev_v1.json): keep its --subset clips")
    g.add_argument("--subset", default="validation", help="subset of --split (default: validation)")
    g.add_argument("--persons", help="comma-separated people to keep")
    g.add_argument(
        "--one-per-person",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one clip per person: the first long enough (default: on)",
    )
    g.add_argument(
        "--skip-short",
        action="store_true",
        help="leave out clips the manifest says are shorter than --frames",
    )
    g.add_argument("--limit", type=int, help="at most this many clips")
    g.add_argument("--frames", type=int, default=125, help="first N frames of each clip (125)")
    g.add_argument("--size", type=int, default=256, choices=(256, 384, 512), help="crop side")

    c = p.add_argument_group("codecs")
    c.add_argument(
        "--u",
        help="keyface ladder positions in [-0.3, 2.5], comma-separated (default: "
        "0,0.3,0.6,0.9,1.2,1.5; with a negative one: --u=-0.3,0,...)",
    )
    c.add_argument(
        "--generator",
        default=DEFAULT_RENDERER,
        help=f"keyface renderer (default: {DEFAULT_RENDERER})",
    )
    add_motion_arguments(c)
    c.add_argument(
        "--modes",
        help="also measure these stream modes on their own ladders (comma-separated of "
        "animation,hybrid,bidirectional); the keyface curve is the one ladder over all modes",
    )
    c.add_argument(
        "--keyface",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run keyface (--no-keyface: anchors only)",
    )
    c.add_argument(
        "--anchors",
        default="all",
        help="anchors: comma-separated of x264,x265,av1,vvc; 'all' (every available, default) "
        "or 'none'",
    )
    c.add_argument(
        "--qps",
        action="append",
        metavar="CODEC=QP,QP",
        help="QPs of an anchor (repeatable), e.g. --qps x264=35,41,47",
    )
    c.add_argument(
        "--preset",
        action="append",
        metavar="CODEC=NAME",
        help="encoder speed preset of an anchor (repeatable), e.g. --preset x265=fast",
    )

    m = p.add_argument_group("metrics")
    m.add_argument(
        "--metrics",
        help="comma-separated metrics; 'default' is the default set "
        "(psnr,ssim,ms_ssim,vmaf,lpips_alex,akd; plus lpips_vgg,dists on a GPU device)",
    )
    m.add_argument("--device", default="cpu", help="torch device for LPIPS/DISTS (default: cpu)")
    m.add_argument(
        "--target",
        action="append",
        metavar="METRIC=V,V",
        help="quality targets for the rate table (default: lpips_alex=0.2,0.15)",
    )

    m.add_argument(
        "--slow-every",
        type=int,
        default=1,
        metavar="N",
        help="measure the slow metrics (lpips_vgg, dists, aed) on every N-th frame only "
        "(default: 1, every frame)",
    )
    m.add_argument(
        "--min-overlap",
        type=float,
        default=0.0,
        help="report a BD value as null when the two curves share at most this fraction of "
        "their range (default: 0, null only without overlap)",
    )

    o = p.add_argument_group("run")
    o.add_argument("--out", default="results/bench", help="output folder (default: results/bench)")
    o.add_argument("--jobs", type=int, default=2, help="parallel worker processes (default: 2)")
    o.add_argument("--force", action="store_true", help="recompute cached crops and points")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    return p


def _split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _presets(items: list[str] | None, anchors: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        codec, sep, name = item.partition("=")
        codec = codec.strip().lower()
        if not sep or not name.strip():
            raise UserError(f"--preset {item!r}: expected CODEC=NAME, e.g. x265=fast")
        if codec not in anchors:
            raise UserError(f"--preset {codec}: not one of the anchors run ({', '.join(anchors)})")
        out[codec] = name.strip()
    return out


def canonical_command(args: argparse.Namespace, cfg: Any) -> str:
    """The command line with every option that shapes the results written out."""
    parts = ["keyface", "bench", "--clips", str(args.clips)]
    if args.split:
        parts += ["--split", str(args.split), "--subset", args.subset]
    if args.persons:
        parts += ["--persons", args.persons]
    parts.append("--one-per-person" if args.one_per_person else "--no-one-per-person")
    if args.skip_short:
        parts.append("--skip-short")
    if args.limit is not None:
        parts += ["--limit", str(args.limit)]
    parts += ["--frames", str(cfg.frames), "--size", str(cfg.size)]
    if cfg.keyface:
        parts.append("--u=" + ",".join(f"{u:g}" for u in cfg.u_values))  # "=": u may be < 0
        if cfg.fomm_model is not None:
            parts += ["--motion", "fomm", "--model", str(cfg.fomm_model)]
            if cfg.fomm_student is not None:
                parts += ["--student", str(cfg.fomm_student)]
        else:
            parts += ["--generator", cfg.generator]
        if cfg.modes:
            parts += ["--modes", ",".join(cfg.modes)]
    else:
        parts.append("--no-keyface")
    parts += ["--anchors", ",".join(cfg.anchors) or "none"]
    for codec in cfg.anchors:
        parts += ["--qps", f"{codec}=" + ",".join(str(q) for q in cfg.qps[codec])]
    for codec, name in cfg.presets.items():
        parts += ["--preset", f"{codec}={name}"]
    parts += ["--metrics", ",".join(cfg.metrics), "--device", cfg.device]
    for metric, values in cfg.targets.items():
        parts += ["--target", f"{metric}=" + ",".join(f"{v:g}" for v in values)]
    if cfg.min_overlap:
        parts += ["--min-overlap", f"{cfg.min_overlap:g}"]
    if cfg.slow_every > 1:
        parts += ["--slow-every", str(cfg.slow_every)]
    parts += ["--out", str(cfg.out), "--jobs", str(cfg.jobs)]
    return shlex.join(parts)


def _modes(text: str | None) -> tuple[str, ...]:
    from keyface.codec.config import MODES

    modes = tuple(_split_list(text) or ())
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise UserError(f"unknown mode {unknown[0]!r} (choose from {', '.join(MODES)})")
    return modes


def _fomm(args: argparse.Namespace) -> tuple[Path | None, Path | None, str, str]:
    """``(model file, student file, digest label, renderer)`` of ``--motion fomm --model
    [--student]``, the label being the model's CRC-32 as 8 hex digits (``-`` and the
    student's with a student); ``(None, None, "", --generator)`` for the face mesh. Loads
    and registers the model once."""
    if getattr(args, "motion", "facemesh") == "fomm" and args.modes:
        raise UserError("--motion fomm codes the animation ladder only: leave out --modes")
    files = use_fomm_arguments(args)
    if files is None:
        return None, None, "", args.generator
    from keyface.fomm import MOTION_NAME, registered_model, registered_student

    model = registered_model()
    assert model is not None
    label = f"{model.digest:08x}"
    student = registered_student()
    if student is not None:
        label += f"-{student.digest:08x}"
    return (
        files[0].resolve(),
        files[1].resolve() if files[1] is not None else None,
        label,
        MOTION_NAME,
    )


def config_from_args(args: argparse.Namespace) -> Any:
    from keyface.eval import bench

    if args.frames < 2:
        raise UserError("--frames must be at least 2")
    if args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    if not 0.0 <= args.min_overlap < 1.0:
        raise UserError("--min-overlap must be in [0, 1)")
    if args.slow_every < 1:
        raise UserError("--slow-every must be at least 1")
    try:
        clips = select_clips(
            args.clips,
            split=args.split,
            subset=args.subset,
            persons=_split_list(args.persons),
            one_per_person=args.one_per_person,
            limit=args.limit,
            frames=args.frames,
            skip_short=args.skip_short,
        )
        anchors = bench.resolve_anchors(args.anchors)
        metrics = bench.parse_metrics(args.metrics, args.device)
        fomm_model, fomm_student, fomm_digest, generator = _fomm(args)
        cfg = bench.BenchConfig(
            clips=clips,
            out=Path(args.out),
            frames=args.frames,
            size=args.size,
            u_values=bench.parse_u(args.u),
            keyface=args.keyface,
            generator=generator,
            anchors=anchors,
            qps=bench.parse_qps(args.qps, anchors),
            presets=_presets(args.preset, anchors),
            metrics=metrics,
            device=args.device,
            targets=bench.parse_targets(args.target, metrics),
            jobs=args.jobs,
            force=args.force,
            progress=not args.quiet,
            min_overlap=args.min_overlap,
            slow_every=args.slow_every,
            modes=_modes(args.modes),
            fomm_model=fomm_model,
            fomm_student=fomm_student,
            fomm_digest=fomm_digest,
        )
    except (bench.BenchError, ClipSelectionError) as exc:
        raise UserError(str(exc)) from None
    cfg.command = canonical_command(args, cfg)
    return cfg


def _summary(data: dict[str, Any]) -> str:
    lines = []
    avg = [e for e in data["bd"] if e["scope"] == "average"]
    if avg:
        lines.append("BD-rate of keyface on the averaged curves (negative = fewer bits):")
        for e in avg:
            v = e["bd_rate"]["value"]
            text = f"{v:+.1f} %" if v is not None else f"n/a ({e['bd_rate']['reason']})"
            lines.append(f"  {e['metric']:<11} vs {e['anchor']:<5} {text}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from keyface.eval import bench

    cfg = config_from_args(args)

    def log(msg: str) -> None:
        print(f"keyface bench: {msg}", file=sys.stderr)

    try:
        result = bench.run_bench(cfg, log=log)
    except (bench.BenchError, ClipSelectionError) as exc:
        raise UserError(str(exc)) from None
    run_info = result.data["run"]
    if not args.quiet:
        summary = _summary(result.data)
        if summary:
            print(summary)
        print(
            f"{len(result.data['points'])} points ({run_info['computed']} computed, "
            f"{run_info['cached']} cached, {run_info['failed']} failed) in "
            f"{run_info['wall_seconds']:.0f} s; wrote {cfg.out / 'points.json'} and "
            f"{cfg.out / 'report.md'}"
        )
    if not result.data["points"]:
        log("every point failed (see the Failures section of report.md)")
        return 1
    return 0
