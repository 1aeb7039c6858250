"""keyface streams through a stock SFU: Janus (issue 16, item 3; docs/janus.md).

A speaker publishes its live datagrams into a Janus **VideoRoom** as a data-only publisher (the
two data channels of ``keyface send``: ``keyface-reliable`` and ``keyface-motion``); every
receiver subscribes to that publisher's data stream and decodes the datagrams itself with a
:class:`~keyface.server.receiver.ParticipantDecoder`. The VideoRoom forwards binary messages
and only from publishers to subscribers, so the way back (REFRESH_REQUEST and AUX_REFRESH
from a receiver that joined late or lost a keyframe) goes through the **TextRoom** of the same
number: a whisper (``"to"``) to the sender's user name, the datagram in base64. Nothing of
keyface runs inside Janus; keyface only speaks its HTTP API (``/janus``, long-polled events).

* :func:`janus_room_id`: the Janus room number a keyface room name maps to;
* :func:`write_config`, :class:`JanusProcess`: a minimal Janus of our own (HTTP transport on
  loopback, the VideoRoom and TextRoom plugins only, no STUN) for tests and local use;
* :class:`JanusSession` / :class:`JanusHandle`: the Janus API over HTTP (aiohttp);
* :func:`create_room`: the VideoRoom and TextRoom of a keyface room (secret, pin, admin key);
* :class:`JanusSenderClient`: a :class:`~keyface.server.client.SenderClient` look-alike, so
  :class:`~keyface.server.sender.LiveSender` and the tests' replay drive it unchanged;
* :class:`JanusReceiverClient`: subscribes to one sender, decodes, asks for refreshes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import glob
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from keyface.render import Renderer
from keyface.server.client import DatagramSender, TransportStats, rtc_configuration
from keyface.server.conference import LABEL_MOTION, LABEL_RELIABLE
from keyface.server.datagram import KIND_AUX_REFRESH, KIND_FEEDBACK, DatagramError, parse_datagram
from keyface.server.lossmodel import LossModel, RandomLoss
from keyface.server.receiver import ParticipantDecoder, RenderedFrame
from keyface.server.session import Datagram

logger = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
TEXTROOM = "janus.plugin.textroom"
PLUGINS = ("libjanus_videoroom.so", "libjanus_textroom.so")
"""The only plugins our Janus loads."""
TRANSPORTS = ("libjanus_http.so",)
LIB_DIRS = (
    "/usr/lib/*/janus",  # Debian, Ubuntu
    "/usr/lib64/janus",
    "/usr/lib/janus",
    "/usr/local/lib/janus",
    "/opt/janus/lib/janus",  # janus-gateway's own `make install`
)
REFRESH_GATE_S = 0.5
"""A sender forces at most one IDR per this long for its subscribers' refresh requests (a
request made while the gate is closed is applied when it opens, unless an IDR went out): many
receivers joining at once cost one keyframe, as the relay server's gate does."""
FEEDBACK_KINDS = (KIND_FEEDBACK, KIND_AUX_REFRESH)
"""What a Janus receiver sends back. Not ACKs: a sender coding from acknowledged frames
assumes a single receiver, and a Janus room has many (the sender runs with periodic motion
resets, ``SenderSession`` without acknowledgements)."""


class JanusError(Exception):
    """Janus answered with an error (``code`` is Janus's or the plugin's error code)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message if code is None else f"{message} (code {code})")
        self.code = code


def janus_room_id(room: str) -> int:
    """The Janus room number of keyface room ``room``: the first 48 bits of its SHA-256 (an
    integer JavaScript holds exactly; Janus rooms are numbers unless ``string_ids`` is set)."""
    return int.from_bytes(hashlib.sha256(room.encode()).digest()[:6], "big") or 1


# -- our own Janus ------------------------------------------------------------------------------
def find_janus() -> str | None:
    """The ``janus`` executable (``$KEYFACE_JANUS`` or ``PATH``), or ``None``."""
    named = os.environ.get("KEYFACE_JANUS")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("janus") or (
        "/usr/bin/janus" if os.access("/usr/bin/janus", os.X_OK) else None
    )


def find_lib_dir() -> Path | None:
    """The folder with Janus's ``plugins/`` and ``transports/`` that hold what we load."""
    for pattern in LIB_DIRS:
        for folder in sorted(glob.glob(pattern)):
            path = Path(folder)
            if all((path / "plugins" / p).exists() for p in PLUGINS) and all(
                (path / "transports" / t).exists() for t in TRANSPORTS
            ):
                return path
    return None


@dataclass(frozen=True)
class JanusConfig:
    """What :func:`write_config` writes."""

    http_port: int
    admin_key: str
    """VideoRoom/TextRoom ``admin_key``: needed to create rooms (keyface's, not the clients')."""
    rtp_ports: tuple[int, int] = (20000, 20999)
    host: str = "127.0.0.1"
    ice_interface: str | None = None
    """ICE candidates on this interface only (``ice_enforce_list``); ``None``: the machine's
    own addresses (libnice, like aiortc, never offers loopback candidates, so a loopback test
    uses the host's addresses: packets between them stay in the kernel). No STUN either way."""
    debug_level: int = 3
    session_timeout_s: int = 60

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}/janus"


def write_config(folder: str | Path, config: JanusConfig, lib_dir: Path) -> Path:
    """Write a minimal Janus configuration into ``folder``: the HTTP transport on
    ``config.host`` only, the VideoRoom and TextRoom plugins only (symbolic links to them in
    ``folder/plugins`` and ``folder/transports``, so nothing else loads), ICE on
    ``config.ice_interface`` only, no STUN, no mDNS, no event handlers or loggers; returns the
    path of ``janus.jcfg``."""
    folder = Path(folder)
    for sub, names in (("plugins", PLUGINS), ("transports", TRANSPORTS)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = folder / sub / name
            if not link.exists():
                link.symlink_to(lib_dir / sub / name)
    (folder / "none").mkdir(exist_ok=True)
    lo, hi = config.rtp_ports
    enforce = f'\tice_enforce_list = "{config.ice_interface}"\n' if config.ice_interface else ""
    files = {
        "janus.jcfg": f"""general: {{
	configs_folder = "{folder}"
	plugins_folder = "{folder}/plugins"
	transports_folder = "{folder}/transports"
	events_folder = "{folder}/none"
	loggers_folder = "{folder}/none"
	debug_level = {config.debug_level}
	session_timeout = {config.session_timeout_s}
	server_name = "keyface"
}}
media: {{
	rtp_port_range = "{lo}-{hi}"
}}
nat: {{
	nice_debug = false
{enforce}	ignore_mdns = true
}}
plugins: {{ }}
transports: {{ }}
events: {{ broadcast = false }}
loggers: {{ }}
""",
        "janus.transport.http.jcfg": f"""general: {{
	json = "plain"
	base_path = "/janus"
	http = true
	port = {config.http_port}
	ip = "{config.host}"
	https = false
}}
admin: {{ admin_http = false }}
""",
        "janus.plugin.videoroom.jcfg": f'general: {{\n\tadmin_key = "{config.admin_key}"\n}}\n',
        "janus.plugin.textroom.jcfg": (
            f'general: {{\n\tjson = "plain"\n\tadmin_key = "{config.admin_key}"\n}}\n'
        ),
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder / "janus.jcfg"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class JanusProcess:
    """A Janus of our own in ``folder`` (see :func:`write_config`); ``start()`` returns once
    its HTTP API answers, ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(
        self, folder: str | Path, *, http_port: int | None = None, executable: str | None = None
    ) -> None:
        exe = executable or find_janus()
        lib_dir = find_lib_dir()
        if exe is None or lib_dir is None:
            raise FileNotFoundError("janus is not installed (scripts/install_janus.sh)")
        self.executable = exe
        self.folder = Path(folder)
        self.config = JanusConfig(
            http_port=http_port or free_port(), admin_key=secrets.token_urlsafe(16)
        )
        self.config_file = write_config(self.folder, self.config, lib_dir)
        self.log_path = self.folder / "janus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.config.url

    async def start(self, timeout: float = 20.0) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [self.executable, "-F", str(self.folder), "-C", str(self.config_file), "-o"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        end = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"janus exited ({self.process.returncode}): {self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(self.url + "/info", timeout=aiohttp.ClientTimeout(1)) as r:
                        if r.status == 200:
                            return
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(
                        f"janus did not answer in {timeout:.0f} s: {self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# -- the Janus API over HTTP --------------------------------------------------------------------
def _transaction() -> str:
    return secrets.token_hex(6)


class JanusSession:
    """One Janus session over the HTTP transport: requests are POSTed, events long-polled
    (``GET /janus/<session>?maxev=``) by one task, which also keeps the session alive."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.id: int | None = None
        self.handles: dict[int, JanusHandle] = {}
        self._http: aiohttp.ClientSession | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def create(self) -> JanusSession:
        self._http = aiohttp.ClientSession()
        try:
            answer = await self._post(self.url, {"janus": "create"})
        except BaseException:
            await self._http.close()
            self._http = None
            raise
        self.id = int(answer["data"]["id"])
        self._poller = asyncio.ensure_future(self._poll())
        return self

    async def attach(self, plugin: str) -> JanusHandle:
        answer = await self._post(self.session_url, {"janus": "attach", "plugin": plugin})
        handle = JanusHandle(self, int(answer["data"]["id"]), plugin)
        self.handles[handle.id] = handle
        return handle

    @property
    def session_url(self) -> str:
        return f"{self.url}/{self.id}"

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        body = {**body, "transaction": body.get("transaction") or _transaction()}
        async with self._http.post(url, json=body) as response:
            answer = await response.json(content_type=None)
        if answer.get("janus") == "error":
            error = answer.get("error", {})
            raise JanusError(str(error.get("reason", "janus error")), error.get("code"))
        return dict(answer)

    async def request(self, url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A request Janus acknowledges at once and answers with an event (same transaction)."""
        transaction = _transaction()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future
        try:
            answer = await self._post(url, {**body, "transaction": transaction})
            if answer.get("janus") != "ack":
                return answer  # answered synchronously
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(transaction, None)

    async def _poll(self) -> None:
        assert self._http is not None
        while True:
            try:
                async with self._http.get(
                    f"{self.session_url}?maxev=10", timeout=aiohttp.ClientTimeout(total=40)
                ) as response:
                    events = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                logger.debug("janus: event poll failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for event in events if isinstance(events, list) else [events]:
                self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("janus")
        if kind == "keepalive":
            return
        future = self._waiting.get(str(event.get("transaction", "")))
        if future is not None and not future.done() and kind in ("event", "success", "error"):
            if kind == "error":
                error = event.get("error", {})
                future.set_exception(JanusError(str(error.get("reason")), error.get("code")))
            else:
                future.set_result(event)
            return
        handle = self.handles.get(int(event.get("sender", 0) or 0))
        if handle is not None:
            handle.events.put_nowait(event)

    async def destroy(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
        if self._http is not None:
            if self.id is not None:
                with contextlib.suppress(aiohttp.ClientError, JanusError, asyncio.TimeoutError):
                    await self._post(self.session_url, {"janus": "destroy"})
            await self._http.close()
            self._http = None


class JanusHandle:
    """A plugin handle; ``events`` receives the plugin's unsolicited events."""

    def __init__(self, session: JanusSession, handle_id: int, plugin: str) -> None:
        self.session = session
        self.id = handle_id
        self.plugin = plugin
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @property
    def url(self) -> str:
        return f"{self.session.session_url}/{self.id}"

    async def message(
        self, body: dict[str, Any], jsep: dict[str, str] | None = None, timeout: float = 15.0
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        """Send a plugin request; returns the plugin's answer (``plugindata.data``) and the
        JSEP that came with it. A plugin error (``error_code``) raises :class:`JanusError`."""
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        answer = await self.session.request(self.url, request, timeout)
        data = dict(answer.get("plugindata", {}).get("data", {}))
        if "error_code" in data or "error" in data:
            raise JanusError(str(data.get("error", "plugin error")), data.get("error_code"))
        return data, answer.get("jsep")


async def create_room(
    url: str,
    room: str,
    *,
    admin_key: str | None,
    secret: str | None = None,
    pin: str | None = None,
    publishers: int = 16,
) -> int:
    """Create the VideoRoom and the TextRoom of keyface room ``room`` (same number) unless
    they exist; returns the number. ``secret``: needed to edit or destroy them; ``pin``:
    needed to join (docs/janus.md, "Authentication")."""
    number = janus_room_id(room)
    session = await JanusSession(url).create()
    try:
        for plugin in (VIDEOROOM, TEXTROOM):
            handle = await session.attach(plugin)
            exists, _ = await handle.message({"request": "exists", "room": number})
            if exists.get("exists"):
                continue
            body: dict[str, Any] = {
                "request": "create",
                "room": number,
                "description": f"keyface {room}"[:120],
                "is_private": True,
            }
            if plugin == VIDEOROOM:
                # data-only publishers; no audio/video levels, no recording
                body.update(publishers=publishers, audiolevel_event=False, record=False)
            for key, value in (("admin_key", admin_key), ("secret", secret), ("pin", pin)):
                if value is not None:
                    body[key] = value
            await handle.message(body)
    finally:
        await session.destroy()
    return number


def _jsep(pc: RTCPeerConnection) -> dict[str, str]:
    return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}


class _FeedbackRoom:
    """A TextRoom membership: ``whisper(to, payload)`` sends bytes (base64) to one user;
    ``on_message(sender, payload)`` gets the bytes whispered to us."""

    def __init__(self, session: JanusSession, number: int, username: str, pin: str | None):
        self.session, self.number, self.username, self.pin = session, number, username, pin
        self.on_message: Callable[[str, bytes], None] | None = None
        self.pc = RTCPeerConnection(rtc_configuration())
        self.pc.on("datachannel", self._remote_channel)
        self.channel: RTCDataChannel | None = None
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.malformed = 0
        self.errors: list[str] = []
        """Errors Janus answered to whispers (``ack`` is off, so they come unasked)."""

    async def join(self, timeout: float) -> None:
        handle = await self.session.attach(TEXTROOM)
        _, offer = await handle.message({"request": "setup"})
        assert offer is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(**offer))
        self.channel = self.pc.createDataChannel("keyface-feedback")
        self.channel.on("message", self._message)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await handle.message({"request": "ack"}, jsep=_jsep(self.pc))
        await _opened(self.channel, timeout)
        body: dict[str, Any] = {"username": self.username, "display": self.username}
        if self.pin is not None:
            body["pin"] = self.pin
        await self._request("join", body, timeout)

    async def _request(self, what: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.channel is not None
        transaction = _transaction()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[transaction] = future
        self.channel.send(
            json.dumps({"textroom": what, "transaction": transaction, "room": self.number, **body})
        )
        try:
            answer = await asyncio.wait_for(future, timeout)
        finally:
            self._answers.pop(transaction, None)
        if answer.get("textroom") == "error":
            raise JanusError(str(answer.get("error")), answer.get("error_code"))
        return answer

    def _remote_channel(self, channel: RTCDataChannel) -> None:
        channel.on("message", self._message)

    def whisper(self, to: str, payload: bytes) -> bool:
        if self.channel is None or self.channel.readyState != "open":
            return False
        text = base64.b64encode(payload).decode()
        self.channel.send(
            json.dumps(
                {
                    "textroom": "message",
                    "transaction": _transaction(),
                    "room": self.number,
                    "to": to,
                    "text": text,
                    "ack": False,
                }
            )
        )
        return True

    def _message(self, message: object) -> None:
        try:
            event = json.loads(message) if isinstance(message, str) else None
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.malformed += 1
            return
        future = self._answers.get(str(event.get("transaction", "")))
        if future is not None and not future.done():
            future.set_result(event)
            return
        if event.get("textroom") == "error":
            self.errors.append(str(event.get("error")))
            return
        if event.get("textroom") != "message" or not event.get("whisper"):
            return  # joins, leaves: not ours to act on
        try:
            payload = base64.b64decode(str(event.get("text", "")), validate=True)
        except ValueError:
            self.malformed += 1
            return
        if self.on_message is not None:
            self.on_message(str(event.get("from", "")), payload)

    async def close(self) -> None:
        await self.pc.close()


async def _opened(channel: RTCDataChannel, timeout: float) -> None:
    if channel.readyState == "open":
        return
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await asyncio.wait_for(opened.wait(), timeout)


# -- sender -------------------------------------------------------------------------------------
class RefreshGate:
    """At most one forced IDR per ``interval_s`` for any number of requesting receivers
    (sans-I/O: ``now`` passed in). ``offer(now)`` says whether to act now; a request that
    finds the gate closed is kept and ``due(now)`` releases it when the gate opens."""

    def __init__(self, interval_s: float = REFRESH_GATE_S) -> None:
        self.interval_s = interval_s
        self._last: float | None = None
        self._held: bytes | None = None
        self.held = 0

    def offer(self, payload: bytes, now: float) -> bool:
        if self._last is None or now - self._last >= self.interval_s:
            self._last = now
            self._held = None
            return True
        self._held = payload
        self.held += 1
        return False

    def due(self, now: float) -> bytes | None:
        if (
            self._held is not None
            and self._last is not None
            and now - self._last >= self.interval_s
        ):
            payload, self._held, self._last = self._held, None, now
            return payload
        return None


class JanusSenderClient(DatagramSender):
    """A sender publishing into the Janus VideoRoom of keyface room ``room`` as ``participant``
    (the publisher's ``display``; also its TextRoom user name, where refresh requests come
    from). The same interface as :class:`~keyface.server.client.SenderClient` (``connect``,
    ``send``, ``connected``, ``on_feedback``, ``stats``, ``close``), so ``LiveSender`` drives it.
    Feedback from the receivers passes a :class:`RefreshGate` before ``on_feedback``."""

    def __init__(
        self,
        url: str,
        room: str,
        participant: str,
        *,
        pin: str | None = None,
        loss: float = 0.0,
        seed: int = 0,
        loss_model: LossModel | None = None,
        on_feedback: Callable[[bytes], None] | None = None,
        refresh_gate_s: float = REFRESH_GATE_S,
    ) -> None:
        self.url, self.room, self.participant, self.pin = url, room, participant, pin
        self.number = janus_room_id(room)
        self.loss = loss_model if loss_model is not None else RandomLoss(loss, seed)
        self.on_feedback = on_feedback
        self.stats = TransportStats()
        self.gate = RefreshGate(refresh_gate_s)
        self.feed_id: int | None = None
        self.session = JanusSession(url)
        self.pc = RTCPeerConnection(rtc_configuration())
        self.reliable = self.pc.createDataChannel(LABEL_RELIABLE)
        self.motion = self.pc.createDataChannel(LABEL_MOTION, ordered=False, maxRetransmits=0)
        self.feedback_room: _FeedbackRoom | None = None
        self._gate_task: asyncio.Task[None] | None = None
        self._t0: float | None = None

    async def connect(self, timeout: float = 15.0) -> None:
        """Join the VideoRoom as a publisher, publish the data channels, join the TextRoom."""
        await self.session.create()
        handle = await self.session.attach(VIDEOROOM)
        body: dict[str, Any] = {
            "request": "join",
            "ptype": "publisher",
            "room": self.number,
            "display": self.participant,
        }
        if self.pin is not None:
            body["pin"] = self.pin
        joined, _ = await handle.message(body, timeout=timeout)
        self.feed_id = int(joined["id"])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        _, answer = await handle.message({"request": "publish"}, jsep=_jsep(self.pc))
        if answer is None:
            raise JanusError("janus answered the publish without an SDP answer")
        await self.pc.setRemoteDescription(RTCSessionDescription(**answer))
        self.feedback_room = _FeedbackRoom(self.session, self.number, self.participant, self.pin)
        self.feedback_room.on_message = self._feedback
        await self.feedback_room.join(timeout)
        for channel in (self.reliable, self.motion):
            await _opened(channel, timeout)
        self._gate_task = asyncio.ensure_future(self._release_held())

    def _feedback(self, sender: str, payload: bytes) -> None:
        self.stats.feedback += 1
        try:
            kind = parse_datagram(payload).kind
        except DatagramError:
            return
        if kind == KIND_FEEDBACK and not self.gate.offer(payload, time.monotonic()):
            return
        if self.on_feedback is not None:
            self.on_feedback(payload)

    async def _release_held(self) -> None:
        while True:
            await asyncio.sleep(self.gate.interval_s / 4)
            payload = self.gate.due(time.monotonic())
            if payload is not None and self.on_feedback is not None:
                self.on_feedback(payload)

    def send_background(self, payload: bytes) -> bool:
        """Not carried: Janus receivers compose no full frame yet (docs/janus.md)."""
        self.stats.unsendable += 1
        return False

    def send_avatar(self, payload: bytes) -> bool:
        """Not carried (docs/janus.md)."""
        self.stats.unsendable += 1
        return False

    async def close(self) -> None:
        if self._gate_task is not None:
            self._gate_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gate_task
        if self.feedback_room is not None:
            await self.feedback_room.close()
        await self.pc.close()
        await self.session.destroy()


# -- receiver -----------------------------------------------------------------------------------
@dataclass
class JanusReceiverStats:
    messages: int = 0
    bytes: int = 0
    feedback_sent: int = 0
    feedback_unsent: int = 0


@dataclass
class JanusReceiverClient:
    """Subscribes to sender ``participant`` in the Janus VideoRoom of keyface room ``room``
    and decodes its datagrams with a :class:`ParticipantDecoder` (rendered frames in
    :attr:`frames`); refresh requests go back to the sender as TextRoom whispers.
    ``username``: this receiver's TextRoom name (default a random one)."""

    url: str
    room: str
    participant: str
    pin: str | None = None
    username: str = ""
    keep_images: bool = True
    tick_s: float = 0.05
    frames: list[RenderedFrame] = field(default_factory=list)
    stats: JanusReceiverStats = field(default_factory=JanusReceiverStats)
    on_frame: Callable[[RenderedFrame], None] | None = None
    renderer: Renderer | None = None
    """The decoder's renderer (default: ``keyface.renderers.get_renderer()``)."""
    decode: bool = True
    """``False``: only count what arrives (``stats``; load benchmarks)."""

    def __post_init__(self) -> None:
        self.number = janus_room_id(self.room)
        self.username = self.username or f"receive-{secrets.token_hex(4)}"
        self.decoder = ParticipantDecoder(self.participant, renderer=self.renderer)
        self.session = JanusSession(self.url)
        self.pc = RTCPeerConnection(rtc_configuration())
        self.pc.on("datachannel", self._channel)
        self.feedback_room: _FeedbackRoom | None = None
        self.channels: list[str] = []
        self._ticker: asyncio.Task[None] | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyface-janus")

    async def find_feed(self, handle: JanusHandle, timeout: float) -> int:
        """The VideoRoom feed id of ``participant`` (waits until it publishes)."""
        end = time.monotonic() + timeout
        while True:
            data, _ = await handle.message({"request": "listparticipants", "room": self.number})
            for p in data.get("participants", []):
                if p.get("display") == self.participant and p.get("publisher"):
                    return int(p["id"])
            if time.monotonic() > end:
                raise JanusError(f"no publisher {self.participant!r} in the room")
            await asyncio.sleep(0.2)

    async def connect(self, timeout: float = 15.0) -> None:
        """Join the TextRoom (the way back), then subscribe to the sender's data."""
        await self.session.create()
        room = _FeedbackRoom(self.session, self.number, self.username, self.pin)
        await room.join(timeout)
        self.feedback_room = room
        handle = await self.session.attach(VIDEOROOM)
        feed = await self.find_feed(handle, timeout)
        body: dict[str, Any] = {
            "request": "join",
            "ptype": "subscriber",
            "room": self.number,
            "streams": [{"feed": feed}],
        }
        if self.pin is not None:
            body["pin"] = self.pin
        _, offer = await handle.message(body, timeout=timeout)
        if offer is None:
            raise JanusError("janus sent no offer for the subscription")
        await self.pc.setRemoteDescription(RTCSessionDescription(**offer))
        # Janus forwards data to a subscriber only once the subscriber has opened a channel
        # itself (its "data ready"): this one carries nothing.
        self._ready = self.pc.createDataChannel("keyface-subscriber")
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await handle.message({"request": "start"}, jsep=_jsep(self.pc), timeout=timeout)
        await _opened(self._ready, timeout)
        if self.decode:
            self._ticker = asyncio.ensure_future(self._tick())

    def _channel(self, channel: RTCDataChannel) -> None:
        self.channels.append(channel.label)
        channel.on("message", self._message)

    def _message(self, message: object) -> None:
        if not isinstance(message, bytes):
            return
        self.stats.messages += 1
        self.stats.bytes += len(message)
        if self.decode:
            self._decode(self.decoder.receive, message, time.monotonic())

    def _decode(self, job: Callable[..., list[RenderedFrame]], *args: Any) -> None:
        """Decoding and rendering run on this receiver's worker thread, one job at a time
        in arrival order; the event loop only moves bytes."""
        future = asyncio.get_running_loop().run_in_executor(self._worker, self._job, job, *args)
        future.add_done_callback(self._decoded)

    def _job(
        self, job: Callable[..., list[RenderedFrame]], *args: Any
    ) -> tuple[list[RenderedFrame], list[Datagram]]:
        frames = job(*args)
        return frames, self.decoder.datagrams_to_send()

    def _decoded(self, future: asyncio.Future[tuple[list[RenderedFrame], list[Datagram]]]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            logger.warning("janus receiver: decoding failed: %s", future.exception())
            return
        frames, outbox = future.result()
        for f in frames:
            self.frames.append(f if self.keep_images else _without_image(f))
            if self.on_frame is not None:
                self.on_frame(f)
        self._send_feedback(outbox)

    def _send_feedback(self, outbox: list[Datagram]) -> None:
        for d in outbox:
            if parse_datagram(d.payload).kind not in FEEDBACK_KINDS:
                continue  # ACKs: see FEEDBACK_KINDS
            room = self.feedback_room
            if room is not None and room.whisper(self.participant, d.payload):
                self.stats.feedback_sent += 1
            else:
                self.stats.feedback_unsent += 1

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self._decode(self.decoder.tick, time.monotonic())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.feedback_room is not None:
            await self.feedback_room.close()
        await self.pc.close()
        await self.session.destroy()
        await asyncio.get_running_loop().run_in_executor(None, self._worker.shutdown)


def _without_image(f: RenderedFrame) -> RenderedFrame:
    return replace(f, image=np.zeros((0, 0, 3), np.uint8), reference=None)
