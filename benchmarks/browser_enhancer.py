"""What the keyframe enhancer would cost the browser page: onnxruntime-web in node, beside Python.

    python benchmarks/browser_enhancer.py [--ort-web 1.22.0] [--threads 1,2] [--json out.json]

The receiver page renders with the training-free warp; the default renderer (``kf-enh-v3``)
also runs the keyframe enhancer once per keyframe (docs/generator.md). This measures what
running that network in the page through onnxruntime-web (the npm package, WebAssembly
backend) costs: the download (the ONNX model and the runtime's WebAssembly, raw and gzipped),
the session set-up, the time per keyframe at 256x256 (median of 8 runs after one warm-up, in
node, which runs the same V8 and WebAssembly as Chromium) and the parity with the Python
decoder's onnxruntime (largest difference, and the share of identical 8-bit pixels). The
picture is the carphone clip's first frame, centre-cropped and resized to 256x256.

Needs node and npm (Debian's ``nodejs`` and ``npm``); onnxruntime-web is installed from the npm
registry into ``--cache`` (default ``~/.cache/keyface/ort-web``), not into the project.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit_json

os.environ.setdefault("KEYFACE_THREADS", "1")

from keyface.cli.demo import default_clip
from keyface.generator.catalog import RENDERERS
from keyface.generator.enhancer import Enhancer
from keyface.generator.renderer import export_onnx
from keyface.generator.weights import load_shipped
from keyface.threads import apply_thread_policy, onnx_session_options

RENDERER = "kf-enh-v3"
SIZE = 256
NODE_SCRIPT = """
import * as ort from 'onnxruntime-web';
import { readFileSync } from 'node:fs';
const [model, input, expected, threads, side] = process.argv.slice(2);
const size = Number(side);
ort.env.wasm.numThreads = Number(threads);
const t0 = performance.now();
const session = await ort.InferenceSession.create(readFileSync(model), {
  executionProviders: ['wasm'] });
const setup = performance.now() - t0;
const x = new Float32Array(readFileSync(input).buffer.slice(0));
const ref = new Float32Array(readFileSync(expected).buffer.slice(0));
const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x, [1, 3, size, size]) };
let out = await session.run(feeds);
const times = [];
for (let i = 0; i < 8; i++) {
  const t = performance.now(); out = await session.run(feeds); times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
const y = out[session.outputNames[0]].data;
const u8 = (v) => Math.min(255, Math.max(0, Math.round((v + 1) * 127.5)));
let maxDiff = 0, same = 0;
for (let i = 0; i < y.length; i++) {
  maxDiff = Math.max(maxDiff, Math.abs(y[i] - ref[i]));
  if (u8(y[i]) === u8(ref[i])) same++;
}
console.log(JSON.stringify({ threads: Number(threads), setup_ms: setup,
  run_ms_median: (times[3] + times[4]) / 2, run_ms_best: times[0],
  max_abs_diff: maxDiff, same_uint8_share: same / y.length }));
"""


def carphone_picture() -> np.ndarray:
    """The carphone clip's first frame, centre-cropped square and resized to SIZE."""
    import av
    import cv2

    with av.open(str(default_clip())) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    h, w = frame.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = frame[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(square, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)


def install_ort_web(cache: Path, version: str) -> Path:
    """``cache`` with ``node_modules/onnxruntime-web`` at ``version`` (npm install if needed)."""
    package = cache / "node_modules" / "onnxruntime-web" / "package.json"
    if package.exists() and json.loads(package.read_text()).get("version") == version:
        return cache
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm not found (apt-get install npm)")
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache),
         f"onnxruntime-web@{version}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return cache


def gz(data: bytes) -> int:
    return len(gzip.compress(data, 9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ort-web", default="1.22.0", help="onnxruntime-web version (npm)")
    parser.add_argument("--threads", default="1", help="WebAssembly threads to time, e.g. 1,2")
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "keyface" / "ort-web"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    apply_thread_policy()
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node not found (apt-get install nodejs)")
    network = load_shipped(RENDERERS[RENDERER].enhancer or "")
    if not isinstance(network, Enhancer):
        raise SystemExit(f"{RENDERER} has no keyframe enhancer")
    onnx = export_onnx(network, SIZE)
    picture = carphone_picture()
    x = (picture.transpose(2, 0, 1).astype(np.float32) * (2.0 / 255.0) - 1.0)[None]

    import onnxruntime as ort

    session = ort.InferenceSession(onnx, onnx_session_options(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    expected = session.run(None, {name: x})[0].astype(np.float32)
    times = []
    for _ in range(8):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append(1000 * (time.perf_counter() - t))

    root = install_ort_web(args.cache, args.ort_web)
    dist = root / "node_modules" / "onnxruntime-web" / "dist"
    wasm = (dist / "ort-wasm-simd-threaded.wasm").read_bytes()
    glue = (dist / "ort-wasm-simd-threaded.mjs").read_bytes() + (
        dist / "ort.wasm.min.mjs"
    ).read_bytes()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "model.onnx").write_bytes(onnx)
        x.tofile(folder / "in.f32")
        expected.tofile(folder / "out.f32")
        script = root / "enhancer_cost.mjs"  # beside node_modules, so the import resolves
        script.write_text(NODE_SCRIPT)
        for threads in (int(t) for t in args.threads.split(",")):
            out = subprocess.run(
                [node, str(script), str(folder / "model.onnx"), str(folder / "in.f32"),
                 str(folder / "out.f32"), str(threads), str(SIZE)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    node_version = node_version.strip()
    result = {
        "what": f"{RENDERER}'s keyframe enhancer at {SIZE}x{SIZE} through onnxruntime-web "
        f"{args.ort_web} (WebAssembly, SIMD) in node {node_version}, against onnxruntime in "
        "Python (KEYFACE_THREADS threads)",
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        "download_bytes": {
            "model_onnx": len(onnx),
            "model_onnx_gzip": gz(onnx),
            "runtime_wasm": len(wasm),
            "runtime_wasm_gzip": gz(wasm),
            "runtime_js": len(glue),
            "runtime_js_gzip": gz(glue),
        },
        "python_onnxruntime_ms_median": float(np.median(times)),
        "wasm": runs,
    }
    emit_json(result, args.json)


if __name__ == "__main__":
    main()
