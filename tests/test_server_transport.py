"""The conference transport: HTTP signalling, WebRTC data channels in, video tracks out.

Everything runs in one process on loopback: an aiohttp server (``keyface.server.http``),
aiortc senders and receivers (``keyface.server.client``). The server stamps the frame index
into each picture (``stamp_frames``), so what a receiver decodes is compared with the frame
the same datagrams decode to without a network (``server_utils.reference_frames``).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection
from PIL import Image
from server_utils import (
    SECRET,
    drained,
    encode_clip,
    psnr,
    reference_frames,
    replay,
    test_config,
    token,
    wait_until,
)

from keyface.bitstream import BackgroundPacket
from keyface.codec.config import CodecConfig
from keyface.intra import get_intra_codec
from keyface.io import read_frames
from keyface.pipeline import cropped_frames, flatten_inside
from keyface.server import RoomLimits, make_token
from keyface.server.client import (
    JoinRefused,
    ReceiverClient,
    SenderClient,
    fetch_state,
    rtc_configuration,
)
from keyface.server.conference import LABEL_RELIABLE, JoinRequest, ServerConfig
from keyface.server.http import CONFERENCE, create_app, start_server
from keyface.server.media import read_stamp, stamp_index
from keyface.server.sender import LiveSender, VideoFileSource

pytestmark = pytest.mark.slow  # real WebRTC sessions on loopback, several seconds each


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 240))


@pytest.fixture(scope="module")
def clip(carphone_analysis) -> list[list]:
    """120 frames of carphone face-crop datagrams (ping-pong over the 40 analysed frames)."""
    a = carphone_analysis
    crops = [img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count)]
    return encode_clip(crops, a.landmarks, 120, crop=a.crop)


@pytest.fixture(scope="module")
def reference(clip) -> dict[int, np.ndarray]:
    return reference_frames(clip)


async def _offer_sdp() -> str:
    pc = RTCPeerConnection(rtc_configuration())
    pc.createDataChannel(LABEL_RELIABLE)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


# ------------------------------------------------------------------------------- stamps
def test_stamp_round_trip() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)
    for index in (0, 1, 77, 16383, 16384 + 5):
        stamped = stamp_index(image, index)
        assert read_stamp(stamped) == index % 16384
        assert np.array_equal(stamped[16:], image[16:])
    assert read_stamp(image) is None
    with pytest.raises(ValueError):
        stamp_index(image[:, :100], 1)


def test_join_request_validation() -> None:
    sdp = "v=0\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
    ok = {"sdp": sdp, "type": "offer", "token": "t", "role": "send"}
    assert JoinRequest.from_json(ok).role == "send"
    for bad, status in [
        ([], 400),
        ({**ok, "token": ""}, 401),
        ({k: v for k, v in ok.items() if k != "token"}, 401),
        ({**ok, "token": 5}, 401),
        ({k: v for k, v in ok.items() if k != "sdp"}, 400),
        ({**ok, "type": "answer"}, 400),
        ({**ok, "role": "admin"}, 400),
        ({**ok, "sdp": ""}, 400),
        ({**ok, "sdp": "v=0\r\n"}, 400),  # no DTLS fingerprint
        ({**ok, "resume": 5}, 400),
    ]:
        with pytest.raises(Exception) as exc:
            JoinRequest.from_json(bad)
        assert exc.value.http_status == status, bad  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- HTTP signalling
def test_signalling_status_codes() -> None:
    async def main() -> None:
        limits = replace(RoomLimits(), max_participants=1)
        app = create_app(ServerConfig(secret=SECRET, limits=limits))
        async with TestClient(TestServer(app)) as http:
            sdp = await _offer_sdp()

            async def join(body: Any, room: str = "r1") -> tuple[int, dict]:
                data = body if isinstance(body, (bytes, str)) else json.dumps(body)
                r = await http.post(f"/room/{room}/join", data=data)
                return r.status, await r.json()

            def req(tok: str, role: str = "send", **kw: Any) -> dict:
                return {"sdp": sdp, "type": "offer", "token": tok, "role": role, **kw}

            now = time.time()
            assert (await join(b"{not json"))[0] == 400
            assert (await join("[1, 2]"))[0] == 400
            assert (await join({"sdp": sdp, "type": "offer", "role": "send"}))[0] == 401
            assert (await join(req("not-a-token")))[0] == 401
            other = make_token(b"another-secret-0123456789", "r1", "a", "send", 60, now)
            assert (await join(req(other)))[0] == 401
            expired = make_token(SECRET, "r1", "a", "send", 10, now - 60)
            assert (await join(req(expired)))[0] == 403
            assert (await join(req(token("r2", "a"))))[0] == 403  # another room
            assert (await join(req(token("r1", "a", "receive"), role="send")))[0] == 403
            assert (await join(req(token("r1", "a"), role="viewer")))[0] == 400
            assert (await join(req(token("r1", "a"), type="answer")))[0] == 400
            status, body = await join(req(token("r1", "a"), sdp="v=0\r\ngarbage\r\n"))
            assert status == 400 and "offer" in body["error"]
            conference = app[CONFERENCE]
            assert "r1" not in conference.rooms  # the failed join left nothing behind

            status, body = await join(req(token("r1", "a")))
            assert status == 200 and body["type"] == "answer" and body["participant"] == "a"
            assert "a=sctp-port" in body["sdp"] or "webrtc-datachannel" in body["sdp"]
            status, body = await join(req(token("r1", "b")))
            assert status == 403 and "full" in body["error"]

            r = await http.get("/room/r1/state")
            assert r.status == 401
            r = await http.get("/room/r1/state", headers={"Authorization": "Bearer x"})
            assert r.status == 401
            r = await http.get("/room/r1/state", params={"token": token("r2", "v", "receive")})
            assert r.status == 403
            r = await http.get("/room/r1/state", params={"token": token("r1", "v", "receive")})
            state = await r.json()
            assert r.status == 200 and [p["name"] for p in state["participants"]] == ["a"]

            r = await http.post("/room/r1/join", data=b"x" * (300 * 1024))
            assert r.status == 413
            r = await http.get("/room/r1")
            assert r.status == 200 and "RTCPeerConnection" in await r.text()
            assert (await http.get("/healthz")).status == 200

    _run(main())


# -------------------------------------------------------------------------- end to end
def test_end_to_end_live_sender_to_receiver(carphone_path) -> None:
    """A Python sender streams carphone (face analysis, live coding, data channels); a
    receiver that joined gets the server's video track, frame by frame as decoded."""

    async def main() -> None:
        server = await start_server(test_config(stamp_frames=True), port=0)
        client = SenderClient(server.url, "live", token("live", "alice"))
        receiver = ReceiverClient(
            server.url, "live", token("live", "bob", "receive"), keep_images=True
        )
        try:
            await client.connect()
            source = VideoFileSource(carphone_path, max_frames=75)
            config = CodecConfig(intra_codec="hevc")
            sender = LiveSender(
                source, client, config, reset_interval=15, record=True, max_lag_frames=1e9
            )  # no frame skipping: a busy CI machine may analyse slower than real time
            task = asyncio.ensure_future(sender.run())
            assert await wait_until(lambda: sender.session is not None, 30)
            await receiver.connect(streams=1)
            assert receiver.streams and set(receiver.streams.values()) == {"alice"}
            report = await task
            assert report.frames >= 60 and report.kbps > 0
            assert await drained(server, "live")
            await asyncio.sleep(1.0)
            state = await fetch_state(server.url, "live", token("live", "v", "receive"))
        finally:
            await client.close()
            await receiver.close()
            await server.close()
        sent = next(p for p in state["participants"] if p["name"] == "alice")
        assert sent["uplink_kbps_mean"] > 0 and sent["malformed"] == 0
        assert sent["decoded"] + sent["concealed"] >= 0.9 * report.frames
        assert sender.recorded is not None
        reference = reference_frames(sender.recorded)
        got = receiver.frames["alice"]
        _check_video(got, reference, min_distinct=15)
        assert all(f.stamp in sender.capture_times for f in got if f.stamp is not None)

    _run(main())


def _check_video(got: list, reference: dict[int, np.ndarray], min_distinct: int) -> None:
    """Frames arrive, are not black, change over time and match the decoded frames."""
    stamped = [f for f in got if f.stamp is not None and f.stamp in reference]
    assert len(stamped) >= 0.9 * len(got), "stamps unreadable: not our pictures"
    distinct = sorted({f.stamp for f in stamped})
    assert len(distinct) >= min_distinct, f"only {len(distinct)} distinct frames"
    assert [f.stamp for f in stamped] == sorted(f.stamp for f in stamped), "out of order"
    scores = [psnr(f.image, stamp_index(reference[f.stamp], f.stamp)) for f in stamped]
    assert np.median(scores) > 30, f"pictures differ from the decoded frames: {scores}"
    # Matching the right frame: far better than the same picture against another frame.
    f = stamped[len(stamped) // 2]
    far = max(reference, key=lambda k: abs(k - f.stamp))
    assert psnr(f.image, reference[f.stamp]) > psnr(f.image, reference[far]) + 2
    assert min(g.std for g in stamped) > 20  # not black or flat


def test_replayed_stream_with_loss_conceals_and_recovers(clip, reference) -> None:
    """Seeded 20 % motion loss: the server conceals, asks for nothing it need not, keeps
    decoding after every reset, and the receiver sees the clip move."""

    async def main() -> dict:
        server = await start_server(test_config(stamp_frames=True), port=0)
        client = SenderClient(server.url, "lossy", token("lossy", "s"), loss=0.2, seed=3)
        receiver = ReceiverClient(server.url, "lossy", token("lossy", "r", "receive"))
        try:
            await client.connect()
            await replay(client, clip[:3])
            await wait_until(lambda: bool(server.conference.rooms["lossy"].peers), 5)
            await receiver.connect(streams=1)
            await replay(client, clip[3:])
            assert await drained(server, "lossy")
            await asyncio.sleep(1.0)
            state = await fetch_state(server.url, "lossy", token("lossy", "v", "receive"))
        finally:
            await client.close()
            await receiver.close()
            await server.close()
        assert client.stats.dropped_motion > 10
        s = next(p for p in state["participants"] if p["name"] == "s")
        assert s["lost"] > 0 and s["concealed"] > 0 and s["malformed"] == 0
        # Each loss is concealed until the next motion reset (every 15 frames): at 20 % loss
        # about a third of the frames decode (the rest hold the last picture).
        assert s["decoded"] > 0.2 * len(clip)
        assert s["decoded"] + s["concealed"] >= 0.9 * len(clip)
        got = receiver.frames["s"]
        stamped = [f for f in got if f.stamp is not None]
        assert len({f.stamp for f in stamped}) >= 30
        decoded_late = [f for f in stamped if f.stamp > 60]
        assert decoded_late, "nothing shown after the losses"
        return s

    _run(main())


def test_malformed_input_is_dropped_and_other_rooms_unaffected(clip) -> None:
    async def main() -> None:
        server = await start_server(test_config(), port=0)
        bad = SenderClient(server.url, "junk", token("junk", "mallory"))
        good = SenderClient(server.url, "clean", token("clean", "alice"))
        receiver = ReceiverClient(server.url, "clean", token("clean", "bob", "receive"))
        stray = bad.pc.createDataChannel("not-a-keyface-channel")  # closed by the server
        try:
            await bad.connect()
            await good.connect()
            await replay(good, clip[:3])
            await receiver.connect(streams=1)
            rng = np.random.default_rng(1)
            junk: list[bytes] = [
                b"",
                b"\x00",
                b"\xff" * 40,
                bytes([0x42]) + b"\x05\x00garbage",  # a FRAME with a broken packet
                bytes([0x43]) + b"\x01",  # FEEDBACK from a sender
                rng.integers(0, 256, 2000, dtype=np.uint8).tobytes(),  # oversize motion
            ] + [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in range(1, 60)]

            async def attack() -> None:
                for i, payload in enumerate(junk * 3):
                    (bad.motion if i % 2 else bad.reliable).send(payload)
                    bad.background.send(payload[:100])
                    if i % 7 == 0:
                        bad.reliable.send("text, not bytes")
                    await asyncio.sleep(0.002)

            await asyncio.gather(attack(), replay(good, clip[3:90]))
            assert await drained(server, "clean") and await drained(server, "junk")
            await asyncio.sleep(0.5)
            viewer = token("junk", "v", "receive")
            state_bad = await fetch_state(server.url, "junk", viewer)
            state_good = await fetch_state(server.url, "clean", token("clean", "v", "receive"))
        finally:
            for c in (bad, good, receiver):
                await c.close()
            await server.close()
        assert stray.readyState in ("closing", "closed")
        m = next(p for p in state_bad["participants"] if p["name"] == "mallory")
        assert m["connection"] == "connected"  # dropped, counted, still served
        assert m["malformed"] + m["oversize"] > 50
        a = next(p for p in state_good["participants"] if p["name"] == "alice")
        assert a["malformed"] == 0 and a["lost"] == 0 and a["concealed"] == 0
        assert a["decoded"] >= 80
        assert len(receiver.frames.get("alice", [])) >= 20

    _run(main())


def test_sender_disappearance_is_cleaned_up(clip) -> None:
    async def main() -> None:
        limits = replace(RoomLimits(), idle_timeout_s=1.0)
        server = await start_server(ServerConfig(secret=SECRET, limits=limits), port=0)
        conference = server.conference
        closer = SenderClient(server.url, "room", token("room", "closer"))
        silent = SenderClient(server.url, "room", token("room", "silent"))
        receiver = ReceiverClient(server.url, "room", token("room", "viewer", "receive"))
        try:
            await closer.connect()
            await silent.connect()
            await replay(closer, clip[:10])
            await replay(silent, clip[:10])
            await receiver.connect(streams=2)
            assert set(receiver.streams.values()) == {"closer", "silent"}
            await replay(closer, clip[10:30])
            room = conference.rooms["room"]
            assert set(room.peers) == {"closer", "silent", "viewer"}
            # 1: a sender that closes its connection is removed at once.
            await closer.close()
            assert await wait_until(lambda: "closer" not in room.peers, 5)
            assert "closer" not in room.session.participants
            # 2: a sender that goes silent is removed after the idle timeout; the receiver,
            # silent by nature but connected, stays.
            assert await wait_until(lambda: "silent" not in room.peers, 5)
            assert room.session.timed_out == ["silent"]
            assert set(room.peers) == {"viewer"}
            state = await fetch_state(server.url, "room", token("room", "v", "receive"))
            assert [p["name"] for p in state["participants"]] == ["viewer"]
            # 3: the last one out closes the room.
            await receiver.close()
            assert await wait_until(lambda: "room" not in conference.rooms, 5)
        finally:
            for c in (closer, silent, receiver):
                await c.close()
            await server.close()

    _run(main())


def test_join_refused_is_reported_to_python_clients() -> None:
    async def main() -> None:
        server = await start_server(ServerConfig(secret=SECRET), port=0)
        client = SenderClient(server.url, "r", token("r", "a", "receive"))
        try:
            with pytest.raises(JoinRefused) as exc:
                await client.connect()
            assert exc.value.status == 403
        finally:
            await client.close()
            await server.close()

    _run(main())


def _watch_one_sender(
    room: str, packets: list, setup: Callable[[SenderClient], Any]
) -> tuple[dict, list]:
    """One sender streams ``packets`` to ``room`` (``setup`` sends its extra records first; a
    coroutine is awaited), a receiver joins after the first three; returns the room state and
    the receiver's frames."""

    async def main() -> tuple[dict, list]:
        server = await start_server(test_config(), port=0)
        client = SenderClient(server.url, room, token(room, "s"))
        receiver = ReceiverClient(server.url, room, token(room, "v", "receive"), keep_images=True)
        try:
            await client.connect()
            started = setup(client)
            if asyncio.iscoroutine(started):
                await started
            await replay(client, packets[:3])
            await receiver.connect(streams=1)
            await replay(client, packets[3:])
            assert await drained(server, room)
            await asyncio.sleep(1.0)
            state = await fetch_state(server.url, room, token(room, "m", "receive"))
        finally:
            await client.close()
            await receiver.close()
            await server.close()
        return state, receiver.frames.get("s", [])

    return _run(main())


async def _after_malformed(client: SenderClient, count: int) -> None:
    """Wait until the server has counted ``count`` malformed messages from ``client``: a
    photo sent while another one waits is shed (docs/server.md), so the good photo that
    follows a junk one must wait until the junk one has been looked at."""

    async def counted() -> bool:
        viewer = token(client.room, "m", "receive")
        state = await fetch_state(client.server, client.room, viewer)
        me = next((p for p in state["participants"] if p["name"] == client.participant), {})
        return int(me.get("malformed", 0)) >= count

    end = time.monotonic() + 60
    while not await counted():
        assert time.monotonic() < end, "the server never looked at the junk photo"
        await asyncio.sleep(0.05)


def test_avatar_mode_shows_the_avatar_not_the_sender(carphone_path, clip) -> None:
    """``keyface send --avatar``: the room sees the avatar photo moved by the sender's motion."""
    pytest.importorskip("keyface.compose.avatar")
    frames = [f.image for f in read_frames(carphone_path, 61)]
    photo = np.ascontiguousarray(frames[60][:, ::-1])  # a mirrored picture: another "person"
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")

    async def setup(client: SenderClient) -> None:
        client.send_avatar(b"not a picture")  # dropped and counted
        await _after_malformed(client, 1)
        client.send_avatar(buf.getvalue())

    state, got = _watch_one_sender("av", clip[:60], setup)
    s = state["participants"][0]
    assert s["avatar"] is True and s["malformed"] == 1
    assert got and (got[-1].width, got[-1].height) == (photo.shape[1], photo.shape[0])
    shown = got[-1].image.astype(np.float64)
    mse_avatar = np.mean((shown - photo) ** 2)
    mse_sender = np.mean((shown - frames[60]) ** 2)
    assert mse_avatar < 0.25 * mse_sender


def test_full_frame_background_is_pasted(carphone_path, carphone_analysis, clip) -> None:
    """``--full-frame``: the BACKGROUND packet on ``keyface-background`` makes the server
    publish the source-size frame with the rendered face pasted in."""
    a = carphone_analysis
    first = next(iter(read_frames(carphone_path, 1))).image
    data = get_intra_codec("hevc").encode(flatten_inside(first, a.crop), 60)
    background = bytes(BackgroundPacket(frame_index=0, data=data))

    async def setup(client: SenderClient) -> None:
        client.send_background(b"\x03\x00garbage")  # dropped and counted
        await _after_malformed(client, 1)
        client.send_background(background)

    state, got = _watch_one_sender("ff", clip[:40], setup)
    s = state["participants"][0]
    assert s["full_frame"] is True and s["malformed"] == 1
    h, w = first.shape[:2]
    assert got and (got[-1].height, got[-1].width) == (h - h % 2, w - w % 2)
    # Away from the face the picture is the background.
    corner = (slice(0, 20), slice(0, 20))
    assert np.abs(got[-1].image[corner].astype(float) - first[corner]).mean() < 12
