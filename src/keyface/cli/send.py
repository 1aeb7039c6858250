"""``keyface send``: join a room as a sender and stream a camera (or a file in real time)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from dataclasses import asdict, replace
from typing import Any

from keyface.cli._common import (
    add_force_argument,
    add_motion_arguments,
    existing_file,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
)
from keyface.cli.encode import motion_overrides
from keyface.cli.main import UserError
from keyface.codec.config import CodecConfig
from keyface.codec.ratecontrol import CALL_INTRA, QUALITY_PRESETS, config_for_preset
from keyface.intra import available_intra_codecs, live_intra_codecs
from keyface.io import write_bytes_atomic
from keyface.server.lossmodel import LossModel, loss_model
from keyface.server.session import DEFAULT_RESET_INTERVAL

TOKEN_ENV = "KEYFACE_TOKEN"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "send",
        help="stream a camera or a video file to a room",
        description=(
            "Join a room as a sender: crop the face and measure landmarks locally, code them "
            "live and send the datagrams over WebRTC data channels. A file is played in real "
            "time at its frame rate, standing in for a camera."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="video file played in real time")
    src.add_argument("--camera", help="camera device (PyAV/V4L2, e.g. /dev/video0)")
    p.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--room", required=True, help="room name")
    p.add_argument("--token", help=f"sender token (default: ${TOKEN_ENV}); see keyface token")
    p.add_argument(
        "--quality",
        choices=tuple(QUALITY_PRESETS),
        default="medium",
        help="quality preset (default: medium)",
    )
    p.add_argument(
        "--intra",
        choices=live_intra_codecs(),
        help=f"keyframe codec (default {LIVE_INTRA}: the fastest to encode; with --ladder "
        f"call, {CALL_INTRA})",
    )
    p.add_argument(
        "--keyframe-quality", type=positive_int, help="keyframe quality 1..100 (overrides)"
    )
    p.add_argument("--size", type=int, default=256, choices=(256, 384, 512), help="crop size")
    p.add_argument(
        "--mode",
        choices=("animation", "hybrid"),
        help="animation (default) or hybrid: a low-delay auxiliary stream fused at the server "
        "(docs/hybrid.md); a lost aux picture falls back to animation until a refresh",
    )
    p.add_argument(
        "--aux-scale", type=int, choices=(2, 4, 8), help="hybrid: aux downsampling (default 4)"
    )
    p.add_argument("--aux-qp", type=int, choices=range(52), metavar="0..51", help="hybrid: aux QP")
    p.add_argument(
        "--ladder",
        choices=("animation", "call"),
        default="animation",
        help="the presets' ladder: animation (default: keyframes when the motion gate or the "
        "content rule asks) or call (also a keyframe at least every 8-15 frames, each "
        "predicted from the one before: 39 %% fewer bits at equal LPIPS on the mean, but each "
        "keyframe stalls the server ~70 ms; docs/server.md)",
    )
    add_motion_arguments(p)
    p.add_argument(
        "--reset-interval",
        type=non_negative_int,
        default=DEFAULT_RESET_INTERVAL,
        help="frames between motion-coder resets while the server sends no "
        "acknowledgements (or with --no-acks): how long a lost motion datagram is concealed "
        f"at most (default {DEFAULT_RESET_INTERVAL}; 0: only at keyframes)",
    )
    p.add_argument(
        "--full-frame",
        action="store_true",
        help="also send the first full frame: the server pastes the face back into it "
        "(the crop is then kept fixed)",
    )
    p.add_argument(
        "--avatar",
        metavar="IMAGE",
        help="avatar mode: the room sees this face photo, animated by your motion, instead of "
        "your face (keyframes of your face still reach the server, which decodes but never "
        "shows them)",
    )
    p.add_argument("--loss", type=float, default=0.0, help="drop this share of motion datagrams")
    p.add_argument(
        "--burst",
        type=float,
        default=1.0,
        metavar="L",
        help="--loss in bursts of L datagrams on average (Gilbert-Elliott; default 1: "
        "independent drops)",
    )
    p.add_argument(
        "--outage",
        metavar="START:SECONDS",
        help="also drop every motion datagram for SECONDS from START seconds after the first",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --loss drops")
    p.add_argument(
        "--no-acks",
        action="store_true",
        help="ignore the server's acknowledgements: code every frame from the previous one, "
        "with a reset every --reset-interval frames (how senders before datagram flags "
        "worked; for comparisons)",
    )
    p.add_argument(
        "--no-redundancy",
        action="store_true",
        help="never repeat a lost frame's motion in the next datagram",
    )
    p.add_argument("--loop", action="store_true", help="play --input over and over")
    p.add_argument("--max-frames", type=positive_int, help="stop after N source frames")
    p.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    p.add_argument(
        "--camera-fps", type=positive_int, default=30, help="frame rate asked of --camera"
    )
    p.add_argument("--camera-size", default="640x480", help="frame size asked of --camera (WxH)")
    p.add_argument(
        "--report-every", type=positive_float, default=2.0, help="seconds between reports"
    )
    p.add_argument("--json", help="write the summary (and capture times) to this JSON file")
    add_force_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only the final summary")
    return p


def _outage(text: str | None) -> tuple[float, float] | None:
    """``START:SECONDS`` -> (start, seconds)."""
    if text is None:
        return None
    try:
        start, seconds = (float(x) for x in text.split(":"))
    except ValueError:
        raise UserError(f"--outage must be START:SECONDS, got {text!r}") from None
    if start < 0 or seconds <= 0:
        raise UserError("--outage needs START >= 0 and SECONDS > 0")
    return start, seconds


LIVE_INTRA = "hevc"
"""Keyframe codec of live senders unless --intra says otherwise: HEVC intra codes a 256x256
keyframe in ~30 ms where VVC takes ~200-300 ms (a latency spike of that size at every
keyframe), for ~0-9 % more bits (docs/server.md)."""


def _config(args: argparse.Namespace) -> CodecConfig:
    motion = motion_overrides(args)
    call = args.ladder == "call"
    if call and (args.mode == "hybrid" or motion):
        raise UserError("--ladder call is for the animation mode with the face-mesh motion")
    config = config_for_preset(args.quality, CodecConfig(mode=args.mode or "animation"), call=call)
    overrides: dict[str, Any] = {"size": args.size}
    if args.intra:
        overrides["intra_codec"] = args.intra
    elif not call and LIVE_INTRA in available_intra_codecs():
        overrides["intra_codec"] = LIVE_INTRA
    if args.keyframe_quality is not None:
        overrides["keyframe_quality"] = args.keyframe_quality
    for name in ("aux_scale", "aux_qp"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    overrides.update(motion)  # --motion fomm: the server needs the model too
    try:
        return replace(config, **overrides)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _source(args: argparse.Namespace) -> Any:
    from keyface.server.sender import CameraSource, VideoFileSource

    if args.input:
        return VideoFileSource(
            existing_file(args.input), loop=args.loop, max_frames=args.max_frames
        )
    try:
        w, h = (int(v) for v in args.camera_size.lower().split("x"))
    except ValueError:
        raise UserError("--camera-size must look like 640x480") from None
    return CameraSource(args.camera, fps=args.camera_fps, size=(w, h))


async def _send(
    args: argparse.Namespace, config: CodecConfig, token: str, model: LossModel
) -> dict[str, Any]:
    import aiohttp

    from keyface.server.client import SenderClient
    from keyface.server.sender import LiveSender, avatar_payload

    source = _source(args)
    avatar = avatar_payload(existing_file(args.avatar)) if args.avatar else None
    client = SenderClient(args.server, args.room, token, loss_model=model)
    try:
        await client.connect()
    except (aiohttp.ClientError, OSError) as exc:
        await client.close()
        raise UserError(f"cannot reach {args.server}: {exc}") from None
    except asyncio.TimeoutError:
        await client.close()
        raise UserError("the data channels did not open within 15 s") from None
    say = None if args.quiet else (lambda line: print(line, flush=True))
    sender = LiveSender(
        source,
        client,
        config,
        reset_interval=args.reset_interval or None,
        feedback=not args.no_acks,
        redundancy=not args.no_redundancy,
        full_frame=args.full_frame,
        report=say,
        report_every_s=args.report_every,
        avatar=avatar,
    )
    try:
        report = await sender.run(duration_s=args.duration)
        await asyncio.sleep(0.3)  # let the last datagrams leave
    finally:
        await client.close()
    fps = report.frames / max(report.seconds, 1e-9)
    print(
        f"sent {report.frames} frames in {report.seconds:.1f} s ({fps:.1f} frames/s): "
        f"uplink {report.kbps:.2f} kbit/s mean, {report.keyframes} keyframes "
        f"({report.idr_keyframes} IDR), {report.refresh_requests} refresh requests, "
        f"{report.dropped_motion} motion datagrams dropped (--loss), {report.skipped} "
        f"source frames skipped",
        flush=True,
    )
    return {
        "participant": client.participant,
        "summary": {**asdict(report), "kbps": report.kbps, "fps": fps},
        "capture_times": {str(k): v for k, v in sender.capture_times.items()},
    }


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise UserError(f"a token is needed: --token or ${TOKEN_ENV} (see keyface token)")
    if not 0.0 <= args.loss < 1.0:
        raise UserError("--loss must be in [0, 1)")
    try:
        model = loss_model(args.loss, args.burst, args.seed, _outage(args.outage))
    except ValueError as exc:
        raise UserError(f"--loss/--burst: {exc}") from None
    report = None
    if args.json:
        inputs = [p for p in (args.input, args.avatar) if p]
        report = output_file(args.json, inputs=inputs, force=args.force, suffixes=(".json",))
    logging.basicConfig(level=logging.WARNING)
    config = _config(args)
    result = asyncio.run(_send(args, config, token, model))
    if report is not None:
        write_bytes_atomic(report, json.dumps(result, indent=1).encode())
    return 0
