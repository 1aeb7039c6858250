"""The browser decoder in headless Chromium (docs/browser.md): the modules load from
``keyface serve`` (``/static/decoder/``), check and load the motion model, decode the golden
carphone streams' motion exactly as Python does, and the WebGL2 warp renders the frames from
the Python-decoded keyframe pictures within a PSNR of the Python warp (``WarpRenderer``).

Chromium as in ``tests/test_browser.py`` (the Debian package, driven by Playwright, WebGL2 on
SwiftShader, one process); skipped without it or with ``KEYFACE_BROWSER_TEST=0``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from typing import Any

import numpy as np
import pytest
from test_browser import CHROMIUM_ARGS, NEEDS_CHROMIUM, OPT_OUT, chromium_page
from test_js_decoder import STREAMS, _stream_bytes, assert_same_decode, py_decode

from keyface.bitstream import read_stream
from keyface.codec import DecoderCore
from keyface.render import WarpRenderer
from keyface.server.conference import ServerConfig
from keyface.server.http import start_server

pytestmark = [*NEEDS_CHROMIUM, OPT_OUT]
ARGS = [*CHROMIUM_ARGS, "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
"""tests/test_browser.py's launch (one process, plain host candidates) with WebGL2 on
SwiftShader, ANGLE's CPU renderer."""
MIN_PSNR = 40.0
"""The browser against the Python decoder, every frame (dB): issue 16's bound; measured
52.8-64.3 dB (docs/browser.md, where the remaining difference comes from)."""

DECODE = """async ([streams]) => {
  const { readStream } = await import('/static/decoder/stream.js');
  const { MotionModels } = await import('/static/decoder/model.js');
  const { MotionDecoder } = await import('/static/decoder/decoder.js');
  const models = await MotionModels.load(new URL('/static/decoder/models/', location.href));
  const hex = (h) => new Uint8Array(h.match(/../g).map((b) => parseInt(b, 16)));
  const out = [];
  for (const s of streams) {
    const frames = [];
    let error = null;
    try {
      const parsed = readStream(hex(s));
      const decoder = new MotionDecoder(parsed.header, models);
      for (const p of parsed.packets) for (const f of decoder.receive(p)) frames.push({
        index: f.index, keyframe: f.keyframe, reference: f.reference,
        reference_frame: f.referenceFrame, q: f.q, keypoints: Array.from(f.keypoints),
        field: f.field === null ? null : Array.from(f.field)});
      error = parsed.error ? parsed.error.message : null;
    } catch (exc) { error = exc.message; }
    out.push({frames, error});
  }
  return out;
}"""

RENDER = """async ([stream, pictures]) => {
  const { readStream } = await import('/static/decoder/stream.js');
  const { MotionModels } = await import('/static/decoder/model.js');
  const { MotionDecoder } = await import('/static/decoder/decoder.js');
  const { WarpRenderer } = await import('/static/decoder/warp.js');
  const models = await MotionModels.load(new URL('/static/decoder/models/', location.href));
  const hex = (h) => new Uint8Array(h.match(/../g).map((b) => parseInt(b, 16)));
  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const parsed = readStream(hex(stream));
  const h = parsed.header;
  const decoder = new MotionDecoder(h, models);
  const canvas = new OffscreenCanvas(h.width, h.height);
  const gl = canvas.getContext('webgl2');
  const warp = new WarpRenderer(gl, h.width, h.height, models.manifest.facemesh,
                                models.manifest.field.face_feather);
  const refs = new Map();
  const out = [];
  let ms = 0;
  let cpu = 0;
  for (const p of parsed.packets) {
    for (const f of decoder.receive(p)) {
      if (f.keyframe) {
        refs.set(f.index, {rgba: b64(pictures[f.index]), kp: f.keypoints});
        continue;
      }
      const ref = refs.get(f.referenceFrame);
      warp.setReference(ref.rgba, ref.kp);
      const t = performance.now();
      warp.render(f.keypoints, f.field);
      const px = warp.readPixels();
      ms += performance.now() - t;
      cpu += warp.cpuMs;
      let s = '';
      for (let i = 0; i < px.length; i += 8192) {
        s += String.fromCharCode(...px.subarray(i, i + 8192));
      }
      out.push({index: f.index, rgba: btoa(s)});
    }
  }
  return {frames: out, ms, cpu};
}"""


def _rgba(image: np.ndarray) -> str:
    h, w = image.shape[:2]
    rgba = np.concatenate([image, np.full((h, w, 1), 255, np.uint8)], axis=2)
    return base64.b64encode(rgba.tobytes()).decode()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _python_frames(data: bytes) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Keyframe pictures and warp-rendered frames of the Python decoder, by frame index."""
    parsed = read_stream(data)
    decoder = DecoderCore(parsed.header, renderer=WarpRenderer())
    keys, frames = {}, {}
    for packet in parsed.packets:
        for f in decoder.receive(packet):
            (keys if f.keyframe else frames)[f.index] = f.image
    return keys, frames


def _in_chromium(script: str, arg: Any) -> Any:

    async def main() -> Any:
        server = await start_server(ServerConfig(secret=b"s" * 32), port=0)
        try:
            async with chromium_page(ARGS) as page:
                await page.goto(f"{server.url}/healthz")
                return await page.evaluate(script, arg)
        finally:
            await server.close()

    return asyncio.run(asyncio.wait_for(main(), 300))


def test_chromium_decodes_the_golden_streams_like_python() -> None:
    streams = [_stream_bytes(n) for n in STREAMS]
    got = _in_chromium(DECODE, [[s.hex() for s in streams]])
    for data, result in zip(streams, got, strict=True):
        want = py_decode(data)
        assert len(want["frames"]) == 12
        assert_same_decode(result, want)


@pytest.mark.parametrize("name", STREAMS[:2])
def test_chromium_webgl_warp_matches_the_python_warp(name: str) -> None:
    """HEVC and VVC keyframes (decoded by Python, handed to the page as RGBA), facemesh-pca-
    field motion decoded in the page, rendered by the WebGL2 warp with the body field."""
    data = _stream_bytes(name)
    keys, frames = _python_frames(data)
    pictures = {i: _rgba(img) for i, img in keys.items()}
    got = _in_chromium(RENDER, [data.hex(), pictures])
    values = []
    for f in got["frames"]:
        h, w = frames[f["index"]].shape[:2]
        rgba = np.frombuffer(base64.b64decode(f["rgba"]), np.uint8).reshape(h, w, 4)
        values.append(psnr(rgba[..., :3], frames[f["index"]]))
    print(f"WebGL2 warp vs Python warp, PSNR per frame (dB): {np.round(values, 2).tolist()}")
    n = max(len(values), 1)
    print(
        f"render + readPixels: {got['ms'] / n:.1f} ms/frame, of which geometry on the CPU "
        f"{got['cpu'] / n:.1f} ms"
    )
    assert len(values) == len(frames)
    assert min(values) >= MIN_PSNR


PLAY = """async ([stream]) => {
  const { readStream } = await import('/static/decoder/stream.js');
  const { MotionModels } = await import('/static/decoder/model.js');
  const { StreamPlayer } = await import('/static/decoder/player.js');
  const models = await MotionModels.load(new URL('/static/decoder/models/', location.href));
  const hex = (h) => new Uint8Array(h.match(/../g).map((b) => parseInt(b, 16)));
  const parsed = readStream(hex(stream));
  const h = parsed.header;
  const gl = new OffscreenCanvas(h.width, h.height).getContext('webgl2');
  const player = new StreamPlayer(h, models, gl);
  const out = [];
  const t = performance.now();
  for (const p of parsed.packets) {
    for (const f of await player.receive(p)) {
      let s = '';
      for (let i = 0; i < f.rgba.length; i += 8192) {
        s += String.fromCharCode(...f.rgba.subarray(i, i + 8192));
      }
      out.push({index: f.index, keyframe: f.keyframe, rgba: btoa(s)});
    }
  }
  return {frames: out, ms: performance.now() - t};
}"""


def avif_stream() -> bytes:
    """The carphone HEVC stream with its keyframes coded again in AVIF, a DETAIL rectangle on
    the first keyframe and one that promotes predicted frame 9 to a reference."""
    from keyface.bitstream import DetailPacket, KeyframePacket, MotionPacket, write_stream
    from keyface.intra import get_intra_codec
    from keyface.intra.avif import AvifIntraCodec

    parsed = read_stream(_stream_bytes(STREAMS[0]))
    hevc, avif = get_intra_codec("hevc"), AvifIntraCodec(speed=8)
    packets = []
    first = None
    for p in parsed.packets:
        if isinstance(p, KeyframePacket):
            picture = hevc.decode(p.data)
            first = picture if first is None else first
            packets.append(KeyframePacket(p.frame_index, 60, avif.encode(picture, 60)))
            if p.frame_index == 0:
                patch = avif.encode(np.ascontiguousarray(picture[96:128, 80:144]), 90)
                packets.append(DetailPacket(0, 80, 96, 64, 32, 90, patch))
            continue
        if isinstance(p, MotionPacket) and p.first_frame == 8:
            assert first is not None
            patch = avif.encode(np.ascontiguousarray(first[140:180, 100:148]), 80)
            packets.append(DetailPacket(9, 100, 140, 48, 40, 80, patch))
        packets.append(p)
    header = dataclasses.replace(parsed.header, intra_codec="avif", promotes=True)
    return write_stream(header, packets)


def test_chromium_plays_an_avif_stream_like_the_python_decoder() -> None:
    """The whole chain in the page: AVIF keyframes and DETAIL rectangles decoded by Chromium,
    the DETAIL blend (on a keyframe, and promoting a rendered frame), motion, WebGL2 warp with
    the body field; against DecoderCore with the Python warp, frame by frame."""
    data = avif_stream()
    parsed = read_stream(data)
    decoder = DecoderCore(parsed.header, renderer=WarpRenderer())
    want = {f.index: f.image for p in parsed.packets for f in decoder.receive(p)}
    got = _in_chromium(PLAY, [data.hex()])
    values = []
    for f in got["frames"]:
        h, w = want[f["index"]].shape[:2]
        rgba = np.frombuffer(base64.b64decode(f["rgba"]), np.uint8).reshape(h, w, 4)
        values.append(psnr(rgba[..., :3], want[f["index"]]))
    print(
        f"AVIF stream in Chromium vs DecoderCore + warp, PSNR per frame (dB): "
        f"{np.round(values, 2).tolist()}; {got['ms'] / len(values):.1f} ms/frame"
    )
    assert [f["index"] for f in got["frames"]] == sorted(want)
    assert min(values) >= MIN_PSNR


def test_the_player_page_plays_an_avif_stream(tmp_path) -> None:
    """``/static/decoder/play.html``: a stream chosen in the page plays to its last frame,
    which is the Python decoder's (with the warp) within the warp's PSNR."""
    import io

    from PIL import Image

    data = avif_stream()
    path = tmp_path / "carphone_avif.kf"
    path.write_bytes(data)
    parsed = read_stream(data)
    decoder = DecoderCore(parsed.header, renderer=WarpRenderer())
    last = [f.image for p in parsed.packets for f in decoder.receive(p)][-1]

    async def main() -> tuple[dict[str, Any], str]:
        server = await start_server(ServerConfig(secret=b"s" * 32), port=0)
        try:
            async with chromium_page(ARGS) as page:
                await page.goto(f"{server.url}/static/decoder/play.html")
                await page.set_input_files("#file", str(path))
                await page.wait_for_function("window.keyfacePlayer.done", timeout=120_000)
                state = await page.evaluate("window.keyfacePlayer")
                png = await page.evaluate(
                    "document.getElementById('screen').toDataURL('image/png')"
                )
                return state, png
        finally:
            await server.close()

    state, png = asyncio.run(asyncio.wait_for(main(), 300))
    assert state["error"] is None and state["frames"] == 12, state
    shown = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1]))).convert("RGB")
    )
    value = psnr(shown, last)
    print(f"player page, last frame vs DecoderCore + warp: {value:.2f} dB")
    assert value >= MIN_PSNR
