"""``keyface crop IN -o OUT``: write the stable square face crop of a video."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from keyface.cli._common import (
    add_force_argument,
    existing_file,
    expected_frames,
    output_file,
    positive_int,
    stage_bars,
)
from keyface.io import VIDEO_OUTPUT_FORMATS, VIDEO_OUTPUT_SUFFIXES, atomic_output
from keyface.pipeline import crop_video


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "crop",
        help="write the square face crop of a video",
        description="Find the face, choose one stable square crop around head and hair "
        "(FOMM/VoxCeleb framing) and write the cropped video: exactly the pictures "
        "`keyface encode` codes (a square input that already is a face crop is kept whole). "
        "Use .y4m to compare with `keyface eval` without a second lossy step.",
    )
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help=f"output video: {VIDEO_OUTPUT_FORMATS}")
    p.add_argument("--size", type=int, default=256, choices=(256, 384, 512))
    p.add_argument("--max-frames", type=positive_int, help="crop only the first N frames")
    add_force_argument(p)
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    source = existing_file(args.input)
    out = output_file(
        args.output, inputs=[source], force=args.force, suffixes=VIDEO_OUTPUT_SUFFIXES
    )
    total = expected_frames(source, args.max_frames)
    with (
        atomic_output(out) as tmp,
        stage_bars(total, "find face", "crop", not args.quiet) as (plan_tick, tick),
    ):
        box = crop_video(
            source,
            tmp,
            size=args.size,
            max_frames=args.max_frames,
            progress=tick,
            plan_progress=plan_tick,
        )
    if not args.quiet:
        print(
            f"crop: centre ({box.cx:.1f}, {box.cy:.1f}) side {box.side:.1f} of "
            f"{box.source_width}x{box.source_height} -> {out}",
            file=sys.stderr,
        )
    return 0
