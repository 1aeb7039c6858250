"""``keyface decode IN.kf -o OUT.mp4``: rebuild the video from a keyface stream."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from keyface.bitstream import BitstreamError, StreamHeader
from keyface.cli._common import add_force_argument, existing_file, output_file, progress_bar
from keyface.cli.main import UserError
from keyface.fomm import MOTION_NAME
from keyface.io import VIDEO_OUTPUT_FORMATS, VIDEO_OUTPUT_SUFFIXES, atomic_output
from keyface.motion import own_renderer
from keyface.pipeline import StreamDecoder, UserInputError, check_full_frame, decode_to_file
from keyface.renderers import DEFAULT_RENDERER, get_renderer


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "decode",
        help="decode a keyface stream to a video",
        description=f"Decode a keyface stream (.kf) to {VIDEO_OUTPUT_FORMATS}. Frames are "
        "written as they are decoded; a damaged stream keeps the frames before the damage "
        "(exit code 2).",
    )
    p.add_argument("input", help="keyface stream (.kf)")
    p.add_argument("-o", "--output", required=True, help=f"output video: {VIDEO_OUTPUT_FORMATS}")
    p.add_argument(
        "--full-frame",
        action="store_true",
        help="paste the face back into the full source frame (needs encode --full-frame)",
    )
    p.add_argument(
        "--generator",
        help=f"renderer: warp, a shipped generator or a .safetensors file "
        f"(default: {DEFAULT_RENDERER}; for --motion fomm streams, the model's generator)",
    )
    p.add_argument(
        "--model",
        metavar="FILE",
        help="the FOMM model file a --motion fomm stream was coded with (checked by digest)",
    )
    p.add_argument(
        "--fusion", help="hybrid streams: the fusion to use (default: the one the stream names)"
    )
    p.add_argument(
        "--aux-only",
        action="store_true",
        help="hybrid streams: show the auxiliary stream alone, upsampled (no animation)",
    )
    add_force_argument(p)
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _generator(args: argparse.Namespace, data: bytes) -> str:
    """The renderer to decode with: the one the stream's motion brings (``fomm``: the
    ``--model``'s generator), else ``--generator``, else the default."""
    header, _ = StreamHeader.parse(data)  # a damaged header: the one-line BitstreamError
    fomm = header.motion_name == MOTION_NAME
    if args.model is not None:
        if not fomm:
            raise UserError(
                f"--model is for --motion fomm streams; this one codes {header.motion_name}"
            )
        from keyface.fomm import use_model

        use_model(existing_file(args.model))
    elif fomm:
        raise UserError(
            "the stream was coded with a FOMM model file: give it with --model FILE "
            f"(CRC-32 {header.motion_digest:08x})"
        )
    own = own_renderer(header.motion_name)  # fomm (registered above): the model's generator
    if own is not None:
        if args.generator not in (None, own):
            raise UserError(
                f"a {header.motion_name} stream is drawn by its own renderer {own!r}: "
                "drop --generator"
            )
        return own
    return DEFAULT_RENDERER if args.generator is None else str(args.generator)


def run(args: argparse.Namespace) -> int:
    source = existing_file(args.input)
    out = output_file(
        args.output, inputs=[source], force=args.force, suffixes=VIDEO_OUTPUT_SUFFIXES
    )
    if args.aux_only and args.full_frame:
        raise UserError("--aux-only shows the face crop's auxiliary stream: drop --full-frame")
    data = source.read_bytes()
    renderer = get_renderer(_generator(args, data))
    if args.fusion is not None:
        from keyface.fusion import UnknownFusionError, get_fusion

        try:
            get_fusion(args.fusion)
        except UnknownFusionError as exc:
            raise UserError(str(exc)) from None
    stream = StreamDecoder(  # checks the header
        data, renderer=renderer, fusion=args.fusion, aux_only=args.aux_only
    )
    if args.full_frame:
        try:
            check_full_frame(stream.header)
        except UserInputError as exc:
            raise UserError(str(exc)) from None
    total = stream.header.frame_count or None
    with atomic_output(out) as tmp, progress_bar(total, "decode", not args.quiet) as tick:
        summary = decode_to_file(stream, tmp, full=args.full_frame, progress=tick)
    if summary.frames and not args.quiet and summary.error is None:  # else: the error says it
        fps = summary.frames / max(summary.decode_seconds, 1e-9)
        print(
            f"{summary.frames} frames {summary.size[0]}x{summary.size[1]} -> {out} "
            f"(decoder {fps:.0f} frames/s)",
            file=sys.stderr,
        )
    if summary.error is not None:
        kept = f"; kept the {summary.frames} frames before the damage" if summary.frames else ""
        raise BitstreamError(f"{args.input}: {summary.error}{kept}")
    if not summary.complete:
        raise BitstreamError(
            f"{args.input}: stream ends early (no END packet); kept {summary.frames} frames"
        )
    return 0
