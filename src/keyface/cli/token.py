"""``keyface token``: mint a room token (HMAC, see docs/server.md)."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from typing import Any
from urllib.parse import quote

from keyface.cli.main import UserError
from keyface.cli.serve import SECRET_ENV, secret_from


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "token",
        help="mint a token to join a room",
        description="Print a signed token that lets one participant join one room.",
    )
    p.add_argument("--room", required=True, help="room name")
    p.add_argument("--role", choices=("send", "receive"), default="receive")
    p.add_argument(
        "--participant",
        help="participant name (default: <role>-<random>); a second join with the same name "
        "replaces the first connection",
    )
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds of validity (default 3600)")
    p.add_argument("--secret", help=f"token secret (default: ${SECRET_ENV})")
    p.add_argument(
        "--url",
        metavar="SERVER",
        help="print the receiver page URL on SERVER (e.g. http://127.0.0.1:8080) instead",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from keyface.server.tokens import make_token

    participant = args.participant or f"{args.role}-{secrets.token_hex(3)}"
    try:
        token = make_token(
            secret_from(args.secret), args.room, participant, args.role, args.ttl, time.time()
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.url:
        print(f"{args.url.rstrip('/')}/room/{quote(args.room, safe='')}#token={token}")
    else:
        print(token)
    print(f"participant {participant}, role {args.role}, valid {args.ttl:.0f} s", file=sys.stderr)
    return 0
