"""Chromium launched and closed many times, as the tests launch it: does any launch hang?

    python benchmarks/chromium_launches.py [--launches 150] [--parallel 2] [--busy 1] [--json F]

``--parallel`` loops run at once, each launching the system Chromium ``--launches`` times with
the tests' arguments (``tests/test_js_browser.ARGS``: one process, WebGL2 on SwiftShader),
beside ``--busy`` processes that spin on a core. Each launch opens one page that draws with
WebGL2 and reads the pixels back, makes an RTCPeerConnection offer and runs a worker, then
closes the browser. A launch that takes longer than ``--timeout`` seconds counts as stuck, and
the loop stops there (a livelocked kernel cannot be killed from here; docs/browser.md,
"Chromium in CI"). Prints and writes the launch times and the count of stuck launches.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from pathlib import Path

from _common import emit_json

ROOT = Path(__file__).resolve().parents[1]
PAGE = """async () => {
  const c = document.createElement('canvas'); c.width = 256; c.height = 256;
  const g = c.getContext('webgl2');
  for (let i = 0; i < 20; i++) {
    g.clearColor(Math.random(), 0, 0, 1); g.clear(g.COLOR_BUFFER_BIT);
  }
  const px = new Uint8Array(256 * 256 * 4);
  g.readPixels(0, 0, 256, 256, g.RGBA, g.UNSIGNED_BYTE, px);
  const pc = new RTCPeerConnection(); pc.createDataChannel('x');
  await pc.setLocalDescription(await pc.createOffer()); pc.close();
  const w = new Worker(URL.createObjectURL(new Blob(['postMessage(1)'])));
  await new Promise((r) => { w.onmessage = r; }); w.terminate();
  return px.length;
}"""


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def launch_loop(count: int, timeout: float, chromium: str, args: list[str]) -> dict:
    from playwright.async_api import async_playwright

    times: list[float] = []
    stuck = 0
    for _ in range(count):
        start = time.monotonic()

        async def once() -> None:
            async with async_playwright() as p:
                browser = await p.chromium.launch(
                    executable_path=chromium, headless=True, args=args
                )
                page = await browser.new_page()
                await page.evaluate(PAGE)
                await browser.close()

        try:
            await asyncio.wait_for(once(), timeout)
        except TimeoutError:
            stuck += 1
            break
        times.append(time.monotonic() - start)
    return {"launches": len(times), "stuck": stuck, "seconds": times}


def run_loop(count: int, timeout: float, out: multiprocessing.Queue) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_browser import CHROMIUM
    from test_js_browser import ARGS

    if CHROMIUM is None:
        raise SystemExit("no Chromium found")
    out.put(asyncio.run(launch_loop(count, timeout, CHROMIUM, ARGS)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=150, help="launches per loop")
    parser.add_argument("--parallel", type=int, default=2, help="loops at once")
    parser.add_argument("--busy", type=int, default=1, help="spinning processes beside them")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before stuck")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.monotonic()
    busy = [
        multiprocessing.Process(target=spin, args=(1e9,), daemon=True) for _ in range(args.busy)
    ]
    for p in busy:
        p.start()
    queue: multiprocessing.Queue = multiprocessing.Queue()
    loops = [
        multiprocessing.Process(target=run_loop, args=(args.launches, args.timeout, queue))
        for _ in range(args.parallel)
    ]
    load: list[float] = []
    for p in loops:
        p.start()
    results = []
    while len(results) < len(loops):
        load.append(os.getloadavg()[0])
        try:
            results.append(queue.get(timeout=5))
        except Exception:  # queue.Empty: keep sampling the load
            continue
    for p in busy:
        p.terminate()
    seconds = [t for r in results for t in r["seconds"]]
    summary = {
        "what": "Chromium launch + one page (WebGL2, readPixels, RTCPeerConnection, worker) + "
        "close, tests/test_js_browser.ARGS",
        "parallel": args.parallel,
        "busy": args.busy,
        "launches": sum(r["launches"] for r in results),
        "stuck": sum(r["stuck"] for r in results),
        "launch_seconds_min_median_max": [
            round(min(seconds), 2),
            round(sorted(seconds)[len(seconds) // 2], 2),
            round(max(seconds), 2),
        ]
        if seconds
        else None,
        "loadavg_1min_range": [round(min(load), 2), round(max(load), 2)] if load else None,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    emit_json(summary, args.json)


if __name__ == "__main__":
    main()
