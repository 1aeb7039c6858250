"""``keyface decode IN.kf -o OUT.mp4``: rebuild the video from a keyface stream."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from keyface.bitstream import BitstreamError
from keyface.cli._common import existing_file, progress_bar
from keyface.cli.main import UserError
from keyface.pipeline import UserInputError, decode_bytes, write_decoded
from keyface.renderers import DEFAULT_RENDERER, get_renderer


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "decode",
        help="decode a keyface stream to a video",
        description="Decode a keyface stream (.kf) to .mp4 (H.264) or .y4m.",
    )
    p.add_argument("input", help="keyface stream (.kf)")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .mkv or .y4m)")
    p.add_argument(
        "--full-frame",
        action="store_true",
        help="paste the face back into the full source frame (needs encode --full-frame)",
    )
    p.add_argument(
        "--generator",
        default=DEFAULT_RENDERER,
        help=f"renderer: warp, a shipped generator or a .safetensors file "
        f"(default: {DEFAULT_RENDERER})",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    data = existing_file(args.input).read_bytes()
    renderer = get_renderer(args.generator)
    with progress_bar(None, "decode", not args.quiet) as tick:
        result = decode_bytes(data, renderer=renderer, progress=tick)
    if result.frames:
        try:
            size = write_decoded(result, Path(args.output), full=args.full_frame)
        except UserInputError as exc:
            raise UserError(str(exc)) from None
        if not args.quiet:
            fps = len(result.frames) / max(result.decode_seconds, 1e-9)
            print(
                f"{len(result.frames)} frames {size[0]}x{size[1]} -> {args.output} "
                f"(decoder {fps:.0f} frames/s)",
                file=sys.stderr,
            )
    if result.error is not None:
        kept = f"; kept the {len(result.frames)} frames before the damage" if result.frames else ""
        raise BitstreamError(f"{args.input}: {result.error}{kept}")
    if not result.complete:
        raise BitstreamError(
            f"{args.input}: stream ends early (no END packet); kept {len(result.frames)} frames"
        )
    return 0
