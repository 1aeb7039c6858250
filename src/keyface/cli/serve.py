"""``keyface serve``: the conference server (HTTP signalling + WebRTC, see docs/server.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from keyface.cli.main import UserError
from keyface.renderers import DEFAULT_RENDERER

SECRET_ENV = "KEYFACE_SECRET"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="run the conference server",
        description=(
            "Run the conference server: senders join over WebRTC data channels, the server "
            "decodes and renders each of them and publishes a video track per sender; "
            "receivers open GET /room/<name> in a browser. With --relay the server forwards "
            "the datagrams to receivers that decode them (docs/server.md, relay mode)."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument(
        "--secret",
        help=f"token secret, at least 16 bytes (default: the {SECRET_ENV} environment variable)",
    )
    p.add_argument(
        "--generator",
        default=DEFAULT_RENDERER,
        help=f"renderer that animates the faces (default: {DEFAULT_RENDERER})",
    )
    p.add_argument(
        "--model",
        metavar="FILE",
        help="a FOMM model file (keyface import-fomm) that senders code with (keyface send "
        "--motion fomm --model FILE): their streams are drawn by its generator, the others' "
        "by --generator; a stream of another model is refused (checked by digest)",
    )
    p.add_argument("--max-participants", type=int, default=8, help="per room (default 8)")
    p.add_argument("--max-rooms", type=int, default=64, help="rooms at once (default 64)")
    p.add_argument("--workers", type=int, help="decoding threads (default: CPU count)")
    p.add_argument(
        "--cpu-share",
        type=float,
        help="worker CPU seconds per second one sender may use before its media is shed "
        "(default 0.5: a 256x256 sender uses about 0.15; --generator kf-gen-v1 needs more)",
    )
    p.add_argument(
        "--ice-server", action="append", default=[], help="STUN/TURN URL (repeatable; default none)"
    )
    p.add_argument(
        "--relay",
        action="store_true",
        help="relay mode: forward each sender's datagrams to the receivers, which decode them "
        "(join with mode relay); the server decodes and renders nothing",
    )
    p.add_argument(
        "--relay-batch-ms",
        type=float,
        default=20.0,
        help="relay mode: gather a receiver's motion datagrams this long into one message "
        "(default 20; 0: one message each)",
    )
    p.add_argument(
        "--stamp-frames",
        action="store_true",
        help="burn the frame index into the top 16 rows of each picture (latency benchmarks)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v: INFO, -vv: DEBUG")
    return p


def secret_from(value: str | None) -> bytes:
    secret = value if value is not None else os.environ.get(SECRET_ENV)
    if not secret:
        raise UserError(f"a secret is needed: --secret or the {SECRET_ENV} environment variable")
    raw = secret.encode()
    if len(raw) < 16:
        raise UserError("the secret must be at least 16 bytes")
    return raw


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from keyface.server.conference import ServerConfig
    from keyface.server.http import serve_forever
    from keyface.server.session import RoomLimits

    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        logging.getLogger("aioice").setLevel(logging.WARNING)
    if not 0 <= args.port < 65536:
        raise UserError("--port must be in 0..65535")
    if not 0 <= args.relay_batch_ms <= 1000:
        raise UserError("--relay-batch-ms must be in 0..1000")
    if args.max_participants < 1 or args.max_rooms < 1:
        raise UserError("--max-participants and --max-rooms must be >= 1")
    if args.model is not None:
        if args.relay:
            raise UserError(
                "--model: in relay mode the receivers decode, and the browser has no FOMM"
            )
        from keyface.cli._common import existing_file
        from keyface.fomm import use_model
        from keyface.fomm.model import FommModelError

        try:
            use_model(existing_file(args.model))
        except FommModelError as exc:
            raise UserError(str(exc)) from None
    limits = replace(RoomLimits(), max_participants=args.max_participants)
    if args.cpu_share is not None:
        if not 0 < args.cpu_share <= 64:
            raise UserError("--cpu-share must be in (0, 64] CPU seconds per second")
        limits = replace(limits, cpu_share=args.cpu_share)
    config = ServerConfig(
        secret=secret_from(args.secret),
        generator=args.generator,
        limits=limits,
        max_rooms=args.max_rooms,
        stamp_frames=args.stamp_frames,
        workers=args.workers,
        ice_servers=tuple(args.ice_server),
        relay=args.relay,
        relay_batch_s=args.relay_batch_ms / 1000,
    )
    try:
        asyncio.run(serve_forever(config, args.host, args.port))
    except OSError as exc:
        raise UserError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return 0
