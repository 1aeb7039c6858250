"""keyface streams through a stock SFU, Janus (``keyface.server.janus``, docs/janus.md).

The quick tests check the sans-network parts (room numbers, the generated configuration, the
refresh gate). The slow ones start a Janus of the project's own configuration on this machine
(``JanusProcess``: HTTP API on 127.0.0.1, the VideoRoom and TextRoom plugins only, no STUN),
publish carphone face crops coded live by a ``SenderSession`` and check that a subscriber
decodes every frame exactly as a loss-free decode of the same datagrams, and that a receiver
joining late asks for (and gets) an IDR through the TextRoom. They skip when janus is not
installed (``scripts/install_janus.sh``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image

from keyface.codec.config import CodecConfig
from keyface.pipeline import cropped_frames
from keyface.renderers import get_renderer
from keyface.server.janus import (
    JanusConfig,
    JanusError,
    JanusProcess,
    JanusReceiverClient,
    JanusSenderClient,
    RefreshGate,
    create_room,
    find_janus,
    find_lib_dir,
    janus_room_id,
    write_config,
)
from keyface.server.receiver import ParticipantDecoder
from keyface.server.session import Datagram, SenderSession

FPS = 30.0
ROOM = "janus-test"
PIN = "pin-0123"
LATE_START = 45
"""The late receiver joins after this many frames (1.5 s)."""


def test_room_ids_are_stable_48_bit_numbers() -> None:
    assert janus_room_id("demo") == janus_room_id("demo")
    assert janus_room_id("demo") != janus_room_id("demo2")
    assert 0 < janus_room_id("x" * 128) < 2**48  # exact in JavaScript


def test_generated_config_loads_only_what_keyface_needs(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for sub, name in [
        ("plugins", "libjanus_videoroom.so"),
        ("plugins", "libjanus_textroom.so"),
        ("plugins", "libjanus_sip.so"),
        ("transports", "libjanus_http.so"),
        ("transports", "libjanus_websockets.so"),
    ]:
        (lib / sub).mkdir(parents=True, exist_ok=True)
        (lib / sub / name).write_bytes(b"")
    conf = tmp_path / "conf"
    main = write_config(conf, JanusConfig(http_port=18088, admin_key="k" * 16), lib)
    assert sorted(p.name for p in (conf / "plugins").iterdir()) == [
        "libjanus_textroom.so",
        "libjanus_videoroom.so",
    ]
    assert [p.name for p in (conf / "transports").iterdir()] == ["libjanus_http.so"]
    text = main.read_text()
    assert "stun" not in text.lower() and f'plugins_folder = "{conf}/plugins"' in text
    http = (conf / "janus.transport.http.jcfg").read_text()
    assert 'ip = "127.0.0.1"' in http and "port = 18088" in http and "admin_http = false" in http
    assert 'admin_key = "kkkkkkkkkkkkkkkk"' in (conf / "janus.plugin.videoroom.jcfg").read_text()


def test_refresh_gate_turns_many_requests_into_one_per_interval() -> None:
    gate = RefreshGate(0.5)
    assert gate.offer(b"a", 10.0)
    assert not gate.offer(b"b", 10.1) and not gate.offer(b"c", 10.2)
    assert gate.due(10.3) is None
    assert gate.due(10.5) == b"c"  # the newest held request, once
    assert gate.due(11.5) is None
    assert gate.offer(b"d", 11.5)


# -- Janus on this machine -------------------------------------------------------------------
needs_janus = pytest.mark.skipif(
    find_janus() is None or find_lib_dir() is None,
    reason="janus is not installed (scripts/install_janus.sh)",
)


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 240))


@pytest.fixture(scope="module")
def clip(carphone_analysis) -> tuple[list[np.ndarray], list, Any]:
    a = carphone_analysis
    crops = [img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count)]
    return crops, list(a.landmarks), a.crop


class LiveLoop:
    """A live sender over the clip (ping-pong), coding each frame when it is due and applying
    the feedback the Janus sender client hands over (refresh requests) between frames."""

    def __init__(
        self,
        clip: tuple[list[np.ndarray], list, Any],
        client: JanusSenderClient,
        intra: str = "hevc",
    ):
        crops, landmarks, crop = clip
        self.crops, self.landmarks = crops, landmarks
        self.order = list(range(len(crops))) + list(range(len(crops) - 2, 0, -1))
        self.session = SenderSession(
            CodecConfig(size=crops[0].shape[0], intra_codec=intra),
            Fraction(int(FPS)),
            crop=crop,
            reset_interval=15,
        )
        self.client = client
        self.feedback: list[bytes] = []
        client.on_feedback = self.feedback.append
        self.sent: list[list[Datagram]] = []
        self.worker = ThreadPoolExecutor(max_workers=1)  # the event loop stays free

    async def run(self, frames: int) -> None:
        start = time.monotonic()
        for i in range(frames):
            delay = start + i / FPS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while self.feedback:  # between frames, as LiveSender applies it
                self.session.receive_feedback(self.feedback.pop(0), time.monotonic())
            k = self.order[len(self.sent) % len(self.order)]
            datagrams = await asyncio.get_running_loop().run_in_executor(
                self.worker,
                self.session.push_frame,
                self.crops[k],
                self.landmarks[k],
                time.monotonic(),
            )
            for d in datagrams:
                self.client.send(d)
            self.sent.append(datagrams)


def _reference(sent: list[list[Datagram]], renderer) -> dict[int, np.ndarray]:
    """Frame -> picture of a loss-free decode of everything the sender sent."""
    decoder = ParticipantDecoder("alice", renderer=renderer)
    out: dict[int, np.ndarray] = {}
    for i, frame in enumerate(sent):
        for d in frame:
            for f in decoder.receive(d.payload, i / FPS):
                assert not f.concealed
                out[f.index] = f.image
    return out


async def _settle(receivers: list[JanusReceiverClient], frames: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(r.frames and r.frames[-1].index >= frames - 1 for r in receivers):
            return
        await asyncio.sleep(0.05)


@needs_janus
@pytest.mark.slow
def test_janus_carries_a_live_stream_and_a_late_joiner_gets_an_idr(tmp_path: Path, clip) -> None:
    renderer = get_renderer("warp")

    async def main() -> dict[str, Any]:
        janus = JanusProcess(tmp_path / "janus")
        await janus.start()
        try:
            await create_room(
                janus.url, ROOM, admin_key=janus.config.admin_key, secret="s3cret", pin=PIN
            )
            sender = JanusSenderClient(janus.url, ROOM, "alice", pin=PIN)
            await sender.connect()
            early = JanusReceiverClient(janus.url, ROOM, "alice", pin=PIN, renderer=renderer)
            await early.connect()
            live = LiveLoop(clip, sender)
            late = JanusReceiverClient(janus.url, ROOM, "alice", pin=PIN, renderer=renderer)

            async def join_late() -> None:
                while len(live.sent) < LATE_START:
                    await asyncio.sleep(0.02)
                await late.connect()

            await asyncio.gather(live.run(120), join_late())
            await _settle([early, late], 120, 15.0)
            result = {
                "sent": live.sent,
                "sender": live.session.stats,
                "early": early.frames,
                "late": late.frames,
                "late_stats": late.decoder.stats,
                "late_feedback": late.stats.feedback_sent,
                "early_channels": early.channels,
            }
            for client in (early, late, sender):
                await client.close()
            return result
        finally:
            janus.stop()

    r = _run(main())
    reference = _reference(r["sent"], renderer)
    early = [f for f in r["early"] if not f.concealed]
    late = [f for f in r["late"] if not f.concealed]
    # The early receiver decodes all 120 frames, each exactly as the loss-free decode.
    assert [f.index for f in early] == list(range(120))
    for f in early:
        assert np.array_equal(f.image, reference[f.index]), f.index
    # The late one missed the first IDR: it asked for a refresh (a TextRoom whisper), the
    # sender coded an IDR, and from there it decodes exactly as well.
    assert r["late_feedback"] >= 1 and r["sender"].refresh_requests >= 1
    assert r["sender"].idr_keyframes >= 2
    assert late and late[0].index > LATE_START and late[-1].index == 119
    assert [f.index for f in late] == list(range(late[0].index, 120))
    for f in late:
        assert np.array_equal(f.image, reference[f.index]), f.index


@needs_janus
@pytest.mark.slow
def test_lost_motion_is_concealed_behind_janus(tmp_path: Path, clip) -> None:
    """The sender drops 10 % of its motion datagrams (seeded): the receiver emits every frame,
    conceals the lost ones until the next motion reset, and every frame it decodes is the
    loss-free decode's."""
    renderer = get_renderer("warp")

    async def main() -> tuple[list, list, int]:
        janus = JanusProcess(tmp_path / "janus")
        await janus.start()
        try:
            await create_room(janus.url, ROOM, admin_key=janus.config.admin_key)
            sender = JanusSenderClient(janus.url, ROOM, "alice", loss=0.1, seed=3)
            await sender.connect()
            receiver = JanusReceiverClient(janus.url, ROOM, "alice", renderer=renderer)
            await receiver.connect()
            live = LiveLoop(clip, sender)
            await live.run(90)
            await _settle([receiver], 89, 15.0)
            dropped = sender.stats.dropped_motion
            await receiver.close()
            await sender.close()
            return live.sent, receiver.frames, dropped
        finally:
            janus.stop()

    sent, frames, dropped = _run(main())
    reference = _reference(sent, renderer)
    assert dropped >= 3
    # every frame in order (the last one, if lost, is never given up: no later frame comes)
    assert [f.index for f in frames] == list(range(len(frames))) and len(frames) >= 89
    concealed = [f.index for f in frames if f.concealed]
    print(
        f"janus, 10 % motion loss: {dropped} dropped, {len(concealed)} of {len(frames)} concealed"
    )
    assert len(concealed) >= dropped
    for f in frames:
        if not f.concealed:
            assert np.array_equal(f.image, reference[f.index]), f.index


@needs_janus
@pytest.mark.slow
def test_janus_room_pin_is_required(tmp_path: Path) -> None:
    async def main() -> None:
        janus = JanusProcess(tmp_path / "janus")
        await janus.start()
        try:
            await create_room(janus.url, ROOM, admin_key=janus.config.admin_key, pin=PIN)
            with pytest.raises(JanusError):
                await create_room(janus.url, "other", admin_key="wrong-key", pin=PIN)
            sender = JanusSenderClient(janus.url, ROOM, "mallory", pin="wrong")
            with pytest.raises(JanusError, match=r"(?i)pin"):
                await sender.connect()
            await sender.close()
        finally:
            janus.stop()

    _run(main())


# -- a browser receiver ----------------------------------------------------------------------
def _chromium() -> str | None:
    from test_browser import CHROMIUM

    return CHROMIUM


@needs_janus
@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no Chromium found (scripts/install_chromium.sh)")
@pytest.mark.skipif(
    os.environ.get("KEYFACE_BROWSER_TEST") == "0",
    reason="KEYFACE_BROWSER_TEST=0: the Chromium tests are switched off",
)
def test_a_page_behind_janus_decodes_a_participant(tmp_path: Path, clip) -> None:
    """``/static/decoder/janus.html`` in headless Chromium subscribes through Janus after the
    sender started (so it asks for an IDR by a TextRoom whisper) and decodes the AVIF stream
    with the page's decoder: the last frame it shows is the Python decoder's (warp renderer)
    within the warp's PSNR (docs/browser.md). ``KEYFACE_JANUS_SCREENSHOT=PATH`` saves the page."""
    from test_browser import chromium_page
    from test_js_browser import ARGS, MIN_PSNR, psnr

    from keyface.server.conference import ServerConfig
    from keyface.server.http import start_server

    frames = 150

    async def main() -> dict[str, Any]:
        janus = JanusProcess(tmp_path / "janus")
        await janus.start()
        server = await start_server(ServerConfig(secret=b"s" * 32), port=0)
        try:
            await create_room(janus.url, ROOM, admin_key=janus.config.admin_key, pin=PIN)
            sender = JanusSenderClient(janus.url, ROOM, "alice", pin=PIN)
            await sender.connect()
            live = LiveLoop(clip, sender, intra="avif")
            async with chromium_page(ARGS, viewport={"width": 640, "height": 520}) as page:
                query = urlencode(
                    {"janus": janus.url, "room": ROOM, "participant": "alice", "pin": PIN}
                )
                sending = asyncio.ensure_future(live.run(frames))
                while len(live.sent) < 15:  # the page joins a running stream
                    await asyncio.sleep(0.02)
                await page.goto(f"{server.url}/static/decoder/janus.html?{query}")
                await sending
                await page.wait_for_function(
                    f"window.keyfaceJanus.lastIndex === {frames - 1}"
                    " || window.keyfaceJanus.error !== null",
                    timeout=150_000,
                )
                state = await page.evaluate("window.keyfaceJanus")
                png = await page.evaluate(
                    "document.getElementById('screen').toDataURL('image/png')"
                )
                shot = os.environ.get("KEYFACE_JANUS_SCREENSHOT")
                if shot:
                    await page.screenshot(path=shot)
            stats = live.session.stats
            await sender.close()
            return {"state": state, "png": png, "sent": live.sent, "stats": stats}
        finally:
            await server.close()
            janus.stop()

    r = _run(main())
    state = r["state"]
    print(f"janus page: {state}; sender: {r['stats']}")
    assert state["error"] is None, state
    assert state["refreshes"] >= 1 and r["stats"].refresh_requests >= 1
    assert state["firstIndex"] > 15 and state["lastIndex"] == frames - 1
    reference = _reference(r["sent"], get_renderer("warp"))
    shown = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(r["png"].split(",", 1)[1]))).convert("RGB")
    )
    value = psnr(shown, reference[frames - 1])
    print(f"janus page, last frame vs DecoderCore + warp: {value:.2f} dB")
    shot = os.environ.get("KEYFACE_JANUS_SCREENSHOT")
    if shot:  # the figures beside the picture (results/janus/)
        summary = {
            "page": state,
            "frames_sent": frames,
            "sender_refresh_requests": r["stats"].refresh_requests,
            "sender_idr_keyframes": r["stats"].idr_keyframes,
            "sender_kbps": round(r["stats"].bits / 1000 / (frames / FPS), 2),
            "last_frame_psnr_db_vs_python_warp": round(value, 2),
        }
        Path(shot).with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    assert value >= MIN_PSNR


# -- the command line --------------------------------------------------------------------------
@needs_janus
@pytest.mark.slow
def test_keyface_janus_room_and_send(tmp_path: Path, carphone_path: Path) -> None:
    """``keyface janus room`` creates the rooms (a wrong admin key is one line, exit 2) and
    ``keyface janus send`` (another process: face analysis, live coding, AVIF keyframes)
    streams carphone to a Python receiver that decodes its frames."""
    import subprocess
    import sys

    from keyface.cli.main import main as cli

    async def main() -> tuple[int, str, list, int]:
        janus = JanusProcess(tmp_path / "janus")
        await janus.start()
        try:
            url, key = janus.url, janus.config.admin_key
            loop = asyncio.get_running_loop()
            bad = await loop.run_in_executor(
                None, cli, ["janus", "room", "--janus", url, "--room", ROOM, "--admin-key", "x"]
            )
            assert bad == 2
            args = ["janus", "room", "--janus", url, "--room", ROOM, "--admin-key", key]
            assert await loop.run_in_executor(None, cli, [*args, "--pin", PIN]) == 0
            send = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "keyface", "janus", "send",
                "--input", str(carphone_path), "--max-frames", "75", "--janus", url,
                "--room", ROOM, "--participant", "carol", "--pin", PIN, "-q",
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            receiver = JanusReceiverClient(
                url, ROOM, "carol", pin=PIN, renderer=get_renderer("warp"), keep_images=False
            )
            await receiver.connect(timeout=120)
            out, _ = await send.communicate()
            await asyncio.sleep(0.5)
            await receiver.close()
            code = send.returncode
            assert code is not None
            return code, out.decode(), receiver.frames, receiver.stats.feedback_sent
        finally:
            janus.stop()

    code, out, frames, feedback = _run(main())
    print(out)
    assert code == 0, out
    match = re.search(r"sent (\d+) frames", out)
    assert match is not None, out
    sent = int(match.group(1))  # source frames the analysis skipped on a busy machine are not
    assert sent >= 20, out
    decoded = [f for f in frames if not f.concealed]
    # The receiver subscribes once carol publishes, possibly after her first frames (it then
    # asks for an IDR and decodes from there), and decodes to her last frame.
    assert decoded and decoded[-1].index == sent - 1, (len(decoded), feedback)
    assert len(decoded) >= sent // 2
