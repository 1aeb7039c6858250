"""HTTP signalling of the conference server (aiohttp).

======  ==========================  ============================================================
GET     ``/room/<name>``            the receiver page (``static/room.html``)
POST    ``/room/<name>/join``       ``{"sdp","type":"offer","token","role"[,"mode"]}`` -> SDP
                                    answer JSON (``mode``, or ``?mode=``: a receiver's
                                    ``video`` or ``relay``)
GET     ``/room/<name>/state``      participants and their figures (token: ``Authorization:
                                    Bearer <token>`` or ``?token=``)
GET     ``/healthz``                ``ok``
GET     ``/static/decoder/<file>``  the browser decoder's ES modules and motion model
                                    (``static/decoder``, docs/browser.md)
======  ==========================  ============================================================

Errors are JSON ``{"error": "..."}`` with status 400 (malformed body or offer), 401 (missing,
malformed or forged token), 403 (genuine token that does not grant this: expired, another
room, another role; or the room is full), 408 (body not received within
``BODY_TIMEOUT_S``), 409 (the participant is connected and the join has not its resume key),
413 (body over 256 KiB) and 503 (too many rooms). A connection that has not sent a complete
request head within ``HEADER_TIMEOUT_S`` (or stays idle that long between requests) is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from keyface.server.conference import Conference, JoinError, JoinRequest, ServerConfig
from keyface.server.session import RoomError, log_field
from keyface.server.tokens import TokenError

logger = logging.getLogger(__name__)

CONFERENCE = web.AppKey("conference", Conference)
MAX_BODY = 256 * 1024
HEADER_TIMEOUT_S = 10.0
"""A connection must send a complete request head within this long after it opens (and may
stay idle this long between requests): aiohttp's keep-alive timer, armed when the connection
is made, closes it otherwise (a client sending its headers a byte a second held a connection
for an hour on main, issue 14)."""
BODY_TIMEOUT_S = 10.0
"""A request body (at most ``MAX_BODY``) must arrive within this long, else 408."""
MAX_JSON_DEPTH = 16
"""Deepest nesting of arrays / objects accepted in a JSON body (a join needs 1): a deeply
nested body made ``json.loads`` raise RecursionError, a 500 with a traceback on main."""
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]')
"""A string (its closing quote optional, so an unterminated one is consumed once: linear
time) or a bracket."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def decoder_dir() -> str:
    """The browser decoder's folder shipped with the package (``/static/decoder/``)."""
    return str(resources.files("keyface.server").joinpath("static", "decoder"))


def room_page() -> str:
    """The receiver page shipped with the package."""
    return resources.files("keyface.server").joinpath("static/room.html").read_text("utf-8")


async def _page(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[_PAGE],
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped), without
    parsing it."""
    depth = deepest = 0
    for m in _JSON_TOKEN.finditer(data):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def parse_json_body(data: bytes) -> object:
    """The JSON value of a request body; ValueError (one line) if it is not JSON or nests
    deeper than ``MAX_JSON_DEPTH``."""
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ValueError(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ValueError("the body is not JSON") from None


async def _join(request: web.Request) -> web.Response:
    room = request.match_info["name"]
    try:
        data = await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        return _error(408, f"the body did not arrive within {BODY_TIMEOUT_S:.0f} s")
    try:
        body = parse_json_body(data)
    except ValueError as exc:
        return _error(400, str(exc))
    mode = request.query.get("mode")  # ?mode=relay|video, where the body does not say
    if mode is not None and isinstance(body, dict) and "mode" not in body:
        body["mode"] = mode
    conference = request.app[CONFERENCE]
    try:
        answer = await conference.join(room, JoinRequest.from_json(body))
    except (TokenError, RoomError, JoinError) as exc:
        logger.info("join %s refused (%d): %s", log_field(room), exc.http_status, log_field(exc))
        return _error(exc.http_status, str(exc))
    return web.json_response(answer.to_json())


def _token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :].strip()
    return request.query.get("token")


async def _state(request: web.Request) -> web.Response:
    room = request.match_info["name"]
    token = _token(request)
    if not token:
        return _error(401, "a token is needed (Authorization: Bearer <token>)")
    try:
        state: dict[str, Any] = request.app[CONFERENCE].state(room, token)
    except TokenError as exc:
        return _error(exc.http_status, str(exc))
    return web.json_response(state, headers={"Cache-Control": "no-store"})


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


_PAGE = web.AppKey("page", str)


def create_app(config: ServerConfig) -> web.Application:
    """The aiohttp application; its :class:`Conference` is ``app[CONFERENCE]`` and is closed
    with the application."""
    app = web.Application(client_max_size=MAX_BODY)
    app[CONFERENCE] = Conference(config)
    app[_PAGE] = room_page()
    app.router.add_get("/room/{name}", _page)
    app.router.add_post("/room/{name}/join", _join)
    app.router.add_get("/room/{name}/state", _state)
    app.router.add_get("/healthz", _health)
    app.router.add_static("/static/decoder/", decoder_dir())

    async def close(app: web.Application) -> None:
        await app[CONFERENCE].close()

    app.on_shutdown.append(close)
    return app


@dataclass
class RunningServer:
    """A server started by :func:`start_server`."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def conference(self) -> Conference:
        return self.runner.app[CONFERENCE]

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_server(
    config: ServerConfig, host: str = "127.0.0.1", port: int = 8080
) -> RunningServer:
    """Start serving on ``host:port`` (``port=0``: any free port) in the running loop."""
    runner = web.AppRunner(
        create_app(config),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=HEADER_TIMEOUT_S,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return RunningServer(runner, host, int(bound))


async def serve_forever(config: ServerConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection."""
    server = await start_server(config, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    logger.info("listening on %s", server.url)
    print(
        f"keyface serve: listening on {server.url} (receiver page: {server.url}/room/<name>)",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.close()
