"""Glass-to-glass latency and frames/s as the receiver page in headless Chromium shows them.

    python benchmarks/server_browser.py                     # d6 dev clip (or carphone), 450 frames
    python benchmarks/server_browser.py --json results/server/browser.json

``keyface serve --stamp-frames`` and ``keyface send`` run as in ``server_stream.py``; the
receiver is the real page (``GET /room/<name>``) in the system Chromium, driven by
Playwright (never ``playwright install``). A ``requestVideoFrameCallback`` hook reads the
stamped frame index of every frame the page presents and its ``presentationTime`` (frame
handed to the compositor) and ``expectedDisplayTime`` (expected on screen). Both are
page-clock times (``performance.timeOrigin + t``, the system wall clock), converted to the
sender's CLOCK_MONOTONIC capture times with this process's wall-minus-monotonic offset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _server_common import (
    ServerProcess,
    default_clip,
    machine,
    print_table,
    sender_command,
)

from keyface.server.client import fetch_state

CHROMIUM_ARGS = [
    "--no-sandbox",
    # One process, no children to reap (tests/test_browser.py says why).
    "--no-zygote",
    "--single-process",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
HOOK = """() => {
  const v = document.querySelector('video');
  if (!v || window.__hooked) return !!window.__hooked;
  window.__hooked = true; window.__frames = [];
  const c = document.createElement('canvas');
  const g = c.getContext('2d', {willReadFrequently: true});
  const cb = (now, meta) => {
    const w = v.videoWidth, cell = Math.floor(w / 16);
    if (cell >= 8) {
      c.width = w; c.height = 16;
      g.drawImage(v, 0, 0, w, 16, 0, 0, w, 16);
      const d = g.getImageData(0, 0, w, 16).data;
      const lv = [];
      for (let i = 0; i < 16; i++) {
        let s = 0, n = 0;
        for (let y = 3; y < 13; y++) for (let x = i * cell + 2; x < (i + 1) * cell - 2; x++) {
          const k = (y * w + x) * 4; s += (d[k] + d[k + 1] + d[k + 2]) / 3; n++;
        }
        lv.push(s / n);
      }
      if (lv.every((l) => l <= 40 || l >= 215) && lv[0] >= 128 && lv[15] < 128) {
        let stamp = 0;
        for (let b = 0; b < 14; b++) if (lv[b + 1] >= 128) stamp += 1 << b;
        const o = performance.timeOrigin;
        window.__frames.push([stamp, o + meta.presentationTime, o + meta.expectedDisplayTime]);
      }
    }
    v.requestVideoFrameCallback(cb);
  };
  v.requestVideoFrameCallback(cb);
  return true;
}"""


async def run(clip: Path, frames: int, chromium: str) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    offset_ms = 1000 * (time.time() - time.monotonic())
    room = "browser"
    with ServerProcess("--stamp-frames") as server, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "send.json"
        cmd = sender_command(server, room, clip, frames, 0.0, 0, out)
        sender = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            page = await browser.new_page()
            viewer = server.token(room, "viewer", "receive")
            await page.goto(f"{server.url}/room/{room}#token={viewer}")
            entry: dict[str, Any] = {}
            while sender.poll() is None:
                await page.evaluate(HOOK)
                state = await fetch_state(server.url, room, viewer)
                entry = next((x for x in state["participants"] if x["name"] == "sender"), entry)
                await asyncio.sleep(0.2)
            shown = await page.evaluate("() => window.__frames || []")
            caption = await page.evaluate(
                "() => (document.querySelector('figcaption') || {}).textContent || ''"
            )
            await browser.close()
        if sender.returncode != 0:
            raise RuntimeError(f"sender failed: {sender.stderr.read()}")  # type: ignore[union-attr]
        sent = json.loads(out.read_text())
    captures = {int(k) % 16384: offset_ms + 1000 * v for k, v in sent["capture_times"].items()}
    first: dict[int, tuple[float, float]] = {}
    for stamp, presented, expected in shown:
        if stamp in captures and stamp not in first:
            first[stamp] = (presented - captures[stamp], expected - captures[stamp])
    presented = np.array([a for a, _ in first.values()])
    displayed = np.array([b for _, b in first.values()])
    times = sorted(t for _, t, _ in shown)
    fps = (len(first) - 1) / ((times[-1] - times[0]) / 1000) if len(times) > 1 else 0.0
    summary = sent["summary"]
    row: dict[str, Any] = {
        "clip": clip.name,
        "frames_sent": summary["frames"],
        "uplink_kbps": summary["kbps"],
        "server_uplink_kbps_mean": entry.get("uplink_kbps_mean"),
        "distinct_frames_shown": len(first),
        "page_fps": fps,
        "caption": caption,
    }
    if presented.size:
        row.update(
            presented_ms_median=float(np.median(presented)),
            presented_ms_p90=float(np.percentile(presented, 90)),
            presented_ms_p99=float(np.percentile(presented, 99)),
            displayed_ms_median=float(np.median(displayed)),
            displayed_ms_p90=float(np.percentile(displayed, 90)),
        )
    return row


COLUMNS = [
    ("frames_sent", "sent", "d"),
    ("uplink_kbps", "kbit/s", ".2f"),
    ("distinct_frames_shown", "shown", "d"),
    ("page_fps", "page fps", ".1f"),
    ("presented_ms_median", "present p50", ".0f"),
    ("presented_ms_p90", "present p90", ".0f"),
    ("presented_ms_p99", "present p99", ".0f"),
    ("displayed_ms_median", "display p50", ".0f"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path)
    parser.add_argument("--frames", type=int, default=450)
    parser.add_argument("--chromium", default=shutil.which("chromium"), help="browser binary")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.chromium:
        parser.error("no chromium found: apt-get install chromium, or pass --chromium")
    clip = args.input or default_clip()
    info = machine()
    row = asyncio.run(run(clip, args.frames, args.chromium))
    print(f"{clip.name}, {args.frames} frames, headless Chromium, loopback")
    print_table([row], COLUMNS)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "runs": [row]}, indent=1))


if __name__ == "__main__":
    main()
