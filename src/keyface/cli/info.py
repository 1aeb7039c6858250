"""``keyface info IN.kf``: what a stream holds, where its bytes go; ``keyface info --system``:
the thread policy and what each compute library uses (docs/threads.md)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from keyface.bitstream import (
    AuxPacket,
    BackgroundPacket,
    BitstreamError,
    DetailPacket,
    EndPacket,
    KeyframePacket,
    MotionPacket,
    read_stream,
)
from keyface.cli._common import existing_file
from keyface.cli.main import UserError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "info",
        help="describe a keyface stream",
        description="Print a keyface stream's header and how its bytes split between parts.",
    )
    p.add_argument("input", nargs="?", help="keyface stream (.kf)")
    p.add_argument(
        "--system",
        action="store_true",
        help="describe this machine instead: CPUs, the thread policy and the thread pools of "
        "torch, onnxruntime, OpenCV and BLAS",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--packets", action="store_true", help="list every packet")
    return p


def describe(data: bytes) -> dict[str, Any]:
    """A JSON-able summary of a stream (raises BitstreamError for a foreign/bad header)."""
    parsed = read_stream(data)
    h = parsed.header
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    packets = []
    frames = 0
    for p in parsed.packets:
        kind = type(p).__name__.removesuffix("Packet").lower()
        n = len(bytes(p))
        sizes[kind] += n
        counts[kind] += 1
        row: dict[str, Any] = {"type": kind, "bytes": n}
        if isinstance(p, KeyframePacket):
            row.update(frame=p.frame_index, quality=p.quality)
        elif isinstance(p, MotionPacket):
            row.update(first_frame=p.first_frame, frames=p.n_frames, reset=p.reset)
            frames = max(frames, p.first_frame + p.n_frames)
        elif isinstance(p, BackgroundPacket):
            row.update(frame=p.frame_index)
        elif isinstance(p, DetailPacket):
            row.update(frame=p.frame_index, rect=[p.x, p.y, p.width, p.height], quality=p.quality)
        elif isinstance(p, AuxPacket):
            row.update(first_frame=p.first_frame, frames=len(p.pictures))
        elif isinstance(p, EndPacket):
            row.update(frame_count=p.frame_count)
        packets.append(row)
    header_bytes = len(bytes(h))
    fps = float(h.fps)
    seconds = frames / fps if fps else 0.0
    info: dict[str, Any] = {
        "bytes": len(data),
        "header_bytes": header_bytes,
        "frames": frames,
        "seconds": round(seconds, 3),
        "kbps": round(8 * len(data) / 1000 / seconds, 3) if seconds else None,
        "size": [h.width, h.height],
        "fps": f"{h.fps_num}/{h.fps_den}",
        "crop": None
        if h.crop is None
        else {
            "source": [h.crop.source_width, h.crop.source_height],
            "centre": [round(h.crop.cx, 2), round(h.crop.cy, 2)],
            "side": round(h.crop.side, 2),
        },
        "motion": f"{h.motion_name} v{h.motion_version} level {h.quant_level} "
        f"(model {h.motion_digest:08x})",
        "intra_codec": h.intra_codec,
        "refresh": f"{h.refresh_mode.name.lower()} threshold {h.refresh_threshold:g}, "
        f"buffer {h.buffer_size}",
        "generator": h.generator,
        "promotes": h.promotes,
        "format_version": h.version,
        "mode": h.mode.name.lower(),
        "aux": None
        if h.aux is None
        else {
            "codec": h.aux.codec,
            "scale": h.aux.scale,
            "side": h.width // h.aux.scale & ~1,
            "qp": h.aux.qp,
            "fusion": h.aux.fusion,
            "gop": h.aux.gop or None,
        },
        "added_latency": f"{h.delay_frames} frames = {1000 * h.delay_frames / fps:.0f} ms"
        if fps
        else None,
        "parts": {k: {"packets": counts[k], "bytes": sizes[k]} for k in sorted(sizes)},
        "motion_bits_per_frame": round(8 * sizes["motion"] / frames, 1) if frames else None,
        "complete": parsed.complete,
        "error": None if parsed.error is None else str(parsed.error),
    }
    info["packets"] = packets
    return info


def describe_system() -> dict[str, Any]:
    """The thread policy and the pools it set, after loading every compute library keyface
    uses (so that the figures are the ones a decode or a training run gets)."""
    import platform

    import cv2
    import numpy
    import onnxruntime
    import scipy.linalg  # noqa: F401 - loads scipy's BLAS, so that its pool is listed
    import torch

    from keyface import __version__
    from keyface.threads import describe_threads, onnx_session_options

    out: dict[str, Any] = {
        "keyface": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": numpy.__version__,
    }
    out["threads"] = describe_threads()
    options = onnx_session_options()
    out["threads"]["onnxruntime"] = {
        "intra_op": options.intra_op_num_threads,
        "inter_op": options.inter_op_num_threads,
        "allow_spinning": options.get_session_config_entry("session.intra_op.allow_spinning"),
    }
    return out


def _print_system(info: dict[str, Any]) -> None:
    threads = info.pop("threads")
    for key, value in info.items():
        print(f"{key:<22} {value}")
    policy = threads["policy"]
    spin = "spin" if policy["spin"] else "no spinning"
    print(
        f"{'thread policy':<22} {policy['compute']} compute, {policy['blas']} BLAS, {spin} "
        f"(from {policy['source']}; {threads['cpus']} CPUs)"
    )
    if "torch" in threads:
        t = threads["torch"]
        print(f"{'  torch':<22} intra-op {t['intra_op']}, inter-op {t['inter_op']}")
    o = threads["onnxruntime"]
    print(
        f"{'  onnxruntime':<22} intra-op {o['intra_op']}, inter-op {o['inter_op']}, "
        f"spinning {o['allow_spinning']}"
    )
    if "opencv" in threads:
        print(f"{'  opencv':<22} {threads['opencv']}")
    for pool in threads.get("pools", []):
        print(
            f"{'  ' + str(pool['api']):<22} {pool['threads']} ({pool['library']}, {pool['path']})"
        )
    env = " ".join(f"{k}={v}" for k, v in threads["environment"].items())
    print(f"{'  environment':<22} {env}")


def run(args: argparse.Namespace) -> int:
    if args.system:
        if args.input:
            raise UserError("give either a stream or --system, not both")
        system = describe_system()
        if args.json:
            print(json.dumps(system, indent=1))
        else:
            _print_system(system)
        return 0
    if not args.input:
        raise UserError("name a keyface stream (.kf), or give --system")
    data = existing_file(args.input).read_bytes()
    info = describe(data)
    if not args.packets:
        info.pop("packets")
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for key, value in info.items():
            if key == "parts":
                for part, v in value.items():
                    share = 100 * v["bytes"] / info["bytes"]
                    print(f"  {part:<10} {v['packets']:>5} packets {v['bytes']:>8} B {share:5.1f}%")
            elif key == "packets":
                for row in value:
                    print("   ", " ".join(f"{k}={v}" for k, v in row.items()))
            else:
                print(f"{key:<22} {value}")
    if info["error"]:
        raise BitstreamError(f"{args.input}: {info['error']}")
    return 0
