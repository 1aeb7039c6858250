"""Speed of the browser decoder's motion decoding in node, beside the Python decoder's.

    python benchmarks/js_motion_decode.py [--frames 1800] [--level 2] [--json out.json]

A synthetic stream of ``--frames`` frames (a random walk of the face-mesh parameters and the
body field around the neutral face, a keyframe every 60 frames, at quantiser ``--level``) is
coded twice: in MOTION packets of 16 frames (files) and of 1 frame (live links). Both are
decoded by the JS modules in node (``tests/js/decoder_harness.mjs``, best of 5 runs after
warm-up) and by the Python reference (``keyface.entropy.decode_frames`` plus the keypoints
``DecoderCore`` computes, best of 3). Reported per frame: the motion symbols alone (range
decoding and the adaptive coder state) and the whole motion decode (symbols, dequantisation,
478 keypoints, body field, limit checks). Pictures are not decoded or rendered here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("KEYFACE_THREADS", "1")

from keyface.bitstream import (
    EndPacket,
    KeyframePacket,
    MotionPacket,
    read_stream,
    write_stream,
)
from keyface.entropy import CodedFrame, MotionCoderState, decode_frames, encode_frames
from keyface.motion import get_representation
from keyface.motion.web_export import web_model_dir

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "js" / "decoder_harness.mjs"
CARPHONE = ROOT / "tests" / "data" / "fuzz" / "carphone12_hevc.kf"
NAME = "facemesh-pca-field"


def make_stream(frames: int, level: int, chunk: int, seed: int = 16) -> bytes:
    carphone = read_stream(CARPHONE.read_bytes())
    keyframe = next(p.data for p in carphone.packets if isinstance(p, KeyframePacket))
    header = carphone.header.__class__(
        **{**carphone.header.__dict__, "motion_name": NAME, "quant_level": level,
           "frame_count": frames, "buffer_size": 5}
    )  # fmt: skip
    rep = get_representation(NAME).for_level(level)
    state = MotionCoderState(rep.quant_level(level), rep.statistics)
    rng = np.random.default_rng(seed)
    neutral = state.quantize(rep.neutral())
    walk = np.zeros(len(neutral))
    packets: list = []
    held = 0
    for first in range(0, frames, chunk):
        coded = []
        for i in range(first, min(frames, first + chunk)):
            walk = 0.97 * walk + rng.laplace(0, 0.8, len(walk))
            q = np.clip(neutral + np.round(walk).astype(np.int64), state.q_min, state.q_max)
            if i % 60 == 0:
                packets.append(KeyframePacket(frame_index=i, quality=80, data=keyframe))
                held = min(held + 1, 5)
                coded.append(CodedFrame(q=q, reference=None))
            else:
                coded.append(CodedFrame(q=q, reference=int(rng.integers(0, held))))
        reset = first == 0 or first % 60 == 0
        if reset:
            state.reset()
        packets.append(MotionPacket(first, len(coded), reset, encode_frames(state, coded)))
    packets.append(EndPacket(frame_count=frames))
    return write_stream(header, packets)


def python_times(data: bytes, repeat: int = 3) -> tuple[float, float]:
    parsed = read_stream(data)
    header = parsed.header
    rep = get_representation(header.motion_name).for_level(header.quant_level)
    best_symbols = best_all = float("inf")
    for _ in range(repeat):
        for with_keypoints in (False, True):
            state = MotionCoderState(rep.quant_level(header.quant_level), rep.statistics)
            keys: set[int] = set()
            t0 = time.perf_counter()
            for p in parsed.packets:
                if isinstance(p, KeyframePacket):
                    keys.add(p.frame_index)
                elif isinstance(p, MotionPacket):
                    if p.reset:
                        state.reset()
                    coded = decode_frames(state, p.data, [i in keys for i in p.frames])
                    if with_keypoints:
                        for c in coded:
                            params = state.dequantize(c.q)
                            rep.keypoints(params, header.width)
                            rep.field(params)
            dt = time.perf_counter() - t0
            if with_keypoints:
                best_all = min(best_all, dt)
            else:
                best_symbols = min(best_symbols, dt)
    return best_symbols, best_all


def node_times(node: str, data: bytes) -> dict:
    job = {
        "models_dir": str(web_model_dir()),
        "tasks": [{"op": "bench", "data": data.hex(), "repeat": 5}],
    }
    out = subprocess.run(
        [node, str(HARNESS)], input=json.dumps(job).encode(), capture_output=True, check=True
    )
    return json.loads(out.stdout)["results"][0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1800)
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    node = os.environ.get("KEYFACE_NODE") or shutil.which("node")
    if node is None:
        print("node not found (apt-get install nodejs, or set KEYFACE_NODE)", file=sys.stderr)
        return 2
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    rows = []
    for chunk in (16, 1):
        data = make_stream(args.frames, args.level, chunk)
        js = node_times(node, data)
        py_symbols, py_all = python_times(data)
        n = js["frames"]
        rows.append(
            {
                "chunk": chunk,
                "frames": n,
                "bytes": len(data),
                "js_symbols_us_per_frame": 1000 * js["symbols_ms"] / n,
                "js_decode_us_per_frame": 1000 * js["decode_ms"] / n,
                "py_symbols_us_per_frame": 1e6 * py_symbols / n,
                "py_decode_us_per_frame": 1e6 * py_all / n,
            }
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"node {version}, {args.frames} frames, {NAME} level {args.level}, load {load}")
    print(
        "chunk | JS symbols | JS motion decode | Python symbols | Python motion decode (us/frame)"
    )
    for r in rows:
        print(
            f"{r['chunk']:5d} | {r['js_symbols_us_per_frame']:10.1f} | "
            f"{r['js_decode_us_per_frame']:16.1f} | {r['py_symbols_us_per_frame']:14.1f} | "
            f"{r['py_decode_us_per_frame']:10.1f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "node": version,
                    "level": args.level,
                    "load_average": os.getloadavg(),
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
