"""``keyface crop IN -o OUT``: write the stable square face crop of a video."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from keyface.cli._common import existing_file, progress_bar
from keyface.pipeline import crop_video


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "crop",
        help="write the square face crop of a video",
        description="Find the face, choose one stable square crop around head and hair "
        "(FOMM/VoxCeleb framing) and write the cropped video.",
    )
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4 or .y4m)")
    p.add_argument("--size", type=int, default=256, choices=(256, 384, 512))
    p.add_argument("--max-frames", type=int)
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    source = existing_file(args.input)
    with progress_bar(args.max_frames, "crop", not args.quiet) as tick:
        box = crop_video(
            source, args.output, size=args.size, max_frames=args.max_frames, progress=tick
        )
    if not args.quiet:
        print(
            f"crop: centre ({box.cx:.1f}, {box.cy:.1f}) side {box.side:.1f} of "
            f"{box.source_width}x{box.source_height} -> {args.output}",
            file=sys.stderr,
        )
    return 0
