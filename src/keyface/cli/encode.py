"""``keyface encode IN -o OUT.kf``: code a talking-head video at a few kbit/s."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from keyface.bitstream import RefreshMode
from keyface.cli._common import existing_file, human_bytes, progress_bar
from keyface.cli.main import UserError
from keyface.codec.config import CodecConfig
from keyface.codec.ratecontrol import QUALITY_PRESETS, config_for_preset
from keyface.intra import available_intra_codecs
from keyface.pipeline import (
    EncodeResult,
    UserInputError,
    analyze,
    encode_analysis,
    encode_at_kbps,
)

REFRESH_NAMES = {"psnr": RefreshMode.PSNR, "motion": RefreshMode.MOTION, "fixed": RefreshMode.FIXED}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "encode",
        help="encode a video into a keyface stream",
        description="Encode a video of a talking person into a keyface stream (.kf).",
    )
    p.add_argument("input", help="input video (any common container)")
    p.add_argument("-o", "--output", required=True, help="output stream (.kf)")
    add_codec_arguments(p)
    return p


def add_codec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=256, choices=(256, 384, 512), help="crop size")
    p.add_argument(
        "--no-crop",
        action="store_true",
        help="the input is already a square face crop: code it as it is",
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--kbps", type=float, help="target bitrate (kbit/s), met within ~15%%")
    rate.add_argument(
        "--quality",
        choices=tuple(QUALITY_PRESETS),
        default="medium",
        help="quality preset when no --kbps is given (default: medium)",
    )
    p.add_argument("--intra", choices=available_intra_codecs(), help="keyframe codec")
    p.add_argument("--keyframe-quality", type=int, help="keyframe quality 1..100 (overrides)")
    p.add_argument("--refresh", choices=tuple(REFRESH_NAMES), help="keyframe refresh rule")
    p.add_argument("--threshold", type=float, help="refresh threshold (dB, distance or frames)")
    p.add_argument("--buffer", type=int, choices=range(1, 6), help="reference buffer size 1..5")
    p.add_argument("--motion-level", type=int, help="motion quantiser level (0 = finest)")
    p.add_argument("--chunk", type=int, help="frames per motion packet (1 = lowest latency)")
    p.add_argument(
        "--no-motion-field",
        action="store_true",
        help="do not send the body-motion grid (hair, shoulders and background held still)",
    )
    p.add_argument("--max-frames", type=int, help="code only the first N frames")
    p.add_argument(
        "--full-frame",
        action="store_true",
        help="also send the first full source frame so decode --full-frame can paste back",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")


def config_from_args(args: argparse.Namespace) -> CodecConfig:
    config = config_for_preset(args.quality or "medium")
    overrides: dict[str, Any] = {"size": args.size}
    if args.intra:
        overrides["intra_codec"] = args.intra
    if args.keyframe_quality is not None:
        overrides["keyframe_quality"] = args.keyframe_quality
    if args.refresh:
        overrides["refresh_mode"] = REFRESH_NAMES[args.refresh]
        overrides["refresh_threshold"] = None
    if args.threshold is not None:
        overrides["refresh_threshold"] = args.threshold
    if args.buffer is not None:
        overrides["buffer_size"] = args.buffer
    if args.motion_level is not None:
        overrides["quant_level"] = args.motion_level
    if args.chunk is not None:
        overrides["motion_chunk"] = args.chunk
    if getattr(args, "no_motion_field", False):
        overrides["motion_field"] = False
    try:
        return replace(config, **overrides)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def encode_from_args(args: argparse.Namespace) -> EncodeResult:
    source = existing_file(args.input)
    config = config_from_args(args)
    quiet = getattr(args, "quiet", False)
    try:
        with progress_bar(args.max_frames, "analyse", not quiet) as tick:
            analysis = analyze(
                source,
                size=config.size,
                crop=not args.no_crop,
                max_frames=args.max_frames,
                progress=tick,
            )
    except UserInputError as exc:
        raise UserError(str(exc)) from None
    if args.kbps is not None:
        if args.kbps <= 0:
            raise UserError("--kbps must be positive")
        # One line per trial of the search (its slowest step): the rate search has no total.
        return encode_at_kbps(
            analysis, config, args.kbps, with_background=args.full_frame, verbose=not quiet
        )
    with progress_bar(analysis.frame_count, "encode", not quiet) as tick:
        return encode_analysis(analysis, config, with_background=args.full_frame, progress=tick)


def print_summary(result: EncodeResult, file: Any = sys.stderr) -> None:
    s = result.stats
    a = result.analysis
    fps = a.frame_count / max(result.encode_seconds, 1e-9)
    print(
        f"{a.frame_count} frames {a.size}x{a.size} @ {float(a.fps):.2f} fps: "
        f"{human_bytes(len(result.data))}, {result.kbps:.2f} kbit/s "
        f"({s.keyframes} keyframes {human_bytes(s.keyframe_bytes)}, "
        f"motion {human_bytes(s.motion_bytes)} = {8 * s.motion_bytes / max(s.frames, 1):.0f} "
        f"bits/frame); encoder {fps:.0f} frames/s",
        file=file,
    )


def run(args: argparse.Namespace) -> int:
    result = encode_from_args(args)
    out = args.output
    with open(out, "wb") as f:
        f.write(result.data)
    if not args.quiet:
        print_summary(result)
    return 0
