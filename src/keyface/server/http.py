"""HTTP signalling of the conference server (aiohttp).

======  ==========================  ============================================================
GET     ``/room/<name>``            the receiver page (``static/room.html``)
POST    ``/room/<name>/join``       ``{"sdp","type":"offer","token","role"}`` -> SDP answer JSON
GET     ``/room/<name>/state``      participants and their figures (token: ``Authorization:
                                    Bearer <token>`` or ``?token=``)
GET     ``/healthz``                ``ok``
======  ==========================  ============================================================

Errors are JSON ``{"error": "..."}`` with status 400 (malformed body or offer), 401 (missing,
malformed or forged token), 403 (genuine token that does not grant this: expired, another
room, another role; or the room is full), 413 (body over 256 KiB) and 503 (too many rooms).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from keyface.server.conference import Conference, JoinError, JoinRequest, ServerConfig
from keyface.server.session import RoomError
from keyface.server.tokens import TokenError

logger = logging.getLogger(__name__)

CONFERENCE = web.AppKey("conference", Conference)
MAX_BODY = 256 * 1024


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def room_page() -> str:
    """The receiver page shipped with the package."""
    return resources.files("keyface.server").joinpath("static/room.html").read_text("utf-8")


async def _page(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[_PAGE],
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


async def _join(request: web.Request) -> web.Response:
    room = request.match_info["name"]
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "the body is not JSON")
    conference = request.app[CONFERENCE]
    try:
        answer = await conference.join(room, JoinRequest.from_json(body))
    except (TokenError, RoomError, JoinError) as exc:
        logger.info("join %s refused (%d): %s", room, exc.http_status, exc)
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
    runner = web.AppRunner(create_app(config), access_log=None, handle_signals=False)
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
