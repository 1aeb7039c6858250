"""``keyface janus``: keyface through a stock Janus (docs/janus.md).

* ``keyface janus serve``: a Janus of our own with the minimal configuration
  (``keyface.server.janus.write_config``): prints its API URL and admin key, runs until
  interrupted;
* ``keyface janus room``: create the VideoRoom and TextRoom of a keyface room;
* ``keyface janus send``: stream a file (in real time) or a camera into a room as a sender.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import tempfile
from dataclasses import replace
from typing import Any

from keyface.cli._common import existing_file, positive_float, positive_int
from keyface.cli.main import UserError
from keyface.codec.config import CodecConfig
from keyface.codec.ratecontrol import QUALITY_PRESETS, config_for_preset
from keyface.intra import live_intra_codecs
from keyface.server.session import DEFAULT_RESET_INTERVAL

PAGE_INTRA = "avif"
"""Keyframe codec of ``keyface janus send`` unless ``--intra`` says otherwise: the one the
page behind Janus decodes (browsers have no HEVC/VVC picture decoder; docs/browser.md)."""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "janus",
        help="keyface rooms on a stock Janus server (docs/janus.md)",
        description=(
            "Carry keyface streams through Janus: the VideoRoom forwards each sender's "
            "datagrams to receivers that decode them (Python or the page "
            "/static/decoder/janus.html); refresh requests come back through the TextRoom."
        ),
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    serve = actions.add_parser("serve", help="run a Janus with keyface's minimal configuration")
    serve.add_argument("--port", type=positive_int, help="HTTP API port (default: a free one)")
    serve.add_argument("--folder", help="configuration folder (default: a temporary one)")

    room = actions.add_parser("room", help="create the Janus rooms of a keyface room")
    room.add_argument("--janus", required=True, help="Janus API URL, e.g. http://h:8088/janus")
    room.add_argument("--room", required=True, help="keyface room name")
    room.add_argument("--admin-key", help="the plugins' admin_key, if Janus has one")
    room.add_argument("--pin", help="pin needed to join the room")
    room.add_argument("--secret", help="secret needed to edit or destroy the room")

    send = actions.add_parser("send", help="stream a file or a camera into a room")
    src = send.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="video file played in real time")
    src.add_argument("--camera", help="camera device (PyAV/V4L2, e.g. /dev/video0)")
    send.add_argument("--janus", required=True, help="Janus API URL, e.g. http://h:8088/janus")
    send.add_argument("--room", required=True, help="keyface room name")
    send.add_argument("--participant", required=True, help="sender name (what receivers pick)")
    send.add_argument("--pin", help="the room's pin")
    send.add_argument(
        "--quality", choices=tuple(QUALITY_PRESETS), default="medium", help="quality preset"
    )
    send.add_argument(
        "--intra",
        choices=live_intra_codecs(),
        help=f"keyframe codec (default {PAGE_INTRA}: what the page decodes)",
    )
    send.add_argument("--size", type=int, default=256, choices=(256, 384, 512), help="crop size")
    send.add_argument(
        "--reset-interval",
        type=positive_int,
        default=DEFAULT_RESET_INTERVAL,
        help=f"frames between motion-coder resets (default {DEFAULT_RESET_INTERVAL})",
    )
    send.add_argument("--loop", action="store_true", help="play --input over and over")
    send.add_argument("--max-frames", type=positive_int, help="stop after N source frames")
    send.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    send.add_argument("-q", "--quiet", action="store_true", help="only the final summary")
    return p


async def _serve(args: argparse.Namespace) -> None:
    from keyface.server.janus import JanusProcess

    with contextlib.ExitStack() as stack:
        folder = args.folder or stack.enter_context(tempfile.TemporaryDirectory(prefix="janus-"))
        try:
            janus = JanusProcess(folder, http_port=args.port)
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
        try:
            await janus.start()
        except RuntimeError as exc:
            raise UserError(str(exc).splitlines()[0]) from None
        print(f"janus: {janus.url}  admin key: {janus.config.admin_key}  config: {folder}")
        print(f"janus: log in {janus.log_path}; Ctrl-C stops it", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set() and janus.process is not None:
                if janus.process.poll() is not None:
                    raise UserError(f"janus exited ({janus.process.returncode})")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        finally:
            janus.stop()


async def _room(args: argparse.Namespace) -> None:
    from keyface.server.janus import create_room

    number = await create_room(
        args.janus, args.room, admin_key=args.admin_key, secret=args.secret, pin=args.pin
    )
    print(f"room {args.room!r}: Janus VideoRoom and TextRoom {number}")


def _config(args: argparse.Namespace) -> CodecConfig:
    config = config_for_preset(args.quality, CodecConfig())
    intra = args.intra or PAGE_INTRA
    try:
        return replace(config, size=args.size, intra_codec=intra)
    except ValueError as exc:
        raise UserError(str(exc)) from None


async def _send(args: argparse.Namespace) -> None:
    from keyface.server.janus import JanusSenderClient
    from keyface.server.sender import CameraSource, LiveSender, VideoFileSource

    config = _config(args)
    if args.input:
        source: Any = VideoFileSource(
            existing_file(args.input), loop=args.loop, max_frames=args.max_frames
        )
    else:
        source = CameraSource(args.camera)
    client = JanusSenderClient(args.janus, args.room, args.participant, pin=args.pin)
    try:
        await client.connect()
    except asyncio.TimeoutError:
        await client.close()
        raise UserError("the data channels did not open within 15 s") from None
    except BaseException:
        await client.close()
        raise
    say = None if args.quiet else (lambda line: print(line, flush=True))
    # Many receivers: no acknowledgements (docs/janus.md), periodic motion resets instead.
    sender = LiveSender(
        source, client, config, reset_interval=args.reset_interval, feedback=False, report=say
    )
    try:
        report = await sender.run(duration_s=args.duration)
        await asyncio.sleep(0.3)  # let the last datagrams leave
    finally:
        await client.close()
    print(
        f"sent {report.frames} frames in {report.seconds:.1f} s: uplink {report.kbps:.2f} "
        f"kbit/s mean, {report.keyframes} keyframes ({report.idr_keyframes} IDR), "
        f"{report.refresh_requests} refresh requests, {client.gate.held} held by the gate",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    import aiohttp

    from keyface.server.janus import JanusError

    logging.basicConfig(level=logging.WARNING)
    action = {"serve": _serve, "room": _room, "send": _send}[args.action]
    try:
        asyncio.run(action(args))
    except JanusError as exc:
        raise UserError(f"janus refused: {exc}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UserError(f"cannot reach {getattr(args, 'janus', 'janus')}: {exc}") from None
    return 0
