"""Conference sessions without a network: tokens, sender -> room datagrams, loss, limits.

The carphone clip (first 40 frames, ``carphone_analysis``) is encoded once by a live
:class:`SenderSession`; each test replays its datagrams into fresh rooms with its own loss,
reordering or junk, and compares what the room renders with the lossless decode.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace

import numpy as np
import pytest

from keyface.bitstream import RefreshRequestPacket
from keyface.codec.config import CodecConfig
from keyface.pipeline import cropped_frames, decode_bytes, encode_analysis
from keyface.server import (
    AlreadyJoined,
    Datagram,
    DatagramError,
    RenderedFrame,
    RoomFull,
    RoomLimits,
    RoomSession,
    SenderSession,
    TokenBucket,
    TokenError,
    TokenExpired,
    TokenForbidden,
    TokenInvalid,
    TokenWrongRole,
    TokenWrongRoom,
    make_token,
    parse_datagram,
    verify_token,
)
from keyface.server.session import (
    KIND_FRAME,
    KIND_HEADER,
    LIVE_MIRROR,
    encode_feedback_datagram,
)

SECRET = b"0123456789abcdef0123456789abcdef"
RESET_INTERVAL = 15
FPS = 25.0


# ----------------------------------------------------------------------------------- tokens
def test_token_round_trip() -> None:
    token = make_token(SECRET, "room-1", "alice", "send", ttl_s=60, now=1000.0)
    assert len(token) < 200 and all(c.isalnum() or c in "-_." for c in token)
    claims = verify_token(SECRET, token, "room-1", now=1059.0, role="send")
    assert (claims.room, claims.participant, claims.role, claims.expires) == (
        "room-1",
        "alice",
        "send",
        1060,
    )


def test_token_expiry_is_forbidden() -> None:
    token = make_token(SECRET, "room-1", "alice", "receive", ttl_s=10, now=1000.0)
    with pytest.raises(TokenExpired) as exc:
        verify_token(SECRET, token, "room-1", now=1010.0)
    assert isinstance(exc.value, TokenForbidden) and exc.value.http_status == 403


def test_token_wrong_room_and_role_are_forbidden() -> None:
    token = make_token(SECRET, "room-1", "alice", "receive", ttl_s=10, now=0.0)
    with pytest.raises(TokenWrongRoom) as exc:
        verify_token(SECRET, token, "room-2", now=1.0)
    assert exc.value.http_status == 403
    with pytest.raises(TokenWrongRole) as exc2:
        verify_token(SECRET, token, "room-1", now=1.0, role="send")
    assert exc2.value.http_status == 403


def test_token_tampering_and_garbage_are_unauthorized() -> None:
    token = make_token(SECRET, "room-1", "alice", "receive", ttl_s=10, now=0.0)
    prefix, claims, mac = token.split(".")
    # A receiver that promotes itself to sender, keeping the signature.
    forged = token.replace(claims, claims[:-2] + ("A" if claims[-2] != "A" else "B") + claims[-1])
    flipped_mac = f"{prefix}.{claims}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}"
    bad = [
        forged,
        flipped_mac,
        make_token(b"another-secret-of-32-bytes......", "room-1", "alice", "send", 10, 0.0),
        "",
        "kf1",
        "kf1..",
        "kf1.!!!.???",
        "kf2." + claims + "." + mac,
        token + ".x",
        "x" * 5000,
        "kf1.é.é",
    ]
    for t in bad:
        with pytest.raises(TokenInvalid) as exc:
            verify_token(SECRET, t, "room-1", now=1.0)
        assert exc.value.http_status == 401, t
    with pytest.raises(TokenError):
        verify_token(SECRET, None, "room-1", now=1.0)  # type: ignore[arg-type]


def test_make_token_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_token(b"short", "r", "p", "send", 10, 0)
    with pytest.raises(ValueError):
        make_token(SECRET, "r", "p", "admin", 10, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_token(SECRET, "", "p", "send", 10, 0)
    with pytest.raises(ValueError):
        make_token(SECRET, "r", "p", "send", 0, 0)


# ------------------------------------------------------------------------------- fixtures
@dataclass
class LiveClip:
    datagrams: list[list[Datagram]]
    """Per frame, the datagrams the sender emitted."""
    sender: SenderSession
    reference: list[np.ndarray]
    """The lossless decode through a room."""


@pytest.fixture(scope="module")
def crops(carphone_analysis) -> list[np.ndarray]:
    a = carphone_analysis
    return [img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count)]


def _config(analysis) -> CodecConfig:
    return CodecConfig(size=analysis.size)


@pytest.fixture(scope="module")
def live(carphone_analysis, crops) -> LiveClip:
    a = carphone_analysis
    sender = SenderSession(_config(a), a.fps, crop=a.crop, reset_interval=RESET_INTERVAL)
    datagrams = [
        sender.push_frame(img, lm, i / FPS)
        for i, (img, lm) in enumerate(zip(crops, a.landmarks, strict=True))
    ]
    frames = _replay(datagrams, lambda i, d: True)[0]
    assert [f.index for f in frames] == list(range(len(crops)))
    assert not any(f.concealed for f in frames)
    return LiveClip(datagrams, sender, [f.image for f in frames])


def _replay(datagrams, keep, room: RoomSession | None = None, order=None):
    """Feed the datagrams (frame ``i`` at ``i / FPS``) to a room; ``keep(i, d)`` drops."""
    if room is None:
        room = RoomSession("room-1")
        room.join("alice", "send", now=0.0)
    out: list[RenderedFrame] = []
    for i in order if order is not None else range(len(datagrams)):
        for d in datagrams[i]:
            if keep(i, d):
                out += room.receive_datagram("alice", d.channel, d.payload, i / FPS)
    out += room.tick(len(datagrams) / FPS + 1.0)
    return out, room


# ------------------------------------------------------------------------------ datagrams
def test_datagram_layout(live: LiveClip) -> None:
    first = live.datagrams[0]
    assert [d.channel for d in first] == ["reliable", "reliable"]
    header, frame = (parse_datagram(d.payload) for d in first)
    assert header.kind == KIND_HEADER and header.header == live.sender.header
    assert frame.kind == KIND_FRAME and frame.idr and frame.keyframe is not None
    assert frame.motion is not None and frame.motion.reset
    for i, ds in enumerate(live.datagrams[1:], start=1):
        d = parse_datagram(ds[-1].payload)
        assert d.frame_index == i and d.motion is not None
        assert ds[-1].channel == ("reliable" if d.keyframe is not None else "unreliable")
        if d.keyframe is not None or i % RESET_INTERVAL == 0:
            assert d.motion.reset
        if d.keyframe is None:
            assert len(ds[-1].payload) < 40  # a few bytes of motion and ~10 of framing
    feedback = parse_datagram(encode_feedback_datagram(RefreshRequestPacket(7)))
    assert feedback.refresh == RefreshRequestPacket(7)
    with pytest.raises(DatagramError):
        parse_datagram(b"\x42")
    assert live.sender.uplink_kbps(len(live.datagrams) / FPS) > 0


@pytest.mark.slow
def test_lossless_session_matches_file_decoder(carphone_analysis, live: LiveClip) -> None:
    # The live sender predicts its frames with LIVE_MIRROR (its PSNR check and content rule
    # look at those predictions); the file encoder, told the same, makes the same decisions.
    config = replace(_config(carphone_analysis), generator=LIVE_MIRROR)
    coded = encode_analysis(carphone_analysis, config)
    decoded = decode_bytes(coded.data)
    assert decoded.complete
    assert len(decoded.frames) == len(live.reference)
    for ref, frame in zip(live.reference, decoded.frames, strict=True):
        assert np.array_equal(ref, frame.image)


# ----------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("loss", [0.05, 0.20])
def test_motion_loss_is_concealed_and_recovers_at_reset(live: LiveClip, loss: float) -> None:
    rng = random.Random(1234 + int(loss * 100))
    dropped = {
        i
        for i, ds in enumerate(live.datagrams)
        if ds[-1].channel == "unreliable" and rng.random() < loss
    }
    assert dropped

    def keep(i: int, d: Datagram) -> bool:
        return not (d.channel == "unreliable" and i in dropped)

    frames, room = _replay(live.datagrams, keep)
    stats = room.participants["alice"].decoder.stats
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))  # each frame at most once, in order
    concealed = [f.index for f in frames if f.concealed]
    assert stats.concealed == len(concealed) >= len(dropped - {len(live.datagrams) - 1})
    assert stats.lost == len(dropped - {len(live.datagrams) - 1})
    assert stats.malformed == 0 and stats.refresh_requests == 0
    # Every decoded frame is exactly the lossless one; every concealed one holds the last.
    for f in frames:
        if not f.concealed:
            assert np.array_equal(f.image, live.reference[f.index])
    # Decoding resumes exactly at a MOTION packet with the reset flag (every RESET_INTERVAL
    # frames and after each keyframe), so an episode lasts < 2 intervals unless a reset is lost.
    assert stats.recoveries
    for prev, f in itertools.pairwise(frames):
        if prev.concealed and not f.concealed:
            motion = parse_datagram(live.datagrams[f.index][-1].payload).motion
            assert motion is not None and motion.reset
    print(
        f"loss {loss:.0%}: dropped {sorted(dropped)}, concealed {len(concealed)}, "
        f"frames to recover {stats.recoveries}"
    )


def test_reordering_within_the_window_is_invisible(live: LiveClip) -> None:
    n = 20
    order = list(range(n))
    for i in range(3, n - 1, 5):  # swap neighbours (both unreliable or not: any)
        order[i], order[i + 1] = order[i + 1], order[i]
    frames, room = _replay(live.datagrams[:n], lambda i, d: True, order=order)
    stats = room.participants["alice"].decoder.stats
    assert stats.concealed == 0 and stats.late == 0
    assert [f.index for f in frames] == list(range(n))
    for f in frames:
        assert np.array_equal(f.image, live.reference[f.index])


def test_late_datagram_is_dropped(live: LiveClip) -> None:
    n = 20
    late = next(i for i in range(5, n) if live.datagrams[i][-1].channel == "unreliable")
    order = [i for i in range(n) if i != late]
    order.insert(order.index(late + 4), late)  # arrives after 4 newer frames
    frames, room = _replay(live.datagrams[:n], lambda i, d: True, order=order)
    stats = room.participants["alice"].decoder.stats
    assert stats.late == 1 and stats.lost == 1
    assert [f.index for f in frames] == list(range(n))
    assert frames[late].concealed


def test_missing_frame_is_given_up_after_max_delay(live: LiveClip) -> None:
    room = RoomSession("room-1", max_delay_s=0.1)
    room.join("alice", "send", now=0.0)
    out: list[RenderedFrame] = []
    for i in range(5):
        for d in live.datagrams[i]:
            if i != 3:
                out += room.receive_datagram("alice", d.channel, d.payload, i / FPS)
    assert [f.index for f in out] == [0, 1, 2]  # 4 waits for 3
    out += room.tick(4 / FPS + 0.05)
    assert len(out) == 3
    out += room.tick(4 / FPS + 0.11)
    assert [(f.index, f.concealed) for f in out[3:]] == [(3, True), (4, True)]


# -------------------------------------------------------------------------------- junk
def test_malformed_datagrams_are_dropped_and_counted(live: LiveClip) -> None:
    rng = random.Random(7)
    junk_at: dict[int, list[bytes]] = {}
    n_junk = 0
    datagrams = live.datagrams[:12]
    for i, ds in enumerate(datagrams):
        real = ds[-1].payload
        junk = [
            bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 60))),
            real[: rng.randint(0, len(real) - 1)],
            real[:-1] + bytes([real[-1] ^ 0x01]),
            bytes([real[0] ^ 0x30]) + real[1:],
        ]
        junk_at[i] = [j for j in junk if j]
        n_junk += len(junk_at[i])
    room_a = RoomSession("room-a")
    room_a.join("alice", "send", now=0.0)
    room_b = RoomSession("room-b")
    room_b.join("alice", "send", now=0.0)
    out_a: list[RenderedFrame] = []
    out_b: list[RenderedFrame] = []
    for i, ds in enumerate(datagrams):
        now = i / FPS
        for j in junk_at[i]:
            assert room_a.receive_datagram("alice", ds[-1].channel, j, now) == []
        assert room_a.receive_datagram("alice", "unreliable", b"\x42" * 5000, now) == []
        for d in ds:
            out_a += room_a.receive_datagram("alice", d.channel, d.payload, now)
            out_b += room_b.receive_datagram("alice", d.channel, d.payload, now)
    alice = room_a.participants["alice"]
    assert alice.decoder.stats.malformed == n_junk
    assert alice.oversize == len(datagrams)
    assert room_b.participants["alice"].decoder.stats.malformed == 0
    for out in (out_a, out_b):
        assert [f.index for f in out] == list(range(len(datagrams)))
        assert all(np.array_equal(f.image, live.reference[f.index]) for f in out)


def test_datagrams_from_strangers_and_receivers_are_ignored(live: LiveClip) -> None:
    room = RoomSession("room-1")
    room.join("bob", "receive", now=0.0)
    payload = live.datagrams[0][0].payload
    assert room.receive_datagram("mallory", "reliable", payload, 0.0) == []
    assert room.receive_datagram("bob", "reliable", payload, 0.0) == []
    assert room.unknown_datagrams == 1 and room.participants["bob"].rejected == 1


# ------------------------------------------------------------------------------- limits
def test_participant_limit_leave_and_timeout() -> None:
    # No first-frame grace here: alice, who never sends, times out like a silent sender.
    limits = RoomLimits(max_participants=2, idle_timeout_s=5.0, first_frame_grace_s=0.0)
    room = RoomSession("room-1", limits)
    room.join("alice", "send", now=0.0)
    room.join("bob", "receive", now=0.0)
    with pytest.raises(RoomFull) as exc:
        room.join("carol", "receive", now=1.0)
    assert exc.value.http_status == 403
    with pytest.raises(AlreadyJoined):
        room.join("alice", "receive", now=1.0)
    assert room.leave("bob") and not room.leave("bob")
    room.join("carol", "receive", now=1.0)
    room.receive_datagram("carol", "unreliable", b"hi", now=4.0)
    room.tick(now=5.5)
    assert set(room.participants) == {"carol"} and room.timed_out == ["alice"]
    room.tick(now=9.5)
    assert not room.participants


def test_join_with_token() -> None:
    room = RoomSession("room-1")
    claims = room.join_with_token(SECRET, make_token(SECRET, "room-1", "al", "send", 5, 0.0), 1.0)
    assert claims.participant == "al" and room.participants["al"].decoder is not None
    with pytest.raises(TokenWrongRoom):
        room.join_with_token(SECRET, make_token(SECRET, "room-2", "bo", "send", 5, 0.0), 1.0)
    assert list(room.participants) == ["al"]


def test_rate_limits() -> None:
    limits = RoomLimits(packet_rate=10.0, packet_burst=5.0, byte_rate=1000.0, byte_burst=1000.0)
    room = RoomSession("room-1", limits)
    p = room.join("alice", "send", now=0.0)
    for _ in range(20):
        room.receive_datagram("alice", "unreliable", b"x" * 10, now=0.0)
    assert p.rate_limited == 15 and p.decoder.stats.datagrams == 5
    for _ in range(20):
        room.receive_datagram("alice", "unreliable", b"x" * 10, now=1.0)  # +10 packets
    assert p.rate_limited == 30 and p.decoder.stats.datagrams == 10  # burst caps the refill
    for _ in range(3):  # bytes: 1000 saved at most
        room.receive_datagram("alice", "reliable", b"x" * 600, now=100.0)
    assert p.decoder.stats.datagrams == 11 and p.rate_limited == 32


def test_token_bucket_refills_with_time() -> None:
    bucket = TokenBucket(rate=2.0, burst=4.0, now=0.0)
    assert all(bucket.take(1, 0.0) for _ in range(4)) and not bucket.take(1, 0.0)
    assert bucket.take(1, 0.5) and not bucket.take(1, 0.5)
    assert not bucket.take(1, 0.4)  # a clock going backwards does not refill
    assert bucket.take(4, 100.0) and not bucket.take(1, 100.0)


# ------------------------------------------------------------------------------ refresh
@pytest.mark.slow
def test_lost_keyframe_leads_to_refresh_and_new_idr(carphone_analysis, crops) -> None:
    a = carphone_analysis
    n = 18
    sender = SenderSession(_config(a), a.fps, crop=a.crop, reset_interval=RESET_INTERVAL)
    room = RoomSession("room-1")
    room.join("alice", "send", now=0.0)
    lossless = RoomSession("room-2")
    lossless.join("alice", "send", now=0.0)
    out: list[RenderedFrame] = []
    reference: dict[int, np.ndarray] = {}
    idr_frames = []
    for i in range(n):
        now = i / FPS
        if i == 10:
            sender.force_keyframe()
        datagrams = sender.push_frame(crops[i], a.landmarks[i], now)
        if sender.encoder.last_idr == i:
            idr_frames.append(i)
        for d in datagrams:
            reference.update(
                {
                    f.index: f.image
                    for f in lossless.receive_datagram("alice", d.channel, d.payload, now)
                }
            )
            if i == 10 and d.channel == "reliable" and parse_datagram(d.payload).kind == KIND_FRAME:
                continue  # the keyframe is lost
            out += room.receive_datagram("alice", d.channel, d.payload, now)
        for name, feedback in room.datagrams_to_send():
            assert name == "alice"
            if feedback.channel == "reliable":  # a refresh request (else an acknowledgement)
                assert parse_datagram(feedback.payload).refresh is not None
            sender.receive_feedback(feedback.payload, now)
    stats = room.participants["alice"].decoder.stats
    assert stats.lost == 1 and stats.lost_keyframes == 1 and stats.refresh_requests == 1
    assert sender.stats.refresh_requests == 1 and sender.stats.refresh_ignored == 0
    # Frame 10 is given up when frame 13 arrives (reorder window 3); frame 11 then shows that
    # keyframe 10 is missing, the request goes out and frame 14 is the refresh.
    assert idr_frames == [0, 10, 14]
    assert [f.index for f in out] == list(range(n))
    assert [f.index for f in out if f.concealed] == [10, 11, 12, 13]
    assert stats.recoveries == [4]
    for f in out:
        if not f.concealed:
            assert np.array_equal(f.image, reference[f.index])
    # A second request for a frame the sender already refreshed is ignored.
    sender.receive_feedback(encode_feedback_datagram(RefreshRequestPacket(14)))
    sender.receive_feedback(b"junk")
    assert sender.stats.refresh_ignored == 1 and sender.stats.bad_feedback == 1


def test_first_idr_lost_is_requested_again(carphone_analysis, crops) -> None:
    a = carphone_analysis
    sender = SenderSession(_config(a), a.fps, crop=a.crop)
    room = RoomSession("room-1")
    room.join("alice", "send", now=0.0)
    out: list[RenderedFrame] = []
    for i in range(8):
        for d in sender.push_frame(crops[i], a.landmarks[i], i / FPS):
            if i == 0 and d.channel == "reliable":
                continue  # header and first keyframe lost
            out += room.receive_datagram("alice", d.channel, d.payload, i / FPS)
        for _, feedback in room.datagrams_to_send():
            sender.receive_feedback(feedback.payload)
    assert sender.stats.idr_keyframes == 2
    assert out and not any(f.concealed for f in out)
    assert out[0].index == sender.encoder.last_idr


def test_sender_pictures_compose_the_background_without_a_network(
    carphone_analysis, live: LiveClip
) -> None:
    """The server's picture side is sans-I/O too: datagrams and a BACKGROUND packet in, full
    frames out, the face pasted into the background (the size of the source frame)."""
    from keyface.bitstream import BackgroundPacket
    from keyface.intra import get_intra_codec
    from keyface.io.video import read_frames
    from keyface.server.pictures import SenderPictures
    from keyface.server.receiver import ParticipantDecoder

    a = carphone_analysis
    source = next(iter(read_frames(a.path, 1))).image
    header = live.sender.header
    background = bytes(
        BackgroundPacket(frame_index=0, data=get_intra_codec(header.intra_codec).encode(source, 60))
    )
    pictures = SenderPictures("alice", ParticipantDecoder("alice"), "warp", stamp_frames=True)
    pictures.take_background(background)  # before the header: kept until it comes
    assert pictures.background is None
    shown = []
    for i, frame in enumerate(live.datagrams[:6]):
        for d in frame:
            out, _ = pictures.decode(pictures.decoder.receive, d.payload, i / FPS)
            shown += out
    assert pictures.composer is not None
    assert [index for index, _, _ in shown] == list(range(6))
    h, w = source.shape[:2]
    for _, image, concealed in shown:
        assert image.shape[:2] == (h - h % 2, w - w % 2) and not concealed
    pictures.take_background(b"\x00not a packet")
    assert pictures.decoder.stats.malformed == 1


def test_published_pictures_are_sent_as_yuv420p_converted_once() -> None:
    """Issue 17: a published picture is converted to yuv420p once (OpenCV, BT.601 limited
    range like swscale), not from RGB by every receiver's VP8 encoder."""
    import asyncio

    import av

    from keyface.server.media import ParticipantVideo, picture_yuv

    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    swscale = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    diff = np.abs(picture_yuv(image).astype(int) - swscale.to_ndarray())
    assert diff[:72].max() <= 1  # luma; chroma is averaged over 2x2 where swscale filters
    assert diff[72:].mean() < 3

    async def two_receivers() -> list[av.VideoFrame]:
        video = ParticipantVideo("sender")
        tracks = [video.subscribe(), video.subscribe()]
        video.publish(image, 0)
        frames = [await t.recv() for t in tracks]
        assert video.yuv is video.yuv  # one conversion for both
        video.close()
        return frames

    for frame in asyncio.run(two_receivers()):
        assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (128, 72)
        shown = frame.to_ndarray(format="rgb24").astype(int)
        assert np.abs(shown - image).mean() < 4


def test_picture_stats_match_numpy() -> None:
    """Issue 17: the Python receiver's per-picture mean and standard deviation come from one
    OpenCV pass (1 ms at 1280x720 instead of 8 ms), as ``image.mean()`` / ``image.std()``."""
    from keyface.server.media import picture_stats

    rng = np.random.default_rng(1)
    for shape in [(72, 128, 3), (30, 40), (5, 7, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        mean, std = picture_stats(image)
        assert mean == pytest.approx(float(image.mean()), abs=1e-9)
        assert std == pytest.approx(float(image.std()), abs=1e-9)
    assert picture_stats(np.full((8, 8, 3), 7, np.uint8)) == (7.0, 0.0)
