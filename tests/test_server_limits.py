"""Server limits that hold under abuse (issue 14, item 3): one test per defect found by probing
main as an abusive client would. Sans-I/O where the limit lives in the core; the HTTP ones
through aiohttp on loopback (no WebRTC media)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
import threading
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection
from PIL import Image
from server_utils import SECRET, test_config, token

from keyface.server import http as http_module
from keyface.server.conference import (
    LABEL_AVATAR,
    LABEL_BACKGROUND,
    LABEL_MOTION,
    LABEL_RELIABLE,
    Conference,
    JoinRequest,
    LiveRoom,
    ParticipantConnected,
    SenderPeer,
    ServerConfig,
)
from keyface.server.http import create_app, json_depth, parse_json_body, start_server
from keyface.server.session import RoomLimits, RoomSession, log_field
from keyface.server.tokens import (
    MAX_TOKEN_TTL_S,
    TokenTooLong,
    make_token,
    verify_token,
)


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


# ------------------------------------------------------------------- sans-I/O: the room
def test_a_sender_over_its_cpu_share_is_shed_until_it_has_paid_back() -> None:
    """An abusive sender (huge keyframes, 1024x1024 renders) slowed a sender in another room
    from 30 to 15-17 frames/s on main: the worker time each sender uses is now charged to it
    and its media is dropped while it is over ``cpu_share``."""
    limits = RoomLimits(cpu_share=0.5, cpu_burst_s=2.0)
    room = RoomSession("r", limits)
    room.join("abuser", "send", 0.0)
    assert room.admit("abuser", "unreliable", b"x", 0.0) is not None
    room.charge("abuser", 4.0, 0.1)  # 4 s of worker time: 2 s over its burst
    assert room.admit("abuser", "unreliable", b"x", 0.2) is None
    assert room.admit("abuser", "reliable", b"x", 3.0) is None  # keyframes too
    assert room.participants["abuser"].cpu_limited == 2
    assert room.admit("abuser", "unreliable", b"x", 4.2) is not None  # debt paid at 0.5 s/s


def test_a_sender_using_more_than_its_share_runs_at_low_priority_then_is_dropped() -> None:
    """Cross-room isolation (issue 14): a sender that has used 0.5 s more than its share is
    served at low priority, one in debt is dropped, and it comes back as it pays back."""
    limits = RoomLimits(cpu_share=0.5, cpu_burst_s=3.0, cpu_low_priority_below_s=2.5)
    room = RoomSession("r", limits)
    room.join("s", "send", 0.0)
    assert room.cpu_standing("s", 0.0) == "normal"
    room.charge("s", 0.4, 0.0)  # 2.6 s left
    assert room.cpu_standing("s", 0.0) == "normal"
    room.charge("s", 1.6, 0.0)  # 1 s left
    assert room.cpu_standing("s", 0.0) == "low"
    assert room.admit("s", "unreliable", b"x", 0.0) is not None  # still admitted
    room.charge("s", 2.0, 0.0)  # 1 s in debt
    assert room.cpu_standing("s", 0.0) == "over"
    assert room.admit("s", "unreliable", b"x", 0.0) is None
    assert room.cpu_standing("s", 2.5) == "low"  # paid back at 0.5 s/s: 0.25 s saved
    assert room.cpu_standing("s", 6.5) == "low"  # 2.25 s saved
    assert room.cpu_standing("s", 7.5) == "normal"  # 2.75 s
    assert room.cpu_standing("nobody", 0.0) == "normal"


def test_queued_jobs_of_a_sender_over_its_share_are_dropped_when_they_would_start() -> None:
    """On main the share was checked only when a datagram arrived: an abusive sender's queue
    of 60 admitted 1024x1024 keyframes (1.4 s of CPU each) kept a worker busy long after it
    had spent its share. Now a queued datagram is dropped if its sender is in debt when it
    would start, and a sender over part of its share runs on the low-priority (SCHED_IDLE)
    worker."""

    async def main() -> None:
        limits = replace(
            test_config().limits, cpu_share=0.001, cpu_burst_s=3.0, cpu_low_priority_below_s=2.5
        )
        conference = Conference(replace(test_config(), limits=limits))
        room = LiveRoom(conference, "r")
        participant = room.session.join("s", "send", time.monotonic())
        peer = SenderPeer(room, participant, RTCPeerConnection())
        ran: list[tuple[str, str, int]] = []

        def job(tag: str) -> Any:
            def fn() -> None:
                tid = threading.get_native_id()
                policy = os.sched_getscheduler(tid) if sys.platform == "linux" else 0
                ran.append((tag, threading.current_thread().name, policy))

            return fn

        async def drain() -> None:
            for _ in range(200):
                if peer.backlog == 0:
                    await asyncio.sleep(0.05)  # the last job's executor round trip
                    return
                await asyncio.sleep(0.01)

        try:
            peer._submit(job("normal"), None, datagram=True)
            await drain()
            room.session.charge("s", 2.0, time.monotonic())  # 1 s left: low priority
            peer._submit(job("low"), None, datagram=True)
            await drain()
            room.session.charge("s", 2.0, time.monotonic())  # in debt
            peer._submit(job("dropped"), None, datagram=True)
            peer._submit(job("tick"), None, datagram=False)  # ticks and photos still run
            await drain()
        finally:
            await peer.close("test over")
            await conference.close()
        assert [tag for tag, _, _ in ran] == ["normal", "low", "tick"]
        assert ran[0][1].startswith("keyface-room") and ran[1][1].startswith("keyface-low")
        if sys.platform == "linux":
            # Only the low worker idles (a CI run saw a normal-pool thread not on SCHED_OTHER:
            # threads inherit the policy of the thread that starts them).
            assert ran[0][2] != os.SCHED_IDLE and ran[1][2] == os.SCHED_IDLE
        assert participant.cpu_limited == 1

    _run(main())


def test_first_frame_grace_period() -> None:
    """A sender whose face tracker starts slowly was dropped by the 15 s idle timeout before
    its first frame on main."""
    room = RoomSession("r", RoomLimits(idle_timeout_s=15.0, first_frame_grace_s=60.0))
    room.join("slow", "send", 0.0)
    room.join("quiet", "send", 0.0)
    room.admit("quiet", "unreliable", b"x", 1.0)
    assert room.expire(20.0) == ["quiet"]  # heard once, then silent for 19 s
    assert room.expire(59.0) == []
    assert room.expire(61.0) == ["slow"]


def test_log_fields_are_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """A newline in a room name forged a log line on main."""
    assert log_field("a\nb\r\x1b[31m") == "a\\nb\\r\\x1b[31m"
    assert len(log_field("x" * 10_000)) < 200
    with caplog.at_level(logging.INFO, logger="keyface.server"):
        room = RoomSession("demo\nINFO forged: admin logged in", RoomLimits())
        room.join("eve\nWARNING x", "send", 0.0)
        room.leave("eve\nWARNING x")
    assert caplog.records and all("\n" not in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- tokens
def test_tokens_have_a_maximum_lifetime() -> None:
    now = time.time()
    with pytest.raises(ValueError, match="at most"):
        make_token(SECRET, "r", "a", "send", MAX_TOKEN_TTL_S + 60, now)
    ok = make_token(SECRET, "r", "a", "send", MAX_TOKEN_TTL_S, now)
    assert verify_token(SECRET, ok, "r", now).participant == "a"
    # A token minted (by a clock in the future, or an older issuer) to live for a year:
    forever = make_token(SECRET, "r", "a", "send", 3600, now + 365 * 86400)
    with pytest.raises(TokenTooLong) as exc:
        verify_token(SECRET, forever, "r", now)
    assert exc.value.http_status == 403


def _peer(connected: bool, key: str = "k" * 43) -> Any:
    state = "connected" if connected else "failed"
    return SimpleNamespace(
        closed=False, pc=SimpleNamespace(connectionState=state), resume_key=key, name="alice"
    )


def _request(resume: str | None) -> JoinRequest:
    sdp = "v=0\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
    return JoinRequest(sdp=sdp, type="offer", token="t", role="send", resume=resume)


def test_a_replayed_token_does_not_kick_a_connected_holder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On main a second join with the same token silently replaced the first connection."""
    live = SimpleNamespace(name="r")
    with caplog.at_level(logging.WARNING), pytest.raises(ParticipantConnected) as exc:
        Conference._check_replace(live, _peer(True), _request(None))  # type: ignore[arg-type]
    assert exc.value.http_status == 409
    assert any("replayed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ParticipantConnected):
        Conference._check_replace(live, _peer(True), _request("wrong"))  # type: ignore[arg-type]
    # The holder itself re-joins with its key; a holder whose connection is gone gets back in.
    Conference._check_replace(live, _peer(True), _request("k" * 43))  # type: ignore[arg-type]
    Conference._check_replace(live, _peer(False), _request(None))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- HTTP
def test_offers_without_a_dtls_fingerprint_are_refused() -> None:
    async def main() -> None:
        pc = RTCPeerConnection()
        pc.createDataChannel(LABEL_RELIABLE)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        assert JoinRequest.from_json(
            {"sdp": sdp, "type": "offer", "token": "t", "role": "send"}
        ).sdp
        stripped = "\r\n".join(x for x in sdp.split("\r\n") if "fingerprint" not in x)
        app = create_app(ServerConfig(secret=SECRET))
        async with TestClient(TestServer(app)) as http:
            body = {"sdp": stripped, "type": "offer", "token": token("r", "a"), "role": "send"}
            r = await http.post("/room/r/join", json=body)
            assert r.status == 400 and "fingerprint" in (await r.json())["error"]

    _run(main())


def test_deeply_nested_json_is_a_400_not_a_traceback() -> None:
    assert json_depth(b'{"a": "[[[[", "b": [[1]]}') == 3
    assert parse_json_body(b'{"a": [1]}') == {"a": [1]}
    t0 = time.perf_counter()
    assert json_depth(b'"' + b'\\"' * 120_000) == 0  # an unterminated string: linear time
    assert time.perf_counter() - t0 < 1.0

    async def main() -> None:
        app = create_app(ServerConfig(secret=SECRET))
        async with TestClient(TestServer(app)) as http:
            for body in (b"[" * 100_000, b"[" * 17 + b"]" * 17):
                r = await http.post("/room/r/join", data=body)
                assert r.status == 400 and "deeper" in (await r.json())["error"]

    _run(main())


def test_slow_headers_and_bodies_time_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client sending its request a byte at a time held a connection for an hour on main."""
    monkeypatch.setattr(http_module, "HEADER_TIMEOUT_S", 1.0)
    monkeypatch.setattr(http_module, "BODY_TIMEOUT_S", 1.0)

    async def main() -> None:
        server = await start_server(ServerConfig(secret=SECRET), port=0)
        loop = asyncio.get_running_loop()
        try:
            # Headers that never end: the connection is closed after HEADER_TIMEOUT_S.
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            t0 = loop.time()
            while loop.time() - t0 < 8:
                writer.write(b"X-Slow: 1\r\n")  # keeps sending, a header a quarter second
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(100), 0.25) == b"":
                        break
                except asyncio.TimeoutError:
                    continue
            closed_after = loop.time() - t0
            assert closed_after < 5, closed_after
            writer.close()
            # A body that never comes: 408.
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(b"POST /room/r/join HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 5)
            assert b" 408 " in status, status
            writer.close()
        finally:
            await server.close()

    _run(main())


# --------------------------------------------------------------- the sender's queues
def test_every_kind_of_message_has_a_bounded_queue() -> None:
    """The per-sender job queue was unbounded except for motion on main (an authenticated
    sender grew the server from 0.6 to 2.4 GB): it now holds at most ``max_queue`` jobs, motion
    ``max_backlog``, and one background and one avatar photo at a time."""

    async def main() -> None:
        config = replace(test_config(), max_queue=40, max_backlog=20)
        conference = Conference(config)
        room = LiveRoom(conference, "r")
        participant = room.session.join("s", "send", time.monotonic())
        peer = SenderPeer(room, participant, RTCPeerConnection())
        try:
            # The event loop does not run in between: nothing is taken off the queue.
            for _ in range(5):
                peer._on_message(LABEL_BACKGROUND, b"b" * 1000)
                peer._on_message(LABEL_AVATAR, b"a" * 1000)
            assert peer.backlog == 2 and peer.shed == 8
            for _ in range(100):
                peer._on_message(LABEL_MOTION, b"m" * 100)
            assert peer.backlog == 20
            for _ in range(100):
                peer._on_message(LABEL_RELIABLE, b"k" * 100)
            assert peer.backlog == 40
            assert peer.shed == 8 + 82 + 80
        finally:
            await peer.close("test over")
            await conference.close()

    _run(main())


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF", "WEBP"])
def test_avatar_photos_outside_the_allowlist_are_not_decoded(fmt: str) -> None:
    from keyface.server.pictures import AVATAR_FORMATS, SenderPictures
    from keyface.server.receiver import ParticipantDecoder

    assert fmt not in AVATAR_FORMATS
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(buf, format=fmt)
    decoder = ParticipantDecoder("s")
    pictures = SenderPictures("s", decoder, "warp")
    pictures.take_avatar(buf.getvalue())
    assert pictures.avatar is None and decoder.stats.malformed == 1


def test_json_join_body_still_accepted_by_a_page_like_client() -> None:
    """The limits do not break a valid join body (resume key absent or present)."""
    sdp = "v=0\r\na=fingerprint:sha-256 " + ":".join(["0F"] * 32) + "\r\n"
    body = json.dumps({"sdp": sdp, "type": "offer", "token": "t", "role": "receive"}).encode()
    request = JoinRequest.from_json(parse_json_body(body))
    assert request.resume is None and request.role == "receive"
